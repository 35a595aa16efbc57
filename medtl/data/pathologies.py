"""A shared pathology label space for chest X-ray datasets, kept as data.

Every public chest X-ray dataset names its findings its own way: NIH's ``Effusion`` is CheXpert's
``Pleural Effusion``, PadChest's ``pleural effusion`` and VinDr's ``Pleural effusion``.  Scoring a
run trained on one dataset on another needs the labels the two share, under one name.  This table
(``pathologies.yaml`` beside this file; the idea of torchxrayvision's harmonised pathologies,
Cohen et al. 2022, the table medtl's own) maps
each published label name, compared case- and separator-insensitively, to a shared pathology name,
or names why it has none:

* ``SHARED``: the shared pathology names;
* ``ALIASES``: published label name -> shared name;
* ``NOT_SHARED``: published labels with no counterpart, and why (not a finding, two findings
  merged into one label, a finding no other dataset names the same way).

:func:`harmonise` pairs a run's labels with a dataset's and says which were dropped and why.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import yaml

TABLE_FILE = Path(__file__).with_name("pathologies.yaml")


def _load() -> tuple[tuple[str, ...], dict[str, str], dict[str, str]]:
    doc = yaml.safe_load(TABLE_FILE.read_text(encoding="utf-8"))
    return tuple(doc["shared"]), dict(doc.get("aliases") or {}), dict(doc.get("not_shared") or {})


SHARED, ALIASES, NOT_SHARED = _load()


def normalise(name: str) -> str:
    """Case-, space- and underscore-insensitive form of a label name."""
    return re.sub(r"[\s_]+", " ", str(name)).strip().casefold()


_TABLE = {normalise(k): v for k, v in ALIASES.items()} | {normalise(s): s for s in SHARED}
_WHY = {normalise(k): v for k, v in NOT_SHARED.items()}


def shared_name(label: str) -> str | None:
    """The shared pathology name of a published label, or None."""
    return _TABLE.get(normalise(label))


def why_not_shared(label: str) -> str:
    return _WHY.get(normalise(label), "not in medtl's pathology table (medtl/data/pathologies.py)")


def harmonise(run_labels: Sequence[str], data_labels: Sequence[str],
              label_map: Mapping[str, str] | None = None) -> dict:
    """Pair a multi-label run's labels with a dataset's through the shared names.

    ``label_map`` (data label -> run label, or '-' to drop) overrides the table for the labels it
    names.  Returns ``{"pairs": [(run index, data index, name)], "dropped_run": {label: why},
    "dropped_data": {label: why}}``; a name shared by two labels of one side is dropped (ambiguous)."""
    label_map = dict(label_map or {})

    def keyed(labels, is_data):
        out: dict[str, list[int]] = {}
        why: dict[str, str] = {}
        for i, lab in enumerate(labels):
            if is_data and lab in label_map:
                tgt = label_map[lab]
                if tgt == "-":
                    why[lab] = "dropped by the label map"
                    continue
                key = shared_name(tgt) or f"run:{tgt}"
            else:
                key = shared_name(lab) or (f"run:{lab}" if not is_data else None)
            if key is None:
                why[lab] = why_not_shared(lab)
                continue
            out.setdefault(key, []).append(i)
        return out, why

    run_keys, run_why = keyed(run_labels, False)
    data_keys, data_why = keyed(data_labels, True)
    pairs = []
    for key, ri in run_keys.items():
        di = data_keys.get(key)
        name = key[4:] if key.startswith("run:") else key
        if di is None:
            for i in ri:
                run_why.setdefault(run_labels[i], "no counterpart in the data" if not key.startswith("run:")
                                   else why_not_shared(run_labels[i]))
            continue
        if len(ri) > 1 or len(di) > 1:
            for i in ri:
                run_why[run_labels[i]] = f"ambiguous: several labels map to {name}"
            for i in di:
                data_why[data_labels[i]] = f"ambiguous: several labels map to {name}"
            continue
        pairs.append((ri[0], di[0], name))
    used = {d for _, d, _ in pairs}
    for key, di in data_keys.items():
        for i in di:
            if i not in used:
                data_why.setdefault(data_labels[i], "no counterpart in the run")
    return {"pairs": pairs, "dropped_run": run_why, "dropped_data": data_why}


__all__ = ["ALIASES", "NOT_SHARED", "SHARED", "harmonise", "normalise", "shared_name", "why_not_shared"]
