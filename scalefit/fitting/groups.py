"""One fit per group of a table: per training set, per evaluation set, per configuration.

`split_by(table, by)` cuts a `FitTable` read with `by=` into one table per value of the grouping
columns (each keeping its own exclusions); `fit_by` fits each, and `GroupFits` holds the fits together:
a summary table (one row per group: rows, runs, status, each parameter with its standard error, the
derived exponents), one JSON file for all of them (schema `scalefit.fits/1`), and the fit of the group
a target row belongs to (`predict_table`). A group that cannot be fitted (too few rows, a design
that does not identify the law) is recorded with its reason rather than stopping the others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from scalefit.atomic import write_text
from scalefit.fitting.result import FitResult
from scalefit.fitting import columns
from scalefit.fitting.table import FitTable

GROUPS_SCHEMA = "scalefit.fits/1"


def key_text(by: Sequence[str], key: tuple) -> str:
    """A group's key in words: "dataset = rw, split = val"."""
    return ", ".join(f"{b} = {v}" for b, v in zip(by, key))


def _norm(v) -> str:
    """A group value as text that matches however a file typed it (1, 1.0 and "1" are one group)."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(x):
        return str(v)
    return str(int(x)) if x.is_integer() and abs(x) < 2**53 else repr(x)


def _plain(v):
    """numpy scalars -> Python values (for keys written to JSON)."""
    return v.item() if isinstance(v, np.generic) else v


def split_by(table: FitTable, by: Sequence[str] | str | None = None) -> dict[tuple, FitTable]:
    """One table per value of the grouping columns (default: those the table was read with, `table.by`),
    in sorted order. Each group keeps the exclusions of its own rows only, and a note naming it."""
    by = list(table.by if by is None else ([by] if isinstance(by, str) else by))
    if not by:
        raise ValueError(f"{table.source}: no grouping columns (read the table with by=[...], --by)")
    missing = [b for b in by if b not in table.frame.columns]
    if missing:
        raise ValueError(f"{table.source}: grouping columns {missing} not in the table (read it with by={by!r}); "
                         f"columns: {list(table.frame.columns)}")
    frame = table.frame
    keys = list(zip(*(frame[b].map(_plain) for b in by)))
    out = {}
    for key in sorted(set(keys), key=lambda k: tuple(_norm(x) for x in k)):
        mask = np.array([k == key for k in keys])
        sub = table.subset(mask, f"group {key_text(by, key)}: {int(mask.sum())} of {len(frame)} rows")
        if table.excluded_groups:
            mine = [i for i, g in enumerate(table.excluded_groups) if tuple(map(_norm, g)) == tuple(map(_norm, key))]
            sub = replace(sub, excluded=tuple(table.excluded[i] for i in mine),
                          excluded_groups=tuple(table.excluded_groups[i] for i in mine))
        out[key] = sub
    return out


@dataclass(frozen=True)
class GroupFits:
    """Fits of one law to each group of a table, kept together."""

    by: tuple[str, ...]  # the grouping columns
    fits: Mapping[tuple, FitResult]  # group key (values of `by`) -> its fit
    failed: Mapping[tuple, str] = field(default_factory=dict)  # groups not fitted -> why
    source: str = ""  # where the rows came from

    def keys(self) -> list[tuple]:
        """Every group, fitted or not, sorted."""
        return sorted({*self.fits, *self.failed}, key=lambda k: tuple(_norm(x) for x in k))

    def get(self, key) -> FitResult:
        """The fit of group `key` (a tuple of `by` values, or one value for one column); matched as text."""
        key = key if isinstance(key, tuple) else (key,)
        want = tuple(map(_norm, key))
        for k, r in self.fits.items():
            if tuple(map(_norm, k)) == want:
                return r
        why = next((w for k, w in self.failed.items() if tuple(map(_norm, k)) == want), None)
        if why is not None:
            raise ValueError(f"group {key_text(self.by, key)} was not fitted: {why}")
        raise ValueError(f"no group {key_text(self.by, key)}; groups: "
                         + "; ".join(key_text(self.by, k) for k in self.keys()))

    def summary(self) -> pd.DataFrame:
        """One row per group: the `by` values, rows, runs, status, each parameter and derived quantity
        (with `_se` columns where the fits bootstrapped), RMS log residual, warnings; failed groups
        with their reason in `status`."""
        rows = []
        for key in self.keys():
            row = dict(zip(self.by, key))
            r = self.fits.get(key)
            if r is None:
                rows.append({**row, "status": f"not fitted: {self.failed[key]}"})
                continue
            row.update(rows_fitted=r.n_points, runs=r.n_runs, excluded=len(r.excluded), status=r.status.value,
                       objective=r.objective, residual_scale=r.solver.residual_scale)
            for name, e in [*r.params.items(), *r.derived.items()]:
                row[name] = e.value
                if e.se is not None:
                    row[f"{name}_se"] = e.se
            row["warnings"] = len(r.warnings)
            rows.append(row)
        return pd.DataFrame(rows)

    def __str__(self) -> str:
        head = f"{len(self.fits)} fits by {', '.join(self.by)}" + (f" ({len(self.failed)} groups not fitted)"
                                                                   if self.failed else "")
        with pd.option_context("display.width", 200, "display.max_columns", 40):
            return f"{head}\n{self.summary().to_string(index=False, float_format=lambda x: f'{x:.5g}')}"

    def to_dict(self) -> dict:
        return {"schema": GROUPS_SCHEMA, "by": list(self.by), "source": self.source,
                "groups": [{"key": dict(zip(self.by, map(_plain, k))),
                            **({"fit": self.fits[k].to_dict()} if k in self.fits else {"error": self.failed[k]})}
                           for k in self.keys()]}

    def save(self, path) -> Path:
        """All fits in one JSON file, written atomically."""
        return write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, d: Mapping, law=None) -> GroupFits:
        if d.get("schema") != GROUPS_SCHEMA:
            raise ValueError(f"not a scalefit group of fits (schema {d.get('schema')!r}, expected {GROUPS_SCHEMA!r})")
        by = tuple(d["by"])
        fits, failed = {}, {}
        for g in d["groups"]:
            key = tuple(g["key"][b] for b in by)
            if "fit" in g:
                fits[key] = FitResult.from_dict(g["fit"], law)
            else:
                failed[key] = str(g["error"])
        return cls(by=by, fits=fits, failed=failed, source=str(d.get("source", "")))

    def predict_table(self, targets, level: float | None = None, **options) -> pd.DataFrame:
        """Forecast each target row with the fit of its group: the targets need the `by` columns."""
        
        if not self.fits:
            raise ValueError("no group was fitted: nothing to forecast with")
        n_kind = next(iter(self.fits.values())).n_kind
        df = targets if isinstance(targets, pd.DataFrame) else columns.read_source(targets, n_kind)[0]
        missing = [b for b in self.by if b not in df.columns]
        if missing:
            raise ValueError(f"the targets need the grouping columns {list(self.by)} to pick each row's fit; "
                             f"missing {missing}; columns: {list(df.columns)}")
        keys = list(zip(*(df[b] for b in self.by)))
        parts = []
        for key in dict.fromkeys(tuple(map(_norm, k)) for k in keys):
            rows = [i for i, k in enumerate(keys) if tuple(map(_norm, k)) == key]
            sub = df.iloc[rows]
            fit = self.get(tuple(df[b].iloc[rows[0]] for b in self.by))
            parts.append(fit.predict_table(sub, level=level, **options))
        out = pd.concat(parts).loc[df.index] if df.index.is_unique else pd.concat(parts)
        out.attrs = {**parts[0].attrs, "by": list(self.by), "groups": len(parts)}
        return out


def fit_by(table: FitTable, law="chinchilla", by: Sequence[str] | str | None = None, **fit_options) -> GroupFits:
    """`scalefit.fitting.fitter.fit` on every group of `table` (`split_by`); a group whose fit raises a
    ValueError (a FitError: too few rows, a design that cannot identify the law) is recorded in `failed`."""
    from scalefit.fitting.fitter import fit

    groups = split_by(table, by)
    by = tuple(table.by if by is None else ([by] if isinstance(by, str) else by))
    fits, failed = {}, {}
    for key, sub in groups.items():
        try:
            fits[key] = fit(sub, law, **fit_options)
        except ValueError as e:
            failed[key] = str(e)
    return GroupFits(by=by, fits=fits, failed=failed, source=table.source)


def load_fits(path, law=None) -> FitResult | GroupFits:
    """A fit file (`FitResult.save`) or a group of fits (`GroupFits.save`), whichever `path` holds."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot read {path}: no such file (a fit result JSON, scalefit fit --out)")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if isinstance(d, dict) and d.get("schema") == GROUPS_SCHEMA:
        try:
            return GroupFits.from_dict(d, law)
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: a group of fits lacks or mistypes a field ({e})") from None
    return FitResult.load(path, law)
