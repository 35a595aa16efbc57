"""Weight files: real formats, hash policy, pins, safe unpickling, downloads over loopback.

Checkpoints are built with random values in exactly the structure each source saves them:
torchvision/timm plain state_dicts, Geirhos et al. DataParallel dicts with an optimizer.
"""
from __future__ import annotations

import http.server
import json
import logging
import os
import socket
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from medtl.errors import ConfigError, WeightsError
from medtl.io import sha256_file, write_json_atomic
from medtl.models import (build_architecture, create_model, fetch_weights, get_weights,
                          list_weights, load_state_dict_file, resolve_weights_file)
from medtl.models import weights as W
from medtl.paths import weights_dir

GEIRHOS = ["resnet50.sin", "resnet50.sin_in", "resnet50.sin_in_in"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("MEDTL_OFFLINE", raising=False)


def load_weights_cmd():
    from medtl.cli import weights_cmd

    return weights_cmd


def cli_fetch(*args):
    from typer.testing import CliRunner

    return CliRunner().invoke(load_weights_cmd().app, ["fetch", *args])


# ------------------------------------------------------------------ checkpoint builders

def random_state(arch: str, seed: int) -> OrderedDict:
    torch.manual_seed(seed)
    net = build_architecture(arch)
    with torch.no_grad():  # make BN buffers non-trivial too
        for name, buf in net.named_buffers():
            if buf.is_floating_point():
                buf.uniform_(0.5, 1.5)
    return net.state_dict()


def geirhos_checkpoint(state: OrderedDict, epoch: int = 60) -> dict:
    """As rgeirhos/texture-vs-shape saved them (PyTorch ImageNet example + DataParallel)."""
    sd = OrderedDict(("module." + k, v) for k, v in state.items())
    names = [k for k in sd if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    return {
        "epoch": epoch,
        "arch": "resnet50",
        "state_dict": sd,
        "best_prec1": torch.tensor(60.18),
        "optimizer": {
            "state": {i: {"momentum_buffer": torch.randn_like(sd[n])} for i, n in enumerate(names[:3])},
            "param_groups": [{"lr": 0.001, "momentum": 0.9, "dampening": 0, "weight_decay": 0.0001,
                              "nesterov": False, "params": list(range(len(names)))}],
        },
    }


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    out = {}
    out["r18_state"] = random_state("resnet18", 11)
    torch.save(out["r18_state"], d / "resnet18.pth")
    out["r50_state"] = random_state("resnet50", 12)
    torch.save(out["r50_state"], d / "resnet50.pth")
    torch.save(geirhos_checkpoint(out["r50_state"]), d / "geirhos.pth.tar")
    out["r50d_state"] = random_state("resnet50d", 13)
    torch.save(out["r50d_state"], d / "resnet50d.pth")
    out["dir"] = d
    return out


def pretend_registered(monkeypatch, name: str, path: Path, full: bool = False):
    """Make the registry entry `name` describe the test file (same code path otherwise)."""
    sha = sha256_file(path)
    src = get_weights(name)
    new = replace(src, sha256=sha if (full or src.sha256) else None, sha256_prefix=sha[:8])
    monkeypatch.setitem(W._REGISTRY, name, new)
    return new


def assert_backbone_equals(model, state):
    got = model.backbone.state_dict()
    for k, v in state.items():
        if k.startswith("fc."):
            continue
        assert torch.equal(got[k], v), k
    assert not any(k.startswith("fc.") for k in got)


def cache_files():
    d = weights_dir()
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# ------------------------------------------------------------------ formats, end to end

def test_torchvision_resnet50_fetch_then_create(ckpts, monkeypatch):
    for name in ("resnet50.tv_in1k", "resnet50.tv2_in1k"):
        pretend_registered(monkeypatch, name, ckpts["dir"] / "resnet50.pth")
        res = cli_fetch(name, "--from", str(ckpts["dir"] / "resnet50.pth"))
        assert res.exit_code == 0, res.output
        cached = weights_dir() / get_weights(name).filename
        assert res.output.strip() == str(cached) and cached.is_file()
        torch.manual_seed(0)
        model, report = create_model("resnet50", num_classes=2, weights=name)
        assert_backbone_equals(model, ckpts["r50_state"])
        assert sorted(report.skipped_head) == ["fc.bias", "fc.weight"]
        assert report.missing == [] and report.unexpected == [] and report.mismatched == []
        assert model.head.out_features == 2 and model.head.in_features == 2048
        assert model.info["weights"] == name and model.info["format"] == "torchvision"
        assert model.info["family"] == get_weights(name).family


def test_resnet18_full_hash(ckpts, monkeypatch):
    pretend_registered(monkeypatch, "resnet18.tv_in1k", ckpts["dir"] / "resnet18.pth", full=True)
    fetch_weights("resnet18.tv_in1k", from_path=ckpts["dir"] / "resnet18.pth")
    model, report = create_model("resnet18", 3, weights="resnet18.tv_in1k")
    assert_backbone_equals(model, ckpts["r18_state"])
    assert model.head.out_features == 3 and model.info["weights_sha256"] == sha256_file(
        ckpts["dir"] / "resnet18.pth")
    assert not (weights_dir() / "pins.json").exists()  # full hash known: nothing pinned


def test_timm_resnet50_a1_names_equal_torchvision(ckpts, monkeypatch, tmp_path):
    from medtl._compat import import_torchvision

    import_torchvision()
    import timm

    timm_state = timm.create_model("resnet50", pretrained=False).state_dict()
    assert list(timm_state) == list(ckpts["r50_state"])  # same names, same order
    torch.save(timm_state, tmp_path / "a1.pth")
    pretend_registered(monkeypatch, "resnet50.a1_in1k", tmp_path / "a1.pth")
    fetch_weights("resnet50.a1_in1k", from_path=tmp_path / "a1.pth")
    model, _ = create_model("resnet50", 2, weights="resnet50.a1_in1k")
    assert_backbone_equals(model, timm_state)


def test_timm_resnet50d_gluon(ckpts, monkeypatch):
    pretend_registered(monkeypatch, "resnet50d.gluon_in1k", ckpts["dir"] / "resnet50d.pth")
    res = cli_fetch("resnet50d.gluon_in1k", "--from", str(ckpts["dir"] / "resnet50d.pth"))
    assert res.exit_code == 0, res.output
    model, report = create_model("resnet50d", 4, weights="resnet50d.gluon_in1k")
    assert_backbone_equals(model, ckpts["r50d_state"])
    assert report.missing == [] and sorted(report.skipped_head) == ["fc.bias", "fc.weight"]
    # wrong architecture for these weights
    with pytest.raises(ConfigError, match="weights for resnet50d, not resnet50"):
        create_model("resnet50", 2, weights="resnet50d.gluon_in1k")


def test_geirhos_fetch_pins_then_create(ckpts, caplog):
    src_file = ckpts["dir"] / "geirhos.pth.tar"
    sha = sha256_file(src_file)
    with caplog.at_level(logging.WARNING, logger="medtl"):
        res = cli_fetch("resnet50.sin", "--from", str(src_file))
    assert res.exit_code == 0, res.output
    assert "does not start with the file-name tag c8e5653e" in caplog.text  # warned, not refused
    pins = json.loads((weights_dir() / "pins.json").read_text())
    assert pins["resnet50.sin"]["sha256"] == sha
    assert pins["resnet50.sin"]["url"] == get_weights("resnet50.sin").url

    model, report = create_model("resnet50", 2, weights="resnet50.sin")
    assert_backbone_equals(model, ckpts["r50_state"])
    assert sorted(report.skipped_head) == ["fc.bias", "fc.weight"]
    assert report.missing == [] and report.unexpected == []
    assert model.info["family"] == "SIN" and model.info["format"] == "geirhos"

    # a different file under the cached name is now refused against the pin
    cached = weights_dir() / get_weights("resnet50.sin").filename
    ck = geirhos_checkpoint(ckpts["r50_state"], epoch=59)
    torch.save(ck, cached)
    with pytest.raises(WeightsError, match=r"sha256 mismatch for resnet50\.sin: expected "
                                           + sha + r" \(pinned in .*pins.json\)"):
        create_model("resnet50", 2, weights="resnet50.sin")


def test_geirhos_pinned_on_first_create_model_load(ckpts):
    src = get_weights("resnet50.sin_in_in")
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    os.symlink(ckpts["dir"] / "geirhos.pth.tar", hub / src.filename)
    assert not (weights_dir() / "pins.json").exists()
    model, _ = create_model("resnet50", 2, weights="resnet50.sin_in_in", allow_download=False)
    assert_backbone_equals(model, ckpts["r50_state"])
    pins = json.loads((weights_dir() / "pins.json").read_text())
    assert pins["resnet50.sin_in_in"]["sha256"] == sha256_file(ckpts["dir"] / "geirhos.pth.tar")


def test_local_file_auto_format(ckpts, tmp_path, monkeypatch):
    # a Geirhos-style dict given as a path: auto-detected, unwrapped, 'module.' stripped
    model, report = create_model("resnet50", 2, weights=str(ckpts["dir"] / "geirhos.pth.tar"))
    assert_backbone_equals(model, ckpts["r50_state"])
    assert model.info["weights"] == str(ckpts["dir"] / "geirhos.pth.tar")
    assert model.info["family"] is None
    # other common wrappers
    torch.save({"model": OrderedDict(("module." + k, v) for k, v in ckpts["r18_state"].items()),
                "epoch": 3}, tmp_path / "wrapped.pt")
    model, _ = create_model("resnet18", 2, weights=str(tmp_path / "wrapped.pt"))
    assert_backbone_equals(model, ckpts["r18_state"])
    # safetensors
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in ckpts["r18_state"].items()}, tmp_path / "w.safetensors")
    model, _ = create_model("resnet18", 2, weights=str(tmp_path / "w.safetensors"))
    assert_backbone_equals(model, ckpts["r18_state"])
    # a local copy whose hash is a registry entry's known hash takes that entry's metadata
    pretend_registered(monkeypatch, "resnet18.tv_in1k", ckpts["dir"] / "resnet18.pth", full=True)
    model, _ = create_model("resnet18", 2, weights=str(ckpts["dir"] / "resnet18.pth"))
    assert model.info["weights"] == "resnet18.tv_in1k" and model.info["family"] == "IN"
    with pytest.raises(ConfigError, match="weights for resnet18, not resnet50"):
        create_model("resnet50", 2, weights=str(ckpts["dir"] / "resnet18.pth"))


