"""Curve laws on Luo et al. 2025's curves and on our own WSD ladder; the optimised schedule trained on this CPU.

1. The paper's protocol (datasets/README.md): per size fit the multi-power law to cosine_24000,
   constant_24000 and wsdcon_9, predict the six other curves; mean and worst relative error beside the
   published ones (worst = the mean over the six curves of each curve's largest error, as the authors'
   README reports it; the largest single error is printed too), and the training objective of both fits.
   The fit's wall time is printed beside the time of the same objective's gradient summed step by step.
2. Joint across sizes: fit the 25M and 100M curves (all nine schedules each) and forecast every 400M
   curve, beside the 400M per-size fit's errors on the same nine curves.
3. Our own runs (--store, `scalefit sweep run experiments/curves_wsd.toml`): per size, leave each branch out,
   fit the trunk and the other branches, forecast the branch's final loss (and, where the trunk is long
   enough, the same as a derived (N, D) point from the trunk's curve).
4. (--train) A schedule optimised for the law fitted to one size's ladder, trained on this CPU beside the
   cosine of the same budget.
5. (not in the default sections) Could the fitted curves alone choose a fit nearer the published one? Per
   size, the free fit and fits with beta pinned at 0.45 and at 0.6 (the published value): each fitted on
   the three curves' steps up to FORWARD_CUT and scored on the rest, beside its error on the six
   held-out curves when fitted on all of the three.

    python benchmarks/bench_curves.py [--store runs/curves_wsd] [--train runs/curves_opt] [--skip-joint]
                                      [--sections 1,2,3,4] (5: --sections 5)

Ends with one line per size: bench_curves size=... mean_err=... worst_err=... published_mean=... published_worst=...
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from scalefit.fitting.curve_sources import MULTIPOWER_TEST, MULTIPOWER_TRAIN, multipower_curves
from scalefit.fitting.curvefit import curve_errors, fit_curves
from scalefit.fitting.laws import joint
from scalefit.fitting.laws.curves import MULTIPOWER, POINT, with_resolution

SIZES = ("25M", "100M", "400M")
# datasets/README.md (the repository's "updated" table): PredE and WorstE per size.
PUBLISHED = {"25M": (0.00110, 0.00409), "100M": (0.00142, 0.00583), "400M": (0.00168, 0.00995)}
PUBLISHED_PARAMS = {
    "25M": [3.04045406, 0.52468604, 0.50786857, 363.78751622, 2.06560812, 0.58279013, 0.64142257],
    "100M": [2.6514477, 0.60115152, 0.45295811, 437.9464276, 2.13245612, 0.59785199, 0.65523644],
    "400M": [2.37474466, 0.65421216, 0.42878731, 523.42464371, 2.02462735, 0.59350493, 0.63472457]}


def _huber(r, delta=1e-3):
    a = np.abs(r)
    return float(np.sum(np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))))


def _grad_seconds(law, table, repeats=3) -> float:
    """Median seconds of one value-and-gradient of the fit's objective for `law` (its own sums)."""
    import jax
    import jax.numpy as jnp

    from scalefit.fitting.solver import Objective

    bound = law.bind(table.points(law.spec))
    ft = table.fit_table()
    logx = np.log(ft.frame[[POINT]].to_numpy(float).T)
    logy = np.log(ft.frame["loss"].to_numpy(float))
    theta = law.from_params(np.array(PUBLISHED_PARAMS["400M"]))
    obj = Objective()
    with jax.enable_x64(True):
        f = jax.jit(jax.value_and_grad(lambda t: jnp.sum(obj(bound.log_loss(t, jnp.asarray(logx)) - logy))))
        jax.block_until_ready(f(jnp.asarray(theta)))
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(f(jnp.asarray(theta)))
            ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def paper_protocol(curves) -> dict:
    print("1. Luo et al.'s split: fit cosine_24000, constant_24000, wsdcon_9 per size; predict the other six")
    print(f"   {'size':>5} {'mean':>8} {'worst':>8} {'largest':>8} | {'published mean':>14} {'worst':>7} "
          f"{'largest':>8} | Huber sum on the 3 fitted curves, ours / published | fit s")
    out = {}
    for size in SIZES:
        train = curves.subset([f"{size}/{s}" for s in MULTIPOWER_TRAIN])
        test = curves.subset([f"{size}/{s}" for s in MULTIPOWER_TEST])
        t0 = time.perf_counter()
        fit = fit_curves(train, "multipower")
        secs = time.perf_counter() - t0
        e = fit.errors(test)
        pub = MULTIPOWER.evaluate(np.array([PUBLISHED_PARAMS[size]]), test.points(MULTIPOWER.spec))[0]
        pe = curve_errors(test, pub)
        ptrain = MULTIPOWER.evaluate(np.array([PUBLISHED_PARAMS[size]]), train.points(MULTIPOWER.spec))[0]
        pobj = _huber(np.log(ptrain) - np.log(train.frame["loss"].to_numpy()))
        # ours by the same sum (the fitter's own objective value is normalised differently)
        ours = MULTIPOWER.evaluate(np.array([[fit.params()[k] for k in MULTIPOWER.param_names]]),
                                   train.points(MULTIPOWER.spec))[0]
        oobj = _huber(np.log(ours) - np.log(train.frame["loss"].to_numpy()))
        out[size] = {"mean": e.mean_err.mean(), "worst": e.worst_err.mean(), "largest": e.worst_err.max(),
                     "fit": fit, "seconds": secs, "errors": e}
        print(f"   {size:>5} {100 * e.mean_err.mean():7.3f}% {100 * e.worst_err.mean():7.3f}% "
              f"{100 * e.worst_err.max():7.3f}% | {100 * PUBLISHED[size][0]:13.3f}% {100 * PUBLISHED[size][1]:6.3f}% "
              f"{100 * pe.worst_err.max():7.3f}% | {oobj:.3g} / {pobj:.3g} | {secs:5.1f}")
        for r, p in zip(e.itertuples(), pe.itertuples()):
            print(f"         {r.curve:24s} mean {100 * r.mean_err:.3f}% (published {100 * p.mean_err:.3f}%), "
                  f"worst {100 * r.worst_err:.3f}% ({100 * p.worst_err:.3f}%)")
        te = fit_curves(train, "tissue").errors(test)  # the simpler momentum law on the same split
        print(f"         Tissue et al.'s law, same split: mean {100 * te.mean_err.mean():.3f}%, worst "
              f"{100 * te.worst_err.mean():.3f}%, largest {100 * te.worst_err.max():.3f}%")
    train = curves.subset([f"400M/{s}" for s in MULTIPOWER_TRAIN])
    t0 = time.perf_counter()
    fit_curves(train, "multipower")  # again, compiled: the fit's own time
    warm = time.perf_counter() - t0
    merged, exact = _grad_seconds(MULTIPOWER, train), _grad_seconds(with_resolution(MULTIPOWER, 0.0), train)
    out["400M"]["warm_seconds"] = warm
    print(f"   fit of one size's three curves (400M, 12 starts): {out['400M']['seconds']:.1f} s with compilation, "
          f"{warm:.1f} s compiled; one objective gradient {1e3 * merged:.1f} ms with merged sums "
          f"({len(train.points(MULTIPOWER.spec).weight)} nodes) vs {1e3 * exact:.1f} ms step by step "
          f"({len(train.points(with_resolution(MULTIPOWER, 0.0).spec).weight)} terms), same run")
    return out


