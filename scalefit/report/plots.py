"""Figures of a scaling study, one argument order for all: `fn(result, table=None, *, ax=None, ...)`
(`isoflop_curves`, which needs no fit, takes the table first). Each draws on the Matplotlib `ax` it is
given (a new Agg figure when None) and returns it.

Nothing here touches pyplot's global state: `figure()` builds a `matplotlib.figure.Figure` rendered by
the Agg backend, so figures save without a display. Axes use log scales for N, D and C; loss is in nats
per token of the runs' own tokenizer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scalefit.analysis.approach2 import isoflop_optima
from scalefit.analysis.forecast import allocation_curve, frontier_curve
from scalefit.fitting.result import FitResult


def figure(width: float = 6.0, height: float = 4.2):
    """A (Figure, Axes) pair rendered by the Agg backend, independent of pyplot and of any display."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _frame(data) -> pd.DataFrame:
    return data.frame if hasattr(data, "frame") else data


def _axes(ax):
    return figure()[1] if ax is None else ax


def _compute_label(result: FitResult) -> str:
    """Axis label naming how C is counted: the fit's compute model for laws that split a budget."""
    if result.law.can_allocate:
        return f"training compute C (FLOPs, {result.c_kind}: {result.compute.describe()})"
    return f"training compute C (FLOPs, {result.c_kind})"


def _budget_colors(values):
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    norm = LogNorm(vmin=min(values), vmax=max(values) * (1 + 1e-9))
    cmap = colormaps["viridis"]
    return lambda v: cmap(norm(v)), norm, cmap


def isoflop_curves(table, optima: pd.DataFrame | None = None, *, ax=None, method: str = "akima"):
    """Loss against N for each FLOP budget C, with each curve's fitted minimum (Approach 2).

    `table` has columns N, C, loss (one budget per distinct C); `optima` is the first result of
    `scalefit.analysis.approach2.isoflop_optima` (computed here with `method` when None). Flagged budgets'
    minima are drawn hollow: they are not used by the power-law fit.
    """
    ax = _axes(ax)
    df = _frame(table)
    if optima is None:
        optima, _ = isoflop_optima(df, method)
    color, norm, cmap = _budget_colors(df["C"].unique())
    for C, g in df.groupby("C", sort=True):
        g = g.sort_values("N")
        # Budgets with too few sizes for a minimum are drawn faintly: they carry no estimate.
        faint = g["N"].nunique() < 3
        ax.plot(g["N"], g["loss"], "o-", ms=3, lw=1, color=color(C), alpha=0.25 if faint else 0.9)
    from matplotlib.cm import ScalarMappable

    ax.figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="budget C (FLOPs)")
    ok = optima[~optima["flagged"] & optima["N_opt"].notna()]
    bad = optima[optima["flagged"] & optima["N_opt"].notna()]
    ax.plot(ok["N_opt"], ok["loss_opt"], "*", ms=11, color="crimson", mec="k", mew=0.5,
            label="fitted minimum", zorder=5)
    if len(bad):
        ax.plot(bad["N_opt"], bad["loss_opt"], "*", ms=11, mfc="none", mec="crimson",
                label="minimum (flagged)", zorder=5)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("IsoFLOP curves")
    ax.legend(fontsize=7, loc="upper right")
    return ax


