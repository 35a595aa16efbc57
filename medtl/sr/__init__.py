"""Learned super-resolution for low-resolution X-rays: a small FSRCNN/ESPCN-class model
(:mod:`.model`), its files (:mod:`.io`), upscaling and the degradation model (:mod:`.apply`).
Data loading upscales with these; training a model and evaluating it against Pillow bicubic is
training's concern (:mod:`medtl.train.sr`), so this package imports nothing of data or training.
"""
from .apply import crop_to_multiple, degrade, upscale_learned, upscale_resize
from .io import FORMAT, load_sr_model, read_sr_file, save_sr_model
from .model import DEFAULT_ARCH, SRNet, build_sr_model, resolve_arch

__all__ = [
    "DEFAULT_ARCH", "FORMAT", "SRNet", "build_sr_model", "crop_to_multiple", "degrade",
    "load_sr_model", "read_sr_file", "resolve_arch", "save_sr_model",
    "upscale_learned", "upscale_resize",
]
