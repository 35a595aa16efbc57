"""Robustness probes of a finished run: translation, adversarial, corruptions, explanations.

Each ``*_probe(run_dir, **params)`` returns a JSON-able dict and caches it in
``RUN/probes/<probe>.json`` keyed by its parameters and the checkpoint's hash.
"""
from .runs import ProbeRun, load_run, predict_proba
from .translation import translation_probe

__all__ = ["ProbeRun", "load_run", "predict_proba", "translation_probe"]
