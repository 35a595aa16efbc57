"""Subgroup columns of a CSV manifest (``data.group_columns``): one categorical value per image
(sex, view, age band, site, Kermany's pneumonia subtype), carried through the splits so that the
test metrics can be broken down by group.

A group column is never the patient column, and a column with more than ``MAX_GROUP_VALUES``
distinct values is refused: such a column is an identifier or a continuous variable (bin ages
into bands first), and its per-value metrics would be noise or would write identifiers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError

MAX_GROUP_VALUES = 50
BLANK = "(blank)"


def read_groups(csv_path: Path, group_columns: Sequence[str] | None, columns: list[str], rows: list[dict],
                patient_column: str | None) -> dict[str, np.ndarray] | None:
    """``{column: values}`` (object arrays, one stripped value per row, blank as ``(blank)``) for
    ``data.group_columns``; None when none are asked for."""
    if not group_columns:
        return None
    present = ", ".join(columns)
    out = {}
    for col in dict.fromkeys(group_columns):
        if col not in columns:
            raise DataError(f"{csv_path}: missing group column '{col}' (data.group_columns); columns present: "
                            f"{present}")
        if patient_column is not None and col == patient_column:
            raise DataError(f"{csv_path}: data.group_columns: '{col}' is the patient column; groups must be "
                            f"categories such as sex, view or age band, never patient identifiers")
        values = np.array([(row.get(col) or "").strip() or BLANK for row in rows], dtype=object)
        distinct = len(set(values.tolist()))
        if distinct > MAX_GROUP_VALUES:
            raise DataError(f"{csv_path}: data.group_columns: column '{col}' has {distinct} distinct values (at most "
                            f"{MAX_GROUP_VALUES}); group it into bands, it may be an identifier or a continuous value")
        out[col] = values
    return out


def check_group_format(group_columns: Sequence[str] | None, fmt: str, path: str) -> None:
    """Group columns come from a CSV manifest: refuse them for any other format."""
    if group_columns and fmt != "csv":
        raise DataError(f"{path}: data.group_columns needs a CSV manifest (this data is read as '{fmt}'; "
                        f"set data.format: csv where a folder holds one manifest)")
