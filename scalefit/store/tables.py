"""The run store as tables: one row per run (`load`), one row per logged step (`load_curves`), and
ingest of outside logs (CSV, JSONL, Parquet, a W&B runs export) into the same run-table schema.

Conventions (docs/conventions.md): N_total includes embeddings (Hoffmann et al. 2022's N),
N_non_embedding is Kaplan et al. (2020)'s N, N_active the non-embedding parameters one token uses
(MoE). D = training tokens. C_6N = 6 * N_active * D; C_exact = exact matmul FLOPs (forward +
backward) per token * D (scalefit.training.counting). Losses are nats per token. The fitter's columns N, C,
loss and run are filled from these by ``n_kind`` / ``c_kind`` / ``loss`` and named in ``df.attrs``.

Run folders are read through their records (scalefit.store.records, scalefit.store.folder), and a
run's status is `scalefit.store.folder.run_status`, the rule the sweep follows too. Damaged records
never stop a load and are never dropped silently: a run folder whose spec.json or summary.json does
not read is skipped, a metrics line that does not read is left out, a plan.json that does not read
leaves the sweep columns empty, and each is listed in ``df.attrs["skipped"]`` as (file, reason).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from scalefit.conventions import COUNTED, CKind, NKind, run_flops
from scalefit.store import folder
from scalefit.store.records import METRIC_FIELDS, METRICS_FILE, PLAN_FILE, SUMMARY_FILE, MetricRecord, Role

# The run table: column -> meaning. `load` and `ingest` return exactly these columns, in this order.
RUN_TABLE: dict[str, str] = {
    "run_id": "run folder name (a hash of the run's full spec) or the outside log's run name",
    "status": "completed | diverged | partial (checkpoint, not finished) | pending | other outside states",
    "sweep": "sweep name (plan.json), else empty",
    "design": "the sweep's design (scalefit.sweep.designs.DESIGNS), else empty",
    "label": "the run's name in its sweep, e.g. C1e+12/d64-l2",
    "group": "the design's group: IsoFLOP budget, model size or MoE base size",
    "role": "run | trunk (WSD stable phase) | branch (WSD cooldown)",
    "preset": "ladder shape name",
    "budget": "requested FLOPs of an IsoFLOP run (its flops_convention), else NaN",
    "N_total": "parameters incl. embeddings",
    "N_non_embedding": "parameters without the embedding and output layer (Kaplan's N)",
    "N_active": "non-embedding parameters used per token (== N_non_embedding when dense)",
    "D": "training tokens seen (last logged step for unfinished runs)",
    "steps": "optimizer steps taken",
    "C_6N": "6 * N_active * D FLOPs",
    "C_exact": "exact training FLOPs (matmuls incl. attention and output layer, forward + backward)",
    "final_train_loss": "training cross-entropy at the last logged step, nats/token",
    "final_eval_loss": "validation cross-entropy at the last evaluation, nats/token",
    "wall_time": "seconds of training, incl. inherited trunk time for ladder branches",
    "wall_time_own": "seconds this run spent itself (wall_time less its parent's)",
    "d_model": "residual width", "n_layer": "blocks", "n_head": "query heads", "n_kv_head": "key/value heads",
    "d_ff": "MLP (expert) width", "seq_len": "context length", "vocab_size": "vocabulary",
    "n_expert": "experts per MLP (1 = dense)", "top_k": "experts per token",
    "schedule": "cosine | constant | wsd", "lr": "peak learning rate", "batch_size": "sequences per step",
    "seed": "init and data seed", "parent": "run whose checkpoint this run started from",
    "corpus_fingerprint": "sha256 of the corpus", "source": "the run folder or outside file",
    # The fitter's view (scalefit.fitting.table.load_table): filled from the columns above.
    "run": "= run_id", "N": "= N_<n_kind>", "C": "= C_exact, or 6 N D with the N above (c_kind 6ND)",
    "loss": "= final_<loss>_loss",
}
_NUMERIC = {"budget", "N_total", "N_non_embedding", "N_active", "D", "steps", "C_6N", "C_exact",
            "final_train_loss", "final_eval_loss", "wall_time", "wall_time_own", "d_model", "n_layer",
            "n_head", "n_kv_head", "d_ff", "seq_len", "vocab_size", "n_expert", "top_k", "lr",
            "batch_size", "seed", "N", "C", "loss"}
# SCHEMA was this table's name; kept for code that imports it (the sweep's keys are SWEEP_KEYS, a fit
# result's version tag scalefit.fitting.result.SCHEMA).
SCHEMA = RUN_TABLE
_MODEL_COLS = ("d_model", "n_layer", "n_head", "n_kv_head", "d_ff", "seq_len", "vocab_size", "n_expert", "top_k")
_TRAIN_COLS = ("schedule", "lr", "batch_size", "seed")


def _counted(c_kind) -> CKind:
    c_kind = CKind.parse(c_kind)
    if c_kind not in COUNTED:
        raise ValueError(f"c_kind of a run table must be one of {', '.join(COUNTED)}, got {c_kind.value!r}")
    return c_kind


def _record(read, run_dir: Path, skipped: list, left_out: str = "run left out"):
    """The record ``read`` returns, or None with the file and reason listed in ``skipped``."""
    try:
        return read(run_dir)
    except folder.RecordError as e:
        skipped.append((str(e.path), f"{e.reason}; {left_out}"))
        return None


def _metrics(path: Path, skipped: list) -> tuple[MetricRecord, ...]:
    """Records of a metrics.jsonl; every line that is not one is listed in ``skipped``."""
    scan = folder.scan_metrics(path)
    skipped.extend((f"{path}:{b.number}", "last line cut mid-write (run interrupted); line left out" if b.cut
                    else "line is not a valid metrics record; line left out") for b in scan.bad)
    return scan.records


def _or(v, default):
    return default if v is None else v


def _run_row(d: Path, skipped: list) -> tuple[dict, list[dict]] | None:
    spec = _record(folder.read_spec, d, skipped)
    if spec is None:
        return None
    recs = _metrics(d / METRICS_FILE, skipped)
    summary = None
    if (d / SUMMARY_FILE).exists() and (summary := _record(folder.read_summary, d, skipped)) is None:
        return None
    plan = None
    if (d / PLAN_FILE).exists():
        plan = _record(folder.read_plan, d, skipped, "sweep columns left empty")
    if summary is not None:
        tokens, steps, wall = summary.tokens, summary.steps, summary.wall_time
        c_6n, c_exact = summary.flops_6N, summary.flops_exact
        train_loss, eval_loss = summary.final_train_loss, summary.final_eval_loss
    else:  # not finished: the last logged step (and evaluation) stand in for the summary
        last = recs[-1] if recs else None
        evals = [r for r in recs if r.eval_loss is not None]
        tokens, steps = _or(last and last.tokens, 0), last.step if last else 0
        wall = _or(last and last.wall_time, math.nan)
        c_6n, c_exact = spec.flops_per_token.six_n * tokens, spec.flops_per_token.exact * tokens
        train_loss, eval_loss = last.train_loss if last else None, evals[-1].eval_loss if evals else None
    inherited = 0.0  # a ladder branch's log starts with its trunk's steps, and their wall time
    if plan is not None and plan.parent and plan.start_step:
        inherited = _or(next((r.wall_time for r in recs if r.step == plan.start_step), 0.0), 0.0)
    row = {
        "run_id": d.name, "status": folder.run_status(d).value,
        "sweep": plan.sweep if plan else "", "design": plan.design if plan else "",
        "label": plan.label if plan else d.name, "group": plan.group if plan else "",
        "role": plan.role.value if plan else Role.RUN.value, "preset": plan.preset if plan else "",
        "budget": _or(plan and plan.budget, math.nan),
        "N_total": spec.params.total, "N_non_embedding": spec.params.non_embedding, "N_active": spec.params.active,
        "D": tokens, "steps": steps, "C_6N": c_6n, "C_exact": c_exact,
        "final_train_loss": train_loss, "final_eval_loss": eval_loss, "wall_time": wall,
        "wall_time_own": wall - inherited,
        # The shape and training columns are named after the config fields spec.json keeps.
        **{k: spec.model.get(k) for k in _MODEL_COLS},
        **{k: spec.train.get(k) for k in _TRAIN_COLS},
        "parent": (plan.parent if plan else None) or "", "corpus_fingerprint": spec.corpus.fingerprint,
        "source": str(d),
    }
    curve = [{"run_id": d.name, **{k: getattr(r, k) for k in METRIC_FIELDS}} for r in recs]
    return row, curve


def _frame(rows: list[dict], n_kind: str, c_kind: str, loss: str, skipped: list, source: str) -> pd.DataFrame:
    n_kind, c_kind = NKind.parse(n_kind), _counted(c_kind)
    if loss not in ("eval", "train"):
        raise ValueError(f"loss must be 'eval' or 'train', got {loss!r}")
    df = pd.DataFrame(rows, columns=[c for c in RUN_TABLE if c not in ("run", "N", "C", "loss")])
    for c in _NUMERIC & set(df.columns):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    df["run"], df["N"] = df["run_id"], df[n_kind.store_column]
    # 6ND is a convention of N as much as of C: the fitter's C is 6 D times the N it fits, whichever
    # that is (C_6N keeps 6 N_active D, the FLOPs a dense or MoE step does).
    df["C"] = run_flops(c_kind, df["N"], df["D"], df["C_exact"])
    df["loss"] = df[f"final_{loss}_loss"]
    df = df[list(RUN_TABLE)]
    df.attrs.update({"source": source, "skipped": list(skipped), "n_convention": n_kind.value,
                     "c_convention": c_kind.value, "loss": f"final {loss} loss, nats per token"})
    return df


def load_store(root: str | os.PathLike, *, n_kind: str = "total", c_kind: str = "exact",
               loss: str = "eval") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(run table, curves) of a run store; see `load` and `load_curves`."""
    root = Path(root)
    skipped: list = []
    rows, curves = [], []
    for d in folder.run_dirs(root):
        got = _run_row(d, skipped)
        if got is not None:
            rows.append(got[0])
            curves.extend(got[1])
    df = _frame(rows, n_kind, c_kind, loss, skipped, str(root))
    cv = pd.DataFrame(curves, columns=["run_id", *METRIC_FIELDS])
    for c in cv.columns[1:]:
        cv[c] = pd.to_numeric(cv[c], errors="coerce").astype("float64")
    cv.attrs["skipped"] = list(skipped)
    return df, cv


