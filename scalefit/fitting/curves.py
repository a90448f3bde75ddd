"""Loss curves as the fitter's input: points (a curve, a step, a loss) and each curve's schedule.

`CurveTable` is to curve laws what `scalefit.fitting.table.FitTable` is to laws in (N, D): validated once at
the edge, every excluded row listed with its reason. A point is the loss after `step` optimizer updates of
its curve (the trainer's metrics convention: the record at step n follows the update at step n - 1, so the
model has seen rates[:n] of its `Schedule`). `fit_table()` gives the `FitTable` the fitter reads (one row per
point, input column "curve_point"); `points(spec)` the schedule sums a curve law reads there
(`scalefit.fitting.laws.sums`).

Conventions: N is the model's parameter count as `n_kind` says; D is training tokens at the point (steps x
tokens per step) where the tokens per step are known, otherwise optimizer steps, said in the notes; losses
are nats per token. Readers: `curves_from_frame` here (a table with a schedule, or a per-step rate column),
`scalefit.fitting.curve_sources` (run stores, the shipped `multipower` curves).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from scalefit.conventions import LOSS_UNIT, CKind, NKind
from scalefit.fitting.laws.curves import POINT
from scalefit.fitting.laws.sums import CurvePoints, NodeSpec, build_points
from scalefit.fitting.schedules import Schedule, rates_from_columns
from scalefit.fitting.table import FitTable, load_table

COLUMNS = ("curve", "step", "loss", "N", "tokens_per_step", "weight", "row")


@dataclass(frozen=True, eq=False)
class CurveTable:
    """Loss curves ready to fit. Hashed by identity; `fingerprint` names the content."""

    frame: pd.DataFrame = field(repr=False)  # COLUMNS: one row per point, sorted by curve then step
    schedules: Mapping[str, Schedule] = field(repr=False)  # curve -> its schedule (every curve in frame has one)
    excluded: tuple[tuple[object, str], ...] = ()  # (source row or curve, reason) for what was left out
    notes: tuple[str, ...] = ()  # how the curves were read, conventions
    source: str = "DataFrame"  # path, dataset or run store
    n_kind: NKind = NKind.TOTAL  # which parameters N counts
    c_kind: CKind = CKind.SIX_ND  # how the fit table's C is counted (6 N D unless the source counted FLOPs)
    flops_per_token: Mapping[str, float] = field(default_factory=dict)  # curve -> FLOPs per token (exact count)

    def __post_init__(self):
        missing = [c for c in COLUMNS if c not in self.frame.columns]
        if missing:
            raise ValueError(f"{self.source}: curve table lacks columns {missing}")
        unknown = sorted(set(self.frame["curve"]) - set(self.schedules))
        if unknown:
            raise ValueError(f"{self.source}: curve {unknown[0]!r} has no schedule")
        for c, g in self.frame.groupby("curve", sort=False):
            if int(g["step"].max()) > len(self.schedules[c]):
                raise ValueError(f"{self.source}: curve {c!r} has a point at step {int(g['step'].max())} but its "
                                 f"schedule covers {len(self.schedules[c])} steps")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def curves(self) -> list[str]:
        """Curve names in table order."""
        return list(dict.fromkeys(self.frame["curve"]))

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 over the points and the schedules' digests."""
        h = hashlib.sha256()
        f = self.frame
        for col in ("step", "loss", "N", "weight"):
            h.update(np.ascontiguousarray(f[col].to_numpy(float), "<f8").tobytes())
        h.update("\x00".join(f["curve"]).encode())
        for c in self.curves:
            h.update(self.schedules[c].digest.encode())
        return h.hexdigest()

    def subset(self, curves=None, mask=None, note: str = "") -> CurveTable:
        """The named curves (and/or the rows where `mask` holds), as a table of their own."""
        keep = np.ones(len(self.frame), bool) if mask is None else np.asarray(mask, bool)
        if curves is not None:
            curves = [curves] if isinstance(curves, str) else list(curves)
            unknown = [c for c in curves if c not in self.schedules]
            if unknown:
                raise ValueError(f"{self.source}: no curve {unknown[0]!r}; curves: {', '.join(self.curves)}")
            keep &= self.frame["curve"].isin(curves).to_numpy()
        frame = self.frame[keep].reset_index(drop=True)
        if not len(frame):
            raise ValueError(f"{self.source}: {note or 'subset'}: no points left")
        names = set(frame["curve"])
        return CurveTable(frame=frame, schedules={c: s for c, s in self.schedules.items() if c in names},
                          excluded=self.excluded, notes=(*self.notes, note) if note else self.notes,
                          source=self.source, n_kind=self.n_kind, c_kind=self.c_kind,
                          flops_per_token={c: v for c, v in self.flops_per_token.items() if c in names})

    def after_warmup(self, factor: float = 1.0) -> CurveTable:
        """The points past `factor` times their schedule's warmup: the laws describe training after the
        warmup (Luo et al.'s curves start there); the first steps' fast transient is left out, and counted."""
        warm = self.frame["curve"].map({c: s.warmup for c, s in self.schedules.items()}).to_numpy(float)
        keep = self.frame["step"].to_numpy(float) > factor * warm
        out = self.subset(mask=keep, note=f"{int((~keep).sum())} points within {factor:g} x the warmup left out")
        gone = tuple((r, f"step {int(s)} within {factor:g} x its schedule's warmup")
                     for r, s in zip(self.frame["row"][~keep], self.frame["step"][~keep]))
        return dataclasses.replace(out, excluded=(*out.excluded, *gone))

    def points(self, spec: NodeSpec) -> CurvePoints:
        """The schedule sums at every point (row order), merged as `spec` says; cached per spec."""
        return _points(self, spec)

    def fit_table(self) -> FitTable:
        """The fitter's view: one row per point with N, D (tokens, or steps where unknown), C, loss, run (the
        curve), weight and the input column "curve_point" (1-based row index into `points`)."""
        return _fit_table(self)

    def summary(self) -> dict:
        return {"source": self.source, "curves": len(self.curves), "points": len(self.frame),
                "excluded": [list(map(str, x)) for x in self.excluded], "n_kind": self.n_kind.value,
                "loss_unit": LOSS_UNIT, "notes": list(self.notes), "fingerprint": self.fingerprint}


