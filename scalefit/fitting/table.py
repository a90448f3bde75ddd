"""The fitter's input layer: any table of runs -> a validated `FitTable` with named conventions.

`load_table` is the one table reader of every command. It accepts a DataFrame, a CSV, Parquet or JSONL
path (a W&B runs export among them), or a reference dataset name (`scalefit.fitting.datasets`); finds
the N / D / C / loss columns (`scalefit.fitting.columns`: named, or by their usual names, N per kind of
count); derives what is missing (D = C / (6N) or C = 6ND, Hoffmann et al. 2022 / Kaplan et al. 2020);
and selects the rows to fit (`scalefit.fitting.select`: a row filter, best-of-a-sweep, checkpoints of
curves, the run-id rule). Every row left out is listed in `FitTable.excluded` with its row label and
reason: nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scalefit.conventions import LOSS_UNIT, CKind, NKind
from scalefit.fitting import cells
from scalefit.fitting import columns as col_io
from scalefit.fitting import select
from scalefit.fitting.columns import CANDIDATES  # noqa: F401  (the names tried, importable from here too)

# Inputs of laws besides N, D and C, carried (and validated: finite, > 0) when the source has a column of
# exactly that name: U unique tokens (data-constrained laws), E experts and G granularity (MoE laws).
CONDITIONS = ("U", "E", "G")
# The fitter's own columns, which a named extra column may not replace.
_BASE = ("N", "D", "C", "loss", "run", "weight", "row")


# Units a loss column may be read in -> the factor to nats per token (docs/conventions.md).
LOSS_UNITS = {"nats": 1.0, "bits": float(np.log(2.0))}


@dataclass(frozen=True, eq=False)
class FitTable:
    """Runs ready to fit. Equal (and hashed) by fingerprint and conventions, not by object identity."""

    frame: pd.DataFrame  # columns N, D, C, loss, run, weight, row (+ U / kept columns); all finite, > 0
    excluded: tuple[tuple[object, str], ...]  # (row label, reason) for every source row not in frame
    notes: tuple[str, ...]  # how columns were found or derived, conventions inferred, upstream drops
    source: str  # the path, the dataset name, or "DataFrame"
    n_kind: NKind  # which parameters N counts
    c_kind: CKind  # how C was counted
    fingerprint: str  # sha256 of the used N, D, C, loss, run, weight (and U, E, named, kept columns) bytes
    warnings: tuple[str, ...] = ()  # what the user must know before trusting a fit of these rows
    by: tuple[str, ...] = ()  # grouping columns (kept in frame): one fit per group, run ids unique within
    excluded_groups: tuple[tuple, ...] = ()  # the `by` values of each excluded row (parallel to excluded)

    def __len__(self) -> int:
        return len(self.frame)

    def __eq__(self, other) -> bool:
        if not isinstance(other, FitTable):
            return NotImplemented
        return (self.fingerprint, self.n_kind, self.c_kind) == (other.fingerprint, other.n_kind, other.c_kind)

    def __hash__(self) -> int:
        return hash((self.fingerprint, self.n_kind, self.c_kind))

    def summary(self) -> dict:
        """Rows used and excluded (with reasons), conventions, notes and warnings, as data."""
        return {"source": self.source, "rows": len(self.frame), "excluded": [list(x) for x in self.excluded],
                "n_kind": self.n_kind.value, "c_kind": self.c_kind.value, "loss_unit": LOSS_UNIT,
                "notes": list(self.notes), "warnings": list(self.warnings), "by": list(self.by),
                "fingerprint": self.fingerprint}

    def excluded_counts(self) -> dict[str, int]:
        """Rows excluded, counted by the kind of reason (`scalefit.fitting.select.reason_kind`)."""
        out: dict[str, int] = {}
        for _, why in self.excluded:
            for part in why.split("; "):
                k = select.reason_kind(part)
                if k and not k.startswith("file "):
                    out[k] = out.get(k, 0) + 1
        return out

    def report(self, max_rows: int = 20) -> str:
        """Rows used and excluded (the first `max_rows` of them, then a count), conventions, notes, warnings."""
        lines = [
            f"{self.source}: {len(self.frame)} rows used, {len(self.excluded)} excluded; "
            f"N {self.n_kind}, C {self.c_kind}, loss in nats/token"
        ]
        lines += [f"  excluded row {row}: {why}" for row, why in self.excluded[:max_rows]]
        if len(self.excluded) > max_rows:
            lines.append(f"  ... and {len(self.excluded) - max_rows} more excluded rows")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)

    def subset(self, mask, note: str) -> FitTable:
        """The rows where `mask` (bool per row of `frame`) holds, as a table of their own: its fingerprint
        is of those rows, `note` says why, and exclusions, notes and warnings of this table stay with it."""
        frame = self.frame[np.asarray(mask, bool)].reset_index(drop=True)
        if not len(frame):
            raise ValueError(f"{self.source}: {note}: no rows left")
        return FitTable(frame=frame, excluded=self.excluded, notes=(*self.notes, note), source=self.source,
                        n_kind=self.n_kind, c_kind=self.c_kind, fingerprint=_fingerprint(frame, _extra(frame)),
                        warnings=self.warnings, by=self.by, excluded_groups=self.excluded_groups)

    def with_n(self, column: str, n_kind, note: str = "") -> FitTable:
        """The same rows with N read from `column` (a kept column of `frame`, counting `n_kind` parameters):
        e.g. non-embedding instead of total N. C and D stay as they are."""
        n_kind = NKind.parse(n_kind)
        if column not in self.frame:
            raise ValueError(f"{self.source}: no column {column!r} to read N from (kept columns: "
                             f"{[c for c in self.frame.columns if c not in ('N', 'D', 'C', 'loss', 'run', 'weight', 'row')]})")
        n = pd.to_numeric(self.frame[column], errors="coerce").to_numpy(float)
        if not np.all(np.isfinite(n) & (n > 0)):
            raise ValueError(f"{self.source}: column {column!r} has values that are not finite numbers > 0")
        frame = self.frame.assign(N=n)
        extra = [c for c in frame.columns if c not in ("N", "D", "C", "loss", "run", "weight", "row")]
        return FitTable(frame=frame, excluded=self.excluded,
                        notes=(*self.notes, note or f"N ({n_kind}) from column {column!r}"), source=self.source,
                        n_kind=n_kind, c_kind=self.c_kind, fingerprint=_fingerprint(frame, extra),
                        warnings=self.warnings, by=self.by, excluded_groups=self.excluded_groups)

    def with_context(self, *, excluded=None, notes=(), source: str | None = None, warnings=()) -> FitTable:
        """The same rows with exclusions replaced (when given: the same rows' reasons rewritten keep their
        groups), notes and warnings added, the source renamed."""
        return FitTable(frame=self.frame, excluded=self.excluded if excluded is None else tuple(excluded),
                        notes=(*self.notes, *notes), source=self.source if source is None else source,
                        n_kind=self.n_kind, c_kind=self.c_kind, fingerprint=self.fingerprint,
                        warnings=(*self.warnings, *warnings), by=self.by,
                        excluded_groups=self.excluded_groups if excluded is None or len(tuple(excluded)) == len(
                            self.excluded_groups) else ())


def load_table(
    source,
    *,
    n_col=None,
    d_col: str | None = None,
    c_col: str | None = None,
    loss_col: str | None = None,
    run_col: str | None = None,
    weight_col: str | None = None,
    n_kind: str = "total",
    c_kind: str | None = None,
    keep: Sequence[str] = (),
    where: str | None = None,
    by: Sequence[str] | str = (),
    best_of: str | None = None,
    best_per: Sequence[str] | str = ("N", "D"),
    checkpoints: str = "final",
    columns: Mapping[str, str] | None = None,
    loss_unit: str = "nats",
) -> FitTable:
    """Read runs from `source` into a `FitTable` for the fitter.

    source: a DataFrame, a path to a .csv / .parquet / .jsonl file (a W&B runs export is recognised by
    its Name and State columns: run <- Name, runs whose State is not "finished" excluded), or a name from
    `scalefit.fitting.datasets.names()`.
    *_col: the column holding each field; None tries `scalefit.fitting.columns.CANDIDATES[field]`.
    n_col may also map kinds of N to columns, {"total": "N", "non-embedding": "N_ne"}; without it a
    column named for the kind asked (N_non_embedding, ...) is preferred to a generic one (N, params),
    and a column that looks like another kind of N and stays unused is a warning.
    N, loss and one of D or C are required; D missing -> D = C / (6N); C missing -> C = 6ND (both
    noted). Columns named exactly U (unique tokens), E (experts) or G (granularity), the inputs of the
    data-constrained and MoE laws, are carried and validated when present. `columns` carries more numeric
    inputs under names of their own, validated the same way: {name: source column}, e.g. {"E":
    "num_experts", "N_total": "total_parameter_count"} (a second parameter count beside N, in the kind its
    name says); `keep` carries columns as they are (labels, groups).
    loss_unit: "nats" (nats per token, the natural log: every loss scalefit handles) or "bits" (bits per
    token, converted on reading: L_nats = L_bits ln 2, and noted).
    n_kind: which parameters N counts; c_kind: how C was counted (None: from the dataset's provenance,
    else "6ND" when C equals 6ND to 1e-6, else "unspecified").
    where: a row filter on the source's columns (and the fitter's N, D, C, loss, run), e.g. "N < 1e9".
    by: grouping columns (a list or "a,b"), kept; run ids need only be unique within a group.
    best_of: a column swept at each cell of `best_per` (default N, D; e.g. the learning rate): keep the
    run of lowest final loss per cell (`scalefit.fitting.select.best_of`).
    checkpoints: for a curve table (rows sharing a run id, differing in D): "final" (default: each run's
    last point), "all" or "after=FRACTION", weighted per run (`scalefit.fitting.select.checkpoints`).
    Rows with a NaN / infinite / non-positive loss, N, D or C (or a NaN / infinite / negative weight)
    are excluded and listed with their reason, and so is every row a selection leaves out; rows are
    labelled by the source's index (for files and datasets: the 0-based data row).
    """
    n_kind = NKind.parse(n_kind)
    if loss_unit not in LOSS_UNITS:
        raise ValueError(f"loss_unit must be one of {list(LOSS_UNITS)}, got {loss_unit!r}")
    c_kind = None if c_kind is None else CKind.parse(c_kind)
    by, best_per = _names(by), _names(best_per)
    df, label, notes, where_phrase = col_io.read_source(source, n_kind)
    if c_kind is None:
        c_kind = col_io.c_kind_from_attrs(df.attrs)
    wandb = col_io.is_wandb_export(df)
    if wandb and run_col is None:
        run_col = "Name"
        notes.append("W&B runs export (columns Name, State): run <- 'Name', runs not 'finished' excluded")

    n = col_io.n_column(df, n_col, n_kind, where_phrase)
    if n.column is None:
        raise ValueError(col_io.missing_n(df, n_kind, n.others, where_phrase))
    explicit = {"D": d_col, "C": c_col, "loss": loss_col, "run": run_col, "weight": weight_col}
    cols = {"N": n.column, **{f: col_io.column(df, f, explicit[f], where_phrase) for f in explicit}}
    if cols["loss"] is None:
        raise ValueError(col_io.missing_message("loss", df, where_phrase))
    if cols["D"] is None and cols["C"] is None:
        raise ValueError(col_io.missing_message("D", df, where_phrase, also="and no C column to derive it from (D = C / 6N)"))
    extra_per = [p for p in best_per if p not in select.FITTER_COLUMNS] if best_of else []
    for what, names in (("keep", keep), ("by", by), ("best_of", [best_of] if best_of else []),
                        ("best_per", extra_per)):
        for k in names:
            if k not in df.columns:
                raise ValueError(f"{what} column {k!r} not found in {where_phrase}; columns available: "
                                 f"{list(df.columns)}")
    keep = list(dict.fromkeys([*keep, *by, *([best_of] if best_of else []), *extra_per]))
    named = _named_columns(df, columns, cols, where_phrase)

    found = ", ".join(f"{f} <- {c!r}" for f, c in cols.items() if c is not None and c != f)
    if found:
        notes.append(f"columns: {found}")
    if n.column != "N" or not n.how.startswith("a name"):
        notes.append(f"N <- {n.column!r}: {n.how}")
    warnings = col_io.unused_n_warnings(n.column, n_kind, n.others, declared="n_convention" in df.attrs)
    bad: dict[object, list[str]] = {}
    rows = col_io.row_labels(df, notes)
    num = {f: cells.numeric(df, f, cols[f], rows, bad) for f in ("N", "D", "C", "loss", "weight") if cols[f]}
    for name, col in named.items():
        num[name] = cells.numeric(df, name, col, rows, bad)
        notes.append(f"{name} carried from column {col!r}")
    if LOSS_UNITS[loss_unit] != 1.0:
        num["loss"] = num["loss"] * LOSS_UNITS[loss_unit]
        notes.append(f"loss read in {loss_unit} per token, converted to {LOSS_UNIT} (x {LOSS_UNITS[loss_unit]:.6g})")

    derived = ""
    if "D" not in num:
        derived = "D"
        num["D"] = num["C"] / (6.0 * num["N"])
        notes.append(f"D derived from C = 6ND: D = C / (6 N), C from column {cols['C']!r}")
        if c_kind is None:
            c_kind = CKind.SIX_ND
            notes.append("c_kind taken as 6ND: D was derived from C under that assumption")
        elif c_kind is not CKind.SIX_ND:
            notes.append(f"C is {c_kind}, not 6ND: the derived D is approximate")
    if "C" not in num:
        derived = "C"
        num["C"] = 6.0 * num["N"] * num["D"]
        notes.append("C computed as 6ND (no C column)")
        if c_kind not in (None, CKind.SIX_ND):
            raise ValueError(f"c_kind={c_kind!r} but {where_phrase} has no C column; C can only be computed as 6ND")
        c_kind = CKind.SIX_ND
    elif c_kind is None:
        c_kind = cells.infer_c_kind(num, notes)
    elif c_kind is CKind.SIX_ND and cols["D"] is not None:
        cells.check_6nd(num, rows, where_phrase)
    if "weight" not in num:
        num["weight"] = np.ones(len(df))

    # A derived field is only reported bad when its inputs were fine (else it repeats their reason).
    cells.flag(bad, rows, num, ["loss", "N", *[f for f in ("D", "C") if f != derived], *named])
    cells.flag(bad, rows, num, [derived] if derived else [], only_new=True)
    w = num["weight"]
    for i in np.flatnonzero(~np.isfinite(w) | (w < 0)):
        bad.setdefault(rows[i], []).append(f"weight is {cells.describe(w[i])}, expected finite and >= 0")
    if wandb:
        for i in np.flatnonzero(df["State"].astype(str).to_numpy() != col_io.WANDB_FINISHED):
            bad.setdefault(rows[i], []).append(f"W&B state {df['State'].iloc[i]!r}, not finished")
    for b in by:
        for i in np.flatnonzero(df[b].isna().to_numpy()):
            bad.setdefault(rows[i], []).append(f"group column {b!r} is empty")

    run = (
        df[cols["run"]].astype(str).to_numpy()
        if cols["run"]
        else np.array([str(r) for r in rows], dtype=object)
    )
    if where is not None:
        aliases = {**{f: num[f] for f in ("N", "D", "C", "loss")}, "run": run}
        chosen = select.where_mask(df, where, aliases, where_phrase)
        for i in np.flatnonzero(~chosen):
            bad.setdefault(rows[i], []).insert(0, f"not selected by where {where!r}")
        notes.append(f"where {where!r}: {int(chosen.sum())} of {len(df)} rows selected")
    frame = pd.DataFrame({f: num[f] for f in ("N", "D", "C", "loss")})
    frame["run"] = pd.array(run, dtype="str")
    frame["weight"] = num["weight"]
    frame["row"] = rows
    for name in named:
        frame[name] = num[name]
    for k in keep:
        frame[k] = df[k].to_numpy()
    if "derived" in df.columns:  # derived (N, D) rows: never read as earlier checkpoints (select.checkpoints)
        frame["derived"] = df["derived"].astype(str).str.strip().str.lower().isin(("true", "1")).to_numpy()
    keep_mask = np.array([r not in bad for r in rows], dtype=bool)
    frame = frame[keep_mask].reset_index(drop=True)
    if not rows:
        raise ValueError(f"no rows in {where_phrase}: it has the columns {list(df.columns)} but no data; "
                         "expected one row per run (or checkpoint)")
    if len(frame) == 0:
        first = next(r for r in rows if r in bad)
        raise ValueError(f"no usable rows in {where_phrase}: all {len(rows)} excluded, e.g. row {first}: "
                         f"{'; '.join(bad[first])}")
    if cols["weight"] and not frame["weight"].to_numpy(float).sum() > 0:
        raise ValueError(f"every usable row of {where_phrase} has weight 0 (column {cols['weight']!r}): the "
                         "objective would be 0 everywhere and any parameters would 'fit'; expected weights > 0 "
                         "on at least as many rows as the law has parameters")

    hint = "W&B run names need not be unique: export the run ID too and pass --run-col ID" if wandb else ""
    select.check_runs(frame, by, where_phrase, hint, one_row_per_run=wandb)
    steps = [select.best_of(frame, best_of, best_per, by)] if best_of else []
    for step in (*steps, "checkpoints"):
        if step == "checkpoints":
            step = select.checkpoints(frame, checkpoints, by, col_io.column(df, "step", None, where_phrase))
        for r, why in step.reasons.items():
            bad.setdefault(r, []).append(why)
        if step.weight is not None:
            frame["weight"] = step.weight
        frame = frame[step.keep].reset_index(drop=True)
        notes += step.notes
        warnings += step.warnings

    suffix = f" ({where_phrase})" if isinstance(source, (str, Path)) and where_phrase.startswith("file") else ""
    excluded = tuple((r, "; ".join(bad[r]) + suffix) for r in rows if r in bad)
    groups = ()
    if by:
        key_of = dict(zip(rows, zip(*(df[b].to_numpy() for b in by))))
        groups = tuple(key_of[r] for r, _ in excluded)
    return FitTable(frame=frame, excluded=excluded, notes=tuple(notes), source=label, n_kind=n_kind, c_kind=c_kind,
                    fingerprint=_fingerprint(frame, _extra(frame)), warnings=tuple(warnings), by=tuple(by),
                    excluded_groups=groups)


def _named_columns(df: pd.DataFrame, columns, cols: dict, where: str) -> dict[str, str]:
    """{name: source column} of the inputs to carry: the CONDITIONS present by name, then `columns`."""
    named = {c: c for c in CONDITIONS if c in df.columns and c not in cols.values()}
    for name, col in dict(columns or {}).items():
        if name in _BASE:
            raise ValueError(f"columns: {name!r} is one of the table's own fields {list(_BASE)}; name it with "
                             f"{name.lower()}_col=... instead")
        if col not in df.columns:
            raise ValueError(f"columns: {name} <- column {col!r} not found in {where}; columns available: "
                             f"{list(df.columns)}")
        named[name] = col
    return named


def _names(cols) -> list[str]:
    """Column names from a list or a comma-separated string."""
    if isinstance(cols, str):
        cols = cols.split(",")
    return [c.strip() for c in cols if c and c.strip()]


def _extra(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in _BASE]


def _fingerprint(frame: pd.DataFrame, extra: list[str]) -> str:
    """sha256 over the fitted numbers: float64 little-endian bytes per column, runs NUL-separated."""
    h = hashlib.sha256()
    for col in ("N", "D", "C", "loss", "weight", *extra):
        h.update(col.encode() + b"\x00")
        vals = frame[col]
        if pd.api.types.is_numeric_dtype(vals):
            h.update(np.ascontiguousarray(vals.to_numpy(dtype=float), dtype="<f8").tobytes())
        else:
            h.update("\x00".join(map(str, vals)).encode())
    h.update(b"run\x00" + "\x00".join(frame["run"]).encode())
    return h.hexdigest()
