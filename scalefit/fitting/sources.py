"""The edge where runs come in: any source -> one validated `FitTable`, read once.

`read_runs` takes what a user points a command at: a `FitTable` (returned as it is), a run-store folder
(the trainer's runs, `scalefit.store.tables`), a CSV / Parquet file, a DataFrame or a reference dataset
name (`scalefit.fitting.table.load_table`). Everything above (fit, backtest, approaches, report) takes
the table this returns and never normalises input again. `store_curves` gives the same runs' training
curves for Approach 1, with C counted by the rule the final points follow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scalefit.conventions import CKind, NKind, run_flops
from scalefit.fitting.table import FitTable, load_table
from scalefit.store import tables


def is_store(source) -> bool:
    """True when `source` names a run-store folder."""
    return isinstance(source, (str, Path)) and Path(source).is_dir()


def read_runs(source, **table_options) -> FitTable:
    """A `FitTable` from a FitTable, DataFrame, CSV/Parquet path, dataset name, or run-store folder.

    A folder is read with `scalefit.store.tables.load` (final loss per run; N and C as the options
    n_kind and c_kind name them, C exact by default; E = each run's n_expert, for the MoE laws); runs
    whose status is not "completed" are excluded with that reason, so every report counts them.
    `table_options` are `load_table`'s keywords (columns, N kind, `where`, `by`, `best_of`,
    `checkpoints`), the same for every source.
    """
    if isinstance(source, FitTable):
        return source
    if not is_store(source):
        return load_table(source, **table_options)
    n_kind = NKind.parse(table_options.get("n_kind") or NKind.TOTAL)
    c_kind = CKind.parse(table_options.get("c_kind") or CKind.EXACT)
    df = tables.load(source, n_kind=n_kind, c_kind=c_kind)
    skipped = list(df.attrs.get("skipped", []))
    if not len(df):
        raise ValueError(f"run store {source}: no runs found" + (f" ({len(skipped)} damaged)" if skipped else ""))
    done = df["status"] == "completed"
    attrs = dict(df.attrs)
    df = df.copy()
    df.loc[~done, "loss"] = np.nan  # load_table lists each such row as excluded (loss is NaN)
    if np.all(np.isfinite(df["n_expert"].to_numpy(float))):
        df["E"] = df["n_expert"]  # the MoE laws' E (1 for a dense run), carried by load_table
    df.attrs = attrs
    table = load_table(df, **{**table_options, "n_kind": n_kind, "c_kind": c_kind})
    not_done = {str(r): s for r, s in zip(df.index, df["status"]) if s != "completed"}
    excluded = tuple((r, f"status {not_done[str(r)]} (not completed); " + why if str(r) in not_done else why)
                     for r, why in table.excluded)
    notes = (f"run store {source}", *(f"skipped {f}: {why}" for f, why in skipped))
    return table.with_context(excluded=excluded, notes=notes, source=str(source))


def store_curves(folder, table: FitTable) -> FitTable:
    """Training curves of a run store's runs in `table` for Approach 1: run, N (the table's), D (tokens
    so far), C (FLOPs so far, by `scalefit.conventions.run_flops` in the table's c_kind, as the final
    points), loss (evaluation loss; steps without an evaluation are left out)."""
    cv = tables.load_curves(folder)
    per_run = table.frame.set_index("run")["N"]
    cv = cv[cv["run_id"].isin(per_run.index) & cv["eval_loss"].notna()]
    N = per_run.loc[cv["run_id"]].to_numpy()
    C = run_flops(table.c_kind, N, cv["tokens"].to_numpy(), cv["flops_exact"].to_numpy())
    frame = pd.DataFrame({"run": cv["run_id"].to_numpy(), "N": N, "D": cv["tokens"].to_numpy(), "C": C,
                          "loss": cv["eval_loss"].to_numpy()})
    return load_table(frame, n_kind=table.n_kind, c_kind=table.c_kind, checkpoints="all")
