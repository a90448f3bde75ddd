"""One-page report of a scaling study: fit, approaches compared, backtest, forecasts, figures.

`build_report(table, out_dir)` fits the law with a run-level bootstrap (Approach 3; by default the law
chosen by leave-future-out cross-validation on the runs, `law="auto"`, with its ranking and calibrated
intervals), runs Approaches 2 and 1 where the runs' design allows, backtests the law on its
largest-compute runs (nominal against empirical coverage), forecasts 10x and 100x the largest budget, and
writes report.md, report.html, PNG figures, the fit as JSON and the
backtest rows as CSV into `out_dir`. Which figures and forecasts appear is asked of the law
(`Law.has_frontier`, `Law.can_allocate`), never decided by its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scalefit.analysis.approach2 import isoflop_optima
from scalefit.analysis.backtest import backtest, can_backtest
from scalefit.analysis.compare import compare_approaches, isoflop_method, isoflop_structure, snap_budgets
from scalefit.analysis.forecast import forecast
from scalefit.atomic import write_text
from scalefit.fitting.fitter import fit
from scalefit.fitting.laws import get_law
from scalefit.fitting.result import FitResult
from scalefit.fitting.sources import is_store, read_runs, store_curves
from scalefit.fitting.table import FitTable
from scalefit.report import plots, render


@dataclass(frozen=True)
class ReportSummary:
    """Where the report went and the numbers a reader looks at first."""

    out_dir: Path  # folder holding everything below
    markdown: Path  # report.md
    html: Path  # report.html (same content, images linked by relative path)
    fit_json: Path  # the full FitResult (scalefit.fitting.result.FitResult.load reads it)
    figures: tuple[Path, ...]  # PNGs, in the order the report shows them
    law: str  # law fitted
    n_runs: int  # runs fitted (after exclusions)
    a: float | None  # N_opt ~ C^a from the fit (C as the runs count it); None when not compared
    b: float | None  # D_opt ~ C^b
    backtest_mean_abs_rel_err: float | None  # None when no backtest ran
    backtest_max_abs_rel_err: float | None
    backtest_extrapolation: float | None  # largest held-out C / largest fitted C
    backtest_skipped: str  # why no backtest ran ('' when one did)
    forecasts: tuple[tuple[float, float, float, float], ...]  # (C, loss, low, high) one-run intervals
    disagreements: tuple[str, ...]  # approach comparisons that disagree
    status: str = "converged"  # the fit's FitStatus
    backtest_coverage: tuple[tuple[float, float], ...] = ()  # (nominal, empirical) of the backtest's intervals
    selection: str = ""  # the candidate law="auto" chose ('' for a law given by name)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return path


def _figures(table: FitTable, result: FitResult, bt, out: Path, optima, iso_table,
             C_top: float) -> list[tuple[Path, str]]:
    figs = []
    frame = table.frame
    fitted = frame if bt is None else frame[~frame["run"].isin(bt.rows["run"])]
    shown = result if bt is None else bt.fit
    if result.law.has_frontier:
        fig, ax = plots.figure()
        plots.loss_vs_compute(shown, fitted, ax=ax, extrapolate_to=C_top, held_out=None if bt is None else bt.rows)
        cap = ("Loss against compute: the law fitted without the held-out runs (open circles), extrapolated "
               "(dashed) to 100x the largest budget" if bt is not None else
               "Loss against compute: fitted frontier, extrapolated (dashed) to 100x the largest budget")
        figs.append((_save(fig, out / "loss_vs_compute.png"), cap))
    fig, ax = plots.figure()
    plots.residuals(result, frame, ax=ax)
    figs.append((_save(fig, out / "residuals.png"), "Log residuals of the full fit against compute"))
    if result.law.can_allocate and not result.law.conditions:
        fig, ax = plots.figure()
        plots.loss_contours(result, frame, ax=ax, C_range=(frame["C"].min() / 3, C_top))
        figs.append((_save(fig, out / "contours.png"), "Fitted loss surface and the compute-optimal line"))
        fig, ax = plots.figure()
        plots.allocation(result, frame, ax=ax, C_range=(frame["C"].min(), C_top), optima=optima)
        figs.append((_save(fig, out / "allocation.png"), "Compute-optimal N and D against budget, bootstrap bands"))
    if iso_table is not None:
        fig, ax = plots.figure()
        plots.isoflop_curves(iso_table, optima, ax=ax)
        figs.append((_save(fig, out / "isoflop.png"), "IsoFLOP curves and their fitted minima (Approach 2)"))
    return figs


def build_report(table: FitTable, out_dir, *, law="auto", bootstrap: int = 200, seed: int = 0,
                 holdout: float | int = 0.15, level: float = 0.95, budget_rtol: float = 0.1,
                 curves: FitTable | None = None, title: str | None = None) -> ReportSummary:
    """Fit, compare approaches, backtest, forecast and plot; write report.md/.html into `out_dir`.

    table: the runs (`scalefit.fitting.sources.read_runs`; a run-store folder or any other source is
    read with its defaults, and a run store's logged curves go to Approach 1). The fit is Approach 3
    (`scalefit.fitting.fitter.fit`, `bootstrap` run-level resamples); Approach 2 runs when budgets (C
    grouped within a factor 1 + budget_rtol) hold >= 3 sizes each for >= 3 budgets, Approach 1 when
    training curves are given (`curves`, e.g. `scalefit.fitting.sources.store_curves`); the backtest
    (`scalefit.analysis.backtest`, `holdout`) when `can_backtest` allows. Forecasts at 10x and 100x the
    largest C are compute-optimal for a law that splits a budget into N and D, and on the L(C) frontier
    for laws in C.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source, table = table, read_runs(table)
    if curves is None and is_store(source):  # a run store's logs are training curves: Approach 1 reads them
        curves = store_curves(source, table)
    frame = table.frame
    spec = law if isinstance(law, str) and law.strip() == "auto" else get_law(law)
    result = fit(table, spec, bootstrap_resamples=bootstrap, seed=seed, ci_level=level)
    law = result.law  # what the figures and forecasts ask about: the law fitted (chosen, for "auto")
    fit_json = result.save(out / "fit.json")

    comparison, optima, iso_table = None, None, None
    if law.can_allocate and not law.conditions:
        comparison = compare_approaches(table, result, curves=curves, level=level, budget_rtol=budget_rtol)
    snapped = snap_budgets(frame, budget_rtol)
    if isoflop_structure(snapped):
        iso_table = snapped
        optima, _ = isoflop_optima(snapped, isoflop_method(snapped))

    why_not = can_backtest(table, spec, holdout)
    bt = None if why_not else backtest(table, spec, holdout=holdout, bootstrap_resamples=bootstrap,
                                       seed=seed, level=level)
    if bt is not None:
        bt.rows.to_csv(out / "backtest.csv", index=False)
    C_max = float(frame["C"].max())
    # A budget fixes the loss only for laws with a frontier (in C alone, or splitting C into N and D).
    fcs = [forecast(result, C=m * C_max, level=level) for m in (10, 100)] if law.has_frontier else []
    figs = _figures(table, result, bt, out, optima, iso_table, 100 * C_max)

    head = title or f"Scaling report: {table.source}"
    doc = render.blocks(head, table, result, comparison, bt, why_not, fcs, figs, out)
    md = write_text(out / "report.md", render.to_markdown(doc))
    ht = write_text(out / "report.html", render.to_html(doc, head))
    # Approach 3's exponents as the comparison states them: in the runs' own count of C.
    a3 = None if comparison is None else comparison.estimates[-1]
    return ReportSummary(
        out_dir=out, markdown=md, html=ht, fit_json=fit_json, figures=tuple(p for p, _ in figs), law=law.name,
        n_runs=result.n_runs, a=None if a3 is None else a3.a, b=None if a3 is None else a3.b,
        backtest_mean_abs_rel_err=None if bt is None else bt.mean_abs_rel_err,
        backtest_max_abs_rel_err=None if bt is None else bt.max_abs_rel_err,
        backtest_extrapolation=None if bt is None else bt.extrapolation, backtest_skipped=why_not,
        forecasts=tuple((f.compute, f.loss, *f.interval) for f in fcs),
        disagreements=() if comparison is None else comparison.disagreements, status=str(result.status),
        backtest_coverage=() if bt is None else bt.coverages,
        selection="" if result.selection is None else result.selection.chosen)
