"""Where loss curves come in: a run store, the shipped multi-power curves, a curve table -> `CurveTable`.

`read_curves(source)` takes a `CurveTable` (returned as it is), a run-store folder (`curves_from_store`:
each run's logged losses with the schedule rebuilt exactly from its spec.json), the dataset name
"multipower" (`multipower_curves`: Luo et al. 2025's 27 curves with the schedules rebuilt from the paper's
definitions), or a CSV / Parquet file or DataFrame (`scalefit.fitting.curves.curves_from_frame`, with a
schedule file or a per-step rate column).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from scalefit.conventions import CKind, NKind
from scalefit.fitting import datasets
from scalefit.fitting.curves import CurveTable, curves_from_frame, validate
from scalefit.fitting.schedules import Schedule, from_run_spec, read_schedule

# ---- Luo et al. 2025's schedules (thu-yao-01-luo/MultiPowerLaw, src/lr_schedules.py, src/data_loader.py) ---

MULTIPOWER_WARMUP = 2160  # linear warmup 0 -> peak, np.linspace(0, peak, 2160)
MULTIPOWER_PEAK = 3e-4
MULTIPOWER_END = 3e-5  # cosine and WSD decays end here
MULTIPOWER_N = {"25M": 25e6, "100M": 100e6, "400M": 400e6}  # nominal sizes (the labels)
# The paper's split (datasets/README.md): fit on three curves per size, predict the six others.
MULTIPOWER_TRAIN = ("cosine_24000", "constant_24000", "wsdcon_9")
MULTIPOWER_TEST = ("constant_72000", "cosine_72000", "wsd_20000_24000", "wsdld_20000_24000", "wsdcon_3", "wsdcon_18")


def multipower_schedule(name: str) -> Schedule:
    """The rate of every step of Luo et al.'s schedule `name`, as their code builds it: warmup
    np.linspace(0, 3e-4, 2160), then constant_T, cosine_T (to 3e-5), wsd_20000_24000 (geometric decay to 3e-5
    from step 20,000), wsdld_20000_24000 (linear decay) or wsdcon_X (3e-4 to step 8,000, X * 1e-5 to 16,000)."""
    w, peak, end = MULTIPOWER_WARMUP, MULTIPOWER_PEAK, MULTIPOWER_END
    kind, _, arg = name.partition("_")
    warm = np.linspace(0.0, peak, w)
    if kind in ("constant", "cosine"):
        total = int(arg)
        s = np.arange(w, total, dtype=float)
        body = (np.full(s.size, peak) if kind == "constant"
                else end + 0.5 * (peak - end) * (1 + np.cos(np.pi * (s - w) / (total - w))))
    elif kind in ("wsd", "wsdld"):
        decay, total = (int(x) for x in arg.split("_"))
        s = np.arange(decay, total, dtype=float)
        x = (s - decay) / (total - decay)
        tail = peak ** (1 - x) * end ** x if kind == "wsd" else peak * (1 - x) + end * x
        body = np.concatenate([np.full(decay - w, peak), tail])
    elif kind == "wsdcon":
        body = np.concatenate([np.full(8000 - w, peak), np.full(8000, int(arg) * 1e-5)])
    else:
        raise ValueError(f"unknown multipower schedule {name!r}")
    return Schedule(np.concatenate([warm, body]), w, f"multipower {name}")


def multipower_curves(models=None, schedules=None) -> CurveTable:
    """Luo et al. 2025's curves (`scalefit.fitting.datasets.load("multipower")`), optionally only some sizes
    ("25M", ...) and schedules. Their step is the 0-based index of the last update applied, so a point at
    step s has seen s + 1 updates (their S1 = cumsum(lrs)[s]); N is the size label's value; D is steps."""
    df = datasets.load("multipower")
    if models is not None:
        df = df[df["model"].isin([models] if isinstance(models, str) else list(models))]
    if schedules is not None:
        df = df[df["schedule"].isin([schedules] if isinstance(schedules, str) else list(schedules))]
    if not len(df):
        raise ValueError(f"multipower: no curves for models={models!r}, schedules={schedules!r}")
    df = df.assign(curve=df["model"] + "/" + df["schedule"], N=df["model"].map(MULTIPOWER_N))
    sched = {f"{m}/{s}": multipower_schedule(s) for m, s in dict.fromkeys(zip(df["model"], df["schedule"]))}
    table = curves_from_frame(df, sched, step_offset=1, source="multipower", n_kind="total")
    # Check the rebuilt rates against the file's lr column (the rate at each point's last update).
    got = np.array([table.schedules[c].rates[s - 1] for c, s in zip(table.frame["curve"], table.frame["step"])])
    want = df.loc[table.frame["row"], "lr"].to_numpy(float)
    off = np.flatnonzero(np.abs(got - want) > 1e-9 * want)
    if off.size:
        raise ValueError(f"multipower: rebuilt rate differs from the file's lr at row {table.frame['row'][off[0]]}")
    return CurveTable(frame=table.frame, schedules=table.schedules, excluded=table.excluded,
                      notes=(*table.notes, "N is the size label (25M, 100M, 400M); D counts optimizer steps "
                             "(tokens per step not published); schedules rebuilt from Luo et al.'s definitions and "
                             "checked against the file's lr column"),
                      source="multipower", n_kind=NKind.TOTAL)


