"""Which rows of a table a fit uses: row filters, the run-id rule, best-of-a-sweep, checkpoints.

These are the selections a user otherwise writes in pandas before a fit. Each works on the fitter's
frame (columns N, D, C, loss, run, weight, row and the kept source columns) and returns a `Selection`:
which rows stay, the reason of every row that goes (so `load_table` lists it as excluded), the notes
that say what was done, and warnings. `scalefit.fitting.table.load_table` applies them in this order:
`where`, the run-id rule, `best_of`, `checkpoints`.

The run-id rule. Rows that share a run id are checkpoints of one run (a training curve): they must
share N and differ in D (tokens so far). Rows that share an id and differ in N, or repeat a (run, D),
are two runs under one name, which a run-level bootstrap would merge into one unit: refused, naming
the rows. Ids are unique within each group of `by` (one run scored on several evaluation sets is one
row per set).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

FITTER_COLUMNS = ("N", "D", "C", "loss", "run")


@dataclass(frozen=True)
class Selection:
    """The outcome of one selection over a frame's rows."""

    keep: np.ndarray  # [n] bool: rows that stay
    reasons: dict = field(default_factory=dict)  # row label -> why it goes (every row not kept)
    notes: tuple[str, ...] = ()  # what was selected, with counts
    warnings: tuple[str, ...] = ()  # what the user must know (e.g. a sweep that does not bracket its best)
    weight: np.ndarray | None = None  # [n] new row weights (None: unchanged)


def where_mask(df: pd.DataFrame, expr: str, aliases: dict, where: str) -> np.ndarray:
    """Rows of `df` (the source, as read) for which the pandas expression `expr` holds, e.g.
    "N < 1e9 and dataset == 'c4'"; `aliases` (the fitter's N, D, C, loss, run) fill names the source
    does not have, so an expression can name the fitted N whatever the source calls it. Backquote column
    names that are not identifiers: "`val/loss` < 3". NaN counts as not selected."""
    env = df.copy()
    env.index = pd.RangeIndex(len(env))
    for name, values in aliases.items():
        if name not in env.columns:
            env[name] = values
    try:
        got = env.eval(expr, engine="python")
    except Exception as e:  # pandas raises many types for a bad expression; the text is what matters
        raise ValueError(f"where {expr!r} cannot be evaluated on {where}: {type(e).__name__}: {e}; "
                         f"columns: {list(env.columns)}") from None
    got = pd.Series(got) if not isinstance(got, pd.Series) else got
    if len(got) != len(env) or not (pd.api.types.is_bool_dtype(got) or got.isna().all()):
        raise ValueError(f"where {expr!r} must give True/False per row of {where}, got {got.dtype} "
                         f"({got.head(3).tolist()})")
    return got.fillna(False).to_numpy(dtype=bool)


def reason_kind(why: str) -> str:
    """The kind of an exclusion reason, its text before the first " (" or ";" (the row's own numbers
    follow): what reports count rows by."""
    cut = [i for i in (why.find(" ("), why.find(";")) if i > 0]
    return why[:min(cut)] if cut else why


