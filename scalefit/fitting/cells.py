"""The cells of a table of runs: numbers parsed, bad values described, C checked against 6ND.

Every rejected cell becomes a reason on its row (`bad`: row label -> reasons), which `load_table` lists
as excluded; nothing is dropped without one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scalefit.conventions import SIXND_EXACT_RTOL, SIXND_RTOL, CKind


def numeric(df: pd.DataFrame, field: str, col: str, rows: list, bad: dict) -> np.ndarray:
    """Column as float64; entries that are present but not numbers are excluded, quoting the value."""
    raw = df[col]
    vals = np.array(pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan))
    not_number = np.isnan(vals) & raw.notna().to_numpy()
    for i in np.flatnonzero(not_number):
        bad.setdefault(rows[i], []).append(f"{field} ({col!r}) is not a number: {raw.iloc[i]!r}")
    vals[not_number] = np.nan
    return vals


def describe(x: float) -> str:
    if np.isnan(x):
        return "NaN"
    if np.isinf(x):
        return "infinite"
    return f"{x:g}"


def flag(bad: dict, rows: list, num: dict, fields: list[str], only_new: bool = False) -> None:
    for f in fields:
        if f not in num:
            continue
        v = num[f]
        for i in np.flatnonzero(~(np.isfinite(v) & (v > 0))):
            if only_new and rows[i] in bad:
                continue
            reasons = bad.setdefault(rows[i], [])
            if not any(r.startswith(f"{f} (") and "not a number" in r for r in reasons):
                reasons.append(f"{f} is {describe(v[i])}, expected finite and > 0")


def infer_c_kind(num: dict, notes: list[str]) -> str:
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(num["C"] / (6.0 * num["N"] * num["D"]) - 1.0)
    ok = np.isfinite(rel)
    if ok.any() and np.all(rel[ok] <= SIXND_EXACT_RTOL):
        notes.append(f"c_kind inferred as 6ND: C equals 6 N D to {SIXND_EXACT_RTOL:g} on every row")
        return CKind.SIX_ND
    notes.append("c_kind unspecified: C is not 6ND and no convention was given")
    return CKind.UNSPECIFIED


def check_6nd(num: dict, rows: list, where: str) -> None:
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(num["C"] / (6.0 * num["N"] * num["D"]) - 1.0)
    off = np.flatnonzero(np.isfinite(rel) & (rel > SIXND_RTOL))
    if off.size:
        shown = ", ".join(f"row {rows[i]} (C/6ND = {1 + rel[i]:.3g})" for i in off[:5])
        raise ValueError(
            f"c_kind='6ND' but C differs from 6*N*D by more than {SIXND_RTOL:.0%} in {off.size} rows of "
            f"{where}: {shown}; pass c_kind='exact' or 'reported', or drop the C column"
        )
