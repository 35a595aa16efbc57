"""Write a finished run's fine-tuned network as a MONAI bundle (``medtl export --format monai-bundle``).

The bundle (standard MONAI layout)::

    configs/metadata.json    MONAI metadata; medtl's facts (threshold, temperature, ...) under "medtl"
    configs/inference.json   decode + resize as medtl does, the network, softmax, predictions.csv
    models/model.pt          the weights as a state dict (medtl's ImageClassifier, plain convolutions)
    models/model.ts          TorchScript (format "torchscript"; the config loads it; MONAI's metadata
                             embedded as extra files)
    docs/README.md           what it is, how to run it, the threshold and the temperature

It is written into a temporary folder next to the output folder and renamed into place: a reader
never sees half a bundle, and a failed export leaves nothing behind.  An existing non-empty output
folder is refused unless ``force``, and even then only a bundle medtl exported is replaced.
"""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import uuid
import warnings
from pathlib import Path

from ..errors import ConfigError, DataError
from .bundle_files import BundleFacts, inference_config, metadata, readme

log = logging.getLogger("medtl")

MODEL_FORMATS = ("torchscript", "state_dict")
METADATA, INFERENCE, README = "configs/metadata.json", "configs/inference.json", "docs/README.md"
MODEL_PT, MODEL_TS = "models/model.pt", "models/model.ts"
_METRIC_KEYS = ("auc", "acc", "sensitivity", "specificity", "ece", "n")
_TRACE_TOLERANCE = 1e-4


class BundleExistsError(ConfigError):
    """The output folder already holds a bundle medtl exported, and replacing it was not asked for."""


def export_monai_bundle(run_dir: str | Path, out_dir: str | Path, *, format: str = "torchscript",  # noqa: A002
                        force: bool = False) -> Path:
    """Write the MONAI bundle of the finished run ``run_dir`` into ``out_dir``; returns ``out_dir``.

    ``format``: ``torchscript`` (``models/model.ts``, which the inference config loads; the bundle
    then runs without medtl) or ``state_dict`` (the config builds the network with medtl and loads
    ``models/model.pt``).  ``models/model.pt`` is written in both cases.  ``force`` replaces an
    earlier bundle medtl exported into ``out_dir``; any other non-empty folder is refused."""
    if format not in MODEL_FORMATS:
        raise ConfigError(f"format must be one of {', '.join(MODEL_FORMATS)} (got {format!r})")
    out = Path(out_dir)
    _check_run_dir(run_dir)
    _check_out(out, force, Path(run_dir))
    from ..models.inference import load_finished

    # plain convolutions: the trimmed ones of medtl.models.fastconv are specialised per input size
    # in Python, which a traced TorchScript graph would freeze (same weights and state-dict keys)
    fm = load_finished(run_dir, "cpu", plain_conv=True)
    if len(fm.classes) < 2:
        raise DataError(f"{fm.path}: its run record lists no class names; not a finished medtl run folder")
    run, cfg = fm.run, fm.cfg
    facts = _facts(run, cfg, fm.record)
    files = _bundle_files(fm.model, facts, format)
    _write_folder(out, files)
    log.info("exported %s as a MONAI bundle (%s) to %s", run.path, format, out)
    return out


# ------------------------------------------------------------------------------ the run's facts

def _facts(run, cfg, m) -> BundleFacts:
    from .. import __version__
    from ..data.upscale import output_side
    from ..runs import read_marker

    sr = cfg.data.sr
    if sr.method == "learned":
        raise ConfigError(f"{run.path}: the run feeds its network images upscaled by a learned super-resolution "
                          f"model (data.sr.method: learned); a bundle of the classifier alone cannot reproduce "
                          f"that input")
    threshold = None
    if m.task == "binary":
        threshold = {"value": m.decision_threshold, "rule": m.threshold.rule, "chosen_on": m.threshold.chosen_on}
    temperature = None
    if m.temperature is not None:
        cal = m.calibration.as_dict()
        temperature = {"value": float(m.temperature), "fitted_on": cal.get("fitted_on", "val"),
                       "n_val": cal.get("n_val"), "at_bound": cal.get("at_bound")}
    return BundleFacts(
        run_name=str(m.run.name or cfg.name), seed=int(m.run.seed),
        run_id=(read_marker(run.path) or {}).get("run_id"), task=m.task, classes=[str(c) for c in m.classes],
        backbone=cfg.model.backbone, weights=_weights_name(cfg.model.weights), antialias=cfg.model.antialias,
        drop_rate=float(cfg.model.drop_rate), image_size=int(cfg.data.image_size), resize=cfg.data.resize,
        input_size=int(output_side(cfg.data)), sr_interpolation=sr.interpolation if sr.method == "resize" else None,
        threshold=threshold, temperature=temperature, dataset=str(m.run.dataset or "unknown dataset"),
        synthetic=bool(m.run.synthetic), leak_status=m.leak_status,
        eval_metrics=_eval_metrics(m), medtl_version=__version__)


