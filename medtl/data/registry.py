"""Public datasets by name: ``data.path: medmnist:pneumoniamnist`` instead of a local path.

Registry
    Each :class:`DatasetSource` names one published file: its URL, the checksum its
    publisher gives (and the algorithm: MedMNIST publishes MD5), the licence, the citation,
    the archive format, and what medtl reads after fetching (``target``: the ``.npz`` as is,
    or the folder a ``.zip`` extracts to).  ``medtl data list`` prints the registry.

Cache
    ``datasets_dir()`` (``$MEDTL_CACHE/datasets``) holds one folder per name,
    ``<prefix>/<id>/`` (``medmnist/pneumoniamnist/``), with the ``target`` and a record,
    ``medtl-dataset.json``, written last and atomically: a name counts as fetched only when
    its record and target exist.  Downloads stream to a temporary file beside the target and
    are verified before the rename; a zip is extracted into a temporary folder inside the
    entry folder and renamed into place after its layout is checked (members with absolute
    paths, ``..``, backslashes, drive letters or symlinks refuse the whole archive), then
    the zip is deleted (its hashes stay in the record).

Checksum policy
    * Published checksum (``checksum_algo`` 'md5' or 'sha256'): the bytes must match, else
      they are refused with one line naming the file, the expected and the actual hash.
    * No published checksum (``checksum_algo`` None): the sha256 of the first fetched file
      is pinned in ``datasets_dir()/pins.json`` (trust on first use, as for the Geirhos
      weights); later fetches must match the pin.  Such copies are reported as 'pinned',
      never as 'verified'.
    * ``unofficial=True`` keeps bytes that do not match (a reconstruction, a resized copy,
      a folder that cannot be checked) as an *unofficial* copy: never pinned, recorded with
      its own sha256, and every dataset bundle loaded from it carries a note saying so.

Published folders (``archive`` 'folder', ``layout`` 'manifest')
    Datasets medtl does not download (credentialed, registration, or many-part releases:
    ``access``): ``fetch_dataset(name, from_path=DIR)`` checks that DIR holds the
    ``official_files``, verifies them against the publisher's checksum list shipped inside the
    layout (``checksums_file``, PhysioNet's SHA256SUMS.txt) or else pins their sha256 at the first
    fetch, and records DIR (nothing is copied); ``reader`` (:mod:`medtl.data.public`) reads the
    published layout into a file plan.

Environment override
    ``MEDTL_DATASET_<NAME>`` (the name upper-cased, every run of other characters turned
    into ``_``: ``MEDTL_DATASET_MEDMNIST_PNEUMONIAMNIST``, ``MEDTL_DATASET_KERMANY_CHEST_XRAY``)
    points a name at a local file or folder in the form medtl reads (the ``.npz``; the
    extracted folder), bypassing the cache; nothing is copied or downloaded.  Files with a
    published checksum are still hashed and the bundle notes say whether they match.
"""
from __future__ import annotations

import calendar
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.error
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from ..errors import DataError
from ..fetch import Registry, download_url, offline, transport_reason
from ..io import file_digests as _digests, write_json_atomic
from ..paths import cache_root
from ..pins import PinStore
from . import public

RECORD_FILE = "medtl-dataset.json"
ENV_PREFIX = "MEDTL_DATASET_"
ARCHIVES = ("file", "zip", "folder")
LAYOUTS = ("npz", "folder", "manifest")
#: access terms: open download | free registration and accepting terms | credentialed (data use agreement)
ACCESS = ("open", "registration", "credentialed")
CHECKSUM_ALGOS = ("md5", "sha256")
#: status of a fetched copy
OFFICIAL, PINNED, UNOFFICIAL = "official", "pinned", "unofficial"

_NAME_RE = re.compile(r"^(?:([a-z][a-z0-9_]+):)?([a-z0-9][a-z0-9_.\-]*)$")  # 'prefix:id' or a bare 'id

_MEDMNIST_CITE = ("Yang, Shi, Wei, Liu, Zhao, Ke, Pfister, Ni. MedMNIST v2 - A large-scale lightweight "
                  "benchmark for 2D and 3D biomedical image classification. Scientific Data 10, 41 (2023), "
                  "doi:10.1038/s41597-022-01721-8")
_KERMANY_DATA = ("Kermany, Zhang, Goldbaum. Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images "
                 "for Classification. Mendeley Data, V2 (2018), doi:10.17632/rscbjbr9sj.2")
_KERMANY_PAPER = ("Kermany et al. Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep "
                  "Learning. Cell 172(5):1122-1131 (2018), doi:10.1016/j.cell.2018.02.010")
#: provenance of PneumoniaMNIST's splits (README "Leaks"; Kermany's published split: medtl counts 170
#: patients shared between its train and test)
_PNEUMONIAMNIST_OVERLAP = (
    "PneumoniaMNIST is derived from Kermany et al.'s chest X-rays (doi:10.17632/rscbjbr9sj.2) and its test "
    "split is Kermany's test split, which shares about 170 patients with Kermany's train split, so its test "
    "split very likely shares patients with its train split; this cannot be counted because the .npz names "
    "no patients")
_MEDMNIST_INFO = "MedMNIST's own package, medmnist/info.py INFO['pneumoniamnist'] (v3.0.2; the 28 px MD5 also in v2.1.0)"


