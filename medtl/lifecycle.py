"""The run-folder lifecycle, in one place: whether a folder may become (or already is) a run,
claiming it (new / resume / finished; a different run or a foreign folder refused), restart
(removing exactly what medtl wrote), the run's ``train.log`` mirror and atomic torch saves.

``medtl finetune`` uses all of it; a future ``medtl pretrain`` claims its folders the same way;
``medtl evaluate`` adds to finished folders only through :meth:`medtl.runs.Run.write_record`.
What a run *is* (file names, marker, the record) is :mod:`medtl.runs`; what makes two runs the
same run (their configs) is the caller's, passed in as ``differences``.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import ConfigError, DataError
from .io import atomic_path
from .runs import MARKER, Run, foreign_entries, is_legacy_run_folder, is_medtl_run_folder, remove_run_files, write_marker

log = logging.getLogger("medtl")


def check_creatable(path: Path) -> None:
    """One line now, before any work, when ``path`` cannot become a run folder: a file, a path
    under a file, a place where no folder can be made."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: output path is an existing file, not a folder; choose another output folder")
    anc = path
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise ConfigError(f"{path}: cannot create the run folder: {anc} is a file")
    try:  # os.access says yes to root everywhere, and /proc refuses anyway: try it
        os.rmdir(tempfile.mkdtemp(prefix=".medtl-probe-", dir=path if path.exists() else anc))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the run folder there ({exc.strerror or type(exc).__name__})") from None


def check_ownership(run: Run, status: str) -> None:
    """Refuse a non-empty folder medtl did not write: no marker and not a run folder of an older
    medtl, or (legacy or starting afresh) holding files that medtl did not write."""
    legacy = not is_medtl_run_folder(run.path)
    if legacy and not is_legacy_run_folder(run.path):
        raise ConfigError(f"{run.path}: folder exists and is not a medtl run folder (no {MARKER}); "
                          "choose another output folder")
    foreign = foreign_entries(run.path)
    if foreign and (legacy or status == "new"):
        raise ConfigError(f"{run.path}: holds files medtl did not write ({', '.join(foreign[:3])}"
                          f"{', ...' if len(foreign) > 3 else ''}); move them away or choose another output folder")


def claim(run: Run, differences: Callable[[dict], list[str]]) -> str:
    """'new', 'resume' or 'finished' for writing a run into ``run``'s folder.  ``differences``
    gets the folder's stored config (as written) and returns why it is another run (empty: the
    same run).  Raises one line for a folder that cannot be written, is not medtl's, is unreadable,
    or holds another run."""
    check_creatable(run.path)
    if not run.path.exists() or not any(run.path.iterdir()):
        return "new"
    check_ownership(run, "new" if not (run.finished() or run.has_state()) else "old")
    try:
        old = run.raw_config()
    except DataError:
        raise ConfigError(f"{run.config_path}: unreadable config in existing run folder; restart to discard it") from None
    why = differences(old)
    if why:
        raise ConfigError(f"{run.path}: holds {'; '.join(why)}; write elsewhere, or restart to discard it")
    if run.finished():
        return "finished"
    return "resume" if run.has_state() else "new"


def start(run: Run, config_text: str) -> None:
    """Create the folder, its marker and its config (written first, atomically)."""
    from .io import write_text_atomic

    try:
        run.path.mkdir(parents=True, exist_ok=True)
        write_marker(run.path)
        write_text_atomic(run.config_path, config_text)
    except OSError as exc:
        raise ConfigError(f"{run.path}: cannot write the run folder ({exc.strerror or type(exc).__name__})") from None


def discard(run: Run) -> None:
    """Before a restart, remove the files medtl wrote in the run folder and nothing else.

    Refused, with nothing removed, for a file, for a folder without medtl's marker that is not
    a run folder of an older medtl, and for a folder holding anything medtl did not write."""
    if not run.path.exists():
        return
    if not run.path.is_dir():
        raise ConfigError(f"{run.path}: restart refuses: the output path is a file, not a run folder")
    if not any(run.path.iterdir()):
        return
    if not is_medtl_run_folder(run.path) and not is_legacy_run_folder(run.path):
        raise ConfigError(f"{run.path}: restart refuses to delete a folder that is not a medtl run folder "
                          f"(no {MARKER}); choose another output folder")
    foreign = foreign_entries(run.path)
    if foreign:
        raise ConfigError(f"{run.path}: restart refuses: the folder holds files medtl did not write "
                          f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); move them away "
                          "or choose another output folder")
    remove_run_files(run.path)


def save_torch_atomic(obj, path: Path) -> None:
    """``torch.save`` into a temporary file, then rename: a reader never sees half a checkpoint.

    Serialised in memory first: torch names the zip archive's folder after the file it writes, so
    saving straight into a randomly named temporary file would make the same tensors give other
    bytes (and another sha256) every time; from a buffer the archive is always ``archive/``."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.getvalue())


class FileLog:
    """Mirrors medtl's log messages into a run folder's ``train.log`` while open."""

    def __init__(self, path: Path):
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def __enter__(self):
        self.old_level = log.level
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)
        log.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        log.removeHandler(self.handler)
        log.setLevel(self.old_level)
        self.handler.close()


__all__ = ["FileLog", "check_creatable", "check_ownership", "claim", "discard", "save_torch_atomic", "start"]
