"""Probes of a finished run: translation, adversarial, corruptions, explanations, shape bias,
shortcuts.

Each ``*_probe(run_dir, **params)`` returns a JSON-able dict and caches it in
``RUN/probes/<probe>.json`` keyed by its parameters and the checkpoint's hash.  Every probe is
registered in :mod:`medtl.probes.registry` by its module, imported here.
"""
from .adversarial import adversarial_probe, craft
from .corruptions import CORRUPTIONS, corrupt, corruptions_probe
from .explain import explain_probe
from .lungmask import LungMasks, border_band, lung_masks, prior_mask
from ..models.inference import predict_proba
from .runs import ProbeRun, load_run
from .shape_bias import shape_bias_probe
from .shortcut import shortcut_probe, source_probe
from .translation import shift_images, translation_probe

__all__ = ["CORRUPTIONS", "LungMasks", "ProbeRun", "adversarial_probe", "border_band", "corrupt", "corruptions_probe",
           "craft", "explain_probe", "load_run", "lung_masks", "predict_proba", "prior_mask", "shift_images",
           "shape_bias_probe", "shortcut_probe", "source_probe", "translation_probe"]
