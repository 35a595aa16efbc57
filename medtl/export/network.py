"""The network definition a ``state_dict`` bundle names (``network_def`` in its inference config):
the run's architecture with random weights, into which the bundle loads ``models/model.pt``.
A TorchScript bundle does not need it (nor medtl)."""
from __future__ import annotations


def build_network(backbone: str, num_classes: int, antialias: str = "none", drop_rate: float = 0.0):
    """medtl's :class:`~medtl.models.ImageClassifier` for ``backbone`` (plain convolutions, eval
    mode): float (B, 1, H, W) images in [0, 1] in, ``num_classes`` logits out; the normalisation
    (the weights' mean and std) is inside the network, as buffers of the state dict."""
    from ..models import create_model

    model, _ = create_model(backbone, num_classes, weights="none", drop_rate=drop_rate, allow_download=False,
                            trim_convs=False, antialias=antialias)
    return model.eval()
