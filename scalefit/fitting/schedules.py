"""Learning-rate schedules as data: the rate of every optimizer step, whatever produced it.

A curve law (`scalefit.fitting.laws.curves`) needs the rate at every step up to each point of a loss curve:
the multi-power law of Luo et al. 2025 sums the rate reductions of all earlier steps, Tissue et al. 2024
accumulate them with momentum. `Schedule` holds that table, in the trainer's convention
(`scalefit.training.lr`): `rates[s]` is the rate of the update applied at optimizer step s = 0 .. T-1, so
after n updates the model has seen `rates[:n]`, and the area under the schedule is S1(n) = sum(rates[:n]).

Where a schedule comes from:

* a trainer run folder: `from_run_spec(spec)` rebuilds it from spec.json's train config and step count by the
  trainer's own functions (`training.lr.lr_table`, the float32 rates the updates used), exactly;
* knots (step, rate), linear in between (`from_knots`): the form `scalefit curves optimise` writes and the
  trainer's "table" schedule runs (`training.lr.table_schedule`);
* a per-step rate array or a file (`read_schedule`: a CSV with a rate for every step, or JSON knots);
* `cooled_down`: a schedule followed to some step, then decayed to the end (the WSD cooldown of Hägele et
  al. 2024), the schedule a derived (N, D) point stands for (`scalefit.analysis.curves`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from scalefit.atomic import write_text

SCHEDULE_FORMAT = "scalefit.schedule/1"


@dataclass(frozen=True, eq=False)
class Schedule:
    """The rate of every optimizer step of one run. Equal (and hashed) by content."""

    rates: np.ndarray  # float64 [T], >= 0: rate of the update applied at step s = 0 .. T-1
    warmup: int  # leading steps of the initial ramp (the rate reaches its first peak at step warmup - 1); 0: none
    label: str = ""  # how it was made, for messages ("cosine from spec.json", "knots", ...)

    def __post_init__(self):
        r = np.array(self.rates, dtype=np.float64).reshape(-1)
        if r.size == 0:
            raise ValueError(f"schedule {self.label!r}: no steps")
        if not np.all(np.isfinite(r)) or np.any(r < 0):
            bad = int(np.flatnonzero(~np.isfinite(r) | (r < 0))[0])
            raise ValueError(f"schedule {self.label!r}: rate at step {bad} is {r[bad]:g}, expected finite and >= 0")
        if not 0 <= int(self.warmup) <= r.size:
            raise ValueError(f"schedule {self.label!r}: warmup {self.warmup} outside 0..{r.size}")
        r.setflags(write=False)
        object.__setattr__(self, "rates", r)
        object.__setattr__(self, "warmup", int(self.warmup))

    @functools.cached_property
    def digest(self) -> str:
        """sha256 of the rates (float64 little-endian) and the warmup length."""
        return hashlib.sha256(np.ascontiguousarray(self.rates, "<f8").tobytes()
                              + str(self.warmup).encode()).hexdigest()

    def __eq__(self, other) -> bool:
        return isinstance(other, Schedule) and self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __len__(self) -> int:
        return int(self.rates.size)

    @property
    def steps(self) -> int:
        """T, the optimizer steps the schedule covers."""
        return int(self.rates.size)

    @property
    def peak(self) -> float:
        """The largest rate."""
        return float(self.rates.max())

    @functools.cached_property
    def area(self) -> np.ndarray:
        """float64 [T + 1]: S1(n) = sum(rates[:n]), the area under the schedule after n updates."""
        a = np.concatenate([[0.0], np.cumsum(self.rates)])
        a.setflags(write=False)
        return a

    def knots(self) -> list[tuple[int, float]]:
        """The (step, rate) knots whose linear interpolation gives every rate (to float64 rounding): the
        first and last step and every step where the schedule bends (a non-zero second difference);
        `from_knots(knots, T)` inverts it."""
        r = self.rates
        if r.size < 3:
            return [(s, float(v)) for s, v in enumerate(r)]
        bend = np.abs(r[:-2] - 2.0 * r[1:-1] + r[2:]) > 1e-12 * max(self.peak, 1e-300)
        idx = np.concatenate([[0], np.flatnonzero(bend) + 1, [r.size - 1]])
        return [(int(k), float(r[k])) for k in idx]

    def to_dict(self) -> dict:
        """JSON-ready: {"format", "total_steps", "warmup", "knots": [[step, rate], ...], "label"}."""
        return {"format": SCHEDULE_FORMAT, "total_steps": self.steps, "warmup": self.warmup,
                "knots": [list(k) for k in self.knots()], "label": self.label}


def infer_warmup(rates) -> int:
    """Length of the initial strictly rising run of `rates` (a warmup ramp), or 0 when the first two steps
    do not rise."""
    r = np.asarray(rates, float)
    if r.size < 2 or not r[1] > r[0]:
        return 0
    falls = np.flatnonzero(np.diff(r) <= 0)
    return int(falls[0] + 1) if falls.size else int(r.size)


def from_rates(rates, warmup: int | None = None, label: str = "rates") -> Schedule:
    """A schedule from the rate of every step; the warmup is inferred (`infer_warmup`) unless given."""
    r = np.asarray(rates, float)
    return Schedule(r, infer_warmup(r) if warmup is None else int(warmup), label)


def from_knots(knots, total_steps: int, scale: float = 1.0, warmup: int | None = None,
               label: str = "knots") -> Schedule:
    """Rates at steps 0 .. total_steps-1 linear between knots (step, value), times `scale`; the first value
    holds before the first knot and the last after the last. This is the trainer's "table" schedule
    (`training.lr.table_schedule`: the same np.interp, then float32)."""
    k = np.asarray(knots, float)
    if k.ndim != 2 or k.shape[1] != 2 or len(k) == 0:
        raise ValueError(f"schedule {label}: knots must be (step, rate) pairs, got shape {k.shape}")
    if np.any(np.diff(k[:, 0]) <= 0):
        raise ValueError(f"schedule {label}: knot steps must increase strictly, got {k[:, 0].tolist()[:10]}")
    total_steps = int(total_steps)
    if total_steps < 1:
        raise ValueError(f"schedule {label}: total_steps must be >= 1, got {total_steps}")
    rates = np.interp(np.arange(total_steps, dtype=float), k[:, 0], k[:, 1]) * float(scale)
    return from_rates(rates, warmup, label)


def from_run_spec(spec: dict, where: str = "spec.json") -> Schedule:
    """The schedule a trainer run used, rebuilt from its spec.json (`spec["train"]`, `spec["steps"]`) by the
    trainer's own `training.lr.lr_table`: the float32 rate each update applied, as float64."""
    import dataclasses

    from scalefit.training.config import TrainConfig
    from scalefit.training.lr import lr_table, warmup_steps

    try:
        train = dict(spec["train"])
        steps = int(spec["steps"])
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        # A field this trainer lacks is harmless when unset (a newer trainer's option left at None).
        extra = {k: v for k, v in train.items() if k not in known}
        if any(v is not None for v in extra.values()):
            raise ValueError(f"fields {sorted(k for k, v in extra.items() if v is not None)} are unknown to this "
                             "trainer")
        cfg = TrainConfig(**{k: v for k, v in train.items() if k in known})
    except KeyError as e:
        raise ValueError(f"{where}: no {e} field; cannot rebuild the learning-rate schedule") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: train config not understood by this trainer ({e})") from None
    rates = lr_table(cfg, steps).astype(np.float64)
    warm = int(spec.get("warmup_steps", warmup_steps(cfg, steps)))
    return Schedule(rates, min(warm, steps), f"{cfg.schedule} ({where})")