@dataclass(frozen=True)
class DatasetSource:
    name: str               # 'prefix:id'
    title: str
    url: str                # the published download URL
    filename: str           # the published file's name
    archive: str            # 'file': used as is | 'zip': extracted
    layout: str             # what medtl reads: 'npz' | 'folder'
    target: str             # the file or folder inside the entry folder that medtl reads
    checksum_algo: str | None   # 'md5' | 'sha256' | None: no published checksum (pin on first fetch)
    checksum: str | None
    checksum_source: str    # where the checksum, or its absence, is documented
    licence: str
    citation: str
    homepage: str
    notes: str = ""
    #: class folders the extracted target must hold (archive 'zip' / layout 'folder')
    classes: tuple[str, ...] = field(default_factory=tuple)
    #: known provenance that medtl cannot count from the data: one sentence naming the source
    #: (e.g. test patients very likely shared with train); recorded as ``known_overlap`` in the
    #: leak record of every run on this dataset, with a ``WARNING:`` data note
    known_overlap: str = ""
    #: 'open' | 'registration' | 'credentialed' (ACCESS)
    access: str = "open"
    #: layout 'manifest': files (relative to the dataset root; 'a|b' for alternatives) the published
    #: layout must contain; checked by a fetch from a local folder
    official_files: tuple[str, ...] = field(default_factory=tuple)
    #: layout 'manifest': a checksum list the publisher ships inside the layout (PhysioNet's
    #: SHA256SUMS.txt: 'sha256 path' lines), used to verify ``official_files``
    checksums_file: str = ""
    #: layout 'manifest': ``reader(root, data_config) -> FilePlan`` (medtl.data.public)
    reader: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name) or self.name.startswith("builtin:"):
            raise ValueError(f"{self.name!r}: a dataset name is 'prefix:id' or 'id' in lower case")
        if self.access not in ACCESS:
            raise ValueError(f"{self.name}: access must be one of {ACCESS}")
        if (self.layout == "manifest") != (self.archive == "folder"):
            raise ValueError(f"{self.name}: layout 'manifest' goes with archive 'folder' (a published folder)")
        if self.layout == "manifest" and (self.reader is None or not self.official_files):
            raise ValueError(f"{self.name}: a manifest layout needs a reader and its official_files")
        if self.archive not in ARCHIVES:
            raise ValueError(f"{self.name}: archive must be one of {ARCHIVES}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.name}: layout must be one of {LAYOUTS}")
        if (self.checksum_algo is None) != (self.checksum is None):
            raise ValueError(f"{self.name}: give checksum and checksum_algo together (or neither)")
        if self.checksum_algo is not None:
            n = {"md5": 32, "sha256": 64}.get(self.checksum_algo)
            if n is None or not re.fullmatch(f"[0-9a-f]{{{n}}}", self.checksum or ""):
                raise ValueError(f"{self.name}: checksum must be {n or '?'} lowercase hex digits of "
                                 f"one of {CHECKSUM_ALGOS}")
        if self.archive == "file" and self.layout != "npz":
            raise ValueError(f"{self.name}: a plain file must be an .npz")
        if "/" in self.target or self.target in ("", ".", "..") or self.target == RECORD_FILE:
            raise ValueError(f"{self.name}: target must be a plain file or folder name")

    @property
    def prefix(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def local_only(self) -> bool:
        """True for a published folder medtl does not download (given with ``from_path``)."""
        return self.archive == "folder"

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "reader"}
        d["classes"] = list(self.classes)
        d["official_files"] = list(self.official_files)
        return d


DATASETS: Registry[DatasetSource] = Registry("dataset", lambda name, known: DataError(
    f"{name}: unknown dataset name (registered: {', '.join(known) or 'none'}; or give a file or folder path)"))
_REGISTRY = DATASETS.entries  # the table itself


def register_dataset(source: DatasetSource, overwrite: bool = False) -> DatasetSource:
    """Add ``source`` to the registry (the built-in table, tests, plugins)."""
    return DATASETS.register(source.name, source, overwrite)


