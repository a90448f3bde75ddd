"""Reading a source, and which of its columns holds which field: the names tried, N per kind, W&B exports.

Every command reads its table through `scalefit.fitting.table.load_table`, so the column options are the
same everywhere: a field's column is the one named (`n_col=...`, `--n-col`), else the first of its
candidate names present (exact, then case-insensitive). N has a column per kind of count
(`scalefit.conventions.NKind`): `n_col={"total": "N", "non-embedding": "N_ne"}` (or `--n-col
non-embedding=N_ne`) names them, and a column whose name says its kind (`N_non_embedding`, ...) is found
for that kind. A column that looks like another kind of N and is left unused is warned about, so a
table with both counts never silently fits the one the user did not mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pathlib import Path

import numpy as np
import pandas as pd

from scalefit.conventions import SIXND_EXACT_RTOL, SIXND_RTOL, CKind, NKind
from scalefit.fitting import datasets
from scalefit.store.tables import _read_outside as read_outside

# Column names tried, in order, when no column is named; matched exactly, then case-insensitively.
# N's generic names say nothing of the kind: such a column is taken to count the kind asked for.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "N": ("N", "n", "params", "parameters", "n_params", "num_params", "Model Size", "model_size", "N_nominal"),
    "D": ("D", "tokens", "t", "n_tokens", "num_tokens", "Training Tokens", "training_tokens", "D_tokens",
          "tokens_seen"),
    "C": ("C", "flops", "FLOPs", "compute", "Training FLOP", "training_flops", "C_6ND", "flops_reported"),
    "loss": ("loss", "final_loss", "val_loss", "eval_loss", "pile_test_xent", "val/loss", "eval/loss",
             "validation_loss", "loss_validation"),
    "run": ("run", "run_id", "run_name"),
    "weight": (),  # only an explicitly named column: a stray "weight" column is too easy to misread
    # A checkpoint's position in its run (orders a curve's rows when D ties); only read for curve tables.
    "step": ("step", "_step", "global_step", "iteration", "iter"),
}

# Names that say which parameters a column counts (the run table's own names first).
N_KIND_CANDIDATES: dict[NKind, tuple[str, ...]] = {
    NKind.TOTAL: ("N_total", "n_total", "total_params", "params_total", "n_params_total", "num_params_total",
                  "total_parameters", "total_parameter_count"),
    NKind.NON_EMBEDDING: ("N_non_embedding", "N_nonembedding", "N_ne", "n_non_embedding", "non_embedding_params",
                          "params_non_embedding", "n_params_non_embedding", "nonembedding_params",
                          "non_embedding_parameters"),
    NKind.ACTIVE: ("N_active", "n_active", "active_params", "params_active", "n_params_active",
                   "active_parameters"),
}

# A W&B "export runs to CSV": these columns are always there; the run's name is the run id.
WANDB_MARKERS = ("Name", "State")
WANDB_FINISHED = "finished"


def find(df: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    """The first of `names` that is a column of `df`: exact match first, then case-insensitive."""
    for cand in names:
        if cand in df.columns:
            return cand
    lower = {str(c).lower(): c for c in df.columns}
    return next((lower[c.lower()] for c in names if c.lower() in lower), None)


def column(df: pd.DataFrame, field: str, given: str | None, where: str) -> str | None:
    """The column holding `field`: `given` (which must exist) or the first candidate present."""
    if given is not None:
        if given not in df.columns:
            raise ValueError(f"{field}: column {given!r} not found in {where}; columns available: {list(df.columns)}")
        return given
    return find(df, CANDIDATES[field])


def parse_n_cols(items) -> str | dict[NKind, str] | None:
    """`--n-col` values -> what `load_table(n_col=...)` takes: one plain column name (the N asked for),
    or KIND=COLUMN pairs (a column per kind of N), e.g. ["total=N", "non-embedding=N_ne"]."""
    if not items:
        return None
    plain, kinds = [], {}
    for item in items:
        key, sep, col = item.partition("=")
        try:
            kind = NKind.parse(key) if sep else None
        except ValueError:
            kind = None  # "a=b" is a column name unless its left side is a kind of N
        if kind is None:
            plain.append(item)
        elif kind in kinds and kinds[kind] != col.strip():
            raise ValueError(f"--n-col names two columns for {kind} N: {kinds[kind]!r} and {col.strip()!r}")
        else:
            kinds[kind] = col.strip()
    if plain and kinds:
        raise ValueError(f"--n-col mixes a plain column ({plain[0]!r}) with KIND=COLUMN pairs; name every "
                         "column with its kind, e.g. --n-col total=N --n-col non-embedding=N_ne")
    if len(plain) > 1:
        raise ValueError(f"--n-col given {len(plain)} plain columns {plain}; give one, or KIND=COLUMN pairs")
    return plain[0] if plain else kinds


@dataclass(frozen=True)
class NColumn:
    """Where N comes from and what else in the table counts parameters."""

    column: str | None  # the column read as N (None: none found)
    how: str  # in words: named, found by its kind's name, or a generic name taken as the kind asked
    others: Mapping[str, NKind]  # columns whose name says another kind of N, not named and not used


def n_column(df: pd.DataFrame, n_col, n_kind: NKind, where: str) -> NColumn:
    """Resolve N for `n_kind` from `n_col` (None, a column name, or {kind: column}).

    Order: the column named for this kind; a plain named column; a column whose name says this kind
    (`N_KIND_CANDIDATES`); a generic N name (`CANDIDATES["N"]`), taken to count `n_kind`. Columns that
    count another kind by their name, and were not named, are returned in `others`.
    """
    named = {NKind.parse(k, "n_col kind"): c for k, c in n_col.items()} if isinstance(n_col, Mapping) else {}
    for kind, c in named.items():
        if c not in df.columns:
            raise ValueError(f"N ({kind}): column {c!r} not found in {where}; columns available: {list(df.columns)}")
    by_name = {k: find(df, names) for k, names in N_KIND_CANDIDATES.items()}
    if n_kind in named:
        col, how = named[n_kind], f"named for {n_kind} N"
    elif named:
        raise ValueError(f"n_kind={n_kind.value!r} but the N columns named are for "
                         f"{', '.join(k.value for k in named)} only; name one for {n_kind} "
                         f"(--n-col {n_kind.value}=COLUMN) or fit one of those kinds (--n-kind)")
    elif isinstance(n_col, str):
        col, how = column(df, "N", n_col, where), f"named, taken as {n_kind} N"
    elif by_name[n_kind] is not None:
        col, how = by_name[n_kind], f"its name says {n_kind} N"
    else:
        col = find(df, CANDIDATES["N"])
        how = f"a name that does not say which parameters it counts, taken as {n_kind} N (n_kind)"
    # Columns named for another kind are the user's own statement: only those found by name are "others".
    others = {c: k for k, c in by_name.items()
              if c is not None and k is not n_kind and c != col and c not in named.values()}
    return NColumn(column=col, how=how, others=others)


def missing_n(df: pd.DataFrame, n_kind: NKind, others: Mapping[str, NKind], where: str) -> str:
    """The error for a table with no N column for `n_kind`, naming the other kinds it does have."""
    tried = ", ".join(repr(c) for c in CANDIDATES["N"])
    kind = ", ".join(repr(c) for c in N_KIND_CANDIDATES[n_kind])
    has = "; ".join(f"column {c!r} counts {k} N (--n-kind {k.value})" for c, k in others.items())
    return (f"no N column in {where}: tried {tried}, and for {n_kind} N {kind}; " + (f"{has}; " if has else "")
            + f"columns available: {list(df.columns)}; name it with n_col=... (--n-col)")


def unused_n_warnings(used: str, n_kind: NKind, others: Mapping[str, NKind], declared: bool) -> list[str]:
    """A warning per column that looks like another kind of N and is not fitted (none when the source
    declares its N convention itself, as a run store or a reference dataset does)."""
    if declared:
        return []
    return [f"column {c!r} looks like {k} parameters and is unused: N is {used!r}, counted as {n_kind}; "
            f"fit that count with --n-kind {k.value} (n_kind={k.value!r}), or name the columns "
            f"(--n-col {n_kind.value}={used} --n-col {k.value}={c}) to silence this" for c, k in others.items()]


def is_wandb_export(df: pd.DataFrame) -> bool:
    """True for a W&B runs export (its Name and State columns)."""
    return all(c in df.columns for c in WANDB_MARKERS)


# ---- reading a source ---------------------------------------------------------------------------


def read_source(source, n_kind: str) -> tuple[pd.DataFrame, str, list[str], str]:
    """A DataFrame, a dataset name or a file -> (frame, source label, notes, where-phrase for messages)."""
    if isinstance(source, pd.DataFrame):
        notes = _upstream_notes(source.attrs)
        return source, "DataFrame", notes, "the DataFrame"
    if isinstance(source, str) and source in datasets.names() and not Path(source).exists():
        df = datasets.load(source)
        conv = df.attrs["n_convention"]
        if conv.startswith("mixed"):
            raise ValueError(
                f"dataset {source!r} mixes N conventions ({conv}); load it with scalefit.fitting.datasets.load, "
                f"select rows of one convention and pass that DataFrame with n_kind=..."
            )
        if not conv.startswith(n_kind):
            raise ValueError(f"dataset {source!r} counts N as {conv!r}, but n_kind={n_kind!r} was asked for")
        return df, source, _upstream_notes(df.attrs), f"dataset {source!r}"
    if isinstance(source, (str, Path)):
        p = Path(source)
        return _read_file(p), str(p), [], f"file {p}"
    raise TypeError(f"source must be a DataFrame, a path or a dataset name, got {type(source).__name__}")


def _read_file(p: Path) -> pd.DataFrame:
    if not p.is_file():
        hint = "" if p.suffix else f" (and not a dataset name; known datasets: {', '.join(datasets.names())})"
        raise FileNotFoundError(f"cannot read {p}: no such file{hint}")
    if p.suffix.lower() in (".parquet", ".pq"):
        _need_pyarrow(p)
    if p.suffix.lower() in (".gz", ".bz2", ".xz", ".zst") and p.stem.lower().endswith(".csv"):
        try:  # a compressed CSV (e.g. Clark et al.'s curves.csv.gz): pandas decompresses it
            return pd.read_csv(p)
        except Exception as e:  # parser errors come in many types; the path is what the user needs
            raise ValueError(f"cannot read {p} as compressed csv: {type(e).__name__}: {e}") from e
    # The run store's reader of outside logs: CSV, JSONL (.jsonl, .ndjson), Parquet, with the file named.
    return read_outside(p)


def _need_pyarrow(p: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        raise ValueError(f"cannot read {p}: Parquet needs pyarrow, an optional dependency "
                         "(pip install 'scalefit-lab[parquet]')")


def _upstream_notes(attrs: dict) -> list[str]:
    # A dataset's own exclusions happened before this table saw it: repeat them so none is silent.
    if attrs.get("rows_dropped"):
        return [f"{attrs.get('name', 'source')}: {attrs['rows_dropped']} rows dropped upstream "
                f"(rows {attrs.get('dropped_rows')}): {attrs.get('dropped_reason', '')}".rstrip(": ")]
    return []


def c_kind_from_attrs(attrs: dict) -> str | None:
    conv = str(attrs.get("c_convention", ""))
    return next((k for k in CKind if conv.startswith(k.value)), None)


def infer_c_kind(num: dict, notes: list[str]) -> str:
    """The C convention of rows that name none: 6ND when C = 6 N D on every row, else unspecified."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(num["C"] / (6.0 * num["N"] * num["D"]) - 1.0)
    ok = np.isfinite(rel)
    if ok.any() and np.all(rel[ok] <= SIXND_EXACT_RTOL):
        notes.append(f"c_kind inferred as 6ND: C equals 6 N D to {SIXND_EXACT_RTOL:g} on every row")
        return CKind.SIX_ND
    notes.append("c_kind unspecified: C is not 6ND and no convention was given")
    return CKind.UNSPECIFIED


def check_6nd(num: dict, rows: list, where: str) -> None:
    """Refuse rows said to be counted as 6ND whose C is not 6 N D (to the tolerance of `conventions`)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(num["C"] / (6.0 * num["N"] * num["D"]) - 1.0)
    off = np.flatnonzero(np.isfinite(rel) & (rel > SIXND_RTOL))
    if off.size:
        shown = ", ".join(f"row {rows[i]} (C/6ND = {1 + rel[i]:.3g})" for i in off[:5])
        raise ValueError(
            f"c_kind='6ND' but C differs from 6*N*D by more than {SIXND_RTOL:.0%} in {off.size} rows of "
            f"{where}: {shown}; pass c_kind='exact' or 'reported', or drop the C column"
        )