def _weights_name(weights: str) -> str:
    """A registry name as is; a local weights file by its file name only (no local paths)."""
    w = (weights or "none").strip()
    return f"file {Path(w).name}" if ("/" in w or os.sep in w) else w


def _eval_metrics(m) -> dict:
    out = {}
    for split in ("val", "test"):
        section = getattr(m, split)
        for k in _METRIC_KEYS:
            v = section.at(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
                out[f"{split}_{k}"] = v
    return out


# ------------------------------------------------------------------------------ the files

def _versions() -> dict[str, str]:
    """Installed versions (MONAI's without importing it: the export does not need it, a bundle run does)."""
    from importlib.metadata import PackageNotFoundError, version

    import numpy
    import PIL
    import torch

    try:
        monai = version("monai")
    except PackageNotFoundError:
        raise ConfigError("MONAI is not installed (pip install monai); a bundle names the MONAI version it "
                          "was made for") from None
    return {"monai": monai, "torch": torch.__version__.split("+")[0], "numpy": numpy.__version__,
            "pillow": PIL.__version__}


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode("utf-8")


def _bundle_files(model, facts: BundleFacts, model_format: str) -> dict[str, bytes]:
    """Every file of the bundle (relative path -> bytes), built in memory."""
    import torch

    meta = metadata(facts, model_format, _versions())
    infer = inference_config(facts, model_format)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    files = {METADATA: _json_bytes(meta), INFERENCE: _json_bytes(infer),
             README: readme(facts, model_format).encode("utf-8"), MODEL_PT: buf.getvalue()}
    if model_format == "torchscript":
        files[MODEL_TS] = _torchscript(model, facts.input_size, meta, {"inference.json": files[INFERENCE]})
    return files


def _torchscript(model, side: int, meta: dict, extra: dict[str, bytes]) -> bytes:
    """The traced network, checked against the network on another batch size, saved with the
    bundle's metadata as the extra file ``metadata.json`` (what MONAI's ``save_net_with_metadata``
    writes and ``load_net_with_metadata`` reads; done here without importing MONAI, which is slow)."""
    import torch

    g = torch.Generator().manual_seed(0)
    example, probe = torch.rand(1, 1, side, side, generator=g), torch.rand(3, 1, side, side, generator=g)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on the constant input checks; jit's deprecation notice
        traced = torch.jit.trace(model, example, check_trace=False)
        err = float((traced(probe) - model(probe)).abs().max())
        if not err <= _TRACE_TOLERANCE:
            raise DataError(f"the traced network differs from the run's network by {err:.2g} (tolerance "
                            f"{_TRACE_TOLERANCE:g}); export the state dict format instead")
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={"metadata.json": json.dumps(meta).encode("utf-8"), **extra})
    return buf.getvalue()


# ------------------------------------------------------------------------------ the output folder

def is_medtl_bundle(path: str | Path) -> bool:
    """True when ``path`` holds a bundle medtl exported (its metadata names medtl as exporter)."""
    try:
        meta = json.loads((Path(path) / METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("medtl"), dict) and \
        meta["medtl"].get("exported_by") == "medtl export"


def _check_run_dir(run_dir: str | Path) -> None:
    if not Path(run_dir).is_dir():
        raise DataError(f"{run_dir}: no such run folder")


def _check_out(out: Path, force: bool, run_dir: Path) -> None:
    """Refuse what must not be written over, before any work is done."""
    try:
        inside = out.resolve().is_relative_to(run_dir.resolve())
    except OSError:
        inside = False
    if inside:
        raise ConfigError(f"{out}: is inside the run folder {run_dir}; write the bundle elsewhere "
                          f"(a run folder holds only what medtl writes there)")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"{out}: exists and is not a folder; choose another output folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{out}: {parent} is not a folder; choose another output folder")
            break
    if out.is_dir() and any(out.iterdir()):
        if not is_medtl_bundle(out):
            raise ConfigError(f"{out}: is not empty and is not a bundle medtl exported; it is not replaced "
                              f"(choose a new or empty output folder)")
        if not force:
            raise BundleExistsError(f"{out}: already holds a bundle medtl exported; choose a new or empty "
                                    f"output folder")


def _make_parents(folder: Path, created: list[Path]) -> None:
    """Create ``folder`` and its missing parents, outermost first, each appended to ``created``."""
    for p in [p for p in [folder, *folder.parents] if not p.exists()][::-1]:
        p.mkdir()
        created.append(p)


def _write_folder(out: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a temporary folder next to ``out``, then rename it to ``out`` (an
    earlier bundle there is replaced only once the new one is complete)."""
    created: list[Path] = []
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        _make_parents(out.parent, created)
        tmp.mkdir()
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        _swap_in(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in reversed(created):
            try:
                p.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError):
            raise ConfigError(f"{out}: cannot write the bundle ({exc.strerror or type(exc).__name__})") from None
        raise


def _swap_in(tmp: Path, out: Path) -> None:
    if not out.exists() or not any(out.iterdir()):
        os.rename(tmp, out)  # POSIX rename replaces an empty folder
        return
    old = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.old"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)  # put the earlier bundle back
        raise
    shutil.rmtree(old, ignore_errors=True)
