"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


#: dataset names of the shipped configs -> their copies in ../shared (both unofficial copies:
#: a reconstructed PneumoniaMNIST .npz and a 224 px re-encode of Kermany et al.)
SHARED_DATASETS = {
    "medmnist:pneumoniamnist": "data/pneumoniamnist/pneumoniamnist_reconstructed.npz",
    "kermany:chest_xray": "data/kermany_cxr224",
}


@pytest.fixture(scope="session", autouse=True)
def shared_dataset_names():
    """Resolve the configs' dataset names to ../shared for the whole session through medtl's
    environment override (MEDTL_DATASET_<NAME>): nothing is downloaded or copied.  Where
    ../shared is absent the names stay unresolved and tests that need them skip."""
    from medtl.data.registry import env_var

    mp = pytest.MonkeyPatch()
    for name, rel in SHARED_DATASETS.items():
        if (SHARED / rel).exists():
            mp.setenv(env_var(name), str(SHARED / rel))
    yield {name: SHARED / rel for name, rel in SHARED_DATASETS.items() if (SHARED / rel).exists()}
    mp.undo()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (real data for integration tests); skips when absent (a fresh clone)."""
    if not (SHARED / "data").is_dir():
        pytest.skip("../shared/data not present")
    return SHARED


@pytest.fixture()
def data_cache(tmp_path) -> Path:
    """A private decoded-data cache folder for one test."""
    d = tmp_path / "medtl-cache"
    d.mkdir()
    return d


@pytest.fixture()
def stop_at_epoch(monkeypatch):
    """``stop_at_epoch(k)``: the next fine-tuning runs raise KeyboardInterrupt when epoch index
    ``k`` starts (a kill part-way, leaving the resume state of epoch k-1); ``stop_at_epoch(None)``
    trains normally again."""
    from medtl.train import loop

    real = loop._train_epoch

    def arm(epoch: int | None) -> None:
        if epoch is None:
            monkeypatch.setattr(loop, "_train_epoch", real)
            return

        def interrupted(*args, **kw):
            if args[2] == epoch:
                raise KeyboardInterrupt
            return real(*args, **kw)

        monkeypatch.setattr(loop, "_train_epoch", interrupted)

    return arm