def unregister_dataset(name: str) -> None:
    DATASETS.unregister(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def get_dataset(name: str) -> DatasetSource:
    return DATASETS.get(name)


_ZENODO_MEDMNIST = "https://zenodo.org/records/10519652/files/"


def _medmnist(flag: str, md5: dict[str, str], title: str, checksum_source: str, citation: str, notes,
              known_overlap: str = "") -> None:
    """One MedMNIST entry per published size: ``md5`` maps the file suffix ('', '_64', '_128',
    '_224') to its MD5; ``notes(px)`` describes the file at that size."""
    for suffix, digest in md5.items():
        px = suffix[1:] or "28"
        register_dataset(DatasetSource(
            name=f"medmnist:{flag}{suffix}", title=title.format(px=px),
            url=f"{_ZENODO_MEDMNIST}{flag}{suffix}.npz?download=1", filename=f"{flag}{suffix}.npz",
            archive="file", layout="npz", target=f"{flag}{suffix}.npz",
            checksum_algo="md5", checksum=digest, checksum_source=checksum_source,
            licence="CC BY 4.0", citation=citation,
            homepage="https://medmnist.com/ (data: doi:10.5281/zenodo.10519652)",
            notes=notes(px), known_overlap=known_overlap))


def _builtin() -> None:
    _medmnist("pneumoniamnist",
              {"": "28209eda62fecd6e6a2d98b1501bb15f", "_64": "8f4eceb4ccffa70c672198ea285246c6",
               "_128": "05b46931834c231683c68f40c47b2971", "_224": "d6a3c71de1b945ea11211b03746c1fe1"},
              "PneumoniaMNIST (MedMNIST), {px}x{px}", _MEDMNIST_INFO,
              f"{_MEDMNIST_CITE}; source images: {_KERMANY_PAPER}",
              lambda px: (f"train 4708 / val 524 / test 624, labels 0 normal, 1 pneumonia; {px} px images "
                          "center-cropped and resized from Kermany et al.'s chest X-rays"),
              known_overlap=_PNEUMONIAMNIST_OVERLAP)
    register_dataset(DatasetSource(
        name="kermany:chest_xray",
        title="Kermany et al. pediatric chest X-rays (ChestXRay2017), NORMAL vs PNEUMONIA",
        url=("https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
             "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded"),
        filename="ChestXRay2017.zip", archive="zip", layout="folder", target="chest_xray",
        checksum_algo=None, checksum=None,
        checksum_source=("no published checksum known for ChestXRay2017.zip (Mendeley Data page); the "
                         "sha256 of the first fetched zip is pinned in pins.json"),
        licence="CC BY 4.0", citation=f"{_KERMANY_DATA}; {_KERMANY_PAPER}",
        homepage="https://data.mendeley.com/datasets/rscbjbr9sj/2",
        notes=("5,856 JPEG images of varying size; the zip extracts to chest_xray/{train,test}/"
               "{NORMAL,PNEUMONIA} (no val split: medtl makes a patient-level one); file names carry "
               "patient ids (personN_)"),
        classes=("NORMAL", "PNEUMONIA")))
    _chestmnist()
    _published_folders()


_CHESTMNIST_INFO = ("MedMNIST's own package, medmnist/info.py INFO['chestmnist'] MD5, MD5_64, MD5_128, MD5_224 "
                    "(v3, Zenodo record 10519652; read from a copy of info.py whose pneumoniamnist MD5s equal "
                    "medtl's; the 28 and 64 px values also seen in other sources)")
_NIH_CITE = ("Wang, Peng, Lu, Lu, Bagheri, Summers. ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks "
             "on Weakly-Supervised Classification and Localization of Common Thorax Diseases. CVPR 2017, "
             "doi:10.1109/CVPR.2017.369")


def _chestmnist() -> None:
    _medmnist("chestmnist",
              {"": "02c8a6516a18b556561a56cbdd36c4a8", "_64": "9de6cd0b934ebb5b7426cfba5efbae16",
               "_128": "db107e5590b27930b62dbaf558aebee3", "_224": "45bd33e6f06c3e8cdb481c74a89152aa"},
              "ChestMNIST (MedMNIST), {px}x{px}, 14 labels", _CHESTMNIST_INFO,
              f"{_MEDMNIST_CITE}; source images: {_NIH_CITE}",
              lambda px: (f"train 78468 / val 11219 / test 22433, 14 multi-label columns (NIH ChestX-ray14's "
                          f"official split, its train_val part split 7:1 by MedMNIST); {px} px; the .npz names "
                          "no patients"))


_PHYSIONET_LICENCE = "PhysioNet Credentialed Health Data License 1.5.0 (credentialed user, training, signed DUA)"


def _folder(name: str, title: str, url: str, target: str, reader, official: tuple[str, ...], access: str,
            checksum_source: str, licence: str, citation: str, homepage: str, notes: str,
            checksums_file: str = "") -> None:
    register_dataset(DatasetSource(
        name=name, title=title, url=url, filename=f"{target}/", archive="folder", layout="manifest",
        target=target, checksum_algo=None, checksum=None, checksum_source=checksum_source, licence=licence,
        citation=citation, homepage=homepage, notes=notes, access=access, official_files=official,
        checksums_file=checksums_file, reader=reader))


_PINNED = "no published checksum known; the sha256 of the published files ({}) is pinned at the first fetch"


def _published_folders() -> None:
    """Published folders medtl reads in place (fetch from a local folder: verified, then recorded)."""
    _folder("nih:chestxray14", "NIH ChestX-ray14: 112,120 frontal chest X-rays, 30,805 patients, 14 labels",
            "https://nihcc.app.box.com/v/ChestXray-NIHCC", "chestxray14", public.read_nih,
            (public.NIH_CSV, "train_val_list.txt", "test_list.txt", "images"), "open",
            _PINNED.format("Data_Entry_2017, train_val_list.txt, test_list.txt"),
            ("NIH Clinical Center: no restrictions on use stated; attribution requested (link to the NIH site, "
             "cite Wang et al. 2017, acknowledge the NIH Clinical Center); not a formal CC licence"),
            _NIH_CITE, "https://nihcc.app.box.com/v/ChestXray-NIHCC",
            "images_001..012.tar.gz extract to images/; official split test_list.txt / train_val_list.txt; "
            "Patient ID column; Finding Labels '|'-separated")
    _folder("chexpert", "CheXpert v1.0-small: 224,316 chest X-rays of 65,240 patients, 14 observations",
            "https://aimi.stanford.edu/datasets/chexpert-chest-x-rays",
            "CheXpert-v1.0-small", public.read_chexpert, ("train.csv", "valid.csv", "train", "valid"),
            "credentialed", _PINNED.format("train.csv, valid.csv"),
            "Stanford University CheXpert Dataset Research Use Agreement (non-commercial research)",
            ("Irvin et al. CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert "
             "Comparison. AAAI 2019, doi:10.1609/aaai.v33i01.3301590"),
            "https://stanfordmlgroup.github.io/competitions/chexpert/",
            "Path, Sex, Age, Frontal/Lateral, AP/PA, 14 observations (1, 0, -1 uncertain, blank); patient from "
            "Path (patientNNNNN); valid.csv is read as the test split; data.uncertain maps -1")
    _folder("mimic-cxr-jpg", "MIMIC-CXR-JPG 2.0.0: 377,110 JPEG chest X-rays, 65,379 patients, CheXpert labels",
            "https://physionet.org/content/mimic-cxr-jpg/2.0.0/", "2.0.0", public.read_mimic_cxr_jpg,
            (public.MIMIC_CHEXPERT, public.MIMIC_SPLIT, public.MIMIC_METADATA, "files"), "credentialed",
            "PhysioNet publishes SHA256SUMS.txt inside the project folder: the csv files are verified against it",
            _PHYSIONET_LICENCE,
            ("Johnson, Lungren, Peng, Lu, Mark, Berkowitz, Horng. MIMIC-CXR-JPG, chest radiographs with structured "
             "labels (version 2.0.0). PhysioNet (2019), doi:10.13026/8360-t248"),
            "https://physionet.org/content/mimic-cxr-jpg/2.0.0/",
            "files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg; subject_id = patient; official split in split.csv",
            checksums_file="SHA256SUMS.txt")
    _folder("padchest", "PadChest: 160,868 chest X-rays of 67,625 patients, 174 findings (Labels list)",
            "https://bimcv.cipf.es/bimcv-projects/padchest/", "padchest", public.read_padchest,
            (public.PADCHEST_CSV,), "credentialed", _PINNED.format("the labels CSV"),
            ("BIMCV PadChest Dataset Research Use Agreement (access after a request form); the publisher also "
             "describes it as CC BY-SA 4.0 (not confirmed here: read the agreement)"),
            ("Bustos, Pertusa, Salinas, de la Iglesia-Vaya. PadChest: A large chest x-ray image dataset with "
             "multi-label annotated reports. Medical Image Analysis 66:101797 (2020), "
             "doi:10.1016/j.media.2020.101797"),
            "https://bimcv.cipf.es/bimcv-projects/padchest/",
            "ImageID, ImageDir, PatientID, Labels (a list); 16-bit PNGs in ImageDir folders; no official split")
    _folder("rsna:pneumonia", "RSNA Pneumonia Detection Challenge (stage 2 train): 26,684 chest X-rays",
            "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data", "rsna-pneumonia-detection-challenge",
            public.read_rsna_pneumonia,
            ("stage_2_train_labels.csv", "stage_2_detailed_class_info.csv", "stage_2_train_images"), "registration",
            _PINNED.format("the two CSVs"),
            "Kaggle competition rules (Kaggle account, accept the rules; non-commercial use)",
            ("Shih et al. Augmenting the National Institutes of Health Chest Radiograph Dataset with Expert "
             "Annotations of Possible Pneumonia. Radiology: Artificial Intelligence 1(1):e180041 (2019), "
             "doi:10.1148/ryai.2019180041"),
            "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge",
            "patientId, x, y, width, height, Target (one row per box); DICOMs; images drawn from NIH ChestX-ray14")
    _folder("vindr-cxr", "VinDr-CXR 1.0.0: 18,000 chest X-rays (15,000 train, 3,000 test), 28 labels",
            "https://physionet.org/content/vindr-cxr/1.0.0/", "1.0.0", public.read_vindr_cxr,
            (public.VINDR_TRAIN, public.VINDR_TEST, "train", "test"), "credentialed",
            "PhysioNet publishes SHA256SUMS.txt inside the project folder: the csv files are verified against it",
            _PHYSIONET_LICENCE,
            ("Nguyen et al. VinDr-CXR: An open dataset of chest X-rays with radiologist's annotations. Scientific "
             "Data 9, 429 (2022), doi:10.1038/s41597-022-01498-w; PhysioNet doi:10.13026/3akn-b287"),
            "https://physionet.org/content/vindr-cxr/1.0.0/",
            "image_id, rad_id, 28 label columns; DICOM train/ID.dicom, test/ID.dicom; no patient ids published",
            checksums_file="SHA256SUMS.txt")
    _folder("ieee8023:covid-chestxray", "COVID-19 image data collection (Cohen et al.), X-ray images",
            "https://github.com/ieee8023/covid-chestxray-dataset", "covid-chestxray-dataset",
            public.read_covid_chestxray, ("metadata.csv", "images"), "open",
            _PINNED.format("metadata.csv; a git clone: note its commit"),
            "licences vary per image (metadata.csv column 'license': CC BY, CC BY-NC-SA, Apache 2.0, ...)",
            ("Cohen, Morrison, Dao, Roth, Duong, Ghassemi. COVID-19 Image Data Collection: Prospective Predictions "
             "Are the Future. Machine Learning for Biomedical Imaging 1 (2020); arXiv:2006.11988"),
            "https://github.com/ieee8023/covid-chestxray-dataset",
            "patientid, finding ('/'-separated), view, modality, folder, filename; no official split")


_builtin()


# ------------------------------------------------------------------ names and cache places

def datasets_dir() -> Path:
    return cache_root() / "datasets"


def entry_dir(source: DatasetSource) -> Path:
    return datasets_dir().joinpath(*source.name.split(":", 1))


def env_var(name: str) -> str:
    """The environment variable that points ``name`` at a local copy."""
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")


def is_dataset_name(path: str | os.PathLike) -> bool:
    """True when ``path`` is a registered name, or looks like one with a registered prefix."""
    s = str(path)
    m = _NAME_RE.match(s)
    if not m:
        return False
    # a bare name ('chexpert') must be registered exactly; 'prefix:id' may name an unknown id
    return s in DATASETS or (m.group(1) is not None and m.group(1) in {src.prefix for src in DATASETS if ":" in src.name})


def record_path(source: DatasetSource) -> Path:
    return entry_dir(source) / RECORD_FILE


def read_record(source: DatasetSource) -> dict | None:
    p = record_path(source)
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: unreadable dataset record ({exc}); fetch {source.name} again",
                        fetch=("data", source.name)) from None
    if not isinstance(rec, dict) or rec.get("name") != source.name or rec.get("status") not in (OFFICIAL, PINNED, UNOFFICIAL):
        raise DataError(f"{p}: not a dataset record for {source.name}; fetch {source.name} again",
                        fetch=("data", source.name))
    return rec


