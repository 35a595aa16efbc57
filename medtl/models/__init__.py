"""Backbones, pretrained-weight registry and the task classifier.

Typical use::

    model, report = create_model("resnet50", num_classes=2, weights="resnet50.sin_in")
    apply_bn_gamma(model, {"layer4.*.bn3": 0.0})
    set_trainable(model, "last:2")
    optimizer = torch.optim.SGD(param_groups(model, 1e-4), lr=0.01, momentum=0.9)
"""
from .archs import ArchSpec, build_architecture, get_architecture, list_architectures, register_architecture
from .classifier import ImageClassifier, LoadReport, create_model, load_pretrained, model_for_run
from .tuning import apply_bn_gamma, param_groups, set_trainable
from .weights import (FAMILIES, IMAGENET_MEAN, IMAGENET_STD, WeightSource, adapt_state_dict,
                      cached_file, check_hash, download_url, fetch_weights, get_weights,
                      list_weights, load_state_dict_file, pins_path, read_checkpoint,
                      register_weights, resolve_weights_file, unregister_weights)
from .local_weights import register_local  # also makes the registry see weights made here (medtl pretrain)

__all__ = [
    "ArchSpec", "build_architecture", "get_architecture", "list_architectures", "register_architecture",
    "ImageClassifier", "LoadReport", "create_model", "load_pretrained", "model_for_run",
    "apply_bn_gamma", "param_groups", "set_trainable", "register_local",
    "FAMILIES", "IMAGENET_MEAN", "IMAGENET_STD", "WeightSource", "adapt_state_dict",
    "cached_file", "check_hash", "download_url", "fetch_weights", "get_weights", "list_weights",
    "load_state_dict_file", "pins_path", "read_checkpoint", "register_weights",
    "resolve_weights_file", "unregister_weights",
]
