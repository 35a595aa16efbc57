"""Public datasets by name (medtl.data.registry, `medtl data list|fetch`).

Downloads are tested against a local HTTP server on 127.0.0.1 (and a file:// URL) serving
small files the tests make; nothing is downloaded from the internet.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medtl.cli import app, run
from medtl.config import DataConfig, load_config
from medtl.data import load_dataset
from medtl.data import registry as reg
from medtl.data.registry import DatasetSource
from medtl.errors import DataError
from _data_helpers import write_png

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ helpers

def npz_bytes(seed: int = 0, n: int = 8, side: int = 8) -> bytes:
    """A tiny MedMNIST-layout .npz."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for s, k in (("train", n), ("val", 4), ("test", 4)):
        arrays[f"{s}_images"] = rng.integers(0, 255, (k, side, side), dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(k) % 2).reshape(-1, 1).astype(np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def chest_zip(path: Path, extra: dict[str, bytes] | None = None, seed: int = 0) -> Path:
    """A tiny ChestXRay2017.zip: chest_xray/{train,test}/{NORMAL,PNEUMONIA}/*.png plus macOS junk."""
    tmp = path.parent / f"_src_{path.stem}"
    with zipfile.ZipFile(path, "w") as z:
        k = seed * 100
        for split in ("train", "test"):
            for cls, val in (("NORMAL", 40), ("PNEUMONIA", 200)):
                for i in range(6 if split == "train" else 3):
                    p = write_png(tmp / f"{k}.png", val, seed=k)
                    z.write(p, f"chest_xray/{split}/{cls}/person{k // 2}_{i}.png")
                    k += 1
        z.writestr("__MACOSX/chest_xray/._junk.png", b"not an image")
        z.writestr("chest_xray/train/NORMAL/._person0_0.png", b"AppleDouble")
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    shutil.rmtree(tmp)
    return path


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class Server:
    """A local HTTP server serving in-memory files; counts requests per path."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    """A private MEDTL_CACHE, no overrides, downloads on, no proxy for 127.0.0.1."""
    d = tmp_path / "medtl-cache"
    monkeypatch.setenv("MEDTL_CACHE", str(d))
    monkeypatch.delenv("MEDTL_OFFLINE", raising=False)
    for name in reg.list_datasets():
        monkeypatch.delenv(reg.env_var(name), raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return d


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture()
def sources():
    """Register test entries; removed afterwards."""
    added: list[str] = []

    def add(name: str, url: str, **kw) -> DatasetSource:
        base = dict(title=name, url=url, licence="CC BY 4.0", citation="test", homepage="-",
                    checksum_source="test", checksum_algo=None, checksum=None)
        if kw.get("archive", "file") == "file":
            base.update(filename="x.npz", archive="file", layout="npz", target="x.npz")
        else:
            base.update(filename="ChestXRay2017.zip", layout="folder", target="chest_xray",
                        classes=("NORMAL", "PNEUMONIA"))
        base.update(kw)
        src = reg.register_dataset(DatasetSource(name=name, **base))
        added.append(name)
        return src

    yield add
    for n in added:
        reg.unregister_dataset(n)


def files_under(d: Path) -> list[Path]:
    return [p for p in d.rglob("*") if p.is_file()] if d.exists() else []


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = run([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ------------------------------------------------------------------ registry facts

def test_builtin_registry_facts():
    m = reg.get_dataset("medmnist:pneumoniamnist")
    # MedMNIST's own INFO dict (medmnist/info.py): URL on zenodo, MD5, CC BY 4.0
    assert m.url == "https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1"
    assert (m.checksum_algo, m.checksum) == ("md5", "28209eda62fecd6e6a2d98b1501bb15f")
    assert m.licence == "CC BY 4.0" and m.archive == "file" and m.layout == "npz"
    k = reg.get_dataset("kermany:chest_xray")
    assert k.checksum is None and k.checksum_algo is None and "pinned" in k.checksum_source
    assert "10.17632/rscbjbr9sj.2" in k.citation and k.licence == "CC BY 4.0"
    assert (k.archive, k.layout, k.target, k.filename) == ("zip", "folder", "chest_xray", "ChestXRay2017.zip")
    assert reg.env_var("medmnist:pneumoniamnist") == "MEDTL_DATASET_MEDMNIST_PNEUMONIAMNIST"
    assert reg.env_var("kermany:chest_xray") == "MEDTL_DATASET_KERMANY_CHEST_XRAY"
    assert reg.is_dataset_name("kermany:nope") and not reg.is_dataset_name("builtin:synthetic")
    assert not reg.is_dataset_name("../shared/data/x.npz")
    with pytest.raises(ValueError, match="md5"):
        DatasetSource("test:bad", "t", "u", "x.npz", "file", "npz", "x.npz", "md5", "abc", "s", "l", "c", "h")


def test_shipped_configs_use_names_not_shared_paths():
    for p in sorted((REPO / "configs").rglob("*.yaml")):
        code = "\n".join(line.split("#")[0] for line in p.read_text().splitlines())  # comments aside
        assert "../shared" not in code, p
    assert load_config(REPO / "configs/pneumoniamnist28.yaml").data.path == "medmnist:pneumoniamnist"
    for c in ("kermany64", "kermany224"):
        assert load_config(REPO / f"configs/{c}.yaml").data.path == "kermany:chest_xray"


# ------------------------------------------------------------------ downloads

def test_download_verifies_caches_and_does_not_download_twice(cache, server, sources, tmp_path):
    data = npz_bytes()
    server.files["/good.npz"] = data
    sources("test:good", server.url + "/good.npz", checksum_algo="md5", checksum=md5(data))
    r = reg.fetch_dataset("test:good")
    assert r.status == "official" and r.downloaded and r.path.read_bytes() == data
    rec = json.loads((r.path.parent / reg.RECORD_FILE).read_text())
    assert rec["status"] == "official" and rec["file"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in files_under(cache)) == [reg.RECORD_FILE, "x.npz"]
    again = reg.fetch_dataset("test:good")
    assert not again.downloaded and "already cached" in again.message
    assert server.hits["/good.npz"] == 1
    bundle = load_dataset(DataConfig(path="test:good", image_size=8), cache_dir=tmp_path / "dc")
    assert bundle.source == "test:good" and len(bundle.splits["train"]) == 8
    assert "official release" in bundle.notes[0] and "UNOFFICIAL" not in " ".join(bundle.notes)


def test_bad_download_is_refused_and_leaves_nothing(cache, server, sources, capsys):
    good, bad = npz_bytes(0), npz_bytes(1)
    server.files["/x.npz"] = bad
    sources("test:bad", server.url + "/x.npz", checksum_algo="md5", checksum=md5(good))
    rc, out, err = cli(["data", "fetch", "test:bad"], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert f"expected {md5(good)}" in err and f"got {md5(bad)}" in err and "/x.npz" in err
    assert "--unofficial" in err
    assert files_under(cache) == []
    with pytest.raises(reg.ChecksumMismatch) as ei:  # the library names the parameter, not the flag
        reg.fetch_dataset("test:bad")
    assert "unofficial=True" in str(ei.value) and "--" not in str(ei.value).replace("://", "")
    assert files_under(cache) == []


def test_file_url_and_offline(cache, sources, tmp_path, monkeypatch, capsys):
    data = npz_bytes(2)
    src = tmp_path / "pub" / "x.npz"
    src.parent.mkdir()
    src.write_bytes(data)
    sources("test:file", src.as_uri(), checksum_algo="sha256", checksum=hashlib.sha256(data).hexdigest())
    monkeypatch.setenv("MEDTL_OFFLINE", "1")
    with pytest.raises(DataError, match="downloads are off.*as the local file \\(from_path\\)"):
        reg.fetch_dataset("test:file")
    assert run(["data", "fetch", "test:file"]) == 2
    assert "run: medtl data fetch test:file --from x.npz" in capsys.readouterr().err
    monkeypatch.delenv("MEDTL_OFFLINE")
    assert reg.fetch_dataset("test:file").status == "official"


def test_from_file_copies_and_verifies(cache, sources, tmp_path, capsys):
    data = npz_bytes(3)
    local = tmp_path / "dl" / "pneumoniamnist.npz"
    local.parent.mkdir()
    local.write_bytes(data)
    sources("test:local", "http://127.0.0.1:9/never", checksum_algo="md5", checksum=md5(data))
    rc, out, err = cli(["data", "fetch", "test:local", "--from", local], capsys)
    assert rc == 0, err
    assert "official release" in out and md5(data) in out
    cached = reg.entry_dir(reg.get_dataset("test:local")) / "x.npz"
    assert cached.read_bytes() == data and local.exists()


def test_unofficial_copy_is_refused_then_marked(cache, sources, tmp_path, capsys):
    official, recon = npz_bytes(4), npz_bytes(5)
    local = tmp_path / "recon.npz"
    local.write_bytes(recon)
    sources("test:recon", "http://127.0.0.1:9/never", checksum_algo="md5", checksum=md5(official))
    rc, out, err = cli(["data", "fetch", "test:recon", "--from", local], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert str(local) in err and f"expected {md5(official)}" in err and f"got {md5(recon)}" in err
    assert "not the official release" in err and "--unofficial" in err
    assert files_under(cache) == []

    rc, out, err = cli(["data", "fetch", "test:recon", "--from", local, "--unofficial"], capsys)
    assert rc == 0, err
    assert "UNOFFICIAL" in out and md5(recon) in out and hashlib.sha256(recon).hexdigest() in out
    rec = reg.read_record(reg.get_dataset("test:recon"))
    assert rec["status"] == "unofficial" and rec["file"]["md5"] == md5(recon)
    assert not reg.pins_path().exists()  # an unofficial copy is never pinned
    bundle = load_dataset(DataConfig(path="test:recon", image_size=8, cache=False))
    assert any(n.startswith("UNOFFICIAL data") for n in bundle.notes)
    assert str(local.resolve()) in bundle.notes[0]
    rc, out, _ = cli(["data", "list"], capsys)
    assert rc == 0 and "UNOFFICIAL" in out.split("test:recon", 1)[1].splitlines()[0]


# ------------------------------------------------------------------ zips and folders

def test_zip_download_is_pinned_extracted_and_loadable(cache, server, sources, tmp_path):
    z = chest_zip(tmp_path / "ChestXRay2017.zip")
    server.files["/c.zip"] = z.read_bytes()
    src = sources("test:chest", server.url + "/c.zip", archive="zip")
    r = reg.fetch_dataset("test:chest")
    assert r.status == "pinned" and r.downloaded and r.path.name == "chest_xray"
    sha = hashlib.sha256(z.read_bytes()).hexdigest()
    assert reg.pinned_sha256(src) == sha and "pinned at the first fetch" in r.message
    entry = reg.entry_dir(src)
    names = sorted(p.relative_to(entry).as_posix() for p in files_under(entry))
    assert reg.RECORD_FILE in names and not any(n.endswith(".zip") or "._" in n or "MACOSX" in n for n in names)
    assert len([n for n in names if n.endswith(".png")]) == 18
    assert not [p for p in entry.iterdir() if p.name.startswith(".")]  # no temp folders left
    assert not reg.fetch_dataset("test:chest").downloaded and server.hits["/c.zip"] == 1
    b = load_dataset(DataConfig(path="test:chest", image_size=8), cache_dir=tmp_path / "dc")
    assert b.classes == ["NORMAL", "PNEUMONIA"] and len(b.splits["test"]) == 6
    assert "pinned" in b.notes[0]

    other = chest_zip(tmp_path / "other.zip", seed=1)  # different bytes than the pin
    with pytest.raises(DataError, match=f"expected {sha}"):
        reg.fetch_dataset("test:chest", from_path=other)
    assert reg.read_record(src)["status"] == "pinned"  # the cache kept what it had
    assert reg.fetch_dataset("test:chest", from_path=other, unofficial=True).status == "unofficial"
    assert reg.pinned_sha256(src) == sha


@pytest.mark.parametrize("member", ["chest_xray/../../evil.png", "/tmp/evil.png", "chest_xray\\..\\evil.png",
                                    "C:/evil.png", "symlink"])
def test_zip_with_unsafe_member_is_refused(cache, sources, tmp_path, member):
    src = sources("test:evil", "http://127.0.0.1:9/never", archive="zip")
    z = tmp_path / "evil.zip"
    if member == "symlink":
        chest_zip(z)
        with zipfile.ZipFile(z, "a") as zf:
            info = zipfile.ZipInfo("chest_xray/train/NORMAL/link.png")
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    else:
        chest_zip(z, extra={member: b"evil"})
    with pytest.raises(DataError, match="unsafe zip member"):
        reg.fetch_dataset("test:evil", from_path=z)
    assert files_under(cache) == []
    assert not (tmp_path / "evil.png").exists() and not (cache.parent / "evil.png").exists()
    assert reg.read_record(src) is None


def test_folder_from_is_unofficial_only(cache, sources, tmp_path, capsys):
    z = chest_zip(tmp_path / "c.zip")
    folder = tmp_path / "extracted"
    zipfile.ZipFile(z).extractall(folder)  # a user-extracted copy (trusted test input)
    sources("test:folder", "http://127.0.0.1:9/never", archive="zip")
    rc, _, err = cli(["data", "fetch", "test:folder", "--from", folder], capsys)
    assert rc == 2 and "cannot be checked" in err and "--unofficial" in err
    rc, out, err = cli(["data", "fetch", "test:folder", "--from", folder / "chest_xray", "--unofficial"], capsys)
    assert rc == 0 and "UNOFFICIAL" in out, err
    rec = reg.read_record(reg.get_dataset("test:folder"))
    assert rec["status"] == "unofficial" and rec["files"] == 18 and "tree sha256" in rec["unofficial_reason"]
    with pytest.raises(DataError, match="no class-folder layout|not found under"):
        reg.fetch_dataset("test:folder", from_path=tmp_path, unofficial=True)


# ------------------------------------------------------------------ resolution and overrides

def test_unfetched_name_gives_one_line_with_the_fetch_command(cache, capsys):
    with pytest.raises(DataError, match="medmnist:pneumoniamnist: dataset not fetched") as ei:
        load_dataset(DataConfig(path="medmnist:pneumoniamnist", image_size=28))
    assert "medtl data fetch" not in str(ei.value) and ei.value.fetch == ("data", "medmnist:pneumoniamnist")
    rc, _, err = cli(["data", "check", "kermany:chest_xray"], capsys)  # the command line adds the command
    assert rc == 2 and err.count("\n") == 1 and "(run: medtl data fetch kermany:chest_xray [--from FILE])" in err
    rc, _, err = cli(["data", "check", "kermany:chest"], capsys)
    assert rc == 2 and "unknown dataset name" in err and "kermany:chest_xray" in err


def test_env_override_resolves_without_cache_and_says_what_it_is(cache, sources, tmp_path, monkeypatch):
    official, other = npz_bytes(6), npz_bytes(7)
    sources("test:env", "http://127.0.0.1:9/never", checksum_algo="md5", checksum=md5(official))
    p = tmp_path / "copy.npz"
    p.write_bytes(other)
    monkeypatch.setenv(reg.env_var("test:env"), str(p))
    r = reg.resolve_data_path("test:env")
    assert r.path == p and r.status == "override" and "$MEDTL_DATASET_TEST_ENV" in r.notes[0]
    assert r.notes[0].startswith("UNOFFICIAL") and md5(other) in r.notes[0]
    p.write_bytes(official)
    assert "official release" in reg.resolve_data_path("test:env").notes[0]
    monkeypatch.setenv(reg.env_var("test:env"), str(tmp_path / "missing.npz"))
    with pytest.raises(DataError, match="MEDTL_DATASET_TEST_ENV"):
        reg.resolve_data_path("test:env")
    assert files_under(cache) == []


def test_decoded_cache_key_does_not_depend_on_location(tmp_path):
    data = npz_bytes(8)
    a, b = tmp_path / "a" / "x.npz", tmp_path / "b" / "y.npz"
    for p in (a, b):
        p.parent.mkdir()
        p.write_bytes(data)
    dc = tmp_path / "dc"
    load_dataset(DataConfig(path=str(a), image_size=8), cache_dir=dc)
    n = len(list(dc.iterdir()))
    load_dataset(DataConfig(path=str(b), image_size=8), cache_dir=dc)
    assert len(list(dc.iterdir())) == n
    z = chest_zip(tmp_path / "c.zip")
    zipfile.ZipFile(z).extractall(tmp_path / "f1")
    shutil.copytree(tmp_path / "f1", tmp_path / "f2")  # copy2: same bytes and file times
    load_dataset(DataConfig(path=str(tmp_path / "f1" / "chest_xray"), image_size=8), cache_dir=dc)
    n = len(list(dc.iterdir()))
    load_dataset(DataConfig(path=str(tmp_path / "f2" / "chest_xray"), image_size=8), cache_dir=dc)
    assert len(list(dc.iterdir())) == n


# ------------------------------------------------------------------ CLI tables

def test_data_list_shows_the_registry(cache):
    res = CliRunner().invoke(app, ["data", "list"])
    assert res.exit_code == 0, res.output
    head = res.output.split("\n\n")[0]
    for col in ("name", "format", "source", "licence", "checksum", "cached", "copy"):
        assert col in head.splitlines()[0]
    row = next(line for line in head.splitlines() if line.startswith("medmnist:pneumoniamnist "))
    assert "npz" in row and "zenodo.org" in row and "CC BY 4.0" in row and "md5 28209eda" in row
    assert "none published" in next(line for line in head.splitlines() if line.startswith("kermany:chest_xray"))
    assert "https://zenodo.org/records/10519652/files/pneumoniamnist.npz" in res.output
    assert "data.mendeley.com" in res.output
    res = CliRunner().invoke(app, ["data", "list", "--json"])
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert rows["medmnist:pneumoniamnist"]["cached"] is None and rows["kermany:chest_xray"]["status"] is None


def test_data_check_table_stays_readable_with_16_classes(tmp_path):
    classes = [f"finding_{i:02d}_long_name" for i in range(16)]
    lines = ["path,label,split"]
    for i, c in enumerate(classes):
        for j, split in enumerate(("train", "train", "test")):
            write_png(tmp_path / "img" / f"{c}_{j}.png", 10 * i, seed=100 * i + j)
            lines.append(f"img/{c}_{j}.png,{c},{split}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(app, ["data", "check", str(tmp_path / "manifest.csv")])
    assert res.exit_code == 0, res.output
    assert "…" not in res.output
    header = next(line for line in res.output.splitlines() if line.startswith("class "))
    assert header.split() == ["class", "train", "val", "test", "all"]
    for c in classes:
        row = next(line for line in res.output.splitlines() if line.startswith(c))
        assert row.split()[-1] == "3"  # every class on its own full row
    assert next(line for line in res.output.splitlines() if line.startswith("images")).split()[-1] == "48"


# ------------------------------------------------------------------ the real ../shared copies

@pytest.mark.shared
def test_shared_reconstruction_is_refused_then_kept_as_unofficial(shared_dir, cache, capsys, tmp_path):
    npz = shared_dir / "data/pneumoniamnist/pneumoniamnist_reconstructed.npz"
    rc, _, err = cli(["data", "fetch", "medmnist:pneumoniamnist", "--from", npz], capsys)
    assert rc == 2 and "expected 28209eda62fecd6e6a2d98b1501bb15f" in err and "--unofficial" in err
    rc, out, err = cli(["data", "fetch", "medmnist:pneumoniamnist", "--from", npz, "--unofficial"], capsys)
    assert rc == 0 and "UNOFFICIAL" in out, err
    cfg = load_config(REPO / "configs/pneumoniamnist28.yaml").data
    bundle = load_dataset(cfg, cache_dir=tmp_path / "dc")
    assert bundle.source == "medmnist:pneumoniamnist" and len(bundle.splits["test"]) == 624
    assert any(n.startswith("UNOFFICIAL data") for n in bundle.notes)


@pytest.mark.shared
def test_session_override_points_config_names_at_shared(shared_dataset_names):
    if len(shared_dataset_names) < 2:
        pytest.skip("../shared lacks one of the datasets")
    for name, path in shared_dataset_names.items():
        assert os.environ[reg.env_var(name)] == str(path)
        r = reg.resolve_data_path(name)
        assert r.path == path and r.status == "override"
    assert reg.resolve_data_path("medmnist:pneumoniamnist").notes[0].startswith("UNOFFICIAL")
    assert "not verified" in reg.resolve_data_path("kermany:chest_xray").notes[0]
