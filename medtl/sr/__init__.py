"""Learned super-resolution for low-resolution X-rays: a small FSRCNN/ESPCN-class model
(:mod:`.model`), its files (:mod:`.io`), upscaling and the degradation model (:mod:`.apply`),
training and evaluation against Pillow bicubic (:mod:`.train`).  CLI: ``medtl sr``.
"""
from .apply import crop_to_multiple, degrade, upscale_learned, upscale_resize
from .io import FORMAT, load_sr_model, read_sr_file, save_sr_model
from .model import DEFAULT_ARCH, SRNet, build_sr_model, resolve_arch
from .train import evaluate_sr, state_path, train_sr

__all__ = [
    "DEFAULT_ARCH", "FORMAT", "SRNet", "build_sr_model", "crop_to_multiple", "degrade", "evaluate_sr",
    "load_sr_model", "read_sr_file", "resolve_arch", "save_sr_model", "state_path", "train_sr",
    "upscale_learned", "upscale_resize",
]