FORWARD_CUT = 16000  # steps: wsdcon_9 (16,000 steps) lies whole before it, cosine_24000's decay after it


def forward_check(curves) -> None:
    print(f"5. Fitted on the three curves' steps up to {FORWARD_CUT} and forecasting the rest, against the six "
          "held-out curves when fitted on all of the three (mean relative errors)")
    for size in SIZES:
        train = curves.subset([f"{size}/{s}" for s in MULTIPOWER_TRAIN])
        test = curves.subset([f"{size}/{s}" for s in MULTIPOWER_TEST])
        step = train.frame["step"].to_numpy()
        early = train.subset(mask=step <= FORWARD_CUT, note=f"steps up to {FORWARD_CUT}")
        late = train.subset(mask=step > FORWARD_CUT, note=f"steps after {FORWARD_CUT}")
        for law in ("multipower", "multipower[beta=0.45]", "multipower[beta=0.6]"):
            forward = fit_curves(early, law).errors(late)
            held = fit_curves(train, law).errors(test)
            print(f"   {size:>5} {law:22s} forward in time {100 * forward.mean_err.mean():.3f}% | held-out "
                  f"{100 * held.mean_err.mean():.3f}% (published {100 * PUBLISHED[size][0]:.3f}%)")


def joint_sizes(curves, per_size) -> None:
    print("2. Joint across sizes: fit every 25M and 100M curve, forecast every 400M curve")
    small = curves.subset(mask=curves.frame["curve"].str.startswith(("25M/", "100M/")).to_numpy())
    big = curves.subset(mask=curves.frame["curve"].str.startswith("400M/").to_numpy())
    own = per_size["400M"]["fit"].errors(big)
    print(f"   400M per-size fit (3 of these 9 curves fitted): mean {100 * own.mean_err.mean():.3f}%, "
          f"worst {100 * own.worst_err.mean():.3f}%, largest {100 * own.worst_err.max():.3f}%")
    for label, law in (("L0 power in N (2 coefficients, no prior)", joint(MULTIPOWER, L0="power", B="power")),
                       ("L0 = E + A_N N^-alpha_N, alpha_N = 0.34 (Hoffmann et al.)", "multipower_joint[alpha_N=0.34]")):
        t0 = time.perf_counter()
        fit = fit_curves(small, law)
        e = fit.errors(big)
        print(f"   joint, {label}: mean {100 * e.mean_err.mean():.3f}%, worst {100 * e.worst_err.mean():.3f}%, "
              f"largest {100 * e.worst_err.max():.3f}% ({time.perf_counter() - t0:.0f} s; {fit.result.status})")