def loss_vs_compute(result: FitResult, table, *, ax=None, extrapolate_to: float | None = None,
                    held_out: pd.DataFrame | None = None, level: float | None = None):
    """Runs' loss against compute, the fitted compute-optimal frontier, its extrapolation and bands.

    The frontier (`scalefit.analysis.forecast.frontier_curve`) is solid over the fitted range of C and dashed
    beyond it up to `extrapolate_to`; the dark band is the law's bootstrap interval, the light band
    the prediction interval for one run. `held_out` rows (a backtest's) are drawn as open markers.
    """
    ax = _axes(ax)
    df = _frame(table)
    c_lo, c_hi = float(df["C"].min()), float(df["C"].max())
    top = max(c_hi, extrapolate_to or c_hi, float(held_out["C"].max()) if held_out is not None else c_hi)
    C = np.geomspace(c_lo, top, 120)
    iv = frontier_curve(result, C, level)
    pct = f"{100 * iv.level:g}%"
    ax.fill_between(C, iv.low, iv.high, color="tab:blue", alpha=0.15, lw=0, label=f"{pct} one-run interval")
    if iv.param_low is not None:
        ax.fill_between(C, iv.param_low, iv.param_high, color="tab:blue", alpha=0.35, lw=0,
                        label=f"{pct} law interval")
    inside = C <= c_hi * (1 + 1e-9)
    ax.plot(C[inside], iv.loss[inside], "-", color="tab:blue", lw=1.8, label=f"frontier ({result.law.name})")
    if (~inside).any():
        ax.plot(C[~inside], iv.loss[~inside], "--", color="tab:blue", lw=1.8, label="extrapolation")
    ax.scatter(df["C"], df["loss"], s=10, color="0.35", zorder=3, label="fitted runs")
    if held_out is not None and len(held_out):
        ax.scatter(held_out["C"], held_out["loss"], s=40, facecolors="none", edgecolors="crimson", lw=1.3,
                   zorder=4, label="held-out runs")
    ax.axvline(c_hi, color="0.6", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel(_compute_label(result))
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Loss against compute")
    ax.legend(fontsize=7)
    return ax


def loss_contours(result: FitResult, table=None, *, ax=None, C_range: tuple[float, float] | None = None,
                  levels: int = 14):
    """Contours of the fitted L(N, D = C/F(N)) over (C, N), with the compute-optimal line N_opt(C).

    F(N) is the fit's compute model (`FitResult.compute`, 6N unless the runs counted C otherwise).

    The Chinchilla law's surface drawn as Hoffmann et al. 2022, Fig. 4 (left) draw it: iso-loss
    contours in the plane of compute and model size, the efficient frontier through their minima.
    """
    if not result.law.has_frontier or not result.law.can_allocate:
        raise ValueError(f"contours need a law in N and D alone, not {result.law.name} ({result.formula})")
    ax = _axes(ax)
    df = None if table is None else _frame(table)
    if C_range is None:
        if df is None:
            raise ValueError("give table or C_range")
        C_range = (float(df["C"].min()) / 3, float(df["C"].max()) * 30)
    C = np.geomspace(*C_range, 160)  # [m]
    N_opt = np.array([a.N.value for a in allocation_curve(result, C)])  # [m]
    n_lo = min(N_opt.min(), df["N"].min() if df is not None else np.inf) / 10
    n_hi = max(N_opt.max(), df["N"].max() if df is not None else 0) * 10
    N = np.geomspace(n_lo, n_hi, 150)  # [k]
    CC, NN = np.meshgrid(C, N)  # [k, m]
    L = result.law.predict(result.values(), N=NN, D=result.compute.tokens(CC, NN))  # [k, m]
    lv = np.quantile(L, np.linspace(0.0, 0.85, levels))  # dense where the loss varies, not in the corners
    cs = ax.contourf(CC, NN, L, levels=np.unique(lv), cmap="magma_r", alpha=0.85, extend="max")
    ax.contour(CC, NN, L, levels=np.unique(lv), colors="k", linewidths=0.3)
    ax.figure.colorbar(cs, ax=ax, label="predicted loss (nats/token)")
    ax.plot(C, N_opt, "-", color="deepskyblue", lw=2, label="compute-optimal N_opt(C)")
    if df is not None:
        ax.scatter(df["C"], df["N"], s=6, color="w", edgecolors="k", lw=0.3, label="runs", zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(_compute_label(result))
    ax.set_ylabel(f"parameters N ({result.n_kind})")
    ax.set_title("Fitted loss surface")
    ax.legend(fontsize=7, loc="upper left")
    return ax


def residuals(result: FitResult, table, *, ax=None, against: str = "C"):
    """Log residuals log L_obs - log L_fit of every run against C (or N, D), with +-sigma lines.

    sigma is the run-to-run scatter the prediction intervals use (`FitResult.sigma`). Structure in this
    plot (a trend, a curve) means the law's form misfits, not just noise.
    """
    ax = _axes(ax)
    df = _frame(table)
    if against not in df.columns:
        raise ValueError(f"cannot plot residuals against {against!r}: table has {list(df.columns)}")
    iv = result.predict(None, **{c: df[c].to_numpy(float) for c in result.law.inputs})
    r = np.log(df["loss"].to_numpy(float)) - np.log(iv.loss)
    colour = np.log10(df["N"].to_numpy(float)) if "N" in df.columns else None
    sc = ax.scatter(df[against], r, c=colour, s=10, cmap="viridis")
    if colour is not None and np.ptp(colour) > 0:
        ax.figure.colorbar(sc, ax=ax, label="log10 N")
    ax.axhline(0, color="k", lw=0.8)
    for s in (-iv.sigma, iv.sigma):
        ax.axhline(s, color="crimson", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel({"C": "training compute C (FLOPs)", "N": "parameters N", "D": "tokens D"}.get(against, against))
    ax.set_ylabel("log residual (observed - fit)")
    ax.set_title(f"Residuals ({result.law.name}); dashed: +-sigma = {iv.sigma:.3g}")
    return ax


def allocation(result: FitResult, table=None, *, ax=None, C_range: tuple[float, float] | None = None,
               optima: pd.DataFrame | None = None, level: float | None = None):
    """Compute-optimal N_opt(C) and D_opt(C) with bootstrap bands, over `C_range` (default: the table's
    range of C, to 100x beyond it).

    `optima` (Approach 2 IsoFLOP minima: columns C, N_opt, D_opt, flagged) are overlaid as markers
    so the two approaches can be compared by eye.
    """
    ax = _axes(ax)
    if C_range is None:
        if table is None:
            raise ValueError("give table or C_range")
        df = _frame(table)
        C_range = (float(df["C"].min()), 100 * float(df["C"].max()))
    C = np.geomspace(*C_range, 100)
    allocs = allocation_curve(result, C, level)
    for key, col, name in (("N", "tab:blue", "N_opt (parameters)"), ("D", "tab:orange", "D_opt (tokens)")):
        est = [getattr(a, key) for a in allocs]
        mid = np.array([e.value for e in est])
        lo = np.array([e.value if e.ci is None else min(e.ci[0], e.value) for e in est])
        hi = np.array([e.value if e.ci is None else max(e.ci[1], e.value) for e in est])
        ax.fill_between(C, lo, hi, color=col, alpha=0.25, lw=0)
        ax.plot(C, mid, "-", color=col, lw=1.8, label=name)
    if optima is not None:
        ok = optima[~optima["flagged"] & optima["N_opt"].notna()]
        ax.plot(ok["C"], ok["N_opt"], "o", color="tab:blue", mec="k", ms=5, label="IsoFLOP minima N")
        ax.plot(ok["C"], ok["D_opt"], "s", color="tab:orange", mec="k", ms=5, label="IsoFLOP minima D")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(_compute_label(result))
    ax.set_ylabel(f"N ({result.n_kind}) or D")
    ax.set_title("Compute-optimal allocation")
    ax.legend(fontsize=7)
    return ax


def loss_curves(fit, curves, *, ax=None, level: float | None = None, every: int = 1):
    """Observed loss against optimizer step for each curve of `curves` (points), the curve law's prediction
    (line) and, with a bootstrap, the law's interval (dark band) and one curve point's interval (light band).

    `fit` is a `scalefit.fitting.curvefit.CurveFit`, `curves` a `CurveTable` (the fitted curves or others:
    held-out ones show the forecast). `every` thins the observed points drawn (not the prediction).
    """
    from matplotlib import colormaps

    ax = _axes(ax)
    pred = fit.predict_table(curves, level)
    f = curves.frame
    cmap = colormaps["tab10"]
    for i, c in enumerate(curves.curves):
        rows = np.flatnonzero(f["curve"].to_numpy() == c)
        steps = f["step"].to_numpy()[rows]
        color = cmap(i % 10)
        ax.plot(steps[::every], f["loss"].to_numpy()[rows][::every], "o", ms=2, color=color, alpha=0.5)
        ax.plot(steps, pred.loss[rows], "-", lw=1.2, color=color, label=c)
        if pred.param_low is not None:
            ax.fill_between(steps, pred.param_low[rows], pred.param_high[rows], color=color, alpha=0.35, lw=0)
        ax.fill_between(steps, pred.low[rows], pred.high[rows], color=color, alpha=0.12, lw=0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"{fit.result.law.name}: observed (points) and predicted (lines, {100 * pred.level:g}% bands)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return ax
