"""What every resumable training in medtl shares (``medtl finetune`` and ``medtl sr train``):

* :class:`TrainingState`: one state file, written atomically, read back with
  ``weights_only=True``; refused with one line when it was written with other settings, or
  when it is unreadable (a truncated file), naming the way out (restart);
* :func:`settings_diff`: which keys of two nested settings dicts differ;
* :class:`Progress`: an optional tqdm bar;
* :func:`check_finite`: the NaN/inf loss guard.

The learning-rate schedule is :func:`medtl.train.schedule.lr_factor`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from ..errors import ConfigError, TrainingError
from ..io import atomic_path


def settings_diff(a: Mapping, b: Mapping, prefix: str = "", keys: Iterable[str] | None = None) -> list[str]:
    """Dotted keys whose values differ between ``a`` and ``b`` (nested dicts compared key by key).
    ``keys`` restricts the comparison to those top-level keys."""
    diffs = []
    for k in sorted(set(a) | set(b)) if keys is None else keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            diffs += settings_diff(va, vb, prefix + str(k) + ".")
        elif va != vb:
            diffs.append(prefix + str(k))
    return diffs


class TrainingState:
    """The resume point of one training.

    ``kind`` names the training (a format tag stored in the file); ``settings`` are what must be
    equal for a resume to continue the same computation; ``compare`` picks which settings keys
    are compared (default: all); ``ignore`` lists dotted keys that may differ; ``normalize``
    brings the stored settings to today's form first (e.g. keys added to the config schema since
    the state was written, filled in with their defaults: such a state resumes).
    """

    def __init__(self, path: str | Path, kind: str, settings: Mapping[str, Any], *,
                 compare: Iterable[str] | None = None, ignore: Iterable[str] = (),
                 normalize: Callable[[dict], dict] | None = None):
        self.path = Path(path)
        self.kind = kind
        self.settings = dict(settings)
        self.compare = None if compare is None else list(compare)
        self.ignore = set(ignore)
        self.normalize = normalize

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self) -> dict | None:
        """The saved state, or None when there is none; ConfigError when it cannot be used."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - truncated or foreign file: one line and the way out
            raise ConfigError(f"{self.path}: unreadable training state ({type(exc).__name__}: the file is "
                              f"truncated or corrupt); restart to discard it") from None
        if not isinstance(state, dict) or state.get("format", self.kind) != self.kind:
            raise ConfigError(f"{self.path}: not a {self.kind} training state; restart to discard it")
        old = state.get("settings")
        if old is not None:  # state files of older medtl versions carry none: the caller checked
            if self.normalize is not None:
                old = self.normalize(dict(old))
            diff = [d for d in settings_diff(old, self.settings, keys=self.compare) if d not in self.ignore]
            if diff:
                raise ConfigError(f"{self.path}: an interrupted training with different settings (differs in: "
                                  f"{', '.join(diff)}); restart to discard it, or write elsewhere")
        return state

    def save(self, **payload: Any) -> None:
        with atomic_path(self.path) as tmp:
            torch.save({"format": self.kind, "settings": self.settings, **payload}, tmp)

    def clear(self) -> None:
        """Remove the state file, only when it is one: a readable state of this kind, or an
        unreadable torch zip file (a truncated state).  Anything else is refused with one line:
        the path may be a user's file that happens to carry the state's name."""
        if not self.path.exists():
            return
        if not self.path.is_file():
            raise ConfigError(f"{self.path}: not a file; medtl keeps its training state there, move it away")
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            ours = isinstance(state, dict) and state.get("format") == self.kind
        except Exception:  # noqa: BLE001 - unreadable: ours only if it starts as torch.save's zip archive
            with open(self.path, "rb") as fh:
                ours = fh.read(4) == b"PK\x03\x04"
        if not ours:
            raise ConfigError(f"{self.path}: not a {self.kind} training state, so restart does not delete it; "
                              f"move it away or write elsewhere")
        self.path.unlink()


class Progress:
    """A tqdm bar when ``enabled``, else nothing; use as a context manager."""

    def __init__(self, enabled: bool, total: int, desc: str, unit: str, initial: int = 0):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, **postfix: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def check_finite(loss: torch.Tensor, where: str, lr: float) -> None:
    """Raise :class:`TrainingError` when the loss is NaN or inf."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingError(f"loss became {value} at {where} (lr={lr:.3g}); lower the learning rate or check the data")
