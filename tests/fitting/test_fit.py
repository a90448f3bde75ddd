"""The fitter on real data (Chinchilla/Epoch) and on data drawn from known laws."""

import json

import numpy as np
import pandas as pd
import pytest

from scalefit import cli
from scalefit.fitting.fitter import fit
from scalefit.fitting.resample import resample_weights
from scalefit.fitting.solver import Objective, _solve_batch
from scalefit.fitting.table import load_table
from scalefit.fitting.laws import LAWS, get_law
from scalefit.fitting.result import FitError, FitResult

# Besiroglu et al. 2024 (Epoch), Hoffmann's method on the 240 rows: shared/data/README.md.
EPOCH_HUBER = 0.0010182741
EPOCH_PARAMS = {"A": 477.8, "B": 2143.4, "E": 1.8172, "alpha": 0.34731, "beta": 0.36717}
EPOCH_CI = {"alpha": (0.317, 0.373), "beta": (0.331, 0.415)}


@pytest.fixture(scope="module")
def chinchilla_fit():
    return fit("chinchilla", bootstrap_resamples=1000, seed=0)


def test_chinchilla_reproduces_hoffmann_method(chinchilla_fit):
    r = chinchilla_fit
    assert r.n_points == 240 and r.status == "converged"
    assert r.objective <= EPOCH_HUBER
    for k, v in EPOCH_PARAMS.items():
        assert r.params[k].value == pytest.approx(v, rel=5e-3), k
    # Chinchilla is a power sum: fitted by variable projection over its 30 x 30 exponent grid, not from
    # Hoffmann's 4,500 starts (tests/fitting/test_varpro.py checks that both reach the same optimum).
    assert r.solver.n_starts == 900 and r.solver.n_free == 5
    assert r.solver.solver.startswith("variable projection")
    a = EPOCH_PARAMS["beta"] / (EPOCH_PARAMS["alpha"] + EPOCH_PARAMS["beta"])
    assert r.derived["a"].value == pytest.approx(a, rel=5e-3)


def test_chinchilla_bootstrap_intervals_match_epoch(chinchilla_fit):
    r = chinchilla_fit
    assert r.bootstrap.n_resamples == 1000
    for k, (lo, hi) in EPOCH_CI.items():
        ci = r.params[k].ci
        assert abs(ci[0] - lo) <= 0.015 and abs(ci[1] - hi) <= 0.015, (k, ci)
        assert r.params[k].se > 0.005  # a collapsed bootstrap (early stopping) gives ~0
    a = r.derived["a"]
    assert a.ci[0] < a.value < a.ci[1]


def test_json_round_trip_and_schema(chinchilla_fit, tmp_path):
    r = chinchilla_fit
    path = r.save(tmp_path / "fit.json")
    d = json.loads(path.read_text())
    assert set(d["params"]) == {"E", "A", "B", "alpha", "beta"}
    assert set(d["params"]["alpha"]) == {"value", "se", "ci"} and len(d["params"]["alpha"]["ci"]) == 2
    back = FitResult.load(path)
    assert back == r
    np.testing.assert_array_equal(back.samples, r.samples)
    assert back.summary() == r.summary() and back.report() == r.report()
    assert r.summary()["params"]["alpha"]["ci"] == list(r.params["alpha"].ci)
    json.dumps(r.summary())  # data a program can store


def test_predict_and_allocate_have_intervals(chinchilla_fit):
    r = chinchilla_fit
    p = r.predict(N=np.array([1e9, 7e10]), D=np.array([2e10, 1.4e12]))
    assert np.all(p.low < p.param_low) and np.all(p.param_low < p.loss) and np.all(p.loss < p.param_high)
    alloc = r.allocate(5.76e23)
    # Epoch's own estimates give N = 7.24e10, D = 1.33e12 at this budget (shared/data/README.md).
    assert alloc.N.value == pytest.approx(7.24e10, rel=0.03)
    assert alloc.D.value == pytest.approx(1.33e12, rel=0.03)
    assert alloc.N.ci[0] < alloc.N.value < alloc.N.ci[1]
    with pytest.raises(ValueError, match="needs inputs"):
        r.predict(N=1e9)


