"""Chinchilla approaches 1 and 2 and the L(C) frontier: published exponents and exact synthetic recovery."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalefit.analysis.approach1 import approach1, envelope_exponent_bound
from scalefit.analysis.approach2 import (
    method_disagreement,
    akima_minimum,
    approach2,
    approach2_by,
    isoflop_optima,
    parabola_minimum,
)
from scalefit.analysis.frontier import fit_frontier
from scalefit.analysis.powerlaw import fit_power_law
from scalefit.fitting.laws import CHINCHILLA
from scalefit.fitting.optimum import allocate
from scalefit.fitting.table import load_table

DATASETS = Path(__file__).resolve().parents[2] / "datasets"
PORIAN = DATASETS / "porian2024"
EPOCH = dict(E=1.817, A=482.0, B=2085.4, alpha=0.3478, beta=0.3658)
A_TRUE = EPOCH["beta"] / (EPOCH["alpha"] + EPOCH["beta"])  # N_opt ~ C^a under C = 6ND


def chinchilla_loss(N, D):
    return CHINCHILLA.predict(EPOCH, N=N, D=D)


def n_opt(C):
    return allocate(CHINCHILLA, EPOCH, None, C).N.value


def _porian():
    points = PORIAN / "isoflop_points.csv"
    assert points.exists(), f"{points} missing: the reference data ships in datasets/"
    # Porian et al. name parameters n, tokens t, budget flops; their FLOP count per configuration
    # follows its param_count convention (not necessarily 6ND), which Approach 2 does not need.
    pts = pd.read_csv(points).rename(columns={"n": "N", "t": "D", "flops": "C"})
    fits = pd.read_csv(PORIAN / "reference_fits.csv")
    pairs = pd.read_csv(PORIAN / "optimal_pairs.csv")
    return pts, fits[fits["kind"] == "basic"].set_index("cfg_id"), pairs


@pytest.fixture(scope="module")
def porian_results():
    pts, fits, pairs = _porian()
    table = load_table(pts, keep=["cfg_id"])
    return (approach2_by(table, "cfg_id", method="akima"), approach2_by(table, "cfg_id", method="parabola"),
            fits, pairs)


def test_approach2_akima_reproduces_porian_exponents(porian_results):
    akima, parabola, fits, _ = porian_results
    assert len(akima) == 15 and set(akima) == set(fits.index)
    lines = [f"{'configuration':42s} {'published':>9s} {'akima':>7s} {'(diff)':>8s} {'parabola':>8s} {'(diff)':>8s}"]
    for cfg, res in akima.items():
        pub = fits.loc[cfg, "n_exponent"]
        lines.append(f"{cfg:42s} {pub:9.4f} {res.a:7.4f} {res.a - pub:+8.4f} "
                     f"{parabola[cfg].a:8.4f} {parabola[cfg].a - pub:+8.4f}")
    print("\nApproach 2 exponent a (N_opt ~ C^a), Porian et al. 2024 configurations:\n" + "\n".join(lines))
    for cfg, res in akima.items():
        assert abs(res.a - fits.loc[cfg, "n_exponent"]) < 0.01, cfg
        # D_opt is read off the same minimum, so b tracks their separately fitted t exponent.
        assert abs(res.b - fits.loc[cfg, "t_exponent"]) < 0.01, cfg


def test_approach2_headline_refinedweb_sequence(porian_results):
    akima = porian_results[0]
    seq = ["rw|base|long|kaplan|kaplan|train", "rw|base|long|kaplan|standard|val",
           "rw|base|short|kaplan|standard|val", "rw|base|short|chinchilla|standard|val",
           "rw|tuned|short|const|standard|val"]
    published = [0.834, 0.701, 0.604, 0.571, 0.497]
    for cfg, pub in zip(seq, published):
        assert akima[cfg].a == pytest.approx(pub, abs=0.01)


def test_approach2_flags_the_same_budgets_as_porian(porian_results):
    akima, _, _, pairs = porian_results
    for cfg, res in akima.items():
        theirs = pairs[pairs["cfg_id"] == cfg]
        no_min = set(theirs.loc[theirs["n_star"].isna(), "flops"])
        assert set(res.flagged) == no_min, cfg
        # Each interior minimum lies within one of their bootstrap standard deviations (of ln n*) of
        # their bootstrap-median n*; most coincide with it to rounding.
        mine = res.optima.set_index("C")
        ok = theirs.dropna(subset=["n_star"]).set_index("flops")
        log_ratio = np.log(mine.loc[ok.index, "N_opt"] / ok["n_star"])
        assert np.all(np.abs(log_ratio) <= ok["n_star_std"]), cfg


def test_approach2_standard_errors_are_regression_errors(porian_results):
    res = porian_results[0]["rw|tuned|short|const|standard|val"]
    ok = res.optima[~res.optima.flagged]
    x, y = np.log(ok.C.to_numpy()), np.log(ok.N_opt.to_numpy())
    slope, icpt = np.polyfit(x, y, 1)
    s2 = np.sum((y - slope * x - icpt) ** 2) / (len(x) - 2)
    assert res.N_fit.exponent == pytest.approx(slope, rel=1e-10)
    assert res.N_fit.exponent_se == pytest.approx(math.sqrt(s2 / np.sum((x - x.mean()) ** 2)), rel=1e-8)
    assert 0 < res.N_fit.exponent_se < 0.02


def _parabolic_isoflops(a=0.55, g=0.08, curvature=0.05, per_budget=9, offset=0.0):
    """Loss exactly parabolic in ln N around N* = g C^a: the parabola method must recover a exactly."""
    rows = []
    for C in 1e18 * 4.0 ** np.arange(6):
        n_star = g * C**a
        for u in np.linspace(-1.2, 1.2, per_budget) + offset:
            N = n_star * math.exp(u)
            rows.append(dict(N=N, D=C / (6 * N), C=C, loss=3.0 - 0.1 * math.log10(C / 1e18) + curvature * u**2))
    return pd.DataFrame(rows)


def test_parabola_recovers_exact_parabolic_isoflops():
    res = approach2(load_table(_parabolic_isoflops()), method="parabola")
    assert res.a == pytest.approx(0.55, abs=1e-10)
    assert res.b == pytest.approx(0.45, abs=1e-10)
    assert res.N_fit.coef == pytest.approx(0.08, rel=1e-8)
    assert res.flagged == ()


def test_akima_recovers_chinchilla_exponent():
    a_true, b_true = A_TRUE, 1 - A_TRUE
    rows = []
    for C in 1e18 * 3.0 ** np.arange(8):
        for N in n_opt(C) * np.exp(np.linspace(-2.0, 2.3, 10)):
            rows.append(dict(N=N, D=C / (6 * N), C=C, loss=float(chinchilla_loss(N, C / (6 * N)))))
    res = approach2(load_table(pd.DataFrame(rows)), method="akima")
    # Each minimum is within half a grid cell (step 4.3/9/25 in ln N) plus interpolation error;
    # the same offset at every budget (the law is self-similar) leaves the slope nearly untouched.
    assert res.a == pytest.approx(a_true, abs=2e-3)
    assert res.b == pytest.approx(b_true, abs=2e-3)
    assert np.all(np.abs(np.log(res.optima.N_opt / [n_opt(c) for c in res.optima.C])) < 0.05)


def test_edge_minima_and_thin_budgets_are_flagged_and_left_out():
    df = _parabolic_isoflops()
    # Budget 1: all sizes above the optimum -> minimum at the smallest N.
    edge = _parabolic_isoflops(offset=2.0)
    edge = edge[edge.C == edge.C.max()].assign(C=1e30, D=lambda t: 1e30 / (6 * t.N))
    thin = df[df.C == df.C.min()].iloc[:2].assign(C=5e17)
    res = approach2(load_table(pd.concat([df, edge, thin], ignore_index=True)), method="akima")
    opt = res.optima.set_index("C")
    assert set(res.flagged) == {1e30, 5e17}
    assert opt.loc[1e30, "reason"].startswith("minimum at/below the smallest")
    assert opt.loc[5e17, "reason"] == "only 2 sizes (need >= 3)"
    assert res.N_fit.n_points == 6
    assert res.a == pytest.approx(0.55, abs=0.01)


def test_parabola_flags_concave_and_outside_vertex():
    x = np.log(np.array([1e6, 2e6, 4e6, 8e6]))
    assert parabola_minimum(x, np.array([3.0, 3.2, 3.3, 3.2]))[2] == "concave"
    assert parabola_minimum(x, 3.0 + 0.01 * (np.arange(4) - 4.0) ** 2)[2] == "high"
    xm, ym, edge = akima_minimum(x, np.log([3.3, 3.2, 3.1, 3.0]))
    assert edge == "high" and xm == pytest.approx(x[-1])


def test_bad_isoflop_rows_are_excluded_with_their_reason_and_counted():
    df = _parabolic_isoflops()
    bad = df.copy()
    bad.loc[7, "N"] = -5.0
    bad.loc[[3, 12], "loss"] = np.nan
    table = load_table(pd.concat([bad, bad.iloc[[20]].assign(loss=9.0)], ignore_index=True))
    assert dict(table.excluded)[7] == "N is -5, expected finite and > 0"
    opt, excluded = isoflop_optima(table)
    assert excluded == {"N is -5, expected finite and > 0": 1, "loss is NaN, expected finite and > 0": 2,
                        "duplicate (C, N): kept the lowest loss": 1}
    assert opt.n_points.sum() == len(df) - 3
    with pytest.raises(ValueError, match="method"):
        approach2(table, method="cubic")


def test_power_law_fit_exact_and_needs_three_points():
    x = np.geomspace(1e18, 1e22, 5)
    p = fit_power_law(x, 3e-2 * x**0.52)
    assert p.exponent == pytest.approx(0.52, abs=1e-12) and p.coef == pytest.approx(3e-2, rel=1e-9)
    assert p.r2 == pytest.approx(1.0) and p.exponent_se < 1e-7
    with pytest.raises(ValueError, match=">= 3"):
        fit_power_law(x[:2], x[:2])


# --------------------------------------------------------------------------------------------
# Approach 1 and the frontier


def _chinchilla_curves(ratio: float, n_lo=1e7, n_hi=1e10, points=300):
    """Training curves from a known law: a ladder of N (factor `ratio` apart), D growing along each."""
    steps = int(round(math.log(n_hi / n_lo) / math.log(ratio)))
    rows = []
    for N in n_lo * ratio ** np.arange(steps + 1):
        D = np.geomspace(1e8, 1e13, points)
        rows.append(pd.DataFrame(dict(run=f"N{N:.4g}", N=N, D=D, C=6 * N * D, loss=chinchilla_loss(N, D))))
    return load_table(pd.concat(rows, ignore_index=True), checkpoints="all")


def test_approach1_recovers_exponent_within_ladder_bound():
    ratio = 2**0.25
    res = approach1(_chinchilla_curves(ratio), c_range=(1e17, 1e22))
    a_true = A_TRUE
    err = abs(res.a - a_true)
    # Rigorous for any unimodal IsoFLOP curve: each winner brackets the optimum, |ln error| <= ln r.
    general = envelope_exponent_bound(res, ratio)
    # Tighter for this law: its IsoFLOP curve is self-similar in ln N, so the log-error is a fixed
    # offset plus a zero-mean sawtooth of amplitude <= h = ln r and period p = h / a in ln C, which
    # moves an OLS slope over a range W of ln C by at most 18 h p / W^2.
    h, W = math.log(ratio), math.log(1e22 / 1e17)
    periodic = 18 * h * (h / a_true) / W**2
    print(f"\nApproach 1: a = {res.a:.5f} (true {a_true:.5f}, error {err:.1e}); "
          f"bounds: general {general:.3f}, self-similar {periodic:.4f}")
    assert res.n_edge == 0
    assert err <= periodic < general
    assert res.a + res.b == pytest.approx(1.0, abs=1e-9)  # every envelope point has C = 6ND
    assert res.envelope.N.nunique() > 20


def test_approach1_marks_ladder_ends_and_coarse_ladder_still_within_bound():
    ratio = 2.0
    res = approach1(_chinchilla_curves(ratio), c_range=(1e17, 1e22))
    assert res.n_edge > 0
    edge = res.envelope[res.envelope.edge]
    assert set(edge.N) <= {1e7, 1e7 * 2.0**10}
    assert abs(res.a - A_TRUE) <= envelope_exponent_bound(res, ratio)


def test_approach1_rejects_bad_curves():
    curves = _chinchilla_curves(2.0, points=20).frame
    with pytest.raises(ValueError, match="need >= 2 usable runs"):
        approach1(load_table(curves.drop(columns="run")))  # every row its own run: no curve
    mixed = curves.copy()
    mixed.loc[0, "N"] = 123.0
    with pytest.raises(ValueError, match="several N values"):
        approach1(mixed)
    # Read as a table, the same rows break the run-id rule: one run id, two models.
    with pytest.raises(ValueError, match=r"run id 'N1e\+07' is shared by rows 0, 1, .* with different N"):
        load_table(mixed, checkpoints="all")


def test_frontier_exact_on_the_chinchilla_optimal_curve():
    # Along the compute-optimal path both reducible terms scale as C^-(alpha beta / (alpha + beta)).
    C = np.geomspace(1e18, 1e24, 12)
    allocs = [allocate(CHINCHILLA, EPOCH, None, c) for c in C]
    table = load_table(pd.DataFrame({"N": [a.N.value for a in allocs], "D": [a.D.value for a in allocs], "C": C,
                                     "loss": [a.loss.value for a in allocs]}))
    gamma = EPOCH["alpha"] * EPOCH["beta"] / (EPOCH["alpha"] + EPOCH["beta"])
    f = fit_frontier(table, irreducible=True)
    assert f.law.name == "kaplan_c_e" and f.n_points == 12
    assert f.values()["alpha_C"] == pytest.approx(gamma, rel=1e-6)
    assert f.values()["E"] == pytest.approx(EPOCH["E"], rel=1e-6)
    assert np.allclose(f.predict(C=C).loss, table.frame["loss"], rtol=1e-9)
    pure = fit_frontier(load_table(table.frame.assign(loss=table.frame["loss"] - EPOCH["E"])))
    assert pure.values()["alpha_C"] == pytest.approx(gamma, rel=1e-6)


def test_frontier_from_approach1_envelope():
    res = approach1(_chinchilla_curves(2**0.25), c_range=(1e17, 1e22))
    f = fit_frontier(load_table(res.envelope[["run", "N", "D", "C", "loss"]]), irreducible=True)
    gamma = EPOCH["alpha"] * EPOCH["beta"] / (EPOCH["alpha"] + EPOCH["beta"])
    # The discrete ladder lifts the envelope above the true frontier by < 1e-3 relative here.
    assert f.values()["alpha_C"] == pytest.approx(gamma, abs=2e-3)
    assert f.values()["E"] == pytest.approx(EPOCH["E"], abs=5e-3)


def test_frontier_on_cerebras_gpt_predicts_held_out_models():
    table = load_table("cerebras")
    train = table.subset(np.arange(len(table)) < 5, "111M-2.7B fit, 6.7B and 13B held out")
    f = fit_frontier(train)
    test = table.frame.iloc[5:]
    err = f.predict(C=test["C"].to_numpy()).loss / test["loss"].to_numpy() - 1
    print(f"\nCerebras-GPT L(C) = (C_c/C)^{f.values()['alpha_C']:.4f}, C_c = {f.values()['C_c']:.3g} FLOPs; "
          f"held-out relative errors {np.round(err, 4)}")
    assert 0.04 < f.values()["alpha_C"] < 0.07
    assert np.all(np.abs(err) < 0.02)


def test_cli_isoflop_reports_exponent_and_flags(tmp_path, capsys):
    from scalefit.cli import main

    df = _parabolic_isoflops().rename(columns={"N": "params", "C": "flops"})
    path = tmp_path / "iso.csv"
    df.to_csv(path, index=False)
    assert main(["isoflop", str(path), "--method", "parabola",
                 "--rename", "params=N", "--rename", "flops=C"]) == 0
    out = capsys.readouterr().out
    assert "a = 0.5500" in out and "b = 0.4500" in out and "6 budgets, 0 flagged" in out
    df.drop(columns="loss").to_csv(path, index=False)
    assert main(["isoflop", str(path)]) == 2  # no loss column: a clear error, exit 2
    assert "no loss column" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The default minimum, the cross-check of the two, and D_opt from the minima's own fit


def test_parabola_is_the_default_and_akima_is_cross_checked(porian_results):
    akima, parabola, _, _ = porian_results
    pts, _, _ = _porian()
    cfg = "rw|base|short|kaplan|standard|val"
    res = approach2(load_table(pts[pts.cfg_id == cfg]))
    assert res.method == "parabola" and res.a == parabola[cfg].a
    assert res.alternative.method == "akima" and res.alternative.a == akima[cfg].a
    # Here the two differ by 0.054 in a, about 2.5 combined standard errors: both are reported.
    assert abs(res.a - res.alternative.a) == pytest.approx(0.054, abs=0.001)
    assert res.disagreement.startswith("a: parabola 0.6590 +- 0.0135, akima 0.6055 +- 0.0166, differ by 0.054")
    assert method_disagreement(res, res.alternative, level=0.999) == ""  # within a 99.9% interval
    tuned = approach2(load_table(pts[pts.cfg_id == "rw|tuned|short|const|standard|val"]))
    assert tuned.disagreement == "" and tuned.alternative is not None
    assert approach2(load_table(pts[pts.cfg_id == cfg]), cross_check=False).alternative is None


def test_b_from_the_minima_own_d(porian_results):
    # Under C = 6ND the curve read in log D is the mirror of the curve in log N: b = 1 - a exactly.
    for results in porian_results[:2]:
        for cfg, res in results.items():
            assert res.a + res.b == pytest.approx(1.0, abs=1e-9), cfg
    # Under the exact count of C (the quickstart's runs, C = 1.4-2.8x 6ND) D_opt is the vertex of the
    # parabola of loss in log D of each budget's runs, not D interpolated at N_opt.
    runs = pd.read_csv(DATASETS.parent / "tests" / "data" / "quickstart" / "runs.csv")
    table = load_table(runs, n_col="N_non_embedding", n_kind="non-embedding", c_col="budget",
                       loss_col="final_eval_loss", run_col="run_id", c_kind="exact")
    optima, _ = isoflop_optima(table, "parabola")
    for row in optima.itertuples():
        g = table.frame[table.frame.C == row.C]
        x, y = np.log(g["D"].to_numpy()), g["loss"].to_numpy()
        p = np.polyfit(x - x.mean(), y, 2)
        assert row.D_opt == pytest.approx(math.exp(x.mean() - p[1] / (2 * p[0])), rel=1e-9)
        assert abs(math.log(row.D_opt * row.N_opt * 6 / row.C)) > 0.1  # far from 6ND: a real difference
