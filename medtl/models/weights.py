"""Pretrained-weight registry, download/cache, hash checks and checkpoint readers.

Registry
    Each :class:`WeightSource` names one real published checkpoint (URL, file name,
    format, normalisation, published ImageNet top-1, paper).  ``medtl weights list``
    prints them; ``model.weights: <name>`` loads one.

Where files are looked for
    ``weights_dir()`` (``$MEDTL_CACHE/weights``) first, then torch.hub's checkpoint folder
    (``$TORCH_HOME/hub/checkpoints``) so files torchvision/timm already fetched are reused.
    Otherwise the file is downloaded into ``weights_dir()``: streamed to a temporary file
    in the same folder, verified, then renamed atomically, so an interrupted or refused
    download never leaves a partial file under the final name.  Setting ``MEDTL_OFFLINE=1``
    disables downloads (like ``allow_download=False``).

Hash policy
    * Full sha256 known (``WeightSource.sha256``): the file must match exactly; otherwise
      it is refused with ``sha256 mismatch``.
    * Only the 8-hex tag of the file name known, torchvision/timm files: these follow
      torch.hub's convention (the tag is the sha256 prefix), so the prefix is verified and
      a mismatch is refused.
    * Geirhos et al. (Stylized-ImageNet) files: whether their tag is a sha256 prefix is
      unconfirmed (their official loader does not check).  A prefix mismatch only warns.
      On the first successful load the file's full sha256 is pinned in
      ``weights_dir()/pins.json`` (written atomically); from then on the file must match
      the pin exactly (trust on first use).  Delete the pin entry to re-pin.
    * torchxrayvision files: no hash published and no tag in the name: pinned on the first
      successful load, as above.

Reading checkpoints
    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(map_location='cpu', weights_only=True)``.  A checkpoint that pickles
    objects other than tensors and plain containers/numbers/strings is refused: medtl
    never unpickles arbitrary objects.  torchxrayvision's files pickle whole modules: their
    module classes are read as inert stand-ins, still under ``weights_only=True``
    (:mod:`medtl.models.module_pickle`).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, WeightsError
from ..fetch import Registry, download_url, offline, transport_reason
from ..io import atomic_path, sha256_file
from ..paths import torch_hub_checkpoints, weights_dir
from ..pins import PinStore

log = logging.getLogger("medtl")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FORMATS = ("torchvision", "geirhos", "timm", "xrv")
#: formats whose file-name tag is a sha256 prefix (torch.hub's convention)
HUB_CONVENTION_FORMATS = ("torchvision", "timm")
FAMILIES = ("IN", "SIN", "SIN+IN", "SIN+IN→IN", "tricks", "CXR")

_HE2016 = "He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016"
_GEIRHOS = ("Geirhos, Rubisch, Michaelis, Bethge, Wichmann, Brendel. ImageNet-trained CNNs are "
            "biased towards texture; increasing shape bias improves accuracy and robustness. "
            "ICLR 2019")
_TRICKS = ("He, Zhang, Zhang, Zhang, Xie, Li. Bag of Tricks for Image Classification with "
           "Convolutional Neural Networks. CVPR 2019")
_RSB = ("Wightman, Touvron, Jégou. ResNet strikes back: An improved training procedure in "
        "timm. arXiv:2110.00476, 2021")
_TV2 = ("Vryniotis. How to Train State-Of-The-Art Models Using TorchVision's Latest "
        "Primitives. PyTorch blog, 2021")
_GEIRHOS_BASE = "https://bitbucket.org/robert_geirhos/texture-vs-shape-pretrained-models/raw/"


@dataclass(frozen=True)
class WeightSource:
    name: str
    arch: str
    url: str
    sha256: str | None  # full hex digest when known
    sha256_prefix: str  # the 8-hex tag in the file name ('' where the name has none)
    filename: str
    format: str  # 'torchvision' | 'geirhos' | 'timm' | 'xrv'
    family: str  # 'IN' | 'SIN' | 'SIN+IN' | 'SIN+IN→IN' | 'tricks' | 'CXR'
    top1: float | None  # published ImageNet-1k top-1 (%)
    citation: str
    notes: str = ""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: tuple[int, int, int] = (3, 224, 224)
    # weights made here (medtl pretrain): recipe, source, size, epochs, seed, medtl version
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"{self.name}: format must be one of {FORMATS}")
        if not re.fullmatch(r"([0-9a-f]{8})?", self.sha256_prefix):
            raise ValueError(f"{self.name}: sha256_prefix must be 8 lowercase hex digits ('' for a file "
                             "name without a hash tag)")
        if self.sha256 is not None:
            if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
                raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits")
            if not self.sha256.startswith(self.sha256_prefix):
                raise ValueError(f"{self.name}: sha256 does not start with sha256_prefix")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


WEIGHTS: Registry[WeightSource] = Registry("weights", lambda name, known: ConfigError(
    f"unknown weights {name!r} (registered: {', '.join(known)}; or give 'none' or a local file path)"))
_REGISTRY = WEIGHTS.entries  # the table itself (tests patch entries in place)


def register_weights(source: WeightSource, overwrite: bool = False) -> WeightSource:
    """Add ``source`` to the registry (used by the built-in table and by tests/plugins)."""
    return WEIGHTS.register(source.name, source, overwrite)


def unregister_weights(name: str) -> None:
    WEIGHTS.unregister(name)


def list_weights(arch: str | None = None) -> list[str]:
    return [s.name for s in WEIGHTS if arch is None or s.arch == arch]


def get_weights(name: str) -> WeightSource:
    return WEIGHTS.get(name)


def _builtin() -> None:
    tv = "https://download.pytorch.org/models/"
    for s in [
        WeightSource(
            "resnet18.tv_in1k", "resnet18", tv + "resnet18-f37072fd.pth",
            "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec", "f37072fd",
            "resnet18-f37072fd.pth", "torchvision", "IN", 69.76, _HE2016,
            "torchvision IMAGENET1K_V1; 46,830,571 bytes"),
        WeightSource(
            "resnet50.tv_in1k", "resnet50", tv + "resnet50-0676ba61.pth", None, "0676ba61",
            "resnet50-0676ba61.pth", "torchvision", "IN", 76.13, _HE2016,
            "torchvision IMAGENET1K_V1 (standard ImageNet recipe)"),
        WeightSource(
            "resnet50.tv2_in1k", "resnet50", tv + "resnet50-11ad3fa6.pth", None, "11ad3fa6",
            "resnet50-11ad3fa6.pth", "torchvision", "tricks", 80.86, _TV2,
            "torchvision IMAGENET1K_V2: label smoothing, mixup, cutmix, cosine LR, warmup, "
            "EMA, long schedule; evaluated with resize 232 / crop 224"),
        WeightSource(
            "resnet50.a1_in1k", "resnet50",
            "https://github.com/rwightman/pytorch-image-models/releases/download/"
            "v0.1-rsb-weights/resnet50_a1_0-14fe96d1.pth", None, "14fe96d1",
            "resnet50_a1_0-14fe96d1.pth", "timm", "tricks", 80.38, _RSB,
            "timm ResNet strikes back A1 recipe (LAMB, BCE loss, 600 epochs); timm resnet50 "
            "parameter names equal torchvision's; evaluated at 288 px, crop 0.95, bicubic"),
        WeightSource(
            "resnet50.sin", "resnet50",
            _GEIRHOS_BASE + "6f41d2e86fc60566f78de64ecff35cc61eb6436f/"
            "resnet50_train_60_epochs-c8e5653e.pth.tar", None, "c8e5653e",
            "resnet50_train_60_epochs-c8e5653e.pth.tar", "geirhos", "SIN", 60.18, _GEIRHOS,
            "model_A: trained on Stylized-ImageNet only; shape bias 81.4%"),
        WeightSource(
            "resnet50.sin_in", "resnet50",
            _GEIRHOS_BASE + "60b770e128fffcbd8562a3ab3546c1a735432d03/"
            "resnet50_train_45_epochs_combined_IN_SF-2a0d100e.pth.tar", None, "2a0d100e",
            "resnet50_train_45_epochs_combined_IN_SF-2a0d100e.pth.tar", "geirhos", "SIN+IN",
            74.59, _GEIRHOS, "model_B: trained on Stylized-ImageNet + ImageNet; shape bias 34.7%"),
        WeightSource(
            "resnet50.sin_in_in", "resnet50",
            _GEIRHOS_BASE + "60b770e128fffcbd8562a3ab3546c1a735432d03/"
            "resnet50_finetune_60_epochs_lr_decay_after_30_start_resnet50_train_45_epochs_"
            "combined_IN_SF-ca06340c.pth.tar", None, "ca06340c",
            "resnet50_finetune_60_epochs_lr_decay_after_30_start_resnet50_train_45_epochs_"
            "combined_IN_SF-ca06340c.pth.tar", "geirhos", "SIN+IN→IN", 76.72, _GEIRHOS,
            "model_C 'Shape-ResNet': SIN+IN, then fine-tuned on ImageNet; shape bias 20.5%"),
        WeightSource(
            "resnet50d.gluon_in1k", "resnet50d",
            "https://github.com/rwightman/pytorch-pretrained-gluonresnet/releases/download/"
            "v0.1/gluon_resnet50_v1d-818a1b1b.pth", None, "818a1b1b",
            "gluon_resnet50_v1d-818a1b1b.pth", "timm", "tricks", 79.08, _TRICKS,
            "GluonCV ResNet-50 v1d (the Bag of Tricks paper's own model), timm port; "
            "timm resnet50d parameter names; evaluated bicubic, crop 0.875"),
        WeightSource(
            "densenet121.tv_in1k", "densenet121", tv + "densenet121-a639ec97.pth", None, "a639ec97",
            "densenet121-a639ec97.pth", "torchvision", "IN", 74.43, _HUANG2017,
            "torchvision IMAGENET1K_V1 (acc@1 74.434); legacy 'norm.1'-style layer keys, renamed "
            "as torchvision's own loader does; 32,342,954 bytes"),
        WeightSource(
            "densenet121.ra_in1k", "densenet121",
            "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
            "densenet121_ra-50efcf5c.pth", None, "50efcf5c",
            "densenet121_ra-50efcf5c.pth", "timm", "tricks", 75.56, _HUANG2017,
            "timm RandAugment recipe ('ra'; hub copy timm/densenet121.ra_in1k); torchvision's "
            "tensor names; evaluated bicubic, crop 0.875; 32,376,726 bytes"),
        *_xrv_densenets(),
    ]:
        register_weights(s)


_HUANG2017 = ("Huang, Liu, van der Maaten, Weinberger. Densely Connected Convolutional Networks. "
              "CVPR 2017")
_XRV = ("Cohen, Viviano, Bertin, Morrison, Torabian, Guarrera, Lungren, Chaudhari, Brooks, Hashir, "
        "Bertrand. TorchXRayVision: A library of chest X-ray datasets and models. MIDL 2022; "
        "Cohen, Hashir, Brooks, Bertrand. On the limits of cross-domain generalization in automated "
        "X-ray prediction. MIDL 2020")
#: torchxrayvision's input scale: [0, 1] -> [-1024, 1024] (its ``normalize(img, maxval)``)
XRV_MEAN, XRV_STD = (0.5, 0.5, 0.5), (1 / 2048, 1 / 2048, 1 / 2048)


def _xrv_densenets() -> list[WeightSource]:
    """torchxrayvision's chest X-ray DenseNet-121s (``xrv.models.DenseNet(weights=
    "densenet121-res224-<tag>")``), from its GitHub release v1: 1-channel 224 px input scaled to
    [-1024, 1024], 18 pathology outputs (the head is dropped).  The files pickle the whole module
    (read tensors-only: :mod:`medtl.models.module_pickle`) and publish no hash: the sha256 of the
    first successful load is pinned."""
    base = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
    tail = "-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
    trained_on = {
        "all": ("nih-pc-chex-mimic_ch-google-openi-kaggle", "NIH, PadChest, CheXpert, MIMIC-CXR, Google, "
                "OpenI and RSNA (densenet121-res224-all)"),
        "nih": ("nih", "NIH ChestX-ray14 (densenet121-res224-nih)"),
        "pc": ("pc", "PadChest (densenet121-res224-pc)"),
        "chex": ("chex", "CheXpert (densenet121-res224-chex)"),
        "rsna": ("kaggle", "the RSNA Pneumonia Challenge (densenet121-res224-rsna)"),
        "mimic_nb": ("mimic_nb", "MIMIC-CXR, NegBio labels (densenet121-res224-mimic_nb)"),
        "mimic_ch": ("mimic_ch", "MIMIC-CXR, CheXpert labels (densenet121-res224-mimic_ch)"),
    }
    return [WeightSource(
        f"densenet121.xrv_{tag}", "densenet121", base + stem + tail, None, "", stem + tail, "xrv", "CXR",
        None, _XRV, f"torchxrayvision, trained on {what}; 1-channel conv0 spread over RGB (exact on "
        "grayscale input)", mean=XRV_MEAN, std=XRV_STD, input_size=(1, 224, 224))
        for tag, (stem, what) in trained_on.items()]


_builtin()


# ------------------------------------------------------------------ hash policy and pins

_PINS = PinStore(lambda: weights_dir() / "pins.json", WeightsError)


def pins_path() -> Path:
    return _PINS.path


def read_pins() -> dict[str, dict[str, str]]:
    return _PINS.read()


def pinned_sha256(source: WeightSource) -> str | None:
    return _PINS.pinned(source.name, source.url)


def record_pin(source: WeightSource, sha: str) -> bool:
    """Pin ``sha`` for a source without a known full hash; returns True if newly written."""
    if source.sha256 is not None or pinned_sha256(source) is not None:
        return False
    _PINS.record(source.name, source.url, source.filename, sha)
    log.info("pinned sha256 %s for %s in %s", sha, source.name, pins_path())
    return True


def check_hash(source: WeightSource, sha: str, where: str | os.PathLike) -> None:
    """Apply the hash policy (module docstring) to a file whose sha256 is ``sha``."""
    where = str(where)
    if source.sha256 is not None:
        if sha != source.sha256:
            raise WeightsError(f"{where}: sha256 mismatch for {source.name}: expected "
                               f"{source.sha256}, got {sha}")
        return
    pin = pinned_sha256(source)
    if pin is not None:
        if sha != pin:
            raise WeightsError(f"{where}: sha256 mismatch for {source.name}: expected {pin} "
                               f"(pinned in {pins_path()}), got {sha}")
        return
    if not source.sha256_prefix:  # nothing published to check: pinned on the first successful load
        log.info("%s: %s publishes no hash; sha256 %s will be pinned on first successful load",
                 where, source.name, sha)
        return
    if sha.startswith(source.sha256_prefix):
        return
    if source.format in HUB_CONVENTION_FORMATS:
        raise WeightsError(f"{where}: sha256 mismatch for {source.name}: expected prefix "
                           f"{source.sha256_prefix} (torch.hub file-name convention), got {sha}")
    log.warning("%s: sha256 %s does not start with the file-name tag %s of %s (for these files "
                "the tag is not known to be a sha256 prefix); the hash will be pinned on first "
                "successful load", where, sha, source.sha256_prefix, source.name)


def matching_source(sha: str) -> WeightSource | None:
    """The registry entry a file with this sha256 is known to be (full hash, pin or hub prefix)."""
    for s in WEIGHTS:
        if s.sha256 is not None:
            if s.sha256 == sha:
                return s
            continue
        pin = pinned_sha256(s)
        if pin is not None:
            if pin == sha:
                return s
            continue
        if s.format in HUB_CONVENTION_FORMATS and s.sha256_prefix and sha.startswith(s.sha256_prefix):
            return s
    return None


# ------------------------------------------------------------------ files and downloads

def cached_file(source: WeightSource) -> Path | None:
    for folder in (weights_dir(), torch_hub_checkpoints()):
        p = folder / source.filename
        if p.is_file():
            return p
    return None


def _fetch_hint(source: WeightSource) -> str:
    return f"put the file at {weights_dir() / source.filename}, or copy in a verified local file"


def _download(source: WeightSource) -> Path:
    dest = weights_dir() / source.filename
    log.info("downloading %s from %s to %s", source.name, source.url, dest)
    try:
        download_url(source.url, dest,
                     verify=lambda sha, tmp: _validate(source, sha, tmp, source.url))
    except WeightsError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot download {source.url} ({transport_reason(exc)}); {_fetch_hint(source)}",
                           fetch=("weights", source.name)) from None
    return dest


def resolve_weights_file(source: WeightSource, allow_download: bool = True) -> Path:
    """Path of the verified weight file for ``source``: cached, or downloaded now."""
    p = cached_file(source)
    if p is not None:
        check_hash(source, sha256_file(p), p)
        return p
    if not allow_download or offline():
        raise WeightsError(f"{source.name}: {source.filename} is not in {weights_dir()} or "
                           f"{torch_hub_checkpoints()} and downloads are off; {_fetch_hint(source)}",
                           fetch=("weights", source.name))
    return _download(source)


def fetch_weights(name: str, from_path: str | os.PathLike | None = None) -> Path:
    """Put the weights ``name`` into the cache (download, or copy a verified local file)."""
    source = get_weights(name)
    if from_path is None:
        path = resolve_weights_file(source, allow_download=True)
        sha = sha256_file(path)
        _validate(source, sha, path, path)
    else:
        src = Path(from_path).expanduser()
        if not src.is_file():
            raise WeightsError(f"{src}: file not found")
        path = weights_dir() / source.filename
        if src.resolve() == path.resolve():
            sha = sha256_file(path)
            _validate(source, sha, path, path)
        else:
            with atomic_path(path) as tmp:
                shutil.copyfile(src, tmp)
                sha = sha256_file(tmp)
                _validate(source, sha, tmp, src)
    record_pin(source, sha)
    log.info("weights %s ready at %s", name, path)
    return path


def _validate(source: WeightSource, sha: str, path: Path, where: str | os.PathLike) -> None:
    """Hash policy, then check the file loads in the source's format (before it is cached)."""
    check_hash(source, sha, where)
    try:
        state = load_state_dict_file(path, source.format, source.arch,
                                     safetensors=source.filename.endswith(".safetensors"))
    except WeightsError as exc:
        # name the user's file / URL rather than a temporary path
        msg = str(exc).replace(str(path), str(where), 1)
        if not sha.startswith(source.sha256_prefix):
            # an unpinned file whose hash does not even match the file-name tag and that does
            # not load: almost certainly the wrong bytes, so say so first
            msg = (f"{where}: sha256 mismatch for {source.name}: got {sha}, not the file-name tag "
                   f"{source.sha256_prefix}, and the file does not load: "
                   + msg.split(": ", 1)[-1])
        raise WeightsError(msg) from None
    if not state:
        raise WeightsError(f"{where}: no tensors found in the checkpoint")