# ---- cooldowns: the decay a derived point (or a WSD branch) ends with ---------------------------------


# shape(p, m) -> rate / peak when a share p of the cooldown is done, ending at m = min_ratio.
COOLDOWNS: dict[str, Callable] = {
    "1-sqrt": lambda p, m: m + (1.0 - m) * (1.0 - np.sqrt(p)),  # Hägele et al. 2024; the trainer's WSD
    "linear": lambda p, m: m + (1.0 - m) * (1.0 - p),
    "cosine": lambda p, m: m + (1.0 - m) * 0.5 * (1.0 + np.cos(np.pi * p)),
    "exp": lambda p, m: np.power(max(m, 1e-300), p),  # geometric: Luo et al.'s wsd_20000_24000
}


def cooled_down(base: Schedule, total_steps: int, cooldown_steps: int, min_ratio: float,
                shape: str = "1-sqrt") -> Schedule:
    """`base` followed up to step start = total_steps - cooldown_steps, then decayed over the last
    `cooldown_steps` steps to `min_ratio` times the peak (Hägele et al. 2024's cooldown):

        r(s) = min(base(s), peak shape(p, m)),  p = (s - start + 1) / K  for s >= start,

    which for a constant-rate `base` and shape "1-sqrt" is the trainer's WSD schedule
    (`training.lr.wsd_schedule`) of `total_steps` steps: the schedule of a WSD-ladder branch.
    """
    if shape not in COOLDOWNS:
        raise ValueError(f"unknown cooldown shape {shape!r}; known: {', '.join(COOLDOWNS)}")
    total_steps, k = int(total_steps), int(cooldown_steps)
    if not 1 <= k <= total_steps <= base.steps:
        raise ValueError(f"cooldown of {k} steps ending at step {total_steps} needs 1 <= cooldown <= total <= "
                         f"{base.steps} (the base schedule's steps)")
    if not 0 <= min_ratio <= 1:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
    s = np.arange(total_steps, dtype=np.float64)
    start = total_steps - k
    p = np.clip((s - start + 1.0) / k, 0.0, 1.0)
    decay = COOLDOWNS[shape](p, float(min_ratio))
    stable = base.rates[:total_steps]
    rates = np.where(s < start, stable, np.minimum(stable, base.peak * decay))
    return Schedule(rates, min(base.warmup, total_steps),
                    f"{base.label} cooled down ({shape}) over the last {k} of {total_steps} steps")


