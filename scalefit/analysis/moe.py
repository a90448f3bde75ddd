"""Dense or mixture of experts: for a budget C and optionally a memory limit, the best dense model and the
best MoE (experts E, active size N, tokens D), their forecast losses with intervals, and the margin.

The law is one in active N, D and E that splits a budget for a given E (E is its condition: `joint_moe`,
Ludziejewski et al. 2025). A budget is spent as the fitted runs counted theirs, C = D F(N) with N the
active count (`FitResult.compute`): an MoE's FLOPs per token follow the parameters a token uses, not
the experts it skips (the router's d E FLOPs per token per layer are the only extra, small). For
each E the compute-optimal (N, D) comes from `scalefit.fitting.optimum.optimal_split`.

Memory counts every expert: a shape of the recipe (`scalefit.analysis.cost.model_shape`, E experts
routed top-k, each d_ff / k wide) gives the total parameters at each active N, counted by
`scalefit.training.counting`, so a limit on total parameters, or on bytes at a precision, caps the
active N for each E. The loss along the budget is unimodal in N, so the best model under the cap is
the compute-optimal N or, when that weighs too much, the largest shape of the ladder that fits.

Intervals: every bootstrap refit makes its own choice at its own optimum, so the loss interval of
each candidate and the interval of the margin include the uncertainty of the choice itself; the
one-run prediction interval at the chosen point is `FitResult.predict`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from scalefit.analysis.cost import ModelShape, model_shape, shape_at
from scalefit.analysis.memory import GB, bytes_per_param
from scalefit.fitting.compute import SIX_ND, ComputeModel
from scalefit.fitting.estimate import Estimate
from scalefit.fitting.laws import Law, get_law
from scalefit.fitting.optimum import _as_row, optimal_split

DEFAULT_EXPERTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class Candidate:
    """The best model with E experts for the budget (and the memory limit, when one is given)."""

    E: int  # experts per MoE layer (1 = dense)
    top_k: int  # experts each token is routed to
    N: Estimate  # active parameters, the law's N
    D: Estimate  # training tokens
    loss: Estimate  # the law's loss there, nats/token (each refit at its own choice)
    interval: tuple[float, float] | None  # one-run prediction interval at the point choice (None: no fit)
    N_total: int  # every parameter of the shape: all experts and the embeddings
    weight_bytes: float  # the shape's weights at the decision's precision
    limited: bool  # True when the memory limit, not the budget, set N
    shape: ModelShape = field(repr=False)  # the recipe's shape nearest N (active) with E experts

    @property
    def name(self) -> str:
        return "dense" if self.E == 1 else f"MoE E={self.E} top-{self.top_k}"


@dataclass(frozen=True)
class MoEDecision:
    """Dense against mixture of experts at one budget."""

    law: str  # the law the decision comes from
    C: float  # the budget, counted as the fit's runs counted theirs
    compute: str  # how C maps to (N, D), N active
    limit: str  # the memory limit in words ("none" when not given)
    precision: str  # precision of the weights the memory is counted at
    dense: Candidate | None  # the best dense model (None when none fits the limit)
    moe: Candidate | None  # the best with E > 1 (None when none fits)
    candidates: tuple[Candidate, ...]  # every E tried that fits, in order of E
    margin: Estimate | None  # dense loss - MoE loss, > 0 when the MoE is better (None without both)
    level: float  # coverage of the intervals
    notes: tuple[str, ...] = ()  # candidates that did not fit, caveats

    @property
    def best(self) -> Candidate:
        return min((c for c in (self.dense, self.moe) if c is not None), key=lambda c: c.loss.value)

    def __str__(self) -> str:
        pct = f"{100 * self.level:g}%"
        lines = [f"dense vs MoE ({self.law}) at C = {self.C:.4g} FLOPs ({self.compute}; N active), memory limit "
                 f"{self.limit}, weights counted in {self.precision}"]
        lines.append(f"  {'E':>4} {'k':>2} {'N_active':>10} {'N_total':>10} {'D':>10} {'D/N':>7} {'weights':>10} "
                     f"{'loss':>8}  {pct} one-run interval")
        for c in self.candidates:
            iv = "" if c.interval is None else f"[{c.interval[0]:.4f}, {c.interval[1]:.4f}]"
            lines.append(f"  {c.E:>4} {c.top_k:>2} {c.N.value:>10.4g} {c.N_total:>10.4g} {c.D.value:>10.4g} "
                         f"{c.D.value / c.N.value:>7.3g} {c.weight_bytes / GB:>8.4g}GB {c.loss.value:>8.4f}  {iv}"
                         + ("  (memory-limited)" if c.limited else ""))
        for c in (self.dense, self.moe):
            if c is not None:
                ci = "" if c.loss.ci is None else f" [{c.loss.ci[0]:.4f}, {c.loss.ci[1]:.4f}] over refits"
                lines.append(f"  best {c.name}: N = {c.N.value:.4g} active ({c.N_total:.4g} total), D = "
                             f"{c.D.value:.4g}, loss {c.loss.value:.4f}{ci}; shape d_model {c.shape.d_model}, "
                             f"n_layer {c.shape.n_layer}")
        if self.margin is not None:
            m = self.margin
            ci = "" if m.ci is None else f" [{m.ci[0]:+.4f}, {m.ci[1]:+.4f}]"
            verdict = "the MoE is better" if m.value > 0 else "the dense model is better"
            sure = "" if m.ci is None else (" (the interval excludes 0)" if m.ci[0] > 0 or m.ci[1] < 0 else
                                            " (the interval includes 0: not resolved by these runs)")
            lines.append(f"  margin dense - MoE: {m.value:+.4f} nats/token{ci}: {verdict}{sure}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def decide_moe(source, C: float, *, params: Mapping[str, float] | None = None, compute: ComputeModel = SIX_ND,
               experts=DEFAULT_EXPERTS, top_k: int = 1, max_params: float | None = None,
               max_bytes: float | None = None, precision: str = "bf16", vocab_size: int = 50257,
               level: float | None = None) -> MoEDecision:
    """The best dense model and the best MoE at budget C (module docstring).

    source: a `FitResult` of a law in (N, D, E) (intervals from its bootstrap refits), or a law (name or
    `Law`) with `params` and `compute` (point values only). experts: the E to try (1 = dense); top_k:
    experts per token. max_params caps the total parameters, max_bytes the bytes of the weights at
    `precision`; vocab_size sets the shapes' embeddings.
    """
    from scalefit.fitting.result import FitResult

    if isinstance(source, FitResult):
        law, point, samples, compute = source.law, source.point(), source.finite_samples(), source.compute
        level = source.ci_level if level is None else float(level)
        result = source
    else:
        law = get_law(source)
        if params is None:
            raise ValueError(f"decide_moe: give the parameters of {law.name} (params=...) or a fit result")
        point, samples, result = _as_row(law, params), np.empty((0, len(law.param_names))), None
        level = 0.95 if level is None else float(level)
    _check_law(law)
    C = float(C)
    if not (math.isfinite(C) and C > 0):
        raise ValueError(f"C must be a finite number > 0, got {C!r}")
    if max_params is not None and max_bytes is not None:
        raise ValueError("give one memory limit: max_params (total parameters) or max_bytes (weights at a precision)")
    cap_total = None if max_params is None else _positive("max_params", max_params)
    if max_bytes is not None:
        cap_total = _positive("max_bytes", max_bytes) / bytes_per_param(precision)
    limit = ("none" if cap_total is None else f"{cap_total:.4g} total parameters" if max_bytes is None else
             f"{max_bytes / GB:.4g} GB of {precision} weights ({cap_total:.4g} parameters)")
    rows = point if not len(samples) else np.vstack([point, samples])  # [1 + B, K]; row 0 is the point
    cands, notes, draws = [], [], {}
    for E in sorted({int(e) for e in experts}):
        if E < 1 or (E > 1 and top_k > E):
            raise ValueError(f"experts must be >= 1 and >= top_k={top_k}, got {E}")
        k = 1 if E == 1 else int(top_k)
        N, D = (x[:, 0] for x in optimal_split(law, rows, [C], compute, {"E": float(E)}))  # [1 + B]
        limited = np.zeros(len(N), bool)
        if cap_total is not None:
            n_max = _max_active(cap_total, E, k, vocab_size)
            if n_max is None:
                notes.append(f"E = {E}: even the smallest shape weighs more than the limit")
                continue
            limited = N > n_max
            N = np.where(limited, n_max, N)
            D = compute.tokens(C, N)
        if not np.isfinite(N[0]):
            notes.append(f"E = {E}: the optimum lies outside D/N in e^-24..e^24")
            continue
        L = law.predict_paired(rows, N=N, D=D, E=np.full(len(N), float(E)))  # [1 + B]
        draws[E] = L
        iv = None if result is None else result.predict(level, N=N[0], D=D[0], E=float(E))
        shape = model_shape(N[0], vocab_size=vocab_size, n_kind="active", n_expert=E, top_k=k)
        est = lambda x: Estimate.of(x[0], x[1:] if len(x) > 1 else None, level)  # noqa: E731
        cands.append(Candidate(E=E, top_k=k, N=est(N), D=est(D), loss=est(L),
                               interval=None if iv is None else (float(iv.low), float(iv.high)),
                               N_total=shape.N, weight_bytes=shape.N * bytes_per_param(precision),
                               limited=bool(limited[0]), shape=shape))
    dense = next((c for c in cands if c.E == 1), None)
    moes = [c for c in cands if c.E > 1]
    moe = min(moes, key=lambda c: c.loss.value) if moes else None
    margin = None
    if dense is not None and moe is not None:
        diff = draws[1] - draws[moe.E]  # [1 + B]: each refit's dense loss less its loss at this E
        margin = Estimate.of(diff[0], diff[1:] if len(diff) > 1 else None, level)
    notes.append("N_total and the weights are those of the recipe's shape nearest the active N (SwiGLU, untied "
                 f"output, vocabulary {vocab_size}); memory excludes activations, KV cache and optimizer state")
    return MoEDecision(law=law.name, C=C, compute=compute.describe(), limit=limit, precision=precision, dense=dense,
                       moe=moe, candidates=tuple(cands), margin=margin, level=level, notes=tuple(notes))


def _check_law(law: Law) -> None:
    if not (law.can_allocate and law.conditions == ("E",)):
        raise ValueError(f"a dense-vs-MoE decision needs a law in N, D and E that splits a budget for a given E "
                         f"(e.g. joint_moe); {law.name} reads {', '.join(law.inputs)}"
                         + (" at the runs' own training length" if "E" in law.inputs else ""))


def _max_active(cap_total: float, E: int, k: int, vocab_size: int) -> float | None:
    """The active N of the largest shape on `model_shape`'s ladder (E experts, top-k) with at most
    `cap_total` parameters in all; None when even the smallest rung is heavier. A rung, not an interpolation
    between rungs, so the shape the decision names does fit."""
    best = None
    for d in range(64, 65536 + 1, 64):
        s = shape_at(d, max(1, round(d / 64)), vocab_size=vocab_size, n_expert=E, top_k=k)
        if s.counts.total > cap_total:
            break
        best = float(s.counts.active)
    return best


def _positive(name: str, value) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value
