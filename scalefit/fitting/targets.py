"""Forecasts for a whole table of targets: one row in, one forecast with both intervals out.

`predict_table(result, targets)` reads the targets with the columns of the one table reader
(`scalefit.fitting.columns`: N per kind, D, C, the law's other inputs such as U, an optional observed
loss) and evaluates the fit at every row through the one prediction path (`FitResult.predict`,
`scalefit.fitting.predict`), all rows at once. For a law in N and D a row gives N and D, or a budget C
alone (the compute-optimal split of the point estimate, `scalefit.fitting.optimum.optimal_split`, as
`scalefit.analysis.forecast` does), or C with one of N, D (the other from the fit's C = D F(N)).
Targets are in the fit's conventions: a table whose N counts another kind of parameters is refused.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scalefit.conventions import NKind
from scalefit.fitting import columns
from scalefit.fitting.optimum import optimal_split

# Columns `predict_table` adds (a target table that has one of these names keeps it, suffixed "_target").
OUTPUT = {
    "how": "which inputs the forecast used: 'N, D', 'compute-optimal' (C alone), 'C, N' or 'C, D'",
    "pred": "point forecast of the loss, nats/token",
    "param_low": "bootstrap interval of the law (parameter uncertainty)", "param_high": "",
    "low": "prediction interval of one run (parameters + run-to-run scatter)", "high": "",
    "rel_err": "(pred - loss) / loss where the targets have an observed loss",
    "inside": "observed loss inside [low, high]",
}


def read_targets(source, law, n_kind: NKind, *, n_col=None, d_col=None, c_col=None, loss_col=None,
                 target_n_kind=None) -> tuple[pd.DataFrame, dict, list[str]]:
    """(the target table as read, {field: float array} of the inputs found, notes).

    `n_kind` is the fit's; `target_n_kind`, when given, is what the targets' N counts, and must be it.
    A target table whose only N columns count another kind (by name or as a dataset declares) is
    refused, so a non-embedding N never meets a law fitted in total N.
    """
    if target_n_kind is not None and NKind.parse(target_n_kind) is not n_kind:
        raise ValueError(f"the targets count N as {NKind.parse(target_n_kind)}, the fit as {n_kind}: "
                         f"forecast {n_kind} N (convert the targets, or refit in that count)")
    df, _, notes, where = columns.read_source(source, n_kind)
    n_conv = str(df.attrs.get("n_convention", ""))
    if n_conv and not n_conv.startswith(("mixed", n_kind.value)):  # a mixed dataset: the rows' own column says
        raise ValueError(f"{where} counts N as {n_conv!r}; the fit counts {n_kind} N")
    found = {}
    if "N" in law.inputs or law.can_allocate:
        n = columns.n_column(df, n_col, n_kind, where)
        if n.column is None and n.others:
            kinds = ", ".join(f"{c!r} ({k})" for c, k in n.others.items())
            raise ValueError(f"{where} gives N only as {kinds}, but the fit counts {n_kind} N: give targets in the "
                             f"fit's count (a {n_kind} column, --n-col {n_kind.value}=COLUMN)")
        if n.column is not None:
            found["N"] = n.column
            if n.others:
                notes.append(f"N <- {n.column!r} ({n_kind}, the fit's count); "
                             f"{', '.join(map(repr, n.others))} not used")
    for field, given in (("D", d_col), ("C", c_col)):
        col = columns.column(df, field, given, where)
        if col is not None:
            found[field] = col
    for cond in (*law.conditions, *[c for c in law.inputs if c not in ("N", "D", "C")]):
        if cond in df.columns:
            found[cond] = cond
    loss = columns.column(df, "loss", loss_col, where)
    if loss is not None:
        found["loss"] = loss
    values = {}
    for field, col in found.items():
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        present = df[col].notna().to_numpy()
        bad = np.flatnonzero(present & ~(np.isfinite(v) & (v > 0)))
        if bad.size:
            raise ValueError(f"{where}: {field} ({col!r}) must be a finite number > 0 where given; row "
                             f"{df.index[bad[0]]} has {df[col].iloc[bad[0]]}")
        values[field] = v
    notes.append("targets: " + ", ".join(f"{f} <- {c!r}" for f, c in found.items()))
    return df, values, notes


def predict_table(result, targets, *, level: float | None = None, n_col=None, d_col=None, c_col=None,
                  loss_col=None, n_kind=None) -> pd.DataFrame:
    """Forecast every row of `targets` (a DataFrame, a CSV / Parquet / JSONL path) from `result`.

    Returns the targets' columns plus `OUTPUT`'s (pred, both intervals at `level`, default the fit's;
    rel_err and inside where the targets carry an observed loss). `df.attrs` names the law, level and
    conventions (N kind, C kind, loss in nats/token) and how the columns were read. ValueError naming
    the row for a row that gives neither the law's inputs nor a budget.
    """
    law = result.law
    df, v, notes = read_targets(targets, law, result.n_kind, n_col=n_col, d_col=d_col, c_col=c_col,
                                loss_col=loss_col, target_n_kind=n_kind)
    n = len(df)
    if not n:
        raise ValueError("the target table has no rows")
    nan = np.full(n, np.nan)
    how = np.array([""] * n, dtype=object)
    at = {}
    if law.can_allocate:
        N, D, C = (v.get(k, nan).copy() for k in ("N", "D", "C"))
        cond = {k: v[k] for k in law.conditions if k in v}
        both = np.isfinite(N) & np.isfinite(D)
        how[both] = "N, D"
        only_c = np.isfinite(C) & ~np.isfinite(N) & ~np.isfinite(D)
        if only_c.any():
            N[only_c], D[only_c] = _compute_optimal(result, C[only_c], {k: c[only_c] for k, c in cond.items()})
            how[only_c] = "compute-optimal"
        c_n = np.isfinite(C) & np.isfinite(N) & ~np.isfinite(D) & ~only_c
        D[c_n] = result.compute.tokens(C[c_n], N[c_n])
        how[c_n] = "C, N"
        c_d = np.isfinite(C) & np.isfinite(D) & ~np.isfinite(N) & ~only_c
        N[c_d] = [result.compute.params_for(c, d) for c, d in zip(C[c_d], D[c_d])]
        how[c_d] = "C, D"
        at = {"N": N, "D": D, **cond}
        need = "N and D, or a budget C (with or without one of N, D)"
    else:
        at = {k: v.get(k, nan) for k in law.inputs}
        how[np.all([np.isfinite(x) for x in at.values()], axis=0)] = ", ".join(law.inputs)
        need = ", ".join(law.inputs)
    missing = np.flatnonzero(how == "")
    for k in law.conditions:
        if k in at:
            missing = np.union1d(missing, np.flatnonzero(~np.isfinite(at[k])))
        else:
            raise ValueError(f"law {law.name} also needs {k} for every target; the targets have no {k!r} column")
    if missing.size:
        i = missing[0]
        raise ValueError(f"target row {df.index[i]} gives no forecastable inputs: law {law.name} needs {need}"
                         + (f" and {', '.join(law.conditions)}" if law.conditions else "")
                         + f"; {missing.size} of {n} rows are like it")
    iv = result.predict(level, **{k: np.asarray(x, float) for k, x in at.items()})
    out = df.copy()
    for col in OUTPUT:
        if col in out.columns:
            out = out.rename(columns={col: f"{col}_target"})
    for k in ("N", "D") if law.can_allocate else ():
        out[f"at_{k}"] = at[k]
    out["how"] = how
    out["pred"] = iv.loss
    out["param_low"] = nan if iv.param_low is None else iv.param_low
    out["param_high"] = nan if iv.param_high is None else iv.param_high
    out["low"], out["high"] = iv.low, iv.high
    if "loss" in v:
        obs = v["loss"]
        out["rel_err"] = (iv.loss - obs) / obs
        out["inside"] = np.where(np.isfinite(obs), (obs >= iv.low) & (obs <= iv.high), np.nan)
    out.attrs = {"law": law.name, "level": iv.level, "n_kind": result.n_kind.value, "c_kind": result.c_kind.value,
                 "loss": "nats per token", "sigma": iv.sigma, "notes": notes,
                 "bootstrap": len(result.finite_samples())}
    return out


def _compute_optimal(result, C: np.ndarray, cond: dict) -> tuple[np.ndarray, np.ndarray]:
    """The point estimate's compute-optimal N and D at each budget (per distinct condition values)."""
    point = result.point()
    if not cond:
        N, D = optimal_split(result.law, point, C, result.compute, {})
        return N[0], D[0]
    N, D = np.empty_like(C), np.empty_like(C)
    keys = np.stack(list(cond.values()), axis=1)  # [m, n_conditions]
    for key in np.unique(keys, axis=0):
        rows = np.all(keys == key, axis=1)
        n, d = optimal_split(result.law, point, C[rows], result.compute, dict(zip(cond, key)))
        N[rows], D[rows] = n[0], d[0]
    return N, D


def summarize(pred: pd.DataFrame) -> str:
    """One line on a predicted table: rows, how they were forecast, and the error where losses were given."""
    counts = pred["how"].value_counts().to_dict()
    a = pred.attrs
    line = (f"{len(pred)} forecasts ({', '.join(f'{v} at {k}' for k, v in counts.items())}) of law {a.get('law')}, "
            f"{100 * a.get('level', 0):g}% intervals; N {a.get('n_kind')}, C {a.get('c_kind')}, loss in nats/token")
    if "rel_err" in pred.columns and pred["rel_err"].notna().any():
        r = pred["rel_err"].dropna()
        line += (f"; against the {len(r)} observed losses: mean |rel err| {r.abs().mean():.2%}, max "
                 f"{r.abs().max():.2%}, {pred['inside'].dropna().astype(bool).mean():.0%} inside their interval")
    return line