# ---- files ---------------------------------------------------------------------------------------------


def read_schedule(path) -> Schedule:
    """A schedule from a file: JSON as `Schedule.to_dict` writes it (knots), or a CSV with columns step and
    lr holding a rate for every step 0 .. T-1 (rows in any order; a missing step is an error naming it)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"schedule file {p}: no such file")
    if p.suffix.lower() == ".json":
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"schedule file {p}: not valid JSON ({e})") from None
        if not isinstance(d, dict) or d.get("format") != SCHEDULE_FORMAT:
            raise ValueError(f"schedule file {p}: expected a JSON object with format {SCHEDULE_FORMAT!r}")
        try:
            return from_knots(d["knots"], d["total_steps"], warmup=d.get("warmup"), label=str(p))
        except KeyError as e:
            raise ValueError(f"schedule file {p}: no {e} field") from None
    if p.suffix.lower() == ".csv":
        import pandas as pd

        df = pd.read_csv(p)
        return rates_from_columns(df, str(p))
    raise ValueError(f"schedule file {p}: expected .json (knots) or .csv (step, lr), got {p.suffix or 'no suffix'}")


def rates_from_columns(df, where: str, step_col: str = "step", lr_col: str = "lr", first: int = 0) -> Schedule:
    """A schedule from a table's step and rate columns, one row per optimizer step first .. first + T - 1 (the
    rate of the step-th update when first is 1, the updates-done convention of a curve table)."""
    for c in (step_col, lr_col):
        if c not in df.columns:
            raise ValueError(f"{where}: no column {c!r}; columns available: {list(df.columns)}")
    steps = np.asarray(df[step_col], float)
    lr = np.asarray(df[lr_col], float)
    if np.any(steps != np.round(steps)) or np.any(steps < first):
        raise ValueError(f"{where}: column {step_col!r} must hold integer steps >= {first}")
    steps = steps.astype(int)
    order = np.argsort(steps, kind="stable")
    steps, lr = steps[order], lr[order]
    if np.any(np.diff(steps) == 0):
        raise ValueError(f"{where}: step {int(steps[np.flatnonzero(np.diff(steps) == 0)[0]])} appears twice")
    expected = np.arange(first, steps[-1] + 1)
    if len(steps) != len(expected):
        missing = np.setdiff1d(expected, steps)
        raise ValueError(f"{where}: a per-step rate column needs every step {first}..{steps[-1]}; {len(missing)} "
                         f"are missing, e.g. step {int(missing[0])} (give knots in a JSON schedule file instead)")
    return from_rates(lr, label=where)


def write_schedule(schedule: Schedule, path) -> Path:
    """Write `schedule` as JSON knots (`Schedule.to_dict`), atomically; `read_schedule` reads it back."""
    return write_text(path, json.dumps(schedule.to_dict(), indent=1))


def from_spec(text: str) -> Schedule:
    """A trainer schedule from a one-line spec, built by the trainer's own functions (`training.lr`):
    "cosine:steps=2000,lr=3e-3,warmup=100,min_ratio=0.1", "constant:steps=2000,lr=3e-3,warmup=100",
    "wsd:steps=2000,lr=3e-3,warmup=100,cooldown=400,min_ratio=0.1"; or a schedule file path."""
    if Path(text).suffix.lower() in (".json", ".csv"):
        return read_schedule(text)
    from scalefit.training import lr as trainer_lr

    kind, _, rest = text.partition(":")
    try:
        kw = {k.strip(): float(v) for k, v in (item.split("=") for item in rest.split(",") if item.strip())}
    except ValueError:
        raise ValueError(f"schedule spec {text!r}: expected KIND:key=value,... (e.g. cosine:steps=2000,lr=3e-3,"
                         "warmup=100,min_ratio=0.1)") from None
    need = {"cosine": ("steps", "lr", "warmup"), "constant": ("steps", "lr", "warmup"),
            "wsd": ("steps", "lr", "warmup", "cooldown")}
    if kind not in need:
        raise ValueError(f"schedule spec {text!r}: kind must be one of {', '.join(need)} (or a .json / .csv file)")
    missing = [k for k in need[kind] if k not in kw]
    if missing:
        raise ValueError(f"schedule spec {text!r}: missing {', '.join(missing)}")
    T, lr, w, m = int(kw["steps"]), kw["lr"], int(kw["warmup"]), kw.get("min_ratio", 0.1)
    fn = {"cosine": lambda: trainer_lr.cosine_schedule(lr, T, w, m),
          "constant": lambda: trainer_lr.constant_schedule(lr, w),
          "wsd": lambda: trainer_lr.wsd_schedule(lr, T, w, int(kw["cooldown"]), m)}[kind]()
    # float32, as the trainer's lr_table feeds the updates
    return Schedule(fn(np.arange(T)).astype(np.float32).astype(np.float64), min(w, T), text)


def train_overrides(schedule: Schedule) -> dict:
    """TrainConfig fields that make the trainer run `schedule` (its "table" schedule):
    lr = the peak, schedule_table = knots of the rate relative to it."""
    peak = schedule.peak
    if not peak > 0:
        raise ValueError(f"schedule {schedule.label!r} is zero everywhere")
    return {"schedule": "table", "lr": peak,
            "schedule_table": tuple((s, r / peak) for s, r in schedule.knots())}


__all__ = ["Schedule", "SCHEDULE_FORMAT", "COOLDOWNS", "cooled_down", "from_knots", "from_rates", "from_run_spec",
           "from_spec",
           "infer_warmup", "rates_from_columns", "read_schedule", "train_overrides", "write_schedule"]