def _key_frame(frame: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """Columns as hashable keys; floats to 9 significant digits, so a cell matches through rounding noise."""
    out = {}
    for c in cols:
        v = frame[c]
        out[c] = v.map(lambda x: float(f"{x:.9g}")) if pd.api.types.is_float_dtype(v) else v.astype(str)
    return pd.DataFrame(out, index=frame.index)


def check_runs(frame: pd.DataFrame, by: Sequence[str], where: str, hint: str = "", one_row_per_run: bool = False) -> None:
    """The run-id rule (module docstring): ValueError naming the run and rows that break it.
    `one_row_per_run` (a W&B runs export: a row is a run, never a checkpoint) refuses any repeated id."""
    keys = [*by, "run"]
    groups = frame.groupby(keys, sort=False, dropna=False)
    sizes = groups.size()
    if (sizes <= 1).all():
        return
    fix = ("name a column of unique ids (run_col=..., --run-col)"
           + (", or split the table into groups (by=..., --by)" if not by else "") + (f"; {hint}" if hint else ""))
    multi = frame.set_index(keys).index.isin(sizes.index[sizes > 1])
    sub = frame[multi]
    for key, g in sub.groupby(keys, sort=False, dropna=False):
        run = key[-1] if isinstance(key, tuple) else key
        rows = ", ".join(str(r) for r in g["row"].tolist()[:6])
        inside = "" if not by else f" (in group {', '.join(f'{b} = {v}' for b, v in zip(by, key[:-1]))})"
        if one_row_per_run:
            raise ValueError(f"run id {run!r}{inside} names rows {rows} of {where}, but each row of this table is a "
                             f"run of its own: merged, the run-level bootstrap would count them as one run; {fix}")
        if g["N"].nunique() > 1:
            raise ValueError(
                f"run id {run!r}{inside} is shared by rows {rows} of {where} with different N "
                f"({', '.join(f'{x:.4g}' for x in sorted(g['N'].unique())[:4])}): rows of one run are checkpoints "
                f"of one model and share N, so these are different runs under one id, which the run-level "
                f"bootstrap would merge; {fix}")
        dup = g["D"].duplicated(keep=False).to_numpy()
        if dup.any():
            rows = ", ".join(str(r) for r in g["row"][dup].tolist()[:6])
            raise ValueError(
                f"run id {run!r}{inside} has several rows at D = {g['D'][dup].iloc[0]:.4g} (rows {rows} of {where}): "
                f"checkpoints of one run differ in D (tokens so far), so these are repeated rows or different "
                f"runs under one id; {fix}")


def is_curve_table(frame: pd.DataFrame, by: Sequence[str] = ()) -> bool:
    """True when some run id has several rows (checkpoints of one run: a training curve)."""
    return bool(frame.duplicated([*by, "run"]).any())


def _last_rows(frame: pd.DataFrame, by: Sequence[str]) -> pd.Series:
    """Per row, True when it is its run's final point (largest D)."""
    d_max = frame.groupby([*by, "run"], sort=False, dropna=False)["D"].transform("max")
    return frame["D"] == d_max


def parse_checkpoints(rule: str) -> tuple[str, float]:
    """"final" | "all" | "after=FRACTION" -> (kind, fraction)."""
    text = str(rule).strip().lower()
    if text in ("final", "all"):
        return text, 0.0 if text == "all" else 1.0
    kind, sep, value = text.partition("=")
    if kind == "after" and sep:
        try:
            f = float(value)
        except ValueError:
            f = float("nan")
        if 0 <= f <= 1:
            return "after", f
    raise ValueError(f"checkpoints must be 'final', 'all' or 'after=FRACTION' with FRACTION in [0, 1] "
                     f"(e.g. after=0.5: the checkpoints past half of each run's tokens), got {rule!r}")


def checkpoints(frame: pd.DataFrame, rule: str = "final", by: Sequence[str] = (), step_col: str | None = None) -> Selection:
    """Which checkpoints of a curve table to fit (a table of one row per run passes unchanged).

    final: each run's last point (largest D), the default for a law in N and D: earlier checkpoints of
    a decaying schedule sit above the loss a run trained to that D would reach. all / after=F: every
    checkpoint, or those with D >= F x the run's final D, each weighted 1/k (k checkpoints kept in its
    run, times its own weight) so a long curve weighs as much as a run of one point, not k times more;
    the bootstrap resamples whole runs either way (`scalefit.fitting.resample.resample_weights`).
    `step_col` names the source's step column: without one, rows sharing an id might be separate runs
    that share a name, and a warning says how they were read.
    """
    kind, frac = parse_checkpoints(rule)
    n = len(frame)
    if not is_curve_table(frame, by):
        return Selection(keep=np.ones(n, bool))
    runs = frame.groupby([*by, "run"], sort=False, dropna=False)
    d_final = runs["D"].transform("max").to_numpy(float)
    D = frame["D"].to_numpy(float)
    keep = D >= frac * d_final if kind != "final" else _last_rows(frame, by).to_numpy()
    # Derived rows (`scalefit.analysis.derived`) share their source curve's id so a bootstrap resamples them
    # together, but each is the final loss of a cooled-down run of its own length: never an earlier checkpoint.
    derived = frame["derived"].to_numpy(bool) if "derived" in frame else np.zeros(n, bool)
    keep = keep | derived
    reasons = {}
    for r, d, df_ in zip(frame["row"][~keep], D[~keep], d_final[~keep]):
        reasons[r] = (f"checkpoint before its run's final point (D = {d:.4g} of {df_:.4g}, checkpoints='final' "
                      f"fits each run's last)" if kind == "final" else
                      f"checkpoint before {frac:g} of its run's tokens (D = {d:.4g} of {df_:.4g}, "
                      f"checkpoints={rule!r})")
    n_runs = runs.ngroups
    head = (f"curve table: {n} rows of {n_runs} runs ({n / n_runs:.1f} checkpoints per run); rows sharing a "
            f"run id and differing in D are read as checkpoints of one run")
    warn = () if step_col else (
        f"{n} rows share {n_runs} run ids and the table has no step column: they were read as checkpoints of "
        f"{n_runs} runs (checkpoints={rule!r}); if they are separate runs under one name, give each a unique id "
        f"(run_col=..., --run-col)",)
    if kind == "final":
        return Selection(keep=keep, reasons=reasons, warnings=warn,
                         notes=(f"{head}; fitted each run's final point (checkpoints='final'), "
                                f"{int((~keep).sum())} earlier checkpoints excluded",))
    k = pd.Series(keep, index=frame.index).groupby([frame[c] for c in [*by, "run"]], sort=False,
                                                    dropna=False).transform("sum").to_numpy(float)
    weight = np.where(keep, frame["weight"].to_numpy(float) / np.maximum(k, 1), 0.0)
    what = "every checkpoint" if kind == "all" else f"the checkpoints with D >= {frac:g} x their run's final D"
    return Selection(keep=keep, reasons=reasons, weight=weight, warnings=warn,
                     notes=(f"{head}; fitted {what} ({int(keep.sum())} rows, {int((~keep).sum())} excluded), "
                            f"each weighted 1/(checkpoints kept in its run) so every run weighs the same; "
                            f"the bootstrap resamples whole runs",))


def best_of(frame: pd.DataFrame, col: str, per: Sequence[str] = ("N", "D"), by: Sequence[str] = ()) -> Selection:
    """Keep, in each cell of `per` (within each group of `by`), the run of lowest final loss over the
    values of `col` tried (e.g. the learning rate of a sweep that trains each (N, D) at several).

    A run's cell and loss are those of its final point (largest D); all rows of the runs that lose
    are excluded, each with the winner's value and loss. Cells match on floats to 9 significant
    digits. Warns when the winner of many cells is the smallest or largest value tried (with >= 3
    tried): the sweep may not bracket the best value, and those cells' losses are then too high.
    """
    for c in (col, *per):
        if c not in frame.columns:
            raise ValueError(f"best_of: column {c!r} is not in the table; columns: {list(frame.columns)}")
    if col in per:
        raise ValueError(f"best_of: the column swept ({col!r}) cannot also define the cell ({list(per)})")
    finals = frame[_last_rows(frame, by).to_numpy()]
    cells = _key_frame(finals, [*by, *per])
    cell_id = list(cells.itertuples(index=False, name=None))
    order = finals.assign(_cell=cell_id).sort_values("loss", kind="stable")
    winner: dict = {}  # cell -> the row (as a dict) of lowest final loss
    loser_runs: dict = {}  # (*by, run) -> why its rows go
    for r in order.to_dict("records"):
        w = winner.setdefault(r["_cell"], r)
        if w is r:
            continue
        where = ", ".join(f"{p} = {v}" for p, v in zip([*by, *per], r["_cell"]))
        loser_runs[(*(r[b] for b in by), r["run"])] = (
            f"not the lowest loss of its cell (best_of={col!r}, {where}: {col} = {r[col]!r} reached "
            f"{r['loss']:.5g}, {col} = {w[col]!r} reached {w['loss']:.5g})")
    run_key = list(zip(*(frame[c] for c in [*by, "run"])))
    keep = np.array([k not in loser_runs for k in run_key], bool)
    reasons = {row: loser_runs[k] for row, k in zip(frame["row"], run_key) if k in loser_runs}
    sizes = order.groupby("_cell", sort=False).size()
    tried = order.groupby("_cell", sort=False)[col].nunique()
    note = (f"best of {col} per ({', '.join([*by, *per])}): {len(order)} runs in {len(sizes)} cells "
            f"({tried.mean():.2g} values of {col} per cell on average); kept the lowest final loss of each, "
            f"{len(loser_runs)} runs ({int((~keep).sum())} rows) dropped")
    warnings = []
    single = int((sizes == 1).sum())
    if single:
        warnings.append(f"best_of={col!r}: {single} of {len(sizes)} cells have a single run, so nothing was "
                        f"chosen there")
    repeats = int((tried < sizes).sum())
    if repeats:
        warnings.append(f"best_of={col!r}: in {repeats} cells several runs share a value of {col} (seeds or "
                        f"repeats?): the lowest loss among them was kept, which favours the luckiest seed")
    if pd.api.types.is_numeric_dtype(order[col]):
        span = order.groupby("_cell", sort=False)[col].agg(["min", "max", "nunique"])
        span = span[span["nunique"] >= 3]
        won = np.array([winner[c][col] for c in span.index], float)
        for side, at in (("smallest", won == span["min"].to_numpy()), ("largest", won == span["max"].to_numpy())):
            if at.sum() and at.sum() >= max(1, len(span) // 4):
                warnings.append(f"best_of={col!r}: in {int(at.sum())} of {len(span)} cells the lowest loss is at "
                                f"the {side} {col} tried: the sweep may not bracket the best {col}, and the losses "
                                f"fitted there are then too high")
    return Selection(keep=keep, reasons=reasons, notes=(note,), warnings=tuple(warnings))