def cached_target(source: DatasetSource) -> Path | None:
    """The fetched file/folder of ``source`` (record written and target present), else None."""
    rec = read_record(source)
    if rec is None:
        return None
    # a published folder is not copied: the record names the verified local folder
    target = Path(rec.get("root") or "") if source.local_only else entry_dir(source) / source.target
    if not target.exists() or (source.local_only and not rec.get("root")):
        return None
    return target


# ------------------------------------------------------------------ hashes and pins

def file_digests(path: str | os.PathLike) -> dict[str, str]:
    """{'md5': ..., 'sha256': ...} of a file in one pass."""
    return _digests(path, ("md5", "sha256"))


def _tree_files(root: Path) -> list[Path]:
    return sorted((p for p in root.rglob("*") if p.is_file() and not p.is_symlink()),
                  key=lambda p: p.relative_to(root).as_posix())


def tree_sha256(root: str | os.PathLike) -> tuple[str, int]:
    """(sha256 over every regular file's relative path and sha256, number of files) of a folder."""
    root = Path(root)
    h = hashlib.sha256()
    files = _tree_files(root)
    for p in files:
        h.update(f"{p.relative_to(root).as_posix()}\0{file_digests(p)['sha256']}\n".encode())
    return h.hexdigest(), len(files)


_PINS = PinStore(lambda: datasets_dir() / "pins.json", DataError)


def pins_path() -> Path:
    return _PINS.path


def pinned_sha256(source: DatasetSource) -> str | None:
    return _PINS.pinned(source.name, source.url)