# --- synthetic data from each law: exact recovery without noise ---------------------------------------

TRUE = {
    "chinchilla": {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
    "chinchilla_tied": {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.31, "beta": 0.31},
    "farseer": {"a1": 0.2, "b1": -1.7, "alpha": 0.05, "a2": 2.0, "b2": 6.1, "beta": -0.05, "a3": 40.6,
                "b3": 0.53, "gamma": -0.3},
    "kaplan_nd": {"alpha_N": 0.076, "alpha_D": 0.103, "N_c": 6.4e13, "D_c": 1.8e13},
    "kaplan_n": {"alpha_N": 0.076, "N_c": 8.8e13},
    "kaplan_d": {"alpha_D": 0.095, "D_c": 5.4e13},
    "kaplan_c": {"alpha_C": 0.05, "C_c": 2.7e28},
    "kaplan_n_e": {"alpha_N": 0.3, "N_c": 3e8, "E": 1.7},
    "kaplan_d_e": {"alpha_D": 0.3, "D_c": 3e9, "E": 1.7},
    "kaplan_c_e": {"alpha_C": 0.15, "C_c": 1e19, "E": 1.8},
    "power_n": {"E": 1.7, "A": 300.0, "alpha": 0.35},
    "power_d": {"E": 1.7, "A": 900.0, "alpha": 0.3},
    "power_c": {"E": 1.8, "A": 2000.0, "alpha": 0.15},
    "data_constrained": {"E": 1.87, "A": 520.0, "B": 1490.0, "alpha": 0.35, "beta": 0.35, "R_D_star": 15.0,
                         "R_N_star": 5.0},
    # Mixture-of-experts laws (N active). Clark et al. 2022's S-Base coefficients as this project recalls
    # their Table (docs/moe.md); Krajewski et al. 2024's published fit; for the joint law a Chinchilla
    # dense part (Hoffmann et al. 2022) with experts that lower the N term (docs/moe.md, "a known law").
    "clark_routing": {"a": -0.082, "b": -0.108, "c": 0.009, "d": 1.104, "E_start": 1.847, "E_max": 314.478},
    "clark_routing_e": {"a": 40.0, "alpha": -0.19, "delta": -0.05, "gamma": -0.003, "c": 1.6, "E_start": 2.5,
                        "E_max": 500.0},
    "joint_moe": {"a": 406.4, "alpha": -0.34, "delta": -0.25, "gamma": 0.01, "b": 410.7, "beta": -0.28,
                  "omega": 0.05, "zeta": -0.002, "c": 1.69, "E_start": 1.2, "E_max": 300.0},
    "fine_grained_moe": {"a": 18.1, "alpha": 0.115, "b": 30.8, "beta": 0.147, "g": 2.1, "gamma": 0.58, "c": 0.47},
}


def _grid_table(law, params, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    N = np.geomspace(1e6, 1e10, 7)
    D = np.geomspace(1e8, 1e12, 6)
    NN, DD = (x.ravel() for x in np.meshgrid(N, D))
    df = pd.DataFrame({"N": NN, "D": DD, "C": 6 * NN * DD})
    if "U" in law.inputs:  # one to 40 epochs of the unique data, so repetition shows on both sides
        df["U"] = df["D"] / np.resize([1.0, 3.0, 10.0, 40.0], len(df))
    # Experts and granularity cycle with a period prime to the 7 sizes, so every N meets several of each.
    if "E" in law.inputs:
        df["E"] = np.resize([1.0, 4.0, 16.0, 64.0, 512.0], len(df))
    if "G" in law.inputs:
        df["G"] = np.resize([1.0, 2.0, 4.0, 8.0, 16.0], len(df))
    loss = law.predict(params, **{c: df[c].to_numpy() for c in law.inputs})
    df["loss"] = loss * np.exp(noise * rng.standard_normal(len(df)))
    return df


def test_every_law_has_a_truth_here():
    assert set(TRUE) == set(LAWS)


@pytest.mark.parametrize("name", sorted(TRUE))
def test_noise_free_recovery(name):
    law = get_law(name)
    df = _grid_table(law, TRUE[name])
    r = fit(load_table(df, n_kind=law.n_kind or "total"), law, gtol=1e-12)
    for k, v in TRUE[name].items():
        assert r.params[k].value == pytest.approx(v, rel=1e-6), (name, k, r.params[k].value)


def test_noisy_recovery_within_intervals():
    law = get_law("chinchilla")
    truth = TRUE["chinchilla"]
    df = _grid_table(law, truth, noise=0.01, seed=3)
    r = fit(df, law, bootstrap_resamples=300, seed=1, objective=Objective(delta=0.05))
    for k in ("alpha", "beta"):
        lo, hi = r.params[k].ci
        assert lo <= truth[k] <= hi, (k, lo, hi)
    a_true = truth["beta"] / (truth["alpha"] + truth["beta"])
    lo, hi = r.derived["a"].ci
    assert lo <= a_true <= hi


# --- invariants --------------------------------------------------------------------------------------


def test_integer_weights_equal_duplicated_rows():
    law = get_law("power_n")
    df = _grid_table(law, TRUE["power_n"], noise=0.02, seed=5).drop_duplicates("N").reset_index(drop=True)
    w = np.arange(1, len(df) + 1)
    weighted = df.assign(w=w.astype(float))
    duplicated = df.loc[df.index.repeat(w)].reset_index(drop=True)
    a = fit(load_table(weighted, weight_col="w", d_col="D"), law)
    b = fit(duplicated, law)
    for k in law.param_names:
        assert a.params[k].value == pytest.approx(b.params[k].value, rel=1e-6)


def test_over_penalty_reduces_over_prediction():
    law = get_law("chinchilla")
    df = _grid_table(law, TRUE["chinchilla"], noise=0.02, seed=7)
    sym = fit(df, law, objective=Objective(delta=1e-3))
    asym = fit(df, law, objective=Objective(delta=1e-3, over_penalty=10.0))
    obs = np.log(df["loss"].to_numpy())

    def share_over(r):
        return np.mean(np.log(r.predict(N=df["N"].to_numpy(), D=df["D"].to_numpy()).loss) > obs)

    assert share_over(asym) < share_over(sym)


def test_resample_weights_keep_runs_whole():
    runs = np.array(["a", "a", "b", "c", "c", "c"])
    w = resample_weights(runs, 50, seed=0)
    assert w.shape == (50, 6)
    assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 3] == w[:, 5])
    # each resample draws 3 runs: the weights of one row per run sum to 3
    assert np.all(w[:, [0, 2, 3]].sum(axis=1) == 3)