def own_runs(store: Path) -> None:
    from scalefit.analysis.derived import derived_points
    from scalefit.fitting.curve_sources import curves_from_store
    from scalefit.store import tables

    print(f"3. Our WSD ladder ({store}; eval loss past the warmup): per size and branch, fit the trunk and the "
          "other branches, forecast the branch's final loss; where the trunk reaches the branch's length, the same "
          "number as a derived (N, D) point from the trunk's curve")
    runs = tables.load(store)
    curves = curves_from_store(store, loss="eval").after_warmup()
    for law in ("multipower", "tissue"):
        errs = []
        for size, g in runs[runs["role"] == "branch"].groupby("preset"):
            branches = g.sort_values("D")
            mine = runs[runs["preset"] == size]
            trunk = mine[mine["role"] == "trunk"].sort_values("D")["run_id"].iloc[-1]
            line = []
            for b in branches.itertuples():
                fit = fit_curves(curves.subset([r for r in mine["run_id"] if r != b.run_id]), law)
                S = len(curves.schedules[b.run_id])
                p = fit.predict(curves.schedules[b.run_id], [S])
                err = p.loss[0] / b.final_eval_loss - 1
                errs.append(err)
                cover = p.low[0] <= b.final_eval_loss <= p.high[0]
                txt = f"{S}: {p.loss[0]:.4f} vs {b.final_eval_loss:.4f} ({100 * err:+.2f}%{'' if cover else ', outside'})"
                if S <= len(curves.schedules[trunk]):
                    d = derived_points(fit, curves.subset(trunk), [S], cooldown_frac=0.2, min_ratio=0.1)
                    txt += f" derived {d['loss'].iloc[0]:.4f}"
                line.append(txt + ("" if fit.result.status == "converged" else " (fit not converged)"))
            print(f"   {law:10s} {size}: " + "; ".join(line))
        errs = np.abs(errs)
        print(f"   {law:10s} leave-one-branch-out final loss: mean |error| {100 * errs.mean():.2f}%, worst "
              f"{100 * errs.max():.2f}% over {errs.size} branches")


