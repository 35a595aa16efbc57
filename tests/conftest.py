"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


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