def test_no_recompilation_on_second_fit():
    law = get_law("kaplan_n_e")  # no power-sum form in its fit coordinates: the compiled solver fits it
    assert law.separable is None
    df = _grid_table(law, TRUE["kaplan_n_e"], noise=0.01)
    fit(df, law, bootstrap_resamples=20, seed=0)
    before = _solve_batch._cache_size()
    fit(df, law, bootstrap_resamples=20, seed=1)  # new resamples: same shapes, same compiled code
    assert _solve_batch._cache_size() == before


# --- bad input ---------------------------------------------------------------------------------------


def test_bad_rows_are_excluded_and_named():
    law = get_law("chinchilla")
    df = _grid_table(law, TRUE["chinchilla"])
    df.loc[3, "loss"] = np.nan
    df.loc[5, "loss"] = -1.0
    df.loc[8, "loss"] = np.inf
    r = fit(df, law)
    rows = {row for row, _ in r.excluded}
    assert rows == {"3", "5", "8"}
    assert r.n_points == len(df) - 3
    assert "3" in r.report() and "excluded" in r.report() and r.summary()["n_excluded"] == 3


def test_non_positive_n_is_excluded_and_named():
    df = _grid_table(get_law("chinchilla"), TRUE["chinchilla"])
    df.loc[2, "N"] = 0.0
    r = fit(df, "chinchilla")
    assert [row for row, _ in r.excluded] == ["2"]