def _record_pin(source: DatasetSource, sha: str) -> None:
    _PINS.record(source.name, source.url, source.filename, sha)


class ChecksumMismatch(DataError):
    """Bytes that are not the published (or pinned) file.  ``detail`` is the message without
    the hint on keeping them anyway, so that the CLI can name its own flag."""

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(f"{detail}; to keep it as a marked unofficial copy, pass unofficial=True")


class DownloadUnavailable(DataError):
    """The published file cannot be downloaded (offline, network error).  ``detail`` is the
    message without the hint on giving a local copy, so that the CLI can name its own flag."""

    def __init__(self, detail: str, source: "DatasetSource"):
        self.detail = detail
        self.source = source
        super().__init__(f"{detail}; fetch {source.filename} from {source.url} elsewhere and give it as "
                         "the local file (from_path)")


def _judge(source: DatasetSource, digests: dict[str, str], where: str, unofficial: bool) -> str:
    """OFFICIAL | PINNED (matches, or is about to become, the pin) | UNOFFICIAL; raises on a mismatch."""
    if source.checksum_algo is not None:
        got = digests[source.checksum_algo]
        if got == source.checksum:
            return OFFICIAL
        if unofficial:
            return UNOFFICIAL
        raise ChecksumMismatch(f"{where}: {source.checksum_algo} mismatch for {source.name}: expected "
                               f"{source.checksum} (the official {source.filename}), got {got}; "
                               "not the official release")
    pin = pinned_sha256(source)
    if unofficial and pin != digests["sha256"]:
        return UNOFFICIAL
    if pin is None or pin == digests["sha256"]:
        return PINNED
    raise ChecksumMismatch(f"{where}: sha256 mismatch for {source.name}: expected {pin} (pinned at the first "
                           f"fetch in {pins_path()}; no checksum is published), got {digests['sha256']}")


def _status_text(source: DatasetSource, rec: dict) -> str:
    if source.local_only:
        n = len(rec.get("official") or {})
        if rec["status"] == OFFICIAL:
            return f"local folder; its {n} published files verified against {source.checksums_file} at fetch"
        if rec["status"] == PINNED:
            return (f"local folder; sha256 {rec.get('official_sha256')} of its {n} published files pinned at the "
                    "first fetch (no published checksum: matches the first copy, not a publisher's hash)")
    f = rec.get("file") or {}
    if rec["status"] == OFFICIAL:
        return (f"official release ({source.checksum_algo} {source.checksum} verified at fetch)")
    if rec["status"] == PINNED:
        return (f"{source.filename} sha256 {f.get('sha256')} pinned at the first fetch (no published "
                "checksum: matches the first download, not a publisher's hash)")
    what = rec.get("unofficial_reason") or "does not match the official release"
    return f"UNOFFICIAL copy from {rec.get('origin')} ({what})"


# ------------------------------------------------------------------ resolution

@dataclass
class ResolvedDataset:
    name: str
    path: Path
    status: str              # official | pinned | unofficial | override
    notes: list[str]
    known_overlap: str = ""  # the registry's known provenance note (DatasetSource.known_overlap)
    reader: Callable[..., Any] | None = None  # a published folder's reader (DatasetSource.reader)


def _override_notes(source: DatasetSource, var: str, path: Path) -> list[str]:
    head = f"{source.name} resolved through ${var} to {path} (not the medtl cache)"
    if path.is_file() and source.checksum_algo is not None and source.archive == "file":
        got = file_digests(path)
        if got[source.checksum_algo] == source.checksum:
            return [f"{head}: official release ({source.checksum_algo} {source.checksum} verified)"]
        return [f"UNOFFICIAL copy of {source.name}: {head}; {source.checksum_algo} {got[source.checksum_algo]} "
                f"is not the official {source.checksum}, sha256 {got['sha256']}; results are not "
                "comparable with results on the official release"]
    return [f"{head}: not verified against the official {source.filename}"]


@dataclass(frozen=True)
class DataLocation:
    """Where the data a command was given lives: ``path`` (None for a built-in dataset) and, for a
    dataset name, its registry resolution."""

    spec: str
    path: Path | None
    dataset: ResolvedDataset | None = None

    @property
    def builtin(self) -> bool:
        return self.path is None


def locate(spec: str | os.PathLike) -> DataLocation:
    """The one resolution of a data argument, for every command (finetune, evaluate, data check,
    sr, study): ``builtin:synthetic``, a dataset name (its local copy; an unfetched name fails
    with how to fetch it) or a path.  One-line :class:`DataError` for anything else."""
    from ..config import BUILTIN_DATASETS

    s = str(spec)
    if s in BUILTIN_DATASETS:
        return DataLocation(s, None)
    resolved = resolve_data_path(s)
    if resolved is not None:
        return DataLocation(s, resolved.path, resolved)
    if s.startswith("builtin:"):
        raise DataError(f"{s}: unknown built-in dataset (available: {', '.join(BUILTIN_DATASETS)})")
    p = Path(s).expanduser()
    if not p.exists():
        raise DataError(f"{s}: no such file or directory")
    return DataLocation(s, p)


def data_fingerprint(spec: str | os.PathLike) -> str:
    """A content fingerprint of the data ``spec`` names (cache keys of evaluate and the probes):
    the generator version for a built-in dataset, else :func:`medtl.data.cache.path_fingerprint`."""
    from ..config import FRACTALDB
    from . import fractaldb, synthetic
    from .cache import path_fingerprint

    loc = locate(spec)
    if loc.builtin:
        version = fractaldb.GENERATOR_VERSION if loc.spec == FRACTALDB else synthetic.GENERATOR_VERSION
        return f"{loc.spec}:v{version}"
    return path_fingerprint(loc.path)


