"""What a plan can and cannot identify, and the plan as printed by `scalefit sweep plan`.

The warnings are about the law to be fitted, L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al.
2022): with a single tokens-per-parameter ratio N and D move together and their terms cannot be told
apart; with fewer than 3 sizes no curvature in N can be fitted. A design adds its own checks and
printed totals through its `scalefit.sweep.designs.Design` entry.
"""

from __future__ import annotations

from scalefit.store.records import Role
from scalefit.sweep.designs import DESIGNS
from scalefit.sweep.planned import SweepPlan


def identifiability_warnings(plan: SweepPlan) -> tuple[str, ...]:
    """Why a plan may not identify L(N, D): one D/N ratio, < 3 sizes, then the design's own checks
    (IsoFLOP: < 3 sizes per budget, budgets off target).

    Trunks of a WSD ladder are left out: only the branches are points of the fit.
    """
    runs = [r for r in plan.runs if r.role != Role.TRUNK]
    out = []
    ratios = [r.tokens / r.n_total for r in runs]  # N total, as the tokens-per-parameter prior
    if max(ratios) < 2 * min(ratios):
        out.append(f"all runs have about the same D/N ratio ({min(ratios):.3g} to {max(ratios):.3g}, less than "
                   "2x apart): N and D effects cannot be separated")
    if len({r.preset for r in runs}) < 3:
        out.append("fewer than 3 model sizes in the whole sweep: no curvature in N can be fitted")
    out += DESIGNS[plan.design].checks(plan)
    return tuple(out)


def format_plan(plan: SweepPlan, walls: list[float] | None = None) -> str:
    """The plan as a table, one line per run, then totals, the design's own lines and the warnings.

    N: total / non-embedding / active parameters. D: training tokens. C: training FLOPs, 6N (=
    6 * N_active * D) and exact (scalefit.training.counting); for ladder branches, including the trunk
    steps they inherit. walls: estimated seconds per run on this machine (scalefit.sweep.timing.calibrate).
    """
    head = (f"{'run':24s} {'run_id':26s} {'d':>4s} {'L':>2s} {'E/k':>5s} {'N_total':>9s} {'N_nonemb':>9s} "
            f"{'N_active':>9s} {'D':>9s} {'steps':>6s} {'C_6N':>9s} {'C_exact':>9s}" + ("  est." if walls else ""))
    lines = [f"{plan.name}: design {plan.design}, {len(plan.runs)} runs, corpus "
             f"{plan.corpus or 'stdlib'} (from {plan.source})", head]
    for i, r in enumerate(plan.runs):
        m = r.spec.model
        ek = f"{m.n_expert}/{m.top_k}" if m.is_moe else "-"
        lines.append(f"{r.label:24s} {r.spec.run_id:26s} {m.d_model:4d} {m.n_layer:2d} {ek:>5s} {r.n_total:9.3g} "
                     f"{r.n_non_embedding:9.3g} {r.n_active:9.3g} {r.tokens:9.3g} {r.steps:6d} {r.flops_6n:9.3g} "
                     f"{r.flops_exact:9.3g}" + (f"  {walls[i]:5.0f}s" if walls else ""))
    own = plan.total_flops(own=True)
    lines.append(f"total: {own:.4g} FLOPs (exact) to train"
                 + (f", about {sum(walls) / 60:.1f} min here" if walls else ""))
    lines += DESIGNS[plan.design].totals(plan)
    lines += [f"note: {n}" for n in plan.notes]
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)
