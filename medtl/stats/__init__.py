"""Metrics and statistics: small pure functions over arrays."""
from .metrics import binary_metrics, choose_threshold, multiclass_metrics, multilabel_metrics, nan_to_none

__all__ = ["binary_metrics", "choose_threshold", "multiclass_metrics", "multilabel_metrics", "nan_to_none"]