def resolve_data_path(path: str | os.PathLike) -> ResolvedDataset | None:
    """Resolve a dataset name to the local file/folder medtl reads; None when ``path`` is no name.

    The environment override (module docstring) wins over the cache.  An unfetched name
    raises :class:`DataError` with the fetch command.  A cached ``.npz`` is re-hashed and must
    still match its record.
    """
    if not is_dataset_name(path):
        return None
    source = get_dataset(str(path))
    var = env_var(source.name)
    override = os.environ.get(var, "").strip()
    if override:
        p = Path(override).expanduser()
        if not p.exists():
            raise DataError(f"${var}={override}: no such file or directory (it points {source.name} at a "
                            "local copy)")
        return ResolvedDataset(source.name, p, "override", _override_notes(source, var, p), source.known_overlap,
                               source.reader)
    target = cached_target(source)
    if target is None:
        if source.local_only:
            raise DataError(f"{source.name}: no local copy registered ({ACCESS_TEXT[source.access]}; obtain it from "
                            f"{source.homepage}); give its folder to fetch or set ${var}", fetch=("data", source.name))
        raise DataError(f"{source.name}: dataset not fetched (not in {entry_dir(source)}); fetch it first (a "
                        f"verified local {source.filename} can be copied in)", fetch=("data", source.name))
    rec = read_record(source)
    assert rec is not None
    if target.is_file():
        sha = file_digests(target)["sha256"]
        want = (rec.get("file") or {}).get("sha256")
        if sha != want:
            raise DataError(f"{target}: cached file of {source.name} changed since it was fetched (sha256 "
                            f"expected {want}, got {sha}); delete {entry_dir(source)} and fetch it again",
                            fetch=("data", source.name))
    notes = [f"{source.name} -> {target}: {_status_text(source, rec)}",
             f"{source.name}: licence {source.licence}; access: {ACCESS_TEXT[source.access]}; cite: {source.citation}"]
    if rec["status"] == UNOFFICIAL:
        notes.append(f"UNOFFICIAL data: results on this copy of {source.name} are not comparable with results "
                     "on the official release")
    return ResolvedDataset(source.name, target, rec["status"], notes, source.known_overlap, source.reader)


def resolve_data_config(cfg):
    """(a copy of the DataConfig with ``path`` resolved, the :class:`ResolvedDataset` or None)."""
    resolved = resolve_data_path(cfg.path)
    if resolved is None:
        return cfg, None
    return cfg.model_copy(update={"path": str(resolved.path)}), resolved


# ------------------------------------------------------------------ zips and folders