def test_checkpoint_that_does_not_fit(ckpts, caplog):
    with pytest.raises(WeightsError, match=r"resnet18\.pth: checkpoint does not fit the "
                                           r"architecture resnet50"):
        create_model("resnet50", 2, weights=str(ckpts["dir"] / "resnet18.pth"))
    # resnet50d weights into resnet50: the stages fit, the deep stem and the downsample convs do
    # not: refused (strict), counted; with model.weights_strict false: loaded, the rest warned
    with pytest.raises(WeightsError, match=r"resnet50d\.pth: checkpoint does not fit the architecture resnet50: "
                                           r"21 of 265 backbone tensors did not fit \(17 missing, 4 of another "
                                           r"shape; .*\); set model.weights_strict: false"):
        create_model("resnet50", 2, weights=str(ckpts["dir"] / "resnet50d.pth"))
    with caplog.at_level(logging.WARNING, logger="medtl"):
        model, report = create_model("resnet50", 2, weights=str(ckpts["dir"] / "resnet50d.pth"), strict=False)
    assert "conv1.weight" in report.missing
    assert report.unexpected and "not loaded" in caplog.text


def test_bad_weights_argument():
    with pytest.raises(ConfigError, match="not 'none', a registered weight name"):
        create_model("resnet18", 2, weights="imagenet")
    with pytest.raises(WeightsError, match="nope.pth: weights file not found"):
        create_model("resnet18", 2, weights="/nonexistent/nope.pth")