def train_optimised(store: Path, out: Path, tokens: float) -> None:
    from scalefit.analysis.schedule_opt import optimise_schedule
    from scalefit.fitting.curve_sources import curves_from_store
    from scalefit.fitting.schedules import from_spec, train_overrides, write_schedule
    from scalefit.store import tables
    from scalefit.training.config import TrainConfig, get_preset
    from scalefit.training.counting import total_steps
    from scalefit.training.loop import train

    print(f"4. Optimised schedule against cosine, trained on this CPU ({out})")
    runs = tables.load(store)
    size = sorted(runs["preset"].unique(), key=lambda p: runs.loc[runs["preset"] == p, "N"].iloc[0])[-1]
    # Its ladder and, where the store has them, cosine runs of that size (a slow decay shows G's shape).
    fitted = [r for r in runs["run_id"] if r.startswith(size)]
    fit = fit_curves(curves_from_store(store, loss="eval").after_warmup().subset(fitted), "multipower")
    print(f"   multipower on {len(fitted)} {size} runs: {fit.result.status}; "
          + ", ".join(f"{k} {v:.4g}" for k, v in fit.params().items()))
    model = get_preset(size).with_overrides(seq_len=128)
    base = dict(batch_size=16, lr=3e-3, n_evals=6, eval_batches=4, log_every=10, checkpoint_every=500,
                tokens=tokens, warmup_steps=50, min_lr_ratio=0.1)
    cos_cfg = TrainConfig(schedule="cosine", **base)
    S = total_steps(model, cos_cfg)
    ref = from_spec(f"cosine:steps={S},lr=3e-3,warmup=50,min_ratio=0.1")
    o = optimise_schedule(fit, ref)
    write_schedule(o.schedule, out / "optimised_schedule.json")
    opt_cfg = TrainConfig(**{**base, **train_overrides(o.schedule)})
    res = {}
    for name, cfg in (("cosine", cos_cfg), ("optimised", opt_cfg)):
        t0 = time.perf_counter()
        s = train(model, cfg, out / name, progress=False)
        res[name] = s
        print(f"   {name:9s} {S} steps of {size}: final eval loss {s.final_eval_loss:.4f}, train "
              f"{s.final_train_loss:.4f} ({time.perf_counter() - t0:.0f} s)")
    print(f"   law's prediction: optimised {o.predicted.loss[0]:.4f}, cosine {o.reference_predicted.loss[0]:.4f}; "
          f"measured eval difference {res['optimised'].final_eval_loss - res['cosine'].final_eval_loss:+.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="runs/curves_wsd", help="run store of experiments/curves_wsd.toml")
    ap.add_argument("--train", default=None, help="folder for the optimised-vs-cosine training runs (section 4)")
    ap.add_argument("--train-tokens", type=float, default=2e6, help="token budget of the two training runs")
    ap.add_argument("--skip-joint", action="store_true", help="skip section 2 (the slowest fits)")
    ap.add_argument("--sections", default="1,2,3,4", help="which sections to run (the final lines need 1)")
    args = ap.parse_args()
    sections = {int(x) for x in args.sections.split(",")} - ({2} if args.skip_joint else set())
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")

    curves = multipower_curves() if sections & {1, 2, 5} else None
    per = paper_protocol(curves) if 1 in sections else None
    if 2 in sections and per is not None:
        joint_sizes(curves, per)
    if 5 in sections:
        forward_check(curves)
    store = Path(args.store)
    if store.is_dir():
        if 3 in sections:
            own_runs(store)
        if args.train and 4 in sections:
            train_optimised(store, Path(args.train), args.train_tokens)
    elif sections & {3, 4}:
        print(f"3-4. skipped: no run store at {store} (scalefit sweep run experiments/curves_wsd.toml --out {store})")
    print(f"machine load average {os.getloadavg()[0]:.1f} at the end")
    if per is None:
        return
    print(f"bench_curves_fit size=400M curves=3 seconds_first={per['400M']['seconds']:.1f} "
          f"seconds_compiled={per['400M']['warm_seconds']:.1f}")
    for size in SIZES:
        p = per[size]
        print(f"bench_curves size={size} mean_err={p['mean']:.5f} worst_err={p['worst']:.5f} "
              f"published_mean={PUBLISHED[size][0]:.5f} published_worst={PUBLISHED[size][1]:.5f}")


if __name__ == "__main__":
    main()