def test_single_distinct_d_is_refused():
    df = pd.DataFrame({"N": np.geomspace(1e6, 1e9, 8), "D": 1e10, "loss": np.linspace(4, 3, 8)})
    with pytest.raises(FitError, match="D = 1e\\+10.*not identifiable"):
        fit(df, "chinchilla")


def test_too_few_points_is_refused():
    df = pd.DataFrame({"N": [1e6, 1e7, 1e8, 1e9], "D": [1e9, 1e10, 1e9, 1e10], "loss": [4, 3.5, 3.2, 3]})
    with pytest.raises(FitError, match="4 usable rows.*5 free parameters"):
        fit(df, "chinchilla")


def test_missing_column_is_refused():
    df = pd.DataFrame({"params": [1e6, 1e7], "L": [3.0, 2.5]})
    with pytest.raises(ValueError, match="loss"):
        fit(df, "power_n")


def test_unknown_law_lists_known():
    with pytest.raises(ValueError, match="known laws: .*chinchilla"):
        get_law("chinchila")


def test_cli_fit_writes_json(tmp_path, capsys):
    df = _grid_table(get_law("chinchilla"), TRUE["chinchilla"], noise=0.005, seed=2)
    src = tmp_path / "runs.csv"
    df.rename(columns={"N": "params", "D": "tokens", "loss": "val_loss"}).to_csv(src, index=False)
    out = tmp_path / "fit.json"
    rc = cli.main(["fit", str(src), "--n-col", "params", "--d-col", "tokens", "--loss-col", "val_loss",
                   "--bootstrap", "50", "--compute", "1e21", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "alpha" in text and "N_opt@1e+21" in text
    assert "backtest (chinchilla): held out the top 15% of runs by C" in text  # on by default
    assert "N_opt@1e+21" in FitResult.load(out).derived
    assert FitResult.load(out).params["alpha"].se is not None
    assert cli.main(["plan", str(out), "--compute", "1e21"]) == 0  # plans read the fit file
    planned = capsys.readouterr().out
    assert "bootstrap intervals" in planned and "closed-form (chinchilla): N =" in planned
    odd = tmp_path / "odd.csv"
    df.rename(columns={"loss": "xent_q"}).to_csv(odd, index=False)
    assert cli.main(["fit", str(odd)]) == 2  # no loss column found: a clear error, not a crash
    err = capsys.readouterr().err
    assert "loss" in err and "odd.csv" in err


def test_pareto_frontier_keeps_runs_better_than_all_cheaper_ones():
    from scalefit.analysis.frontier import pareto_frontier

    C = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 5.0])
    L = np.array([5.0, 4.0, 4.5, 4.2, 3.0, 3.5])
    assert pareto_frontier(C, L).tolist() == [0, 1, 4]


def test_cli_approach_all_reports_kaplan_frontier(capsys):
    # Kaplan et al. 2020 found alpha_C = 0.050 on their frontier (another corpus and tokenizer): the
    # pure power law on the Chinchilla frontier should land near it, here within 0.02.
    assert cli.main(["fit", "chinchilla", "--approach", "all", "--holdout", "0"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("L = (C_c/C)^alpha_C"))
    alpha_c = float(line.split("alpha_C = ")[1].split(",")[0])
    assert alpha_c == pytest.approx(0.050, abs=0.02)
    assert "Approach 3 implies alpha_C" in out


def test_zero_irreducible_loss_predicts_without_warnings():
    # A fitted E can underflow to 0 (e.g. Cerebras-GPT with power_c); predictions must still work.
    law = get_law("chinchilla")
    p = {"E": 0.0, "A": 400.0, "B": 400.0, "alpha": 0.3, "beta": 0.3}
    expected = 400.0 / 1e9 ** 0.3 + 400.0 / 1e10 ** 0.3
    assert law.predict(p, N=1e9, D=1e10) == pytest.approx(expected, rel=1e-12)
