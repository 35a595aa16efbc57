"""Robustness probes of a finished run: translation, adversarial, corruptions, explanations.

Each ``*_probe(run_dir, **params)`` returns a JSON-able dict and caches it in
``RUN/probes/<probe>.json`` keyed by its parameters and the checkpoint's hash.
"""
from .adversarial import adversarial_probe, craft
from .corruptions import CORRUPTIONS, corrupt, corruptions_probe
from .explain import explain_probe
from ..models.inference import predict_proba
from .runs import ProbeRun, load_run
from .translation import shift_images, translation_probe

__all__ = ["CORRUPTIONS", "ProbeRun", "adversarial_probe", "corrupt", "corruptions_probe", "craft", "explain_probe",
           "load_run", "predict_proba", "shift_images", "translation_probe"]
