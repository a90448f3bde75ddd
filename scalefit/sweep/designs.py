"""The sweep designs, as a registry: each lays out the runs of a sweep file from its own table.

`DESIGNS` maps a design's name (the sweep file's ``[sweep] design`` and the table holding its
settings) to a `Design`: its builder, the keys its table takes (`scalefit.sweep.plan.SWEEP_KEYS` is
assembled from them), and what it adds to the plan's warnings and printed totals. Adding a design is
one entry here plus its rows in docs/sweeps.md.

- ``isoflop``: per FLOP budget C, the ``sizes_per_budget`` ladder shapes nearest (in log N) to the
  compute-optimal size of a prior D/N = ``tokens_per_param`` (Hoffmann et al. 2022 found ~20), so
  each IsoFLOP curve brackets its minimum; D = C / (FLOPs per token), FLOPs per token exact or 6N
  (``flops_convention``; exact by default, see scalefit.training.counting).
- ``grid``: sizes x token counts (Hoffmann et al. 2022, Approach 3 data).
- ``wsd-ladder``: per size, one constant-rate trunk with a 1-sqrt cooldown branch for each token count
  (Hägele et al. 2024): branch i resumes the trunk's checkpoint at step S_i - K_i and cools down over
  K_i = cooldown_frac * S_i steps, so one trunk yields several D. Trunk segments are separate runs
  (each continues the previous one's final checkpoint), so every branch point is an exact checkpoint.
- ``moe``: expert counts x top-k x dense base sizes at matched active parameters (expert width
  d_ff / top_k), all at the same token budget per size (Clark et al. 2022, unified MoE scaling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

from scalefit.conventions import CKind, NKind
from scalefit.store.records import Role
from scalefit.sweep.planned import PlannedRun, SweepPlan
from scalefit.training import counting
from scalefit.training.config import ModelConfig, TrainConfig, get_preset


class DesignError(ValueError):
    """A design setting that cannot be laid out; `plan_sweep` raises it as a SweepFileError with the file."""


class Layout(NamedTuple):
    """What a design's builder returns."""

    runs: list[PlannedRun]  # in execution order: a parent before its children
    warnings: list[str]  # problems found while laying out (e.g. a prior optimum outside the sizes)
    notes: list[str]  # the conventions the design used


@dataclass(frozen=True)
class DesignInput:
    """What a builder lays out from."""

    doc: dict  # the whole sweep file, checked against SWEEP_KEYS
    ladder: tuple[str, ...]  # preset names to pick sizes from ([model] ladder or the family's presets)
    # Lays out one run: (model, train, *, label, preset, group, role, budget, parent, start_step) ->
    # PlannedRun with its counts, steps and run id (scalefit.sweep.plan binds the corpus).
    make: Callable[..., PlannedRun]

    @property
    def table(self) -> dict:
        """The design's own table, e.g. [isoflop]."""
        return self.doc[self.doc["sweep"]["design"]]

    def shape(self, preset: str, **over) -> ModelConfig:
        """The preset with the [model] overrides (seq_len, compute_dtype, tie_embeddings) and ``over``."""
        m = self.doc.get("model", {})
        changes = {k: m[k] for k in ("seq_len", "compute_dtype", "tie_embeddings") if k in m}
        return get_preset(preset).with_overrides(**changes, **over)

    def train(self, **over) -> TrainConfig:
        """The [train] table with ``over`` (the budget, the schedule a design sets); DesignError if invalid."""
        t = dict(self.doc.get("train", {}))
        t.update(over)
        try:
            return TrainConfig(**t)
        except (TypeError, ValueError) as e:
            raise DesignError(f"[train] {e}") from None


def _nothing(plan: SweepPlan) -> list[str]:
    return []


@dataclass(frozen=True)
class Design:
    """One sweep design."""

    build: Callable[[DesignInput], Layout]  # lays out the runs
    keys: frozenset[str]  # allowed keys of the design's table; any other is an error naming its line
    checks: Callable[[SweepPlan], list[str]] = _nothing  # warnings only this design can raise
    totals: Callable[[SweepPlan], list[str]] = _nothing  # lines under the printed plan's total


def _isoflop(d: DesignInput) -> Layout:
    cfg = d.table
    k = int(cfg.get("sizes_per_budget", 4))
    ratio = float(cfg.get("tokens_per_param", 20.0))
    try:
        n_kind = NKind.parse(cfg.get("n_kind", "total"), "[isoflop] n_kind")
        conv = CKind.parse(cfg.get("flops_convention", "exact"), "[isoflop] flops_convention")
    except ValueError as e:
        raise DesignError(str(e)) from None
    shapes = {n: d.shape(n) for n in d.ladder}
    sizes = {n: getattr(counting.param_counts(m), n_kind.count_field) for n, m in shapes.items()}
    order = sorted(d.ladder, key=sizes.get)
    runs, warns = [], []
    for C in sorted(float(c) for c in cfg["budgets"]):
        n_opt = math.sqrt(C / (6.0 * ratio))  # C = 6 N D with D = ratio * N
        # The k consecutive ladder sizes whose log-centre is nearest the prior optimum bracket it.
        windows = [order[i:i + k] for i in range(max(1, len(order) - k + 1))]
        near = min(windows, key=lambda w: abs(sum(math.log(sizes[n] / n_opt) for n in w)))
        lo, hi = sizes[near[0]], sizes[near[-1]]
        if not lo < n_opt < hi:
            warns.append(f"C={C:.3g}: prior optimum N~{n_opt:.3g} ({n_kind}) lies outside the sizes "
                         f"[{lo:.3g}, {hi:.3g}]; the IsoFLOP minimum will likely sit on the edge")
        for n in near:
            t = d.train(flops=C, flops_convention=conv)
            runs.append(d.make(shapes[n], t, label=f"C{C:.3g}/{n}", preset=n, group=f"C={C:.3g}", budget=C))
    return Layout(runs, warns, [f"IsoFLOP sizes centred on N_opt = sqrt(C / (6 * {ratio:g})) with N {n_kind}; "
                                f"D = C / ({conv} FLOPs per token), rounded down to whole steps"])