# ---- a run store ---------------------------------------------------------------------------------------


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def curves_from_store(folder, *, loss: str = "eval", n_kind="total", c_kind="exact") -> CurveTable:
    """Every run's logged losses in a run store, with the schedule rebuilt from its spec.json.

    loss: "eval" (validation passes) or "train" (the batch loss of every logged step). A ladder run
    (plan.json start_step > 0, parent in the store) contributes only its own steps: the inherited ones are its
    parent's points. A run whose logged rates differ from the rebuilt schedule, or that diverged or never
    started, is excluded with its reason; a partial run keeps the points it has.
    """
    from scalefit.store import tables

    if loss not in ("eval", "train"):
        raise ValueError(f"loss must be 'eval' or 'train', got {loss!r}")
    n_kind, c_kind = NKind.parse(n_kind), CKind.parse(c_kind)
    runs, cv = tables.load_store(folder, n_kind=n_kind, c_kind=c_kind)
    if not len(runs):
        raise ValueError(f"run store {folder}: no runs found")
    excluded = [(f, why) for f, why in runs.attrs.get("skipped", [])]
    present = set(runs["run_id"])
    col = f"{loss}_loss"
    schedules, rows, fpt = {}, [], {}
    for r in runs.itertuples():
        if r.status not in ("completed", "partial"):
            excluded.append((r.run_id, f"status {r.status}: no curve to fit"))
            continue
        run_dir = Path(r.source)
        spec = _json(run_dir / "spec.json")
        try:
            sched = from_run_spec(spec or {}, str(run_dir / "spec.json"))
        except ValueError as e:
            excluded.append((r.run_id, str(e)))
            continue
        plan = _json(run_dir / "plan.json") or {}
        start = int(plan.get("start_step") or 0) if plan.get("parent") in present else 0
        c = cv[(cv["run_id"] == r.run_id) & cv[col].notna() & (cv["step"] > start)]
        logged = cv[(cv["run_id"] == r.run_id) & cv["lr"].notna() & (cv["step"] >= 1) & (cv["step"] <= len(sched))]
        rebuilt = sched.rates[logged["step"].to_numpy(int) - 1]
        off = np.flatnonzero(np.abs(rebuilt - logged["lr"].to_numpy(float)) > 1e-6 * np.maximum(rebuilt, 1e-30))
        if off.size:
            s = int(logged["step"].iloc[off[0]])
            excluded.append((r.run_id, f"logged lr {logged['lr'].iloc[off[0]]:.6g} at step {s} differs from "
                                       f"{rebuilt[off[0]]:.6g} rebuilt from spec.json"))
            continue
        schedules[r.run_id] = sched
        fpt[r.run_id] = float((spec.get("flops_per_token") or {}).get("exact", np.nan))
        rows.append(pd.DataFrame({"curve": r.run_id, "step": c["step"].to_numpy(), "loss": c[col].to_numpy(),
                                  "N": r.N, "tokens_per_step": float(spec.get("tokens_per_step", np.nan)),
                                  "weight": 1.0, "row": [f"{r.run_id}:{int(s)}" for s in c["step"]]}))
    if not rows:
        raise ValueError(f"run store {folder}: no run has a curve to fit"
                         + (f" (e.g. {excluded[0][0]}: {excluded[0][1]})" if excluded else ""))
    notes = [f"run store {folder}: {loss} loss; ladder runs contribute only their own steps",
             f"N counts {n_kind.value} parameters; C is {c_kind.value} FLOPs"]
    return validate(pd.concat(rows, ignore_index=True), schedules, source=str(folder), notes=notes,
                    excluded=excluded, n_kind=n_kind, c_kind=c_kind, flops_per_token=fpt)


# ---- any source ----------------------------------------------------------------------------------------


def read_curves(source, *, schedule=None, loss: str = "eval", n_kind="total", c_kind="exact", N=None,
                tokens_per_step=None, step_offset: int = 0) -> CurveTable:
    """A `CurveTable` from a CurveTable, a run-store folder, "multipower", or a CSV / Parquet file or
    DataFrame of points (`curves_from_frame` with `schedule` (a Schedule, a mapping, a schedule file path, or
    None for a per-step lr column), N, tokens_per_step and step_offset; loss and c_kind are for run stores)."""
    frame_options = {"N": N, "tokens_per_step": tokens_per_step, "step_offset": step_offset}
    if isinstance(source, CurveTable):
        return source
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return curves_from_store(source, loss=loss, n_kind=n_kind, c_kind=c_kind)
    if isinstance(source, str) and source == "multipower" and not Path(source).exists():
        return multipower_curves()
    if isinstance(schedule, (str, Path)):
        schedule = read_schedule(schedule)
    if isinstance(source, pd.DataFrame):
        return curves_from_frame(source, schedule, n_kind=n_kind, **frame_options)
    p = Path(source)
    if not p.is_file():
        raise FileNotFoundError(f"cannot read curves from {p}: no such file, folder or dataset (multipower)")
    if p.suffix.lower() == ".csv":
        df = pd.read_csv(p)
    elif p.suffix.lower() in (".parquet", ".pq"):
        df = pd.read_parquet(p)
    else:
        raise ValueError(f"cannot read curves from {p}: expected .csv or .parquet")
    return curves_from_frame(df, schedule, n_kind=n_kind, source=str(p), **frame_options)


__all__ = ["MULTIPOWER_N", "MULTIPOWER_TEST", "MULTIPOWER_TRAIN", "curves_from_store", "multipower_curves",
           "multipower_schedule", "read_curves"]