def load(root: str | os.PathLike, *, n_kind: str = "total", c_kind: str = "exact",
         loss: str = "eval") -> pd.DataFrame:
    """The run table of a run store: one row per run folder, columns `RUN_TABLE` in that order.

    n_kind ("total" | "non-embedding" | "active"), c_kind ("exact" | "6ND") and loss ("eval" |
    "train") choose what the fitter's N, C and loss columns hold; ``df.attrs`` names them
    (n_convention, c_convention) so `scalefit.fitting.table.load_table(df)` reads the convention. Damaged
    files are listed in ``df.attrs["skipped"]``.
    """
    return load_store(root, n_kind=n_kind, c_kind=c_kind, loss=loss)[0]


def load_curves(root: str | os.PathLike) -> pd.DataFrame:
    """Long table of every logged step: run_id, step, tokens, flops_6N, flops_exact, train_loss,
    eval_loss (NaN where no evaluation ran), lr, grad_norm, wall_time."""
    return load_store(root)[1]


def export(root: str | os.PathLike, out: str | os.PathLike, **kw) -> Path:
    """Write the run table to ``out`` (.csv, or .parquet / .pq through pyarrow)."""
    df = load(root, **kw)
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".csv":
        df.to_csv(out, index=False)
    elif suffix in (".parquet", ".pq"):
        df.attrs = {k: v for k, v in df.attrs.items() if k != "skipped"}  # attrs go into Parquet metadata
        df.to_parquet(out, index=False)
    else:
        raise ValueError(f"cannot export to {out}: expected a .csv or .parquet file name")
    return out