@functools.lru_cache(maxsize=32)
def _points(table: CurveTable, spec: NodeSpec) -> CurvePoints:
    names = table.curves
    index = {c: i for i, c in enumerate(names)}
    f = table.frame
    return build_points([table.schedules[c] for c in names], f["curve"].map(index).to_numpy(),
                        f["step"].to_numpy(np.int64), f["N"].to_numpy(float), spec)


@functools.lru_cache(maxsize=32)
def _fit_table(table: CurveTable) -> FitTable:
    f = table.frame
    steps = f["step"].to_numpy(float)
    tps = f["tokens_per_step"].to_numpy(float)
    known = np.isfinite(tps)
    notes = list(table.notes)
    if not known.all():
        notes.append(f"D is optimizer steps for {int((~known).sum())} points (tokens per step not given)")
    D = np.where(known, steps * np.where(known, tps, 1.0), steps)
    fpt = f["curve"].map(table.flops_per_token).to_numpy(float) if table.flops_per_token else np.full(len(f), np.nan)
    N = f["N"].to_numpy(float)
    if np.any(~np.isfinite(N)):
        # Only joint laws read N, and they refuse points without it (`CurveLaw.unidentified`).
        notes.append(f"N unknown for {int((~np.isfinite(N)).sum())} points: the fit table's N is 1 there "
                     "(a curve law of one size does not read it)")
        N = np.where(np.isfinite(N), N, 1.0)
    exact = table.c_kind is not CKind.SIX_ND and np.all(np.isfinite(fpt))
    C = fpt * D if exact else 6.0 * N * D
    df = pd.DataFrame({"N": N, "D": D, "C": C, "loss": f["loss"].to_numpy(float), "run": f["curve"].to_numpy(),
                       "weight": f["weight"].to_numpy(float), POINT: np.arange(1, len(f) + 1, dtype=float),
                       "step": steps})
    ft = load_table(df, n_kind=table.n_kind, c_kind=table.c_kind if exact else CKind.SIX_ND, keep=[POINT, "step"],
                        checkpoints="all")  # every point of a curve is its own observation
    if ft.excluded:  # CurveTable validated every row; a row dropped here would break the point index
        raise ValueError(f"{table.source}: rows failed the fit table's checks: {ft.excluded[:3]}")
    return ft.with_context(notes=notes, source=table.source)


