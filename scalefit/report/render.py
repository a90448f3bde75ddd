"""The report as a document: a list of blocks (heading, paragraph, list, table, image) built from the
study's results, rendered to Markdown and to HTML."""

from __future__ import annotations

import html


def compute_note(result, fcs) -> str:
    """How the budgets of the frontier and the forecasts map to (N, D), and where that is extrapolated."""
    if not result.law.can_allocate:
        return ""
    cm = result.compute
    text = (f"Compute convention: budgets here are C as the runs count it ({result.c_kind}), "
            f"{cm.summary()}; the compute-optimal N and D at a budget solve that, not C = 6ND."
            if not cm.is_6nd else "Compute convention: C = 6ND, as in the runs.")
    return " ".join([text, *(f"At C = {f.compute:.3g}: {n}." for f in fcs for n in f.notes)])


def blocks(title, table, result, comparison, bt, why_not, fcs, figs, out):
    pct = f"{100 * result.ci_level:g}%"
    b = [("h1", title),
         ("p", f"{result.n_runs} runs ({result.n_points} rows, {len(table.excluded)} excluded) from "
               f"{table.source}; N counts {table.n_kind} parameters, C is {table.c_kind}, loss in nats/token. "
               f"Law {result.formula} ({result.law.name}), Huber loss on log residuals, "
               f"{result.bootstrap.n_resamples} run-level bootstrap resamples, {pct} intervals.")]
    if result.reasons:
        b.append(("ul", [f"{str(result.status).upper()}: {w}" for w in result.reasons]))
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
          ("p", f"Residual scale (RMS log residual) {result.solver.residual_scale:.4g}; "
                f"status {result.status}; share of starts at the best objective {result.solver.share_at_best:.1%}.")]
    b += selection_blocks(result)
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
        how = ("calibrated on the fitted part's own leave-future-out errors" if bt.fit.calibration is not None
               else "bootstrap + scatter of single runs, not calibrated")
        b += [("table", ["nominal coverage", "empirical coverage"],
               [[f"{100 * p:g}%", f"{c:.0%}"] for p, c in bt.coverages]),
              ("p", f"Coverage of the one-run intervals ({how}) on the {len(bt.rows)} held-out rows.")]
    rows = []
    for f in fcs:
        where = ", ".join(f"{k} = {v:.3g}" for k, v in f.at.items())
        law_ci = "" if f.param_interval is None else f"[{f.param_interval[0]:.4f}, {f.param_interval[1]:.4f}]"
        rows.append([f"{f.compute:.3g}", where, f"{f.loss:.4f}", law_ci, f"[{f.interval[0]:.4f}, {f.interval[1]:.4f}]"])
    if fcs:
        b += [("h2", "Forecasts at 10x and 100x the largest budget"),
              ("table", ["C (FLOPs)", "at", "loss", f"{pct} law interval", f"{pct} one-run interval"], rows),
              ("p", "The law interval is the bootstrap spread of the fitted law; the one-run interval adds the "
                    "scatter of single runs about it (docs/forecasting.md). "
                    + ("The one-run interval also widens with the distance beyond the fitted runs as the law's "
                       "own leave-future-out forecasts erred; it assumes that error keeps growing as it did."
                       if result.calibration is not None else
                       "Both assume the law's form holds that far out, which no interval can check."))]
        b += [("p", note) for note in [compute_note(result, fcs)] if note]
    else:
        b += [("h2", "Forecasts"),
              ("p", f"No forecasts at a budget: law {result.law.name} ({result.formula}) does not give the loss "
                    "at a budget alone.")]
    b.append(("h2", "Figures"))
    b += [("img", p.relative_to(out).as_posix(), cap) for p, cap in figs]
    return b


def selection_blocks(result) -> list:
    """The ranking behind law="auto" and the calibration of the intervals, when the fit has them."""
    out = []
    sel = result.selection
    if sel is not None:
        rows = [[str(i), r.candidate, "" if r.cv_mean == float("inf") else f"{r.cv_mean:.2%}",
                 "" if r.cv_max == float("inf") else f"{r.cv_max:.2%}",
                 "" if r.coverage90 is None else f"{r.coverage90:.0%}", str(r.n_free), r.note]
                for i, r in enumerate(sel.rows, 1)]
        out += [("h2", "Law chosen by forecasting the runs' own future"),
                ("p", f"{sel.folds[0].upper()}{sel.folds[1:]}. Chosen: {sel.rule}."),
                ("table", ["rank", "candidate", "CV mean |err|", "CV max |err|", "CV coverage 90%", "parameters",
                           "note"], rows)]
    if result.calibration is not None:
        out.append(("p", f"Intervals {result.calibration.describe()} (docs/forecasting.md)."))
    return out


def to_markdown(blocks) -> str:
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


def to_html(blocks, title: str) -> str:
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
