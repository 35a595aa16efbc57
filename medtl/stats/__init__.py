"""Metrics and statistics: small pure functions over arrays, and the assembly of comparisons."""
from .metrics import auc, binary_metrics, choose_threshold, multiclass_metrics, multilabel_metrics

__all__ = ["auc", "binary_metrics", "choose_threshold", "multiclass_metrics", "multilabel_metrics"]
