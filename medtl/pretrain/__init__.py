"""Source backbones made here: ``medtl pretrain`` on formula-driven fractals (``builtin:fractaldb``)
or a labelled image folder, by the IN, SIN, SIN+IN, SIN+IN→IN and Bag-of-Tricks recipes, each
registered as a weight source (:mod:`medtl.models.local_weights`)."""
from .recipes import FAMILY, RECIPES
from .run import PretrainConfig, PretrainSpec, load_pretrain_config, pretrain

__all__ = ["FAMILY", "PretrainConfig", "PretrainSpec", "RECIPES", "load_pretrain_config", "pretrain"]
