"""Import torchvision safely on a CPU-only torch.

The torchvision wheel that pins a given torch release may be a CUDA build whose C
extension fails to load next to a CPU torch.  torchvision then dies at import with
``RuntimeError: operator torchvision::nms does not exist`` because its fake-kernel
registrations assume the extension loaded (see ../shared/README.md).  Declaring the two
operator *schemas* (no kernels) lets the pure-Python parts import: models, transforms,
and everything that imports torchvision (timm).  Only ops that need the extension (nms,
roi_align, image decoding) stay unavailable, and medtl uses none of them.
On a machine where the extension loads, the first import succeeds and nothing is done.
"""
from __future__ import annotations

import sys

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_lib = None  # keep the Library object alive: dropping it would unregister the schemas
_patched = False


def _forget_torchvision() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def import_torchvision():
    """Return the torchvision module, patching the missing op schemas if needed."""
    global _lib, _patched
    try:
        import torchvision  # noqa: F401

        return torchvision
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc) and "torchvision::qnms" not in str(exc):
            raise
    import torch

    _forget_torchvision()
    if _lib is None:
        _lib = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            try:
                _lib.define(op + _SCHEMA)
            except RuntimeError:  # already defined by a partial load
                pass
    _patched = True
    import torchvision

    return torchvision


def torchvision_was_patched() -> bool:
    return _patched
