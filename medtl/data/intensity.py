"""X-ray intensity families shared by the corruption probe and the training augmentation, and
which of MONAI's medical intensity transforms medtl uses.

Decided per family; every claim below is measured in ``tests/test_monai_intensity.py``.

bias field       ADDED, MONAI's (``monai.transforms.RandBiasField``): medtl had none.  A smooth
                 multiplicative field exp(Σ c_ij P_i(row) P_j(col)), Legendre polynomials up to
                 degree 3, models the low-frequency exposure non-uniformity of radiographs (anode heel
                 effect, uneven grid / detector gain).  Coefficients ~ U(-a, a) (symmetric, so the
                 field is as often darkening as brightening; MONAI's default (0, 0.1) only brightens);
                 one field per image.  MONAI's 2D basis is P_i(row)·P_j(col) with j <= i only, so a
                 field's column-averaged profile is flat: its net gradient runs along the rows (top to
                 bottom), the heel-effect direction when the anode-cathode axis follows the patient's
                 long axis (the usual tube orientation for chest radiographs).  Used as MONAI
                 defines it.
gamma            KEPT medtl's x**γ on the fixed [0, 1] range (corruption, and the new augmentation).
                 MONAI's ``AdjustContrast`` is the same curve on the image's own [min, max]: equal
                 (to 1e-6) on images that span [0, 1], but its output depends on the image extremes,
                 so one burned-in marker or text pixel (common on X-rays; ``data.plant`` puts one)
                 changes every other pixel.  A display/processing gamma is a fixed LUT on the stored
                 range, which is medtl's form.  ``RandAdjustContrast`` also samples γ uniformly in
                 (0.5, 4.5), not symmetric in log γ.
contrast         KEPT medtl's batched (x - mean)·c + mean.  MONAI's ``ScaleIntensityFixedMean(factor=
                 c - 1)`` is the same operation (bit-identical output where measured, tested to 1e-6),
                 but per image in a Python loop and behind a ~4 s import; nothing to gain.
histogram shift  NOT USED.  ``RandHistogramShift`` maps intensities through a random monotone
                 piecewise-linear curve between control points on the image's own [min, max]: like
                 ``AdjustContrast`` a marker pixel changes all others, and it has no strength
                 parameter (only the number of control points, where more points mean a *smaller*
                 change), so it gives no severity scale.  A monotone tone curve with a strength is
                 the gamma corruption; realistic X-ray tone/histogram changes for training are
                 ``data.augment.stylize`` (histogram matching to another radiograph).
Gibbs ringing    NOT USED.  ``GibbsNoise`` truncates k-space: an MRI acquisition artefact;
                 radiographs are acquired in image space.  Its FFT treats the image as periodic, so on
                 a smooth ramp its ringing lands on the image frame (wrap-around), not at anatomy;
                 band-limiting itself is already probed by blur, down-up and JPEG.

MONAI is imported lazily, only where a MONAI-backed family is used: importing it takes about 4 s
and replaces ``warnings.showwarning`` process-wide, which default runs and probes need not pay.
"""
from __future__ import annotations

import numpy as np
import torch

#: Legendre degree of the bias field (MONAI's default)
BIAS_DEGREE = 3


def bias_fields(n: int, height: int, width: int, amplitude: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """``n`` multiplicative bias fields, float64 (n, 1, H, W): MONAI's ``RandBiasField`` (degree 3,
    coefficients ~ U(-amplitude, amplitude)), one draw per image.

    MONAI draws from its own numpy RandomState; that state is seeded with one integer drawn from
    ``generator`` (one draw per call), so the fields are a function of the generator state.  The
    field is MONAI's output on an image of ones (exp of the polynomial, in float64), so
    ``x.double() * field`` is exactly what ``RandBiasField(dtype=None)`` returns for ``x``.  With
    the same generator state the coefficients scale linearly with ``amplitude``.
    """
    from monai.transforms import RandBiasField  # lazy: see the module docstring

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    t = RandBiasField(degree=BIAS_DEGREE, coeff_range=(-float(amplitude), float(amplitude)), prob=1.0,
                      dtype=np.float64)
    t.set_random_state(seed=seed)
    ones = np.ones((1, int(height), int(width)), dtype=np.float64)
    fields = np.stack([np.asarray(t(ones)) for _ in range(int(n))])
    return torch.from_numpy(fields)


def apply_bias_field(x: torch.Tensor, amplitude: float, generator: torch.Generator | None) -> torch.Tensor:
    """x (B, C, H, W) times one bias field per image (shared by its channels); not clamped."""
    f = bias_fields(x.shape[0], x.shape[-2], x.shape[-1], amplitude, generator)
    return (x.double() * f.to(x.device)).to(x.dtype)