def _isoflop_checks(plan: SweepPlan) -> list[str]:
    """Per budget: at least 3 sizes to locate a minimum, and a realised C within 1% of the budget."""
    groups: dict[str, list[PlannedRun]] = {}
    for r in plan.runs:
        groups.setdefault(r.group, []).append(r)
    out = []
    for g, rs in groups.items():
        if len({r.preset for r in rs}) < 3:
            out.append(f"{g}: fewer than 3 sizes; an IsoFLOP minimum needs at least 3 points")
        for r in rs:
            c = r.flops_exact if r.spec.train.flops_convention == CKind.EXACT else r.flops_6n
            if abs(c / r.budget - 1) > 0.01:
                out.append(f"{r.label}: realised C {c:.4g} is {100 * (c / r.budget - 1):+.1f}% off the "
                           f"budget (only {r.steps} steps); raise the budget or shrink the batch")
    return out


def _grid(d: DesignInput) -> Layout:
    g = d.table
    runs = [d.make(d.shape(n), d.train(tokens=float(D)), label=f"{n}/D{float(D):.3g}", preset=n, group=n)
            for n in g.get("sizes", d.ladder) for D in g["tokens"]]
    return Layout(runs, [], ["grid: every size trained to every token count (cosine unless [train] schedule)"])


def _wsd_ladder(d: DesignInput) -> Layout:
    w = d.table
    if "schedule" in d.doc.get("train", {}):
        raise DesignError("[train] schedule cannot be set for a wsd-ladder (trunks are constant-rate, "
                          "branches WSD)")
    cf = float(w.get("cooldown_frac", 0.2))
    runs = []
    for n in w.get("sizes", d.ladder):
        model = d.shape(n)
        base = d.train(tokens=1.0)
        tps = counting.tokens_per_step(model, base)
        targets = sorted({max(1, int(float(D) // tps)) for D in w["tokens"]})  # S_i, steps
        warm = int(w.get("warmup_steps", round(base.warmup_frac * targets[0] * (1 - cf))))
        parent, prev = None, 0
        for S in targets:
            start = S - max(1, round(cf * S))  # the WSD schedule's own cooldown start
            if start < warm:
                raise DesignError(f"[wsd-ladder] size {n}: branch at {S} steps starts its cooldown at "
                                  f"step {start}, before warmup ends ({warm}); raise the token counts")
            if start > prev:  # trunk segment: constant rate, ends exactly at the branch point
                tt = d.train(tokens=float(start * tps), schedule="constant", warmup_steps=warm)
                trunk = d.make(model, tt, label=f"{n}/trunk{start}", preset=n, group=n, role=Role.TRUNK,
                               parent=parent, start_step=prev)
                runs.append(trunk)
                parent, prev = trunk.spec.run_id, start
            bt = d.train(tokens=float(S * tps), schedule="wsd", cooldown_frac=cf, warmup_steps=warm)
            runs.append(d.make(model, bt, label=f"{n}/D{S * tps:.3g}", preset=n, group=n, role=Role.BRANCH,
                               parent=parent, start_step=prev))
    return Layout(runs, [], [f"wsd-ladder: constant-rate trunk, 1-sqrt cooldown over {cf:g} of each branch's "
                             "steps (Hägele et al. 2024)"])


def _wsd_ladder_totals(plan: SweepPlan) -> list[str]:
    """The FLOPs the shared trunks save against independent runs to the same D."""
    own = plan.total_flops(own=True)
    indep = sum(r.flops_exact for r in plan.runs if r.role == Role.BRANCH)
    return [f"ladder: {own:.4g} FLOPs vs {indep:.4g} for independent runs to the same D "
            f"({100 * (1 - own / indep):.0f}% saved)"]


def _moe(d: DesignInput) -> Layout:
    m = d.table
    runs = []
    for n in m.get("sizes", d.ladder):
        base = d.shape(n, n_expert=1, top_k=1)
        n_act = counting.param_counts(base).active
        tokens = float(m["tokens"]) if "tokens" in m else float(m.get("tokens_per_param", 20.0)) * n_act
        for e in m["experts"]:
            for k in (m.get("top_k", [1]) if e > 1 else [1]):
                if k > e:
                    continue
                d_ff = max(16, round(base.d_ff / k / 16) * 16)  # k experts of width d_ff/k ~ one dense MLP
                model = base.with_overrides(n_expert=int(e), top_k=int(k), d_ff=d_ff)
                tag = "dense" if e == 1 else f"moe{e}-top{k}"
                runs.append(d.make(model, d.train(tokens=tokens), label=f"{n}/{tag}", preset=n, group=n))
    return Layout(runs, [], ["moe: matched active parameters (expert width d_ff / top_k), same D per base size"])


DESIGNS: dict[str, Design] = {
    "isoflop": Design(_isoflop, frozenset({"budgets", "sizes_per_budget", "tokens_per_param", "n_kind",
                                           "flops_convention"}), checks=_isoflop_checks),
    "grid": Design(_grid, frozenset({"sizes", "tokens"})),
    "wsd-ladder": Design(_wsd_ladder, frozenset({"sizes", "tokens", "cooldown_frac", "warmup_steps"}),
                         totals=_wsd_ladder_totals),
    "moe": Design(_moe, frozenset({"sizes", "experts", "top_k", "tokens_per_param", "tokens"})),
}