def validate(rows: pd.DataFrame, schedules: Mapping[str, Schedule], *, source: str, notes=(), excluded=(),
             n_kind=NKind.TOTAL, c_kind=CKind.SIX_ND, flops_per_token=None) -> CurveTable:
    """A `CurveTable` from raw point rows (columns curve, step, loss, N, tokens_per_step, weight, row):
    rows whose loss is not finite and > 0, whose step is not a whole number in 1 .. the schedule's length,
    whose weight is negative, or whose curve has no schedule are excluded with their reason."""
    excluded = list(excluded)
    bad: dict[object, list[str]] = {}
    loss = pd.to_numeric(rows["loss"], errors="coerce").to_numpy(float)
    step = pd.to_numeric(rows["step"], errors="coerce").to_numpy(float)
    weight = pd.to_numeric(rows["weight"], errors="coerce").to_numpy(float)
    curve = rows["curve"].astype(str).to_numpy()
    length = np.array([len(schedules[c]) if c in schedules else -1 for c in curve])
    labels = rows["row"].tolist()
    for i in range(len(rows)):
        why = []
        if not (np.isfinite(loss[i]) and loss[i] > 0):
            why.append(f"loss is {loss[i]:g}, expected finite and > 0")
        if length[i] < 0:
            why.append(f"curve {curve[i]!r} has no schedule")
        elif not (np.isfinite(step[i]) and step[i] == round(step[i]) and 1 <= step[i] <= length[i]):
            why.append(f"step {step[i]:g} is not a whole number of updates in 1..{length[i]} (its schedule)")
        if not (np.isfinite(weight[i]) and weight[i] >= 0):
            why.append(f"weight is {weight[i]:g}, expected finite and >= 0")
        if why:
            bad[labels[i]] = why
    keep = np.array([lab not in bad for lab in labels], bool)
    excluded += [(lab, "; ".join(bad[lab])) for lab in labels if lab in bad]
    frame = pd.DataFrame({"curve": curve, "step": np.where(keep, step, 0).astype(np.int64), "loss": loss,
                          "N": pd.to_numeric(rows["N"], errors="coerce").to_numpy(float),
                          "tokens_per_step": pd.to_numeric(rows["tokens_per_step"], errors="coerce").to_numpy(float),
                          "weight": weight, "row": labels})[keep]
    frame = frame.sort_values(["curve", "step"], kind="stable").reset_index(drop=True)
    dup = frame.duplicated(["curve", "step"])
    if dup.any():
        r = frame[dup].iloc[0]
        raise ValueError(f"{source}: curve {r['curve']!r} has two points at step {int(r['step'])} (row {r['row']})")
    if not len(frame):
        raise ValueError(f"no usable points in {source}: all {len(rows)} excluded"
                         + (f", e.g. row {excluded[0][0]}: {excluded[0][1]}" if excluded else ""))
    used = set(frame["curve"])
    return CurveTable(frame=frame, schedules={c: schedules[c] for c in dict.fromkeys(frame["curve"]) if c in used},
                      excluded=tuple(excluded), notes=tuple(notes), source=source, n_kind=n_kind, c_kind=c_kind,
                      flops_per_token=dict(flops_per_token or {}))


def curves_from_frame(df: pd.DataFrame, schedules: Schedule | Mapping[str, Schedule] | None = None, *,
                      curve_col: str | None = "curve", step_col: str = "step", loss_col: str = "loss",
                      lr_col: str | None = "lr", n_col: str | None = "N", N: float | None = None,
                      tokens_per_step: float | None = None, step_offset: int = 0, n_kind="total",
                      source: str = "DataFrame") -> CurveTable:
    """Curves from a table of points.

    schedules: one `Schedule` for every curve, a mapping curve -> Schedule, or None to read each curve's
    schedule from its rate column `lr_col`, which then needs a row for every step 0 .. T-1 (rows without a
    loss are rate-only rows). `step_col` counts optimizer updates done; `step_offset` is added (1 for tables
    whose step is the 0-based index of the last update, as Luo et al.'s). N: a column (`n_col`) or one value
    for every curve. ValueError naming the column or curve for anything missing.
    """
    where = source
    curve_col = curve_col if curve_col in df.columns else None
    for c in (step_col, loss_col):
        if c not in df.columns:
            raise ValueError(f"{where}: no column {c!r}; columns available: {list(df.columns)}")
    curve = df[curve_col].astype(str) if curve_col else pd.Series(["curve"] * len(df), index=df.index)
    notes = []
    rate_only = np.zeros(len(df), bool)
    if schedules is None:
        if lr_col is None or lr_col not in df.columns:
            raise ValueError(f"{where}: no schedule given and no rate column {lr_col!r} to read one from; pass "
                             "schedules=... (a Schedule or one per curve) or a table with the rate of every step")
        schedules = {}
        for c, g in df.groupby(curve, sort=False):
            # A row's rate is that of the update that brought the curve to the row's step.
            rate_rows = pd.DataFrame({"step": g[step_col].to_numpy(float) + step_offset,
                                      "lr": g[lr_col].to_numpy(float)})
            schedules[c] = rates_from_columns(rate_rows, f"{where}, curve {c!r}", first=1)
        rate_only = pd.to_numeric(df[loss_col], errors="coerce").isna().to_numpy()
        notes.append(f"schedules read from the per-step rate column {lr_col!r}; {int(rate_only.sum())} rows "
                     "carry a rate only (no loss)")
    elif isinstance(schedules, Schedule):
        schedules = {c: schedules for c in dict.fromkeys(curve)}
    if n_col and n_col in df.columns:
        n_vals = df[n_col].to_numpy()
    elif N is not None:
        n_vals = np.full(len(df), float(N))
    else:
        n_vals = np.full(len(df), np.nan)
        notes.append("model size N not given (joint laws and derived (N, D) points need it)")
    rows = pd.DataFrame({"curve": curve.to_numpy(), "step": pd.to_numeric(df[step_col], errors="coerce") + step_offset,
                         "loss": df[loss_col], "N": n_vals,
                         "tokens_per_step": np.nan if tokens_per_step is None else float(tokens_per_step),
                         "weight": 1.0, "row": list(df.index)})[~rate_only]
    return validate(rows, schedules, source=source, notes=notes, n_kind=NKind.parse(n_kind))


__all__ = ["COLUMNS", "CurveTable", "curves_from_frame", "validate"]
