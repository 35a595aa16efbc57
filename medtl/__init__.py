"""medtl: decide, with evidence, which pretrained backbone to fine-tune for an X-ray task."""
__version__ = "0.1.0"