# ------------------------------------------------------------------ refusals

@pytest.mark.parametrize("name", list_weights())
def test_fetch_wrong_bytes_refused(name, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"definitely not the published checkpoint")
    src = get_weights(name)
    if src.format not in W.HUB_CONVENTION_FORMATS:  # these are checked against the pin of an earlier fetch
        pin = "ab" * 32
        write_json_atomic(W.pins_path(), {name: {"sha256": pin, "url": src.url}})
    res = cli_fetch(name, "--from", str(bad))
    assert isinstance(res.exception, WeightsError), res.output
    msg = str(res.exception)
    assert "\n" not in msg
    assert msg.startswith(f"{bad}: sha256 mismatch for {name}: expected ")
    assert f"got {sha256_file(bad)}" in msg
    assert not (weights_dir() / src.filename).exists()
    assert [f for f in cache_files() if f != "pins.json"] == []


def test_geirhos_unpinned_wrong_bytes_refused_as_unreadable(tmp_path, caplog):
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(WeightsError, match=r"bad\.pth\.tar: sha256 mismatch for resnet50.sin: .*"
                                           r"not a readable checkpoint"):
        fetch_weights("resnet50.sin", from_path=bad)
    assert cache_files() == []  # neither copied nor pinned


class _Opaque:
    def __init__(self):
        self.x = 1


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickled_objects_refused(tmp_path, ckpts):
    marker = str(tmp_path / "pwned")
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": dict(ckpts["r18_state"]), "extra": _Evil(marker)}, evil)
    with pytest.raises(WeightsError, match=r"evil\.pth: refused: the checkpoint pickles objects "
                                           r"that are not plain tensors \(posix\.mkdir\)"):
        create_model("resnet18", 2, weights=str(evil))
    assert not os.path.exists(marker)

    opaque = tmp_path / "opaque.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "args": _Opaque()}, opaque)
    with pytest.raises(WeightsError, match=r"_Opaque\); medtl loads weights only with weights_only=True"):
        load_state_dict_file(opaque)
    # the same refusal through `fetch --from` (hash passes: the geirhos prefix only warns)
    res = cli_fetch("resnet50.sin", "--from", str(opaque))
    assert isinstance(res.exception, WeightsError) and "refused" in str(res.exception)
    assert cache_files() == []


