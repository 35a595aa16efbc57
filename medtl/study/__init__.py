"""A whole study from one YAML: train every (arm, seed), compare, probe, evaluate, one page."""
from .config import StudyConfig, load_study
from .runner import run_study

__all__ = ["StudyConfig", "load_study", "run_study"]