# ------------------------------------------------------------------ reading checkpoints

def read_checkpoint(path: str | os.PathLike, safetensors: bool | None = None) -> Any:
    """The raw object stored in a checkpoint (safetensors or torch.load weights_only).

    ``safetensors=None`` decides by the ``.safetensors`` suffix.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: file not found")
    if safetensors is None:
        safetensors = path.suffix == ".safetensors"
    if safetensors:
        try:
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            msg = " ".join(str(exc).split())[:200]
            raise WeightsError(f"{path}: cannot read safetensors file (corrupt or truncated?): "
                               f"{msg}") from None
    import pickle

    raw = _raw_pickle_objects(path)  # before torch.load, which would only fail (and warn) on it
    if raw is not None:
        raise WeightsError(f"{path}: refused: unsafe: a raw Python pickle, not a torch checkpoint"
                           + (f" (it would create {', '.join(raw[:4])})" if raw else "")
                           + "; pickled objects are not loaded (weights_only=True)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = sorted(set(re.findall(r"GLOBAL ([\w.]+)", text)))
        if found:
            xrv = any(n.startswith("torchxrayvision.") for n in found)
            raise WeightsError(f"{path}: refused: the checkpoint pickles objects that are not "
                               f"plain tensors ({', '.join(found)}); medtl loads weights only "
                               "with weights_only=True" + ("; a torchxrayvision DenseNet file loads by its "
                                                           "registry name (densenet121.xrv_*)" if xrv else "")
                               ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\n\n", text, re.S)
        msg = " ".join((detail.group(1) if detail else text).split())[:200]
        raise WeightsError(f"{path}: not a readable checkpoint (corrupt or truncated?): "
                           f"{msg}") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError,
            AttributeError, TypeError, UnicodeDecodeError) as exc:
        msg = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise WeightsError(f"{path}: not a readable checkpoint (corrupt or truncated?): "
                           f"{msg}") from None


_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."  # pickled magic number of torch's old format


def _raw_pickle_objects(path: Path) -> list[str] | None:
    """The globals a raw pickle (not a torch zip or legacy file) would import, [] for none;
    None when the file is not a raw pickle.  Read with pickletools: nothing is executed."""
    import pickletools
    import zipfile

    if zipfile.is_zipfile(path):
        return None
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return None
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(head):
            if isinstance(arg, str):
                strings.append(arg)
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                names.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            if op.name == "STOP":
                return sorted(set(names))
    except Exception:  # noqa: BLE001 - not a pickle (or cut short): not this case
        return None
    return None


_WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "net")


def _strip_prefix(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def _tensors_only(sd: Mapping[str, Any], where: str) -> dict[str, torch.Tensor]:
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{where}: expected a state_dict of tensors, found non-tensor entries "
                           f"(e.g. {', '.join(map(str, bad[:3]))})")
    return dict(sd)


_DENSE_LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var"
                           r"|num_batches_tracked))$")


def _densenet_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's published DenseNet files name dense-layer tensors ``norm.1``/``conv.2`` (dots
    are no longer allowed in module names); renamed to ``norm1``/``conv2`` as torchvision's and
    timm's loaders do (their pattern, plus ``num_batches_tracked``, which the 2017 files lack)."""
    out = {}
    for k, v in sd.items():
        m = _DENSE_LEGACY.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def adapt_state_dict(obj: Any, fmt: str, arch: str | None = None,
                     where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Turn a checkpoint object of format ``fmt`` into a flat state_dict for ``arch``.

    ``torchvision`` and ``timm``: a plain state_dict (timm's resnet50 and densenet121 use
    torchvision's names; resnet50d uses timm's own; DenseNet legacy keys renamed).  ``xrv``: the
    flattened torchxrayvision module (:mod:`medtl.models.module_pickle`), ``op_threshs`` dropped.  ``geirhos``: ``{'state_dict': {'module.…': …},
    'epoch', 'arch', 'optimizer', …}`` from DataParallel training.  ``auto``: unwrap
    'state_dict'/'model'/'model_state'/… and strip a ``module.`` prefix.
    """
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{where}: expected a dict checkpoint, got {type(obj).__name__}")
    if fmt in ("torchvision", "timm"):
        return _densenet_keys(_tensors_only(obj, where))
    if fmt == "xrv":  # a pickled torchxrayvision module, flattened; its op_threshs are outputs' facts
        sd = _tensors_only(_strip_prefix(obj, "module."), where)
        return _densenet_keys({k: v for k, v in sd.items() if k != "op_threshs"})
    if fmt == "geirhos":
        sd = obj.get("state_dict")
        if not isinstance(sd, Mapping):
            raise WeightsError(f"{where}: expected a Geirhos et al. checkpoint (a dict with "
                               "'state_dict'), found keys " + ", ".join(map(str, list(obj)[:5])))
        ck_arch = obj.get("arch")
        if arch is not None and isinstance(ck_arch, str) and ck_arch != arch:
            raise WeightsError(f"{where}: checkpoint is for {ck_arch!r}, not {arch!r}")
        return _tensors_only(_strip_prefix(sd, "module."), where)
    if fmt == "auto":
        cur: Any = obj
        for _ in range(3):
            inner = next((cur[k] for k in _WRAPPER_KEYS
                          if isinstance(cur.get(k), Mapping) and cur[k]), None)
            if inner is None:
                break
            cur = inner
        sd = {k: v for k, v in cur.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if not sd:
            raise WeightsError(f"{where}: no tensors found in the checkpoint "
                               f"(top-level keys: {', '.join(map(str, list(obj)[:6]))})")
        for prefix in ("module.", "model.", "backbone."):
            sd = _strip_prefix(sd, prefix)
        return _densenet_keys(sd)
    raise ConfigError(f"unknown weights format {fmt!r} (valid: auto, {', '.join(FORMATS)})")


def load_state_dict_file(path: str | os.PathLike, fmt: str = "auto", arch: str | None = None,
                         safetensors: bool | None = None) -> dict[str, torch.Tensor]:
    """Read ``path`` safely and adapt it (see :func:`adapt_state_dict`) to a flat state_dict."""
    if fmt == "xrv":
        from .module_pickle import read_module_checkpoint

        return adapt_state_dict(read_module_checkpoint(path), fmt, arch, where=str(path))
    return adapt_state_dict(read_checkpoint(path, safetensors), fmt, arch, where=str(path))