def test_corrupt_and_truncated_files(tmp_path, ckpts):
    data = (ckpts["dir"] / "resnet18.pth").read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    for f in ("trunc.pth", "empty.pth", "junk.safetensors"):
        with pytest.raises(WeightsError) as ei:
            load_state_dict_file(tmp_path / f)
        msg = str(ei.value)
        assert msg.startswith(str(tmp_path / f) + ": ") and "\n" not in msg
        assert "corrupt or truncated" in msg


def test_geirhos_structure_checked(tmp_path, ckpts):
    torch.save(dict(ckpts["r50_state"]), tmp_path / "plain.pth")
    with pytest.raises(WeightsError, match="expected a Geirhos et al. checkpoint"):
        load_state_dict_file(tmp_path / "plain.pth", "geirhos", "resnet50")
    sd = load_state_dict_file(tmp_path / "plain.pth", "torchvision", "resnet50")
    assert list(sd) == list(ckpts["r50_state"])


# ------------------------------------------------------------------ downloads

class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        if self.path.startswith("/truncated/"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _Handler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def register_test_source(monkeypatch, url: str, sha256: str | None, prefix: str,
                         fmt: str = "torchvision", name: str = "resnet18.test_dl"):
    s = W.WeightSource(name, "resnet18", url, sha256, prefix, url.rsplit("/", 1)[1], fmt, "IN",
                       69.76, "test")
    monkeypatch.setitem(W._REGISTRY, name, s)
    return s


def test_download_over_loopback_then_create(server, ckpts, monkeypatch):
    root, base = server
    data = (ckpts["dir"] / "resnet18.pth").read_bytes()
    sha = sha256_file(ckpts["dir"] / "resnet18.pth")
    fname = f"resnet18-{sha[:8]}.pth"
    (root / fname).write_bytes(data)
    register_test_source(monkeypatch, f"{base}/{fname}", sha, sha[:8])
    model, _ = create_model("resnet18", 2, weights="resnet18.test_dl")
    assert_backbone_equals(model, ckpts["r18_state"])
    assert cache_files() == [fname]
    assert (weights_dir() / fname).read_bytes() == data
    # second use comes from the cache (server no longer has the file)
    (root / fname).unlink()
    create_model("resnet18", 2, weights="resnet18.test_dl")


def test_download_prefix_only_and_file_url(tmp_path, ckpts, monkeypatch):
    sha = sha256_file(ckpts["dir"] / "resnet18.pth")
    fname = f"resnet18-{sha[:8]}.pth"
    (tmp_path / fname).write_bytes((ckpts["dir"] / "resnet18.pth").read_bytes())
    src = register_test_source(monkeypatch, (tmp_path / fname).as_uri(), None, sha[:8])
    assert fetch_weights(src.name) == weights_dir() / fname
    assert sha256_file(weights_dir() / fname) == sha


def test_download_mismatch_leaves_nothing(server, monkeypatch):
    root, base = server
    torch.save({"conv1.weight": torch.zeros(2)}, root / "resnet18-00000000.pth")
    src = register_test_source(monkeypatch, f"{base}/resnet18-00000000.pth", None, "00000000")
    with pytest.raises(WeightsError, match=r"sha256 mismatch for resnet18\.test_dl: expected "
                                           r"prefix 00000000"):
        resolve_weights_file(src)
    assert cache_files() == []
    src = register_test_source(monkeypatch, f"{base}/resnet18-00000000.pth", "0" * 64, "00000000")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        create_model("resnet18", 2, weights=src.name)
    assert cache_files() == []


def test_download_truncated_leaves_nothing(server, monkeypatch):
    _, base = server
    src = register_test_source(monkeypatch, f"{base}/truncated/resnet18-12345678.pth", None,
                               "12345678")
    with pytest.raises(WeightsError, match=f"cannot download {src.url} "):
        resolve_weights_file(src)
    assert cache_files() == []


def test_download_errors_name_url_and_cache_path(server, monkeypatch):
    _, base = server
    src = register_test_source(monkeypatch, f"{base}/missing/resnet18-12345678.pth", None,
                               "12345678")
    with pytest.raises(WeightsError) as ei:
        resolve_weights_file(src)
    msg = str(ei.value)
    assert msg.startswith(f"cannot download {src.url} (") and "404" in msg
    # the library names the parameter-level remedy; the command line adds its own words
    assert f"put the file at {weights_dir() / src.filename}, or copy in a verified local file" in msg
    assert "--from" not in msg and ei.value.fetch == ("weights", src.name)

    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = register_test_source(monkeypatch, f"http://127.0.0.1:{port}/resnet18-12345678.pth",
                               None, "12345678")
    res = cli_fetch(src.name)
    assert isinstance(res.exception, WeightsError)
    msg = str(res.exception)
    assert msg.startswith(f"cannot download {src.url} (") and "\n" not in msg
    assert str(weights_dir() / src.filename) in msg
    assert cache_files() == []


def test_the_cli_adds_the_fetch_command_to_a_missing_weights_error(monkeypatch, capsys, tmp_path):
    from medtl.cli import run as cli

    monkeypatch.setenv("MEDTL_OFFLINE", "1")
    rc = cli(["finetune", "--config", "configs/quickstart.yaml", "--set", "model.weights=resnet18.tv_in1k",
              "--out", str(tmp_path / "run"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and not (tmp_path / "run").exists()
    assert "downloads are off" in err and err.rstrip().endswith("(run: medtl weights fetch resnet18.tv_in1k --from FILE)")


def test_downloads_off(monkeypatch):
    src = get_weights("resnet50.sin")
    with pytest.raises(WeightsError, match="downloads are off; put the file at "):
        resolve_weights_file(src, allow_download=False)
    monkeypatch.setenv("MEDTL_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"resnet50\.sin: .*downloads are off"):
        create_model("resnet50", 2, weights="resnet50.sin")