# A W&B "export runs to CSV": run name, state and runtime have fixed names; the rest is the user's.
WANDB_COLUMNS = {"Name": "run_id", "State": "status", "Runtime": "wall_time"}
_WANDB_STATES = {"finished": "completed", "crashed": "crashed", "failed": "failed", "running": "partial",
                 "killed": "killed"}


def _read_outside(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(f"cannot read {path}: no such file")
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except Exception as e:  # parsers raise many types; the file name is what the user needs
        raise ValueError(f"cannot read {path} as {suffix[1:]}: {type(e).__name__}: {e}") from e
    raise ValueError(f"cannot read {path}: expected .csv, .jsonl or .parquet, got {suffix or 'no suffix'!r}")


def ingest(source, mapping: dict[str, str] | None = None, *, wandb: bool = False, n_kind: str = "total",
           c_kind: str = CKind.SIX_ND, loss: str = "eval") -> pd.DataFrame:
    """Outside logs -> the run table (`RUN_TABLE`), so the fitter sees one schema whatever the origin.

    source: a DataFrame or a .csv / .jsonl / .parquet file. mapping: schema column -> source column,
    e.g. {"N_total": "params", "D": "tokens", "final_eval_loss": "val/loss"}. wandb=True also maps a
    W&B runs export's Name, State and Runtime. Missing C columns are computed: C_6N = 6 N_active D
    (N_active falling back to N_non_embedding, then N_total; noted in attrs). Unmapped schema columns
    are empty. ValueError naming the column when a mapped column is absent or when no N, D or loss
    can be formed.
    """
    df = source if isinstance(source, pd.DataFrame) else _read_outside(Path(source))
    where = "the DataFrame" if isinstance(source, pd.DataFrame) else str(source)
    mapping = dict(mapping or {})
    if wandb:
        mapping = {**{v: k for k, v in WANDB_COLUMNS.items() if k in df.columns}, **mapping}
    for col, src in mapping.items():
        if col not in RUN_TABLE:
            raise ValueError(f"mapping key {col!r} is not a run-table column; columns: {list(RUN_TABLE)}")
        if src not in df.columns:
            raise ValueError(f"{col}: column {src!r} not found in {where}; columns available: {list(df.columns)}")
    out = {col: df[src].to_numpy() for col, src in mapping.items()}
    notes = []
    n = len(df)
    if "run_id" not in out:
        out["run_id"] = np.array([f"row{i}" for i in range(n)], dtype=object)
        notes.append("run_id: row numbers (no run column mapped)")
    if wandb and "status" in out:
        out["status"] = np.array([_WANDB_STATES.get(str(s), str(s)) for s in out["status"]], dtype=object)
    out.setdefault("status", np.array(["completed"] * n, dtype=object))
    if "C_6N" not in out and "D" in out:
        for ncol in ("N_active", "N_non_embedding", "N_total"):
            if ncol in out:
                out["C_6N"] = 6.0 * pd.to_numeric(pd.Series(out[ncol]), errors="coerce").to_numpy() * \
                    pd.to_numeric(pd.Series(out["D"]), errors="coerce").to_numpy()
                notes.append(f"C_6N computed as 6 * {ncol} * D")
                break
    n_kind, c_kind = NKind.parse(n_kind), _counted(c_kind)
    if n_kind.store_column not in out:
        raise ValueError(f"{where}: n_kind={n_kind.value!r} needs a mapping for {n_kind.store_column!r}")
    if f"final_{loss}_loss" not in out:
        raise ValueError(f"{where}: loss={loss!r} needs a mapping for 'final_{loss}_loss'")
    if "D" not in out:
        raise ValueError(f"{where}: needs a mapping for 'D' (training tokens)")
    if c_kind is CKind.EXACT and "C_exact" not in out:
        raise ValueError(f"{where}: c_kind='exact' needs a mapping for 'C_exact'")
    out.setdefault("source", np.array([where] * n, dtype=object))
    rows = pd.DataFrame({c: out.get(c, [None] * n) for c in RUN_TABLE if c not in ("run", "N", "C", "loss")})
    frame = _frame(rows.to_dict("records"), n_kind, c_kind, loss, [], where)
    frame.attrs["notes"] = notes
    return frame


def format_table(df: pd.DataFrame) -> str:
    """`scalefit runs ls`: status, label, N (total / active), D, C (exact), final losses, wall time."""
    lines = [f"{'run_id':26s} {'label':22s} {'status':9s} {'N_total':>9s} {'N_active':>9s} {'D':>9s} "
             f"{'C_exact':>9s} {'train':>7s} {'eval':>7s} {'wall':>7s}"]

    def f(v, spec):
        return format(v, spec) if v is not None and not (isinstance(v, float) and math.isnan(v)) else "-"

    for r in df.itertuples():
        lines.append(f"{r.run_id:26s} {str(r.label)[:22]:22s} {r.status:9s} {f(r.N_total, '9.3g'):>9s} "
                     f"{f(r.N_active, '9.3g'):>9s} {f(r.D, '9.3g'):>9s} {f(r.C_exact, '9.3g'):>9s} "
                     f"{f(r.final_train_loss, '7.4f'):>7s} {f(r.final_eval_loss, '7.4f'):>7s} "
                     f"{f(r.wall_time_own, '6.1f'):>6s}s")
    counts = df["status"].value_counts().to_dict()
    lines.append(f"{len(df)} runs: " + ", ".join(f"{v} {k}" for k, v in counts.items())
                 + "; N total/active parameters, D tokens, C exact FLOPs, losses nats/token, own wall time")
    lines += [f"skipped {w}: {why}" for w, why in df.attrs.get("skipped", [])]
    return "\n".join(lines)
