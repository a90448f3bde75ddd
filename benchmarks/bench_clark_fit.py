"""Clark et al. 2022's law refitted to their runs: which rows, which objective and which loss move its numbers.

Data: `scalefit.fitting.datasets.load("clark_routing")`, each run's last evaluation (step 249,000 for all but
two runs: 248,000 and 250,000), N = dense_parameter_count (active), E = num_experts. Law: `clark_routing`,
log10 L = a log10 N + b log10 Ê + c log10 N log10 Ê + d, 1/Ê = 1/(E - 1 + (1/E_start - 1/E_max)^-1) + 1/E_max,
fitted per router with the dense runs joined to the router's, as the authors' example.ipynb does. Variants:

- "notebook, huber": the notebook's runs (routing frequency 1/2, k = 1, seed 42), this project's default
  objective (Huber, delta 1e-3, on natural-log residuals);
- "notebook, lsq": the same runs, least squares on log residuals (Huber with delta 1, far above every
  residual: the minimiser of squared log10 residuals, the notebook's objective);
- "all k=1, lsq": every k = 1 run of the router at any routing frequency and seed, with every k = 1 dense run;
- "all, lsq": every run of the router (any routing frequency, k and seed) with every dense run;
- "notebook, lsq, loss_c4": the notebook's runs and objective on the C4 loss instead of loss_validation.

Printed per router and variant: a, b, c, d (base-10, as the paper reports them), E_start, E_max, the rows
fitted, the RMS log residual (natural log, i.e. relative), and for least squares the relative fall of the
sum of squares that scipy's least_squares finds from the fit (~0: the fit is the least-squares optimum,
whether or not it met the fitter's gradient criterion). About a minute on two CPU cores.

    python benchmarks/bench_clark_fit.py
"""

from __future__ import annotations

import time

import numpy as np
from scipy.optimize import least_squares

from scalefit.fitting import datasets
from scalefit.fitting.fitter import fit
from scalefit.fitting.laws import CLARK
from scalefit.fitting.solver import Objective
from scalefit.fitting.table import load_table

ROUTERS = ("S-Base", "RL-R", "Hash")
HUBER, LSQ = Objective(delta=1e-3), Objective(delta=1.0)


def variants(raw, router):
    """(name, rows, objective, loss column) for one router."""
    mine = raw["router_type"].isin(["Dense", router])
    notebook = mine & (raw["routing_frequency"] == 0.5) & (raw["k"] == 1) & (raw["seed"] == 42)
    k1 = mine & (raw["k"] == 1)
    return [("notebook, huber", notebook, HUBER, "loss"), ("notebook, lsq", notebook, LSQ, "loss"),
            ("all k=1, lsq", k1, LSQ, "loss"), ("all, lsq", mine, LSQ, "loss"),
            ("notebook, lsq, loss_c4", notebook, LSQ, "loss_c4")]


def _polish(table, values) -> float:
    """Relative fall of the sum of squared log residuals that scipy's least_squares finds from the fit: ~0
    when the fit is the least-squares optimum, whatever the fitter's own gradient criterion said."""
    f = table.frame
    logx = np.log(np.stack([f["N"].to_numpy(float), f["E"].to_numpy(float)]))
    logy = np.log(f["loss"].to_numpy(float))
    theta = CLARK.from_params(np.array([values[k] for k in CLARK.param_names]))
    res = lambda th: CLARK.log_loss_many(th, logx)[0] - logy  # noqa: E731
    before = 0.5 * float(np.sum(res(theta) ** 2))
    after = least_squares(res, theta, xtol=1e-15, ftol=1e-15, gtol=1e-15).cost
    return (before - after) / before


def main() -> None:
    raw = datasets.load("clark_routing")
    print(f"clark_routing: {len(raw)} runs (last evaluation each)")
    cols = ("a", "b", "c", "d", "E_start", "E_max")
    for router in ROUTERS:
        print(f"\n{router}")
        print(f"  {'variant':<25}" + "".join(f"{c:>9}" for c in cols) + f"{'rows':>6}{'rms':>8}{'polish':>9}{'status':>15}")
        for name, rows, objective, loss in variants(raw, router):
            t0 = time.perf_counter()
            table = load_table(raw[rows], n_kind="active", loss_col=loss)
            r = fit(table, "clark_routing", objective=objective)
            v = r.values()
            polish = _polish(table, v) if objective is LSQ else float("nan")
            print(f"  {name:<25}" + "".join(f"{v[c]:>9.4f}" if c in "abcd" else f"{v[c]:>9.2f}" for c in cols)
                  + f"{len(table):>6}{r.solver.residual_scale:>8.4f}{polish:>9.1e}{str(r.status):>15}"
                  f"  ({time.perf_counter() - t0:.1f}s)")
            print(f"bench_clark_fit router={router} variant={name.replace(' ', '')} "
                  + " ".join(f"{c}={v[c]:.4g}" for c in cols))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
