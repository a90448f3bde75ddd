"""One-page report of a scaling study: fit, approaches compared, backtest, forecasts, figures.

`build_report(source, out_dir)` reads runs (a table or a run store), fits the law with a run-level
bootstrap (Approach 3), runs Approaches 2 and 1 where the runs' design allows, backtests the law on
its largest-compute runs, forecasts 10x and 100x the largest budget, and writes report.md,
report.html, PNG figures, the fit as JSON and the backtest rows as CSV into `out_dir`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scalefit.conventions import run_flops
from scalefit.fitting.laws import get_law
from scalefit.fitting.result import FitResult


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
    a: float | None  # N_opt ~ C^a from the fit (chinchilla law; C as the runs count it), else None
    b: float | None  # D_opt ~ C^b
    backtest_mean_abs_rel_err: float | None  # None when no backtest ran
    backtest_max_abs_rel_err: float | None
    backtest_extrapolation: float | None  # largest held-out C / largest fitted C
    backtest_skipped: str  # why no backtest ran ('' when one did)
    forecasts: tuple[tuple[float, float, float, float], ...]  # (C, loss, low, high) one-run intervals
    disagreements: tuple[str, ...]  # approach comparisons that disagree


def read_runs(source, **table_kwargs):
    """A `FitTable` from a DataFrame, CSV/Parquet path, dataset name, or run-store folder.

    A folder is read with `scalefit.store.tables.load` (final loss per run; N and C as `table_kwargs` n_kind
    and c_kind name them); runs whose status is not "completed" are excluded there with that reason,
    so the report counts them.
    """
    from scalefit.fitting.table import FitTable, load_table

    if isinstance(source, FitTable):
        return source
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        from scalefit.store import tables as runs

        df = runs.load(source, n_kind=table_kwargs.get("n_kind", "total"), c_kind=table_kwargs.get("c_kind") or "exact")
        skipped = list(df.attrs.get("skipped", []))
        done = df["status"] == "completed"
        attrs = dict(df.attrs)
        df = df.copy()
        df.loc[~done, "loss"] = np.nan  # load_table lists each such row as excluded (loss is NaN)
        df.attrs = attrs
        if not len(df):
            raise ValueError(f"run store {source}: no runs found" + (f" ({len(skipped)} damaged)" if skipped else ""))
        table = load_table(df, **table_kwargs)
        not_done = {str(r): s for r, s in zip(df.index, df["status"]) if s != "completed"}
        excluded = tuple((r, f"status {not_done[str(r)]} (not completed); " + why if str(r) in not_done else why)
                         for r, why in table.excluded)
        notes = (*table.notes, f"run store {source}", *(f"skipped {f}: {why}" for f, why in skipped))
        return FitTable(frame=table.frame, excluded=excluded, notes=notes, source=str(source),
                        n_kind=table.n_kind, c_kind=table.c_kind, fingerprint=table.fingerprint)
    return load_table(source, **table_kwargs)


def store_curves(folder, table) -> pd.DataFrame:
    """Training curves of a run store for Approach 1: run, N, D (tokens so far), C (FLOPs so far, in
    the table's convention), loss (evaluation loss; steps without an evaluation are left out)."""
    from scalefit.store import tables as runs

    cv = runs.load_curves(folder)
    per_run = table.frame.set_index("run")["N"]
    cv = cv[cv["run_id"].isin(per_run.index) & cv["eval_loss"].notna()]
    N = per_run.loc[cv["run_id"]].to_numpy()
    # The rule the final points follow (conventions.run_flops), so Approach 1 reads the C the others read.
    C = run_flops(table.c_kind, N, cv["tokens"].to_numpy(), cv["flops_exact"].to_numpy())
    return pd.DataFrame({"run": cv["run_id"].to_numpy(), "N": N, "D": cv["tokens"].to_numpy(), "C": C,
                         "loss": cv["eval_loss"].to_numpy()})


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return path


def _figures(table, result: FitResult, bt, out: Path, optima, iso_table, C_top: float) -> list[tuple[Path, str]]:
    from scalefit.report import plots

    figs = []
    frame = table.frame
    fitted = frame if bt is None else frame[~frame["run"].isin(bt.rows["run"])]
    shown = result if bt is None else bt.fit
    if result.law == "chinchilla" or get_law(result.law).inputs == ("C",):  # laws with an L(C) frontier
        fig, ax = plots.figure()
        plots.loss_vs_compute(ax, fitted, shown, extrapolate_to=C_top, held_out=None if bt is None else bt.rows)
        cap = ("Loss against compute: the law fitted without the held-out runs (open circles), extrapolated "
               "(dashed) to 100x the largest budget" if bt is not None else
               "Loss against compute: fitted frontier, extrapolated (dashed) to 100x the largest budget")
        figs.append((_save(fig, out / "loss_vs_compute.png"), cap))
    fig, ax = plots.figure()
    plots.residuals(ax, frame, result)
    figs.append((_save(fig, out / "residuals.png"), "Log residuals of the full fit against compute"))
    if result.law == "chinchilla":
        fig, ax = plots.figure()
        plots.loss_contours(ax, result, frame, C_range=(frame["C"].min() / 3, C_top))
        figs.append((_save(fig, out / "contours.png"), "Fitted loss surface and the compute-optimal line"))
        fig, ax = plots.figure()
        plots.allocation(ax, result, (frame["C"].min(), C_top), optima=optima)
        figs.append((_save(fig, out / "allocation.png"), "Compute-optimal N and D against budget, bootstrap bands"))
    if iso_table is not None:
        fig, ax = plots.figure()
        plots.isoflop_curves(ax, iso_table, optima)
        figs.append((_save(fig, out / "isoflop.png"), "IsoFLOP curves and their fitted minima (Approach 2)"))
    return figs


MIN_BACKTEST_SPAN = 4.0  # least C_max / C_min of the runs left to fit: two doublings of compute


def can_backtest(table, law, holdout) -> str:
    """'' when a backtest is meaningful, else why not: enough runs left to fit (>= 2x the law's
    parameters) spanning at least a factor MIN_BACKTEST_SPAN of compute. A factor 4-8 is far from the
    decades of a production sweep, but the forecast of the next budget from it is still a real test of
    the fitted exponents; the report says how far the fitted runs reach and how far the forecast goes."""
    from scalefit.analysis.forecast import holdout_split

    frame = table.frame
    try:
        held, _, _ = holdout_split(frame, holdout)
    except ValueError as e:
        return str(e)
    k = len(get_law(law).theta_names)
    train = frame[~held]
    if train["run"].nunique() < 2 * k:
        return f"only {train['run'].nunique()} runs left to fit a {k}-parameter law (need {2 * k})"
    span = train["C"].max() / train["C"].min()
    if span < MIN_BACKTEST_SPAN:
        return (f"the runs left to fit span only a factor {span:.3g} of compute "
                f"(need {MIN_BACKTEST_SPAN:g})")
    return ""


def build_report(source, out_dir, *, law: str = "chinchilla", bootstrap: int = 200, seed: int = 0,
                 holdout: float | int = 0.15, level: float = 0.95, budget_rtol: float = 0.1,
                 curves: pd.DataFrame | None = None, title: str | None = None,
                 **table_kwargs) -> ReportSummary:
    """Fit, compare approaches, backtest, forecast and plot; write report.md/.html into `out_dir`.

    source: DataFrame, CSV/Parquet path, reference dataset name, or run-store folder. The fit is
    Approach 3 (`scalefit.fitting.fitter.fit`, `bootstrap` run-level resamples); Approach 2 runs when budgets
    (C grouped within a factor 1 + budget_rtol) hold >= 3 sizes each for >= 3 budgets, Approach 1
    when training curves are given (`curves`: run, N, D, C, loss; read from a run store's logs
    automatically); the backtest (`scalefit.analysis.forecast.backtest`, `holdout`) when
    `can_backtest` allows. Forecasts at 10x and 100x the largest C are compute-optimal for the
    Chinchilla law and on the L(C) frontier for laws in C.
    """
    from scalefit.analysis.compare import compare_approaches, isoflop_method, isoflop_structure, snap_budgets
    from scalefit.analysis.approach2 import isoflop_optima
    from scalefit.fitting.fitter import fit
    from scalefit.analysis.forecast import backtest, forecast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = read_runs(source, **table_kwargs)
    frame = table.frame
    result = fit(table, law, bootstrap_resamples=bootstrap, seed=seed, ci_level=level)
    fit_json = result.save(out / "fit.json")

    comparison, optima, iso_table = None, None, None
    if curves is None and isinstance(source, (str, Path)) and Path(source).is_dir():
        curves = store_curves(source, table)
    if result.law == "chinchilla":
        comparison = compare_approaches(table, result, curves=curves, level=level, budget_rtol=budget_rtol)
    snapped = snap_budgets(frame, budget_rtol)
    if isoflop_structure(snapped):
        iso_table = snapped
        optima, _ = isoflop_optima(snapped[["N", "D", "C", "loss"]], isoflop_method(snapped))

    why_not = can_backtest(table, result.law, holdout)
    bt = None if why_not else backtest(table, result.law, holdout=holdout, bootstrap_resamples=bootstrap,
                                       seed=seed, level=level)
    if bt is not None:
        bt.rows.to_csv(out / "backtest.csv", index=False)
    C_max = float(frame["C"].max())
    law_inputs = get_law(result.law).inputs
    # A budget fixes the loss only for laws in C, or in N and D (compute-optimal split).
    fcs = ([forecast(result, C=m * C_max, level=level) for m in (10, 100)]
           if law_inputs in (("C",), ("N", "D")) else [])
    figs = _figures(table, result, bt, out, optima, iso_table, 100 * C_max)

    blocks = _blocks(title or f"Scaling report: {table.source}", table, result, comparison, bt, why_not, fcs,
                     figs, out)
    md = out / "report.md"
    md.write_text(_to_markdown(blocks))
    ht = out / "report.html"
    ht.write_text(_to_html(blocks, title or f"Scaling report: {table.source}"))
    # Approach 3's exponents as the comparison states them: in the runs' own count of C.
    a3 = None if comparison is None else comparison.estimates[-1]
    return ReportSummary(
        out_dir=out, markdown=md, html=ht, fit_json=fit_json, figures=tuple(p for p, _ in figs), law=result.law,
        n_runs=result.n_runs, a=None if a3 is None else a3.a, b=None if a3 is None else a3.b,
        backtest_mean_abs_rel_err=None if bt is None else bt.mean_abs_rel_err,
        backtest_max_abs_rel_err=None if bt is None else bt.max_abs_rel_err,
        backtest_extrapolation=None if bt is None else bt.extrapolation, backtest_skipped=why_not,
        forecasts=tuple((f.compute, f.loss, *f.interval) for f in fcs),
        disagreements=() if comparison is None else comparison.disagreements)


def _compute_note(result: FitResult, fcs) -> str:
    """How the budgets of the frontier and the forecasts map to (N, D), and where that is extrapolated."""
    if get_law(result.law).inputs != ("N", "D"):
        return ""
    cm = result.compute
    text = (f"Compute convention: budgets here are C as the runs count it ({result.c_kind}), "
            f"{cm.summary()}; the compute-optimal N and D at a budget solve that, not C = 6ND."
            if not cm.is_6nd else "Compute convention: C = 6ND, as in the runs.")
    return " ".join([text, *(f"At C = {f.compute:.3g}: {n}." for f in fcs for n in f.notes)])


# ---- document model: a list of blocks rendered to Markdown and to HTML ------------------------------


def _blocks(title, table, result, comparison, bt, why_not, fcs, figs, out):
    pct = f"{100 * result.ci_level:g}%"
    b = [("h1", title),
         ("p", f"{result.n_runs} runs ({result.n_points} rows, {len(table.excluded)} excluded) from "
               f"{table.source}; N counts {table.n_kind} parameters, C is {table.c_kind}, loss in nats/token. "
               f"Law {result.formula} ({result.law}), Huber loss on log residuals, "
               f"{result.bootstrap.get('n_resamples', 0)} run-level bootstrap resamples, {pct} intervals.")]
    if result.warnings:
        b.append(("ul", [f"WARNING: {w}" for w in result.warnings]))
    if table.excluded:
        shown = [f"row {r}: {why}" for r, why in table.excluded[:10]]
        if len(table.excluded) > 10:
            shown.append(f"... and {len(table.excluded) - 10} more")
        b.append(("ul", ["Excluded " + s for s in shown]))
    # The law's own a, b assume C = 6ND; under the runs' count the comparison below restates them.
    tag = "" if result.compute.is_6nd else " (if C = 6ND)"
    rows = [[k, f"{e.value:.5g}", "" if e.se is None else f"{e.se:.3g}",
             "" if e.ci is None else f"[{e.ci[0]:.4g}, {e.ci[1]:.4g}]"]
            for k, e in [*result.params.items(), *((k + tag, e) for k, e in result.derived.items())]]
    b += [("h2", "Fit"), ("table", ["parameter", "value", "SE", f"{pct} CI"], rows),
          ("p", f"Residual scale (RMS log residual) {result.method['residual_scale']:.4g}; "
                f"status {result.status}; share of starts at the best objective {result.method['share_at_best']:.1%}.")]
    if comparison is not None:
        rows = [[e.approach, f"{e.a:.3f}", "" if e.a_ci is None else f"[{e.a_ci[0]:.3f}, {e.a_ci[1]:.3f}]",
                 f"{e.b:.3f}", "" if e.b_ci is None else f"[{e.b_ci[0]:.3f}, {e.b_ci[1]:.3f}]", e.note]
                for e in comparison.estimates]
        b += [("h2", "Compute-optimal exponents by approach (N_opt ~ C^a, D_opt ~ C^b)"),
              ("table", ["approach", "a", f"{pct} CI", "b", f"{pct} CI", "note"], rows),
              ("ul", [f"Not run: {s}" for s in comparison.skipped]
               + ([f"DISAGREE: {d}" for d in comparison.disagreements] or [comparison.verdict().capitalize() + "."]))]
    b.append(("h2", "Backtest"))
    if bt is None:
        b.append(("p", f"No backtest: {why_not}."))
    else:
        fitted_C = table.frame.loc[~table.frame["run"].isin(bt.rows["run"]), "C"]
        b += [("p", f"{bt.rule}: refitted on {bt.n_fit_runs} runs (C from {fitted_C.min():.3g} to "
                    f"{bt.cutoff_C:.3g}, a factor {bt.cutoff_C / fitted_C.min():.3g} of compute), forecast "
                    f"{bt.n_held_runs} held-out runs up to {bt.extrapolation:.3g}x beyond. Relative error of the "
                    f"loss: mean |err| {bt.mean_abs_rel_err:.2%}, max |err| {bt.max_abs_rel_err:.2%}, signed mean "
                    f"{bt.mean_rel_err:+.2%} (positive: forecast too high). {bt.coverage:.0%} of held-out runs fall "
                    f"inside their {100 * bt.level:g}% prediction interval. Rows: backtest.csv.")]
    rows = []
    for f in fcs:
        where = ", ".join(f"{k} = {v:.3g}" for k, v in f.at.items())
        law_ci = "" if f.param_interval is None else f"[{f.param_interval[0]:.4f}, {f.param_interval[1]:.4f}]"
        rows.append([f"{f.compute:.3g}", where, f"{f.loss:.4f}", law_ci, f"[{f.interval[0]:.4f}, {f.interval[1]:.4f}]"])
    if fcs:
        b += [("h2", "Forecasts at 10x and 100x the largest budget"),
              ("table", ["C (FLOPs)", "at", "loss", f"{pct} law interval", f"{pct} one-run interval"], rows),
              ("p", "The law interval is the bootstrap spread of the fitted law; the one-run interval adds the "
                    "scatter of single runs about it (docs/forecasting.md). Both assume the law's form holds "
                    "that far out, which no interval can check.")]
        b += [("p", note) for note in [_compute_note(result, fcs)] if note]
    else:
        b += [("h2", "Forecasts"),
              ("p", f"No forecasts at a budget: law {result.law} ({result.formula}) does not depend on compute.")]
    b.append(("h2", "Figures"))
    b += [("img", p.relative_to(out).as_posix(), cap) for p, cap in figs]
    return b


def _to_markdown(blocks) -> str:
    lines = []
    for kind, *rest in blocks:
        if kind == "h1":
            lines += [f"# {rest[0]}", ""]
        elif kind == "h2":
            lines += [f"## {rest[0]}", ""]
        elif kind == "p":
            lines += [rest[0], ""]
        elif kind == "ul":
            lines += [f"- {x}" for x in rest[0]] + [""]
        elif kind == "table":
            head, rows = rest
            esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
            lines += ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows] + [""]
        elif kind == "img":
            lines += [f"![{rest[1]}]({rest[0]})", "", f"*{rest[1]}*", ""]
    return "\n".join(lines)


def _to_html(blocks, title: str) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{e(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}img{max-width:48%;margin:4px}"
             "figure{display:inline-block;width:48%;margin:0}figure img{max-width:100%}</style></head><body>"]
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "p"):
            parts.append(f"<{kind}>{e(rest[0])}</{kind}>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in rest[0]) + "</ul>")
        elif kind == "table":
            head, rows = rest
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
                         + "</table>")
        elif kind == "img":
            parts.append(f"<figure><img src='{e(rest[0])}' alt='{e(rest[1])}'>"
                         f"<figcaption>{e(rest[1])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
