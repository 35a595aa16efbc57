"""Export a finished run's fine-tuned network for use outside medtl.

    from medtl.export import export_monai_bundle
    export_monai_bundle("runs/quickstart/seed-0", "bundles/quickstart", format="torchscript")

:func:`export_monai_bundle` writes a MONAI bundle (``configs/metadata.json``,
``configs/inference.json``, ``models/model.pt`` and ``model.ts``, ``docs/README.md``) whose
inference config reproduces medtl's preprocessing of an image file and its probabilities.
"""
from .monai_bundle import MODEL_FORMATS, BundleExistsError, export_monai_bundle, is_medtl_bundle

__all__ = ["MODEL_FORMATS", "BundleExistsError", "export_monai_bundle", "is_medtl_bundle"]
