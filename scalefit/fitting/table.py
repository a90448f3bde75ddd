"""The fitter's input layer: any table of runs -> a validated `FitTable` with named conventions.

`load_table` accepts a DataFrame, a CSV or Parquet path, or a reference dataset name
(`scalefit.fitting.datasets`), finds the N / D / C / loss columns, derives what is missing (D = C / (6N) or
C = 6ND, Hoffmann et al. 2022 / Kaplan et al. 2020), and drops the rows a fit cannot use, each listed
in `FitTable.excluded` with its row label and reason. Nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scalefit.fitting import datasets
from scalefit.conventions import LOSS_UNIT, SIXND_EXACT_RTOL, SIXND_RTOL, CKind, NKind

# Column names tried, in order, when no column is named; matched exactly, then case-insensitively.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "N": ("N", "n", "params", "parameters", "n_params", "num_params", "Model Size", "model_size", "N_nominal"),
    "D": ("D", "tokens", "t", "n_tokens", "num_tokens", "Training Tokens", "training_tokens", "D_tokens"),
    "C": ("C", "flops", "FLOPs", "compute", "Training FLOP", "training_flops", "C_6ND", "flops_reported"),
    "loss": ("loss", "final_loss", "val_loss", "eval_loss", "pile_test_xent"),
    "run": ("run", "run_id", "run_name"),
    "weight": (),  # only an explicitly named column: a stray "weight" column is too easy to misread
}


@dataclass(frozen=True, eq=False)
class FitTable:
    """Runs ready to fit. Equal (and hashed) by fingerprint and conventions, not by object identity."""

    frame: pd.DataFrame  # columns N, D, C, loss, run, weight, row (+ U / kept columns); all finite, > 0
    excluded: tuple[tuple[object, str], ...]  # (row label, reason) for every source row not in frame
    notes: tuple[str, ...]  # how columns were found or derived, conventions inferred, upstream drops
    source: str  # the path, the dataset name, or "DataFrame"
    n_kind: NKind  # which parameters N counts
    c_kind: CKind  # how C was counted
    fingerprint: str  # sha256 of the used N, D, C, loss, run, weight (and U / kept columns) bytes

    def __len__(self) -> int:
        return len(self.frame)

    def __eq__(self, other) -> bool:
        if not isinstance(other, FitTable):
            return NotImplemented
        return (self.fingerprint, self.n_kind, self.c_kind) == (other.fingerprint, other.n_kind, other.c_kind)

    def __hash__(self) -> int:
        return hash((self.fingerprint, self.n_kind, self.c_kind))

    def summary(self) -> dict:
        """Rows used and excluded (with reasons), conventions and notes, as data."""
        return {"source": self.source, "rows": len(self.frame), "excluded": [list(x) for x in self.excluded],
                "n_kind": self.n_kind.value, "c_kind": self.c_kind.value, "loss_unit": LOSS_UNIT,
                "notes": list(self.notes), "fingerprint": self.fingerprint}

    def report(self) -> str:
        """Rows used and excluded, conventions and notes, one line each."""
        lines = [
            f"{self.source}: {len(self.frame)} rows used, {len(self.excluded)} excluded; "
            f"N {self.n_kind}, C {self.c_kind}, loss in nats/token"
        ]
        lines += [f"  excluded row {row}: {why}" for row, why in self.excluded]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def subset(self, mask, note: str) -> FitTable:
        """The rows where `mask` (bool per row of `frame`) holds, as a table of their own: its fingerprint
        is of those rows, `note` says why, and exclusions and notes of this table stay with it."""
        frame = self.frame[np.asarray(mask, bool)].reset_index(drop=True)
        if not len(frame):
            raise ValueError(f"{self.source}: {note}: no rows left")
        extra = [c for c in frame.columns if c not in ("N", "D", "C", "loss", "run", "weight", "row")]
        return FitTable(frame=frame, excluded=self.excluded, notes=(*self.notes, note), source=self.source,
                        n_kind=self.n_kind, c_kind=self.c_kind, fingerprint=_fingerprint(frame, extra))

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
                        n_kind=n_kind, c_kind=self.c_kind, fingerprint=_fingerprint(frame, extra))

    def with_context(self, *, excluded=None, notes=(), source: str | None = None) -> FitTable:
        """The same rows with exclusions replaced (when given), notes added and the source renamed."""
        return FitTable(frame=self.frame, excluded=self.excluded if excluded is None else tuple(excluded),
                        notes=(*self.notes, *notes), source=self.source if source is None else source,
                        n_kind=self.n_kind, c_kind=self.c_kind, fingerprint=self.fingerprint)


def load_table(
    source,
    *,
    n_col: str | None = None,
    d_col: str | None = None,
    c_col: str | None = None,
    loss_col: str | None = None,
    run_col: str | None = None,
    weight_col: str | None = None,
    n_kind: str = "total",
    c_kind: str | None = None,
    keep: Sequence[str] = (),
) -> FitTable:
    """Read runs from `source` into a `FitTable` for the fitter.

    source: a DataFrame, a path to a .csv / .parquet file, or a name from `scalefit.fitting.datasets.names()`.
    *_col: the column holding each field; None tries `CANDIDATES[field]`. N, loss and one of D or C
    are required; D missing -> D = C / (6N); C missing -> C = 6ND (both noted). A "U" column (unique
    tokens, data-constrained laws) is carried and validated when present; `keep` carries more columns.
    n_kind: which parameters N counts; c_kind: how C was counted (None: from the dataset's provenance,
    else "6ND" when C equals 6ND to 1e-6, else "unspecified").
    Rows with a NaN / infinite / non-positive loss, N, D or C (or a NaN / infinite / negative weight)
    are excluded and listed with their reason; rows are labelled by the source's index (for files and
    datasets: the 0-based data row).
    """
    n_kind = NKind.parse(n_kind)
    c_kind = None if c_kind is None else CKind.parse(c_kind)
    df, label, notes, where = _read_source(source, n_kind)
    if c_kind is None:
        c_kind = _c_kind_from_attrs(df.attrs)

    explicit = {"N": n_col, "D": d_col, "C": c_col, "loss": loss_col, "run": run_col, "weight": weight_col}
    cols = {f: _find(df, f, explicit[f], where) for f in explicit}
    for f in ("N", "loss"):
        if cols[f] is None:
            raise ValueError(_missing(f, df, where))
    if cols["D"] is None and cols["C"] is None:
        raise ValueError(_missing("D", df, where, also="and no C column to derive it from (D = C / 6N)"))
    for k in keep:
        if k not in df.columns:
            raise ValueError(f"keep column {k!r} not found in {where}; columns available: {list(df.columns)}")

    found = ", ".join(f"{f} <- {c!r}" for f, c in cols.items() if c is not None and c != f)
    if found:
        notes.append(f"columns: {found}")
    bad: dict[object, list[str]] = {}
    rows = _row_labels(df, notes)
    num = {f: _numeric(df, f, cols[f], rows, bad) for f in ("N", "D", "C", "loss", "weight") if cols[f]}
    if "U" in df.columns and "U" not in cols.values():
        num["U"] = _numeric(df, "U", "U", rows, bad)
        notes.append("U (unique tokens) carried from column 'U'")

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
            raise ValueError(f"c_kind={c_kind!r} but {where} has no C column; C can only be computed as 6ND")
        c_kind = CKind.SIX_ND
    elif c_kind is None:
        c_kind = _infer_c_kind(num, notes)
    elif c_kind is CKind.SIX_ND and cols["D"] is not None:
        _check_6nd(num, rows, where)
    if "weight" not in num:
        num["weight"] = np.ones(len(df))

    # A derived field is only reported bad when its inputs were fine (else it repeats their reason).
    _flag(bad, rows, num, ["loss", "N", *[f for f in ("D", "C") if f != derived], "U"])
    _flag(bad, rows, num, [derived] if derived else [], only_new=True)
    w = num["weight"]
    for i in np.flatnonzero(~np.isfinite(w) | (w < 0)):
        bad.setdefault(rows[i], []).append(f"weight is {_describe(w[i])}, expected finite and >= 0")

    run = (
        df[cols["run"]].astype(str).to_numpy()
        if cols["run"]
        else np.array([str(r) for r in rows], dtype=object)
    )
    frame = pd.DataFrame({f: num[f] for f in ("N", "D", "C", "loss")})
    frame["run"] = pd.array(run, dtype="str")
    frame["weight"] = num["weight"]
    frame["row"] = rows
    if "U" in num:
        frame["U"] = num["U"]
    for k in keep:
        frame[k] = df[k].to_numpy()
    keep_mask = np.array([r not in bad for r in rows], dtype=bool)
    frame = frame[keep_mask].reset_index(drop=True)

    suffix = f" ({where})" if isinstance(source, (str, Path)) and where.startswith("file") else ""
    excluded = tuple((r, "; ".join(bad[r]) + suffix) for r in rows if r in bad)
    if len(frame) == 0:
        raise ValueError(f"no usable rows in {where}: all {len(rows)} excluded, e.g. row {excluded[0][0]}: "
                         f"{excluded[0][1]}")
    extra = [c for c in ("U", *keep) if c in frame.columns]
    return FitTable(
        frame=frame,
        excluded=excluded,
        notes=tuple(notes),
        source=label,
        n_kind=n_kind,
        c_kind=c_kind,
        fingerprint=_fingerprint(frame, extra),
    )


def _read_source(source, n_kind: str) -> tuple[pd.DataFrame, str, list[str], str]:
    """-> (frame, source label, notes, where-phrase for error messages)."""
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
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        _need_pyarrow(p)
    try:
        if suffix == ".csv":
            return pd.read_csv(p)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(p)
    except Exception as e:  # parser errors come in many types; the path is what the user needs
        raise ValueError(f"cannot read {p} as {suffix[1:]}: {type(e).__name__}: {e}") from e
    raise ValueError(f"cannot read {p}: expected a .csv or .parquet file, got {suffix or 'no suffix'!r}")


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


def _c_kind_from_attrs(attrs: dict) -> str | None:
    conv = str(attrs.get("c_convention", ""))
    return next((k for k in CKind if conv.startswith(k.value)), None)


def _find(df: pd.DataFrame, field: str, given: str | None, where: str) -> str | None:
    if given is not None:
        if given not in df.columns:
            raise ValueError(
                f"{field}: column {given!r} not found in {where}; columns available: {list(df.columns)}"
            )
        return given
    for cand in CANDIDATES[field]:
        if cand in df.columns:
            return cand
    lower = {str(c).lower(): c for c in df.columns}
    return next((lower[c.lower()] for c in CANDIDATES[field] if c.lower() in lower), None)


def _missing(field: str, df: pd.DataFrame, where: str, also: str = "") -> str:
    tried = ", ".join(repr(c) for c in CANDIDATES[field])
    return (
        f"no {field} column in {where}: tried {tried}{' ' + also if also else ''}; "
        f"columns available: {list(df.columns)}; name it with {field.lower()}_col=..."
    )


def _row_labels(df: pd.DataFrame, notes: list[str]) -> list:
    if df.index.is_unique:
        return list(df.index)
    notes.append("source index has duplicate labels: rows are numbered by position instead")
    return list(range(len(df)))


def _numeric(df: pd.DataFrame, field: str, col: str, rows: list, bad: dict) -> np.ndarray:
    """Column as float64; entries that are present but not numbers are excluded, quoting the value."""
    raw = df[col]
    vals = np.array(pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan))
    not_number = np.isnan(vals) & raw.notna().to_numpy()
    for i in np.flatnonzero(not_number):
        bad.setdefault(rows[i], []).append(f"{field} ({col!r}) is not a number: {raw.iloc[i]!r}")
    vals[not_number] = np.nan
    return vals


def _describe(x: float) -> str:
    if np.isnan(x):
        return "NaN"
    if np.isinf(x):
        return "infinite"
    return f"{x:g}"


def _flag(bad: dict, rows: list, num: dict, fields: list[str], only_new: bool = False) -> None:
    for f in fields:
        if f not in num:
            continue
        v = num[f]
        for i in np.flatnonzero(~(np.isfinite(v) & (v > 0))):
            if only_new and rows[i] in bad:
                continue
            reasons = bad.setdefault(rows[i], [])
            if not any(r.startswith(f"{f} (") and "not a number" in r for r in reasons):
                reasons.append(f"{f} is {_describe(v[i])}, expected finite and > 0")


def _infer_c_kind(num: dict, notes: list[str]) -> str:
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(num["C"] / (6.0 * num["N"] * num["D"]) - 1.0)
    ok = np.isfinite(rel)
    if ok.any() and np.all(rel[ok] <= SIXND_EXACT_RTOL):
        notes.append(f"c_kind inferred as 6ND: C equals 6 N D to {SIXND_EXACT_RTOL:g} on every row")
        return CKind.SIX_ND
    notes.append("c_kind unspecified: C is not 6ND and no convention was given")
    return CKind.UNSPECIFIED


def _check_6nd(num: dict, rows: list, where: str) -> None:
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(num["C"] / (6.0 * num["N"] * num["D"]) - 1.0)
    off = np.flatnonzero(np.isfinite(rel) & (rel > SIXND_RTOL))
    if off.size:
        shown = ", ".join(f"row {rows[i]} (C/6ND = {1 + rel[i]:.3g})" for i in off[:5])
        raise ValueError(
            f"c_kind='6ND' but C differs from 6*N*D by more than {SIXND_RTOL:.0%} in {off.size} rows of "
            f"{where}: {shown}; pass c_kind='exact' or 'reported', or drop the C column"
        )


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