def _unsafe_member(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if "\\" in name:
        return "backslash in the name"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if any(part == ".." for part in PurePosixPath(name).parts):
        return "'..' in the path"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link"
    return None


def _skipped_member(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._") or parts[-1] == ".DS_Store"


def safe_extract_zip(zip_path: str | os.PathLike, dest: str | os.PathLike, where: str | None = None) -> int:
    """Extract ``zip_path`` into the empty folder ``dest``; return the number of files.

    Every member is checked before anything is written: an absolute path, a drive letter, a
    backslash, a '..' component or a symbolic link refuses the whole archive.  macOS
    metadata (``__MACOSX/``, ``._*``, ``.DS_Store``) is skipped.  File times come from the
    archive (read as UTC), so two extractions of one zip give identical files and times.
    """
    where = where or str(zip_path)
    dest = Path(dest)
    base = dest.resolve()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            for info in infos:
                why = _unsafe_member(info)
                if why is not None:
                    raise DataError(f"{where}: unsafe zip member {info.filename!r} ({why}); nothing extracted")
                if not (base / info.filename).resolve().is_relative_to(base):
                    raise DataError(f"{where}: unsafe zip member {info.filename!r} (outside the target "
                                    "folder); nothing extracted")
            n = 0
            for info in infos:
                if info.is_dir() or _skipped_member(info.filename):
                    continue
                out = dest / info.filename
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                try:
                    t = calendar.timegm((*info.date_time, 0, 0, 0))
                    os.utime(out, (t, t))
                except (OverflowError, ValueError, OSError):
                    pass
                n += 1
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        raise DataError(f"{where}: not a readable zip ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:150]})") from None
    return n


def _copy_tree(src: Path, dest: Path) -> int:
    """Copy regular files (bytes and modification times; not permissions) from src into dest."""
    n = 0
    for p in _tree_files(src):
        rel = p.relative_to(src)
        if any(part.startswith(".") or part == "__MACOSX" for part in rel.parts):
            continue
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, out)
        st = p.stat()
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        n += 1
    return n


def _check_folder(source: DatasetSource, root: Path, where: str) -> None:
    from .folder import has_class_layout

    if not root.is_dir() or not has_class_layout(root):
        raise DataError(f"{where}: no class-folder layout found (expected {source.target}/{{train,test}}/"
                        f"{{{','.join(source.classes) or 'CLASS'}}}/*)")
    splits = [d for d in root.iterdir() if d.is_dir()]
    for cls in source.classes:
        if not any((d / cls).is_dir() for d in splits):
            raise DataError(f"{where}: class folder {cls!r} not found under {root.name}/{{train,test}}/")


def _check_npz(path: Path, where: str) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{where}: not a readable .npz ({type(exc).__name__})") from None
    if not {"train_images.npy", "train_labels.npy"} <= names:
        raise DataError(f"{where}: not a MedMNIST .npz (no train_images/train_labels arrays)")


def _replace_dir(new: Path, final: Path) -> None:
    """Move the folder ``new`` to ``final``; an existing ``final`` is moved aside first, then removed."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=".old-", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------ fetching

@dataclass
class FetchResult:
    name: str
    path: Path
    status: str          # official | pinned | unofficial
    downloaded: bool
    copied: bool
    message: str         # one line for the user


def _write_record(source: DatasetSource, rec: dict) -> None:
    rec = {"name": source.name, "target": source.target, "layout": source.layout, "url": source.url,
           "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **rec}
    write_json_atomic(record_path(source), rec)


def _finish_file(source: DatasetSource, tmp: Path, where: str, origin: str, unofficial: bool) -> tuple[str, dict]:
    """Verify a downloaded/copied file at ``tmp`` (not yet in place); return (status, record)."""
    digests = file_digests(tmp)
    status = _judge(source, digests, where, unofficial)
    rec: dict[str, Any] = {"status": status, "origin": origin,
                           "file": {"name": source.filename, "bytes": tmp.stat().st_size, **digests}}
    if status == UNOFFICIAL:
        if source.checksum_algo is not None:
            rec["unofficial_reason"] = (f"{source.checksum_algo} {digests[source.checksum_algo]} is not the "
                                        f"official {source.checksum}; sha256 {digests['sha256']}")
        else:
            rec["unofficial_reason"] = f"declared unofficial; sha256 {digests['sha256']}"
    if source.layout == "npz":
        _check_npz(tmp, where)
    return status, rec


def _pin_if_new(source: DatasetSource, rec: dict) -> None:
    if rec["status"] == PINNED and pinned_sha256(source) is None:
        _record_pin(source, rec["file"]["sha256"])


def _commit_file(source: DatasetSource, staged: Path, rec: dict) -> Path:
    """Move a verified file into place; the record (the commit mark) is removed first, written last."""
    final = entry_dir(source) / source.target
    record_path(source).unlink(missing_ok=True)
    os.replace(staged, final)
    _pin_if_new(source, rec)
    _write_record(source, rec)
    return final


def _install_zip(source: DatasetSource, zip_file: Path, where: str, rec: dict) -> Path:
    """Extract a verified zip into a temporary folder, check its layout, then rename it into place."""
    entry = entry_dir(source)
    entry.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".extract-", dir=entry))
    try:
        safe_extract_zip(zip_file, tmpdir, where)
        root = tmpdir / source.target
        _check_folder(source, root, where)
        digest, count = tree_sha256(root)
        rec.update(tree_sha256=digest, files=count)
        final = entry / source.target
        record_path(source).unlink(missing_ok=True)
        _replace_dir(root, final)
        _pin_if_new(source, rec)
        _write_record(source, rec)
        return final
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _install_folder(source: DatasetSource, folder: Path, unofficial: bool) -> tuple[Path, dict]:
    where = str(folder)
    root = folder / source.target if (folder / source.target).is_dir() else folder
    _check_folder(source, root, where)
    if not unofficial:
        raise ChecksumMismatch(f"{where}: a folder cannot be checked against the official {source.filename} "
                               f"of {source.name} (only the archive's bytes can be verified)")
    entry = entry_dir(source)
    entry.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".copy-", dir=entry))
    try:
        staged = tmpdir / source.target
        _copy_tree(root, staged)
        digest, count = tree_sha256(staged)
        rec = {"status": UNOFFICIAL, "origin": str(root.resolve()), "tree_sha256": digest, "files": count,
               "unofficial_reason": (f"a local folder, not the verified {source.filename}; tree sha256 "
                                     f"{digest} over {count} files")}
        final = entry / source.target
        record_path(source).unlink(missing_ok=True)
        _replace_dir(staged, final)
        _write_record(source, rec)
        return final, rec
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _download(source: DatasetSource, dest: Path, unofficial: bool,
              urlopen: Callable[..., Any] | None) -> dict:
    """Download the published file to ``dest`` (atomically, verified before the rename); its record."""
    box: dict = {}

    def verify(sha: str, tmp: Path) -> None:
        box.update(_finish_file(source, tmp, source.url, source.url, unofficial)[1])

    try:
        download_url(source.url, dest, urlopen=urlopen, verify=verify)
    except DataError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DownloadUnavailable(f"{source.name}: cannot download {source.url} ({transport_reason(exc)})",
                                  source) from None
    return box


def _fetched_message(source: DatasetSource, rec: dict, path: Path, prefix: str = "") -> str:
    return f"{source.name}: {prefix}{_status_text(source, rec)} -> {path}"


def fetch_dataset(name: str, from_path: str | os.PathLike | None = None, unofficial: bool = False,
                  urlopen: Callable[..., Any] | None = None) -> FetchResult:
    """Put ``name`` into the cache: download it once, or verify and copy a local file/folder.

    ``from_path``: the published file (the ``.npz``; the ``.zip``), or for folder datasets an
    already-extracted folder (always an unofficial copy: a folder cannot be verified).
    ``unofficial``: keep bytes that do not match the published/pinned checksum, marked as an
    unofficial copy.  Without ``from_path`` a name already cached as official/pinned is not
    downloaded again (a cached unofficial copy is replaced by the official download).  On any
    failure the cache keeps what it held before.
    """
    source = get_dataset(name)
    try:
        return _fetch(source, from_path, unofficial, urlopen)
    finally:
        _remove_empty(entry_dir(source))


def _remove_empty(entry: Path) -> None:
    """Drop the entry folder (and its prefix folder) when a refused fetch left them empty."""
    for d in (entry, entry.parent):
        try:
            d.rmdir()
        except OSError:
            break


def _fetch(source: DatasetSource, from_path, unofficial: bool, urlopen) -> FetchResult:
    if source.local_only:
        return _fetch_local_folder(source, from_path, unofficial)
    entry = entry_dir(source)
    final = entry / source.target
    if from_path is None:
        target = cached_target(source)
        rec = read_record(source) if target is not None else None
        if target is not None and rec is not None and rec["status"] != UNOFFICIAL:
            if target.is_file():
                got = file_digests(target)["sha256"]
                if got != (rec.get("file") or {}).get("sha256"):
                    raise DataError(f"{target}: cached file changed since it was fetched (sha256 expected "
                                    f"{(rec.get('file') or {}).get('sha256')}, got {got}); delete {entry} and "
                                    "fetch again")
            return FetchResult(source.name, target, rec["status"], False, False,
                               _fetched_message(source, rec, target, "already cached, "))
        if offline():
            raise DownloadUnavailable(f"{source.name}: not cached and downloads are off (MEDTL_OFFLINE)", source)
        entry.mkdir(parents=True, exist_ok=True)
        staged = entry / f".{source.filename}.download"
        try:
            rec = _download(source, staged, unofficial, urlopen)
            if source.archive == "file":
                _commit_file(source, staged, rec)
            else:
                _install_zip(source, staged, source.url, rec)
        finally:
            staged.unlink(missing_ok=True)
        return FetchResult(source.name, final, rec["status"], True, False, _fetched_message(source, rec, final))

    src = Path(from_path).expanduser()
    if not src.exists():
        raise DataError(f"{src}: no such file or directory (the local copy of {source.name})")
    if src.is_dir():
        if source.layout != "folder":
            raise DataError(f"{src}: {source.name} is the single file {source.filename}, not a folder")
        path, rec = _install_folder(source, src, unofficial)
        return FetchResult(source.name, path, UNOFFICIAL, False, True, _fetched_message(source, rec, path))
    origin = str(src.resolve())
    if source.archive == "zip":
        if not zipfile.is_zipfile(src):
            raise DataError(f"{src}: not a zip file (expected {source.filename} or its extracted folder)")
        _, rec = _finish_file(source, src, str(src), origin, unofficial)
        _install_zip(source, src, str(src), rec)  # extracted straight from the local zip
    else:
        entry.mkdir(parents=True, exist_ok=True)
        fd, name_ = tempfile.mkstemp(prefix=f".{source.filename}.", suffix=".tmp", dir=entry)
        os.close(fd)
        tmp = Path(name_)
        try:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o644)
            _, rec = _finish_file(source, tmp, str(src), origin, unofficial)
            _commit_file(source, tmp, rec)
        finally:
            tmp.unlink(missing_ok=True)
    return FetchResult(source.name, final, rec["status"], False, True, _fetched_message(source, rec, final))


# ------------------------------------------------------------------ published folders (local copies)

ACCESS_TEXT = {"open": "open download", "registration": "registration and acceptance of the terms required",
               "credentialed": "credentialed access (data use agreement) required"}


class LayoutProblems(DataError):
    """A local copy that is not the published layout: ``lines`` holds one line per problem category."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("; ".join(lines))


def _published_sums(root: Path, source: DatasetSource) -> dict[str, str] | None:
    """{relative path: sha256} from the checksum list shipped inside the layout, None without one."""
    p = root / source.checksums_file if source.checksums_file else None
    if p is None or not p.is_file():
        return None
    sums: dict[str, str] = {}
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            sums[parts[1].strip().lstrip("*").removeprefix("./")] = parts[0].lower()
    return sums


def check_layout(source: DatasetSource, root: Path) -> tuple[dict[str, dict], list[str], list[str], bool]:
    """(found official files {rel: {bytes, sha256}}, missing specs, files differing from the published
    checksum list, whether every found file was listed there) of a local copy of ``source``."""
    from .public import find_file

    found: dict[str, dict] = {}
    missing: list[str] = []
    for spec in source.official_files:
        p = find_file(root, spec)
        if p is None:
            missing.append(" or ".join(spec.split("|")))
            continue
        rel = p.relative_to(root).as_posix()
        found[rel] = ({"bytes": p.stat().st_size, "sha256": file_digests(p)["sha256"]} if p.is_file()
                      else {"folder": True})
    sums = _published_sums(root, source)
    differ = [rel for rel, f in found.items() if sums and rel in sums and f.get("sha256") != sums[rel]]
    listed = bool(sums) and all(rel in sums for rel, f in found.items() if "sha256" in f)
    return found, missing, differ, listed


def _official_sha256(found: dict[str, dict]) -> str:
    h = hashlib.sha256()
    for rel in sorted(found):
        h.update(f"{rel}\0{found[rel].get('sha256', 'folder')}\n".encode())
    return h.hexdigest()


def _fetch_local_folder(source: DatasetSource, from_path, unofficial: bool) -> FetchResult:
    """Verify a local copy of a published folder and record where it is (nothing is copied)."""
    if from_path is None:
        raise DataError(f"{source.name}: medtl does not download this dataset ({ACCESS_TEXT[source.access]}); "
                        f"obtain it from {source.homepage}, then give its folder as the local copy (from_path)")
    src = Path(from_path).expanduser()
    if not src.is_dir():
        raise DataError(f"{src}: not a folder (the local copy of {source.name} is its published folder "
                        f"{source.target}/)")
    root = src / source.target if (src / source.target).is_dir() else src
    found, missing, differ, listed = check_layout(source, root)
    lines = []
    if missing:
        lines.append(f"{root}: {len(missing)} of {len(source.official_files)} published files of {source.name} "
                     f"missing: {', '.join(missing)}")
    if differ:
        lines.append(f"{root}: {len(differ)} files differ from {source.checksums_file}: {', '.join(differ)}")
    digest = _official_sha256(found)
    pin = pinned_sha256(source)
    if not listed and not missing and pin is not None and pin != digest:
        lines.append(f"{root}: sha256 of the published files {digest} differs from the pin {pin} (first fetch, "
                     f"{pins_path()}; no checksum is published)")
    if missing or (lines and not unofficial):
        raise LayoutProblems(lines)
    status = UNOFFICIAL if lines else (OFFICIAL if listed else PINNED)
    rec: dict[str, Any] = {"status": status, "origin": str(root.resolve()), "root": str(root.resolve()),
                           "official": found, "official_sha256": digest, "access": source.access}
    if status == UNOFFICIAL:
        rec["unofficial_reason"] = "; ".join(lines)
    entry = entry_dir(source)
    entry.mkdir(parents=True, exist_ok=True)
    if status == PINNED and pin is None:
        _record_pin(source, digest)
    _write_record(source, rec)
    return FetchResult(source.name, root, status, False, False, _fetched_message(source, rec, root))


def dataset_rows() -> list[dict[str, Any]]:
    """One dict per registered dataset: the registry facts plus cache/override state."""
    rows = []
    for name in list_datasets():
        s = get_dataset(name)
        var = env_var(name)
        try:
            target = cached_target(s)
            rec = read_record(s) if target is not None else None
        except DataError:
            target = rec = None
        rows.append({**s.to_dict(), "env_var": var, "override": os.environ.get(var) or None,
                     "cached": str(target) if rec else None,
                     "status": rec["status"] if rec else None,
                     "origin": rec.get("origin") if rec else None})
    return rows
