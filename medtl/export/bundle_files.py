"""What a MONAI bundle of a medtl run holds: ``configs/metadata.json``, ``configs/inference.json``
and ``docs/README.md``, built from the run's facts (:class:`BundleFacts`).  Nothing here touches
the disk or the network; :mod:`medtl.export.monai_bundle` writes the files.

The inference config reproduces medtl's inference path for an image file with MONAI components:
``LoadImaged`` with a ``PILReader`` whose ``converter`` is medtl's decode and resize written as
config expressions (Pillow, the same calls as :func:`medtl.data.images.load_image_resized`:
grayscale, 16-bit and float images min-max scaled, transparency over black, JPEG draft decoding,
then the run's resize (squash, crop or pad; antialiased bilinear, ``reducing_gap=3``) to uint8, then
the run's plain super-resolution resize, if any), ``EnsureChannelFirstd``, ``ScaleIntensityRanged``
(0..255 -> 0..1, as medtl divides by 255) and ``EnsureTyped``; then the network (which normalises
internally), ``Activations`` (softmax, or sigmoid for multi-label runs) and a ``CSVSaver``.  No
MONAI resize transform reproduces Pillow's antialiased resize, hence the reader's converter.
The bundle needs no code of its own and, in its TorchScript form, not medtl either.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

SCHEMA_URL = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
              "meta_schema_20240725.json")
BUNDLE_VERSION = "0.1.0"
PREDICTIONS_CSV = "predictions.csv"
#: what the config's expressions import (MONAI's expressions also see torch, numpy as np, monai)
IMPORTS = ["$import glob", "$import os", "$from PIL import Image"]
IMAGE_SUFFIXES = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"]  # what Pillow decodes (no DICOM)
_PIL_FILTER = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "lanczos": "LANCZOS"}
_HIGH_BIT = "('I;16', 'I;16L', 'I;16B', 'I;16N', 'I', 'F')"  # min-max scaled by medtl's reader
_BILINEAR = "Image.Resampling.BILINEAR"

# the run's resize (medtl.data.images.resize_image) as a config expression, per data.resize
_RESIZE = {
    "squash": ("$lambda im: im if im.size == (@image_size, @image_size) else "
               f"im.resize((@image_size, @image_size), {_BILINEAR}, reducing_gap=3.0)"),
    "crop": ("$lambda im: (lambda s, l, t: im.crop((l, t, l + s, t + s)) if s == @image_size else "
             f"im.resize((@image_size, @image_size), {_BILINEAR}, box=(l, t, l + s, t + s), reducing_gap=3.0))"
             "(min(im.size), (im.size[0] - min(im.size)) // 2, (im.size[1] - min(im.size)) // 2)"),
    "pad": ("$lambda im: (lambda f: @pil_pad_paste(im, max(1, min(@image_size, round(im.size[0] * f))), "
            "max(1, min(@image_size, round(im.size[1] * f)))))(@image_size / max(im.size))"),
}
_PAD_PASTE = ("$lambda im, nw, nh: (lambda inner, canvas: (canvas.paste(inner, ((@image_size - nw) // 2, "
              "(@image_size - nh) // 2)), canvas)[-1])(im if (nw, nh) == im.size else "
              f"im.resize((nw, nh), {_BILINEAR}, reducing_gap=3.0), Image.new(im.mode, (@image_size, @image_size), 0))")


@dataclass
class BundleFacts:
    """What the bundle says about its source run (never a patient identifier: no file names, ids
    or data paths)."""

    run_name: str
    seed: int
    run_id: str | None
    task: str                      # binary | multiclass | multilabel
    classes: list[str]
    backbone: str
    weights: str
    antialias: str
    drop_rate: float
    image_size: int                # decoded side (data.image_size)
    resize: str                    # squash | crop | pad
    input_size: int                # side the network sees (after a plain SR resize)
    sr_interpolation: str | None   # the plain SR resize's filter, None without SR
    threshold: dict | None         # binary: {value, rule, chosen_on}
    temperature: dict | None       # {value, fitted_on, n_val, at_bound}
    dataset: str
    synthetic: bool
    leak_status: str | None
    eval_metrics: dict = field(default_factory=dict)
    medtl_version: str = ""

    @property
    def activation(self) -> str:
        return "sigmoid" if self.task == "multilabel" else "softmax"

    @property
    def positive_class(self) -> str | None:
        return self.classes[1] if self.task == "binary" else None


# ------------------------------------------------------------------------------ inference.json

def preprocessing_items(image_size: int, resize: str, input_size: int, sr_interpolation: str | None) -> dict:
    """The config items of medtl's file preprocessing: the reader's converter (Pillow decode to
    grayscale, the run's resize, uint8, the SR resize) and the ``preprocessing`` transform chain
    (float (1, H, W) in [0, 1] under the key ``image``)."""
    if resize not in _RESIZE:
        raise ValueError(f"unknown resize mode {resize!r}")
    upscale = "$lambda im: im" if sr_interpolation is None else \
        f"$lambda im: im.resize((@input_size, @input_size), Image.Resampling.{_PIL_FILTER[sr_interpolation]})"
    items = {
        "image_size": int(image_size),
        "input_size": int(input_size),
        "resize_mode": resize,
        "pil_open": ("$lambda im: (im.draft('L', (@image_size, @image_size)) if im.format == 'JPEG' else None, "
                     "im.load(), im)[-1]"),
        "pil_minmax": ("$lambda im: (lambda a: Image.fromarray(((a - a.min()) / (a.max() - a.min()) "
                       "if a.max() > a.min() else np.zeros_like(a)).astype(np.float32), 'F'))"
                       "(np.asarray(im, dtype=np.float64))"),
        "pil_gray": (f"$lambda im: im if im.mode == 'L' else @pil_minmax(im) if im.mode in {_HIGH_BIT} else "
                     "Image.alpha_composite(Image.new('RGBA', im.size, (0, 0, 0, 255)), im.convert('RGBA'))"
                     ".convert('L') if im.mode in ('RGBA', 'LA', 'PA') or (im.mode == 'P' and 'transparency' "
                     "in im.info) else im.convert('L')"),
        "pil_resize": _RESIZE[resize],
        "pil_uint8": ("$lambda im: Image.fromarray(np.clip(np.rint(np.asarray(im, dtype=np.float32) * 255.0), "
                      "0, 255).astype(np.uint8), 'L') if im.mode == 'F' else im"),
        "pil_upscale": upscale,
        "pil_converter": "$lambda im: @pil_upscale(@pil_uint8(@pil_resize(@pil_gray(@pil_open(im)))))",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "image_only": True,
             "reader": {"_target_": "PILReader", "converter": "@pil_converter", "reverse_indexing": False}},
            {"_target_": "EnsureChannelFirstd", "keys": "image", "channel_dim": "no_channel"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0.0, "a_max": 255.0,
             "b_min": 0.0, "b_max": 1.0},
            {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32", "track_meta": True},
        ]},
    }
    if resize == "pad":
        items["pil_pad_paste"] = _PAD_PASTE
    return items


def _network_items(facts: BundleFacts, model_format: str) -> dict:
    if model_format == "torchscript":
        return {"network_def": "$torch.jit.load(@bundle_root + '/models/model.ts', map_location='cpu')",
                "network": "$@network_def.to(@device).eval()"}
    return {"network_def": {"_target_": "medtl.export.network.build_network", "backbone": facts.backbone,
                            "num_classes": len(facts.classes), "antialias": facts.antialias,
                            "drop_rate": facts.drop_rate},
            "network": "$@network_def.to(@device).eval()"}


def inference_config(facts: BundleFacts, model_format: str) -> dict:
    """``configs/inference.json``: run it with ``python -m monai.bundle run --config_file ...``."""
    cfg = {
        "imports": list(IMPORTS),
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "dataset_dir": "$@bundle_root + '/input'",
        "output_dir": "$@bundle_root + '/eval'",
        "class_names": list(facts.classes),
        "threshold": None if facts.threshold is None else facts.threshold["value"],
        "positive_class": facts.positive_class,
        "image_suffixes": IMAGE_SUFFIXES,
        "datalist": ("$[{'image': f} for f in sorted(glob.glob(os.path.join(@dataset_dir, '*'))) "
                     "if f.lower().endswith(tuple(@image_suffixes))]"),
        **preprocessing_items(facts.image_size, facts.resize, facts.input_size, facts.sr_interpolation),
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 16, "shuffle": False,
                       "num_workers": 0},
        **_network_items(facts, model_format),
        "inferer": {"_target_": "SimpleInferer"},
        "predict": "$torch.no_grad()(lambda x: @inferer(x.as_tensor().to(@device), @network))",
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activations", facts.activation: True}]},  # sigmoid | softmax
        "saver": {"_target_": "CSVSaver", "output_dir": "@output_dir", "filename": PREDICTIONS_CSV,
                  "overwrite": True},
        "run": [
            "$[@saver.save_batch(torch.stack([@postprocessing(z) for z in @predict(b['image'])]), "
            "{'filename_or_obj': b['image'].meta['filename_or_obj']}) for b in @dataloader]",
            "$@saver.finalize()",
        ],
    }
    if model_format == "state_dict":
        cfg["initialize"] = ["$@network_def.load_state_dict(torch.load(@bundle_root + '/models/model.pt', "
                             "map_location='cpu', weights_only=True))"]
    return cfg


# ------------------------------------------------------------------------------ metadata.json

def calibrated_threshold(threshold: float, temperature: float) -> float:
    """The threshold on temperature-scaled probabilities that makes the same decisions as
    ``threshold`` on the unscaled ones (binary): sigmoid(logit(t) / T)."""
    t = min(max(float(threshold), 1e-12), 1 - 1e-12)
    return 1.0 / (1.0 + math.exp(-math.log(t / (1 - t)) / float(temperature)))


def _weights_text(facts: BundleFacts) -> str:
    return "random initialisation (no pretrained weights)" if facts.weights == "none" else \
        f"{facts.weights} weights"


def _task_text(facts: BundleFacts) -> str:
    names = ", ".join(map(str, facts.classes))
    kind = {"binary": "Binary", "multiclass": "Multi-class", "multilabel": "Multi-label"}[facts.task]
    return f"{kind} classification of X-ray images ({names})"


def _medtl_section(facts: BundleFacts, model_format: str) -> dict:
    temp = None
    if facts.temperature is not None:
        temp = dict(facts.temperature, applied_in_bundle=False)
        if facts.threshold is not None:
            temp["threshold_on_scaled_probabilities"] = calibrated_threshold(facts.threshold["value"],
                                                                             facts.temperature["value"])
    return {
        "exported_by": "medtl export", "medtl_version": facts.medtl_version, "model_format": model_format,
        "run": {"name": facts.run_name, "seed": facts.seed, "run_id": facts.run_id},
        "task": facts.task, "classes": list(facts.classes), "positive_class": facts.positive_class,
        "backbone": facts.backbone, "weights": facts.weights, "antialias": facts.antialias,
        "image_size": facts.image_size, "resize": facts.resize, "input_size": facts.input_size,
        "super_resolution": None if facts.sr_interpolation is None else
        {"method": "resize", "interpolation": facts.sr_interpolation, "size": facts.input_size},
        "threshold": None if facts.threshold is None else
        dict(facts.threshold, applies_to=f"p({facts.positive_class})"),
        "temperature": temp,
        "dataset": facts.dataset, "synthetic": facts.synthetic, "leak_status": facts.leak_status,
        "network_output": f"logits, one per class; probabilities = {facts.activation}(logits), as medtl reports them",
    }


def metadata(facts: BundleFacts, model_format: str, versions: dict[str, str]) -> dict:
    """``configs/metadata.json`` (MONAI bundle metadata; medtl's facts under ``medtl``).
    ``versions``: monai, torch, numpy, pillow."""
    side = facts.input_size
    required = {"monai": versions["monai"], "torch": versions["torch"], "pillow": versions["pillow"]}
    if model_format == "state_dict":
        required["medtl"] = facts.medtl_version
    return {
        "schema": SCHEMA_URL,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported by medtl {facts.medtl_version} from run {facts.run_name} "
                                      f"(seed {facts.seed})"},
        "monai_version": versions["monai"], "pytorch_version": versions["torch"], "numpy_version": versions["numpy"],
        "required_packages_version": required,
        "optional_packages_version": {},
        "name": f"medtl {facts.run_name} seed {facts.seed} ({facts.backbone})",
        "task": _task_text(facts),
        "description": (f"{facts.backbone} ({_weights_text(facts)}) fine-tuned by medtl on {facts.dataset} at "
                        f"{side} px; grayscale image in, {len(facts.classes)} class logits out; the inference "
                        f"config decodes and resizes image files as medtl does and writes {facts.activation} "
                        f"probabilities to a CSV file. The val-chosen operating threshold and the val-fitted "
                        f"temperature are under 'medtl'."),
        "authors": f"medtl run {facts.run_name} (seed {facts.seed}), exported by medtl {facts.medtl_version}",
        "copyright": f"The owner of the medtl run; trained on {facts.dataset} (see that dataset's licence)",
        "data_source": facts.dataset,
        "data_type": "image files decoded by Pillow (PNG, JPEG, BMP, TIFF); DICOM is not read by this bundle",
        "image_classes": (f"single channel (grayscale) image, {facts.resize} resize to {facts.image_size} px"
                          + (f", then {facts.sr_interpolation} upscale to {side} px" if facts.sr_interpolation else "")
                          + ", intensity scaled to [0, 1]"),
        "label_classes": f"{facts.task} labels: " + ", ".join(f"{i} = {c}" for i, c in enumerate(facts.classes)),
        "pred_classes": f"{len(facts.classes)} {facts.activation} probabilities, one per class, in the order "
                        + ", ".join(map(str, facts.classes)),
        "eval_metrics": dict(facts.eval_metrics),
        "intended_use": "Research and method comparison only; not a medical device, not for diagnostic use",
        "references": [],
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "magnitude", "modality": "DX", "num_channels": 1,
                "spatial_shape": [side, side], "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                "channel_def": {"0": "image"}}},
            "outputs": {"pred": {
                "type": "probabilities", "format": "classes", "num_channels": len(facts.classes),
                "spatial_shape": [1, len(facts.classes)], "dtype": "float32", "value_range": [],
                "is_patch_data": False, "channel_def": {str(i): str(c) for i, c in enumerate(facts.classes)}}},
        },
        "medtl": _medtl_section(facts, model_format),
    }


# ------------------------------------------------------------------------------ docs/README.md

def _threshold_lines(facts: BundleFacts) -> list[str]:
    if facts.threshold is None:
        rule = "the largest probability (argmax)" if facts.task == "multiclass" else "each class's own threshold"
        return [f"The run decides by {rule}; medtl chose no single operating threshold."]
    thr = facts.threshold
    return [f"Operating threshold: **{thr['value']!r}** on p({facts.positive_class}) (rule `{thr.get('rule')}`, "
            f"chosen on the run's validation split): call an image {facts.positive_class} when its "
            f"{facts.positive_class} column is >= the threshold."]


def _temperature_lines(facts: BundleFacts) -> list[str]:
    if facts.temperature is None:
        return ["The run carries no fitted temperature."]
    t = facts.temperature["value"]
    bound = " It stopped at the bound of its search range: the range, not the data, set it." \
        if facts.temperature.get("at_bound") else ""
    lines = [f"Temperature: **T = {t:.6g}** (fitted on validation NLL), **not applied** in this bundle.{bound} The CSV "
             "holds the uncalibrated probabilities, the ones medtl reports (its test predictions) and the ones "
             "the operating threshold was chosen on; dividing the logits by T would move the probabilities off "
             "that threshold. For calibrated probabilities compute " + facts.activation + "(logits / T)"
             + (": for this binary run, p_cal = sigmoid(logit(p) / T)." if facts.task == "binary" else ".")]
    if facts.threshold is not None:
        lines.append(f"On calibrated probabilities the same decisions need the threshold "
                     f"{calibrated_threshold(facts.threshold['value'], t)!r} (= sigmoid(logit(threshold) / T)).")
    return lines


def readme(facts: BundleFacts, model_format: str) -> str:
    """``docs/README.md``: what the bundle is, how to run it, the threshold and the temperature."""
    model = ("`models/model.ts` (TorchScript, loaded by the config; medtl is not needed) and `models/model.pt` "
             "(the same weights as a state dict)") if model_format == "torchscript" else \
        ("`models/model.pt`, a state dict loaded into `medtl.export.network.build_network` (medtl must be "
         "installed)")
    sr = f", then a {facts.sr_interpolation} upscale to {facts.input_size} px" if facts.sr_interpolation else ""
    lines = [
        f"# {facts.backbone} fine-tuned by medtl: {_task_text(facts)}", "",
        f"A MONAI bundle exported by `medtl export` (medtl {facts.medtl_version}) from the run "
        f"`{facts.run_name}` (seed {facts.seed}): {facts.backbone}, {_weights_text(facts)}, trained on "
        f"{facts.dataset}" + (" (SYNTHETIC data: a pipeline test, never a result)" if facts.synthetic else "") + ".",
        "Research use only; not a medical device.", "",
        "## Run it", "",
        "```bash",
        "python -m monai.bundle run --config_file BUNDLE/configs/inference.json \\",
        "    --meta_file BUNDLE/configs/metadata.json --bundle_root BUNDLE --dataset_dir IMAGES --output_dir OUT",
        "```", "",
        "MONAI's command line needs python-fire (`pip install fire`; medtl installs it); the same from Python: "
        "`monai.bundle.run(config_file=..., meta_file=..., bundle_root=..., dataset_dir=..., output_dir=...)`.", "",
        f"Every PNG, JPEG, BMP or TIFF file directly in `IMAGES` is scored; DICOM is not read (medtl reads it, this "
        f"bundle does not). `OUT/{PREDICTIONS_CSV}` gets one line per file, no header: the file name, then the "
        f"{facts.activation} probability of each class in the order " + ", ".join(f"`{c}`" for c in facts.classes)
        + ".", "",
        "## What it does", "",
        f"Preprocessing is medtl's for an image file: decode with Pillow to grayscale (16-bit and float images "
        f"min-max scaled, transparency over black, JPEG decoded at reduced size where medtl does), "
        f"{facts.resize} resize to {facts.image_size} px with Pillow's antialiased bilinear filter"
        f"{sr}, scale 0..255 to [0, 1]. The decoding and resizing are Pillow calls written as config "
        "expressions (the `pil_*` items) that `PILReader` runs as its converter, then MONAI transforms; the "
        f"network normalises internally (float (B, 1, {facts.input_size}, {facts.input_size}) in, "
        f"{len(facts.classes)} logits out). Network: {model}.", "",
        "## Operating threshold and temperature", "",
        *_threshold_lines(facts), "",
        *_temperature_lines(facts), "",
        "`configs/metadata.json` holds these facts under `medtl` (backbone, weights, input size, threshold, "
        "temperature, the run's validation and test metrics under `eval_metrics`).", "",
    ]
    return "\n".join(lines)
