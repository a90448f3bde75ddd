"""law="auto": leave-future-out cross-validation on the table's own rows picks the law that forecasts."""

import numpy as np
import pandas as pd
import pytest

from scalefit import cli
from scalefit.fitting import choice, crossval
from scalefit.fitting.fitter import fit
from scalefit.fitting.laws import get_law
from scalefit.fitting.result import FitResult
from scalefit.fitting.solver import _solve_batch
from scalefit.fitting.table import load_table


def test_auto_picks_the_true_form_among_tied_and_free_exponents(synth):
    # Truth: alpha = 0.45, beta = 0.2. Tied exponents fit the past passably and forecast it badly.
    df = synth.isoflop(synth.chinchilla(synth.UNTIED), noise=0.005, seed=0)
    r = fit(df, "auto")
    assert r.law.name == "chinchilla" and r.status == "converged"
    ranks = r.selection.rows
    assert ranks[0].note == "chosen" and ranks[0].law == "chinchilla"
    assert {x.law for x in ranks} == {"chinchilla", "chinchilla[a=0.5]"}
    tied = min(x.cv_mean for x in ranks if x.law == "chinchilla[a=0.5]")
    assert tied > 2 * ranks[0].cv_mean  # the wrong form forecasts the future far worse
    assert [x.cv_mean for x in ranks] == sorted(x.cv_mean for x in ranks)
    assert r.values()["alpha"] == pytest.approx(0.45, abs=0.05) and r.calibration is not None
    text = r.report()
    assert "law chosen by cross-validation" in text and "CV mean" in text and "cov90" in text


def test_auto_result_round_trips_through_json(synth, tmp_path):
    df = synth.isoflop(synth.chinchilla(synth.CHIN), noise=0.005, seed=4)
    r = fit(df, "auto")
    back = FitResult.load(r.save(tmp_path / "fit.json"))
    assert back == r and back.selection == r.selection and back.calibration == r.calibration
    a, b = r.predict(0.9, N=1e10, D=2e11), back.predict(0.9, N=1e10, D=2e11)
    assert (a.low, a.high) == (b.low, b.high) and a.calibrated


def test_auto_picks_the_n_the_law_holds_in(synth):
    # The loss follows the law in non-embedding N; total N adds a fixed 3e7-parameter embedding.
    df = synth.isoflop(synth.chinchilla(synth.CHIN), noise=0.003, seed=1)
    df = df.rename(columns={"N": "N_non_embedding"}).assign(N_total=lambda d: d["N_non_embedding"] + 3e7)
    df["C"] = 6 * df["N_total"] * df["D"]
    table = load_table(df, n_col="N_total", keep=["N_non_embedding"])
    r = fit(table, "auto")
    assert r.n_kind == "non-embedding"
    assert {x.n_kind for x in r.selection.rows} == {"total", "non-embedding"}
    assert r.values()["alpha"] == pytest.approx(synth.CHIN["alpha"], abs=0.05)


def test_auto_on_one_tokens_per_parameter_ratio_tries_laws_in_c():
    # Every run at 20 tokens per parameter (Cerebras-like): N and D cannot be told apart.
    N = np.geomspace(1e8, 3e10, 9)
    C = 6 * N * 20 * N
    L = get_law("power_c").predict({"E": 1.5, "A": 300.0, "alpha": 0.12}, C=C)
    df = pd.DataFrame({"N": N, "D": 20 * N, "C": C, "loss": L * np.exp(0.002 * np.sin(np.arange(9)))})
    table = load_table(df)
    assert crossval.order_key(table.frame) == "N"
    assert {f.name for f in choice.forms(table)} == {"power_c", "kaplan_c", "power_n", "kaplan_n"}
    r = fit(table, "auto")
    # C = 120 N^2 exactly: the saturating law in C and in N are one family here; either recovers E.
    assert r.law.name in ("power_c", "power_n") and r.values()["E"] == pytest.approx(1.5, rel=0.05)


@pytest.mark.parametrize("truth", ["power_c", "power_n"])
def test_auto_on_one_ratio_tells_a_law_in_c_from_one_in_n(truth):
    # Every run at 20 tokens per parameter, C counted with an attention-like term (not 6ND), so log C is
    # not linear in log N: a power law in one of them is curved in the other, and only the future says which.
    N = np.geomspace(1e8, 3e10, 10)
    D = 20 * N
    C = 6 * N * D + 3e5 * D * N ** 0.6
    law = get_law(truth)
    params = {"E": 1.5, "A": 300.0, "alpha": 0.12} if truth == "power_c" else {"E": 1.5, "A": 400.0, "alpha": 0.3}
    L = law.predict(params, **({"C": C} if truth == "power_c" else {"N": N}))
    df = pd.DataFrame({"N": N, "D": D, "C": C, "loss": L * np.exp(3e-5 * np.sin(np.arange(10)))})
    r = fit(load_table(df, c_kind="exact"), "auto")
    assert r.law.name == truth and r.values()["E"] == pytest.approx(1.5, rel=0.05)


def test_pins_apply_to_every_candidate(synth):
    df = synth.isoflop(synth.chinchilla(synth.CHIN), noise=0.005, seed=2)
    cands = choice.candidates(load_table(df), fixed={"E": 1.7})
    assert cands and all(dict(c.law.fixed)["E"] == 1.7 for c in cands)
    r = fit(df, "auto", fixed={"E": 1.7})
    assert r.values()["E"] == 1.7
    assert all(c.law.name.startswith("chinchilla[a=0.5") for c in choice.candidates(load_table(df), fixed={"a": 0.5}))


def test_row_rule_lists_the_rows_it_leaves_out(synth):
    df = synth.isoflop(synth.chinchilla(synth.CHIN), ratios=np.geomspace(0.5, 300, 7), seed=3)
    table = load_table(df)
    cand = next(c for c in choice.candidates(table) if c.min_tokens_per_param is not None)
    fitted = cand.fit_table
    low = (df["D"] / df["N"] < cand.min_tokens_per_param).sum()
    assert len(fitted) == len(table) - low and low > 0
    assert sum("D/N below" in why for _, why in fitted.excluded) == low


def test_rolling_origin_keeps_runs_together_and_budgets_whole():
    # Two seeds per configuration, C jittered by under 1% within a budget, three rows (checkpoints) per run.
    rows = []
    for b, C in enumerate(np.geomspace(1e17, 1e20, 6)):
        for s in range(4):
            for seed in range(2):
                N = np.sqrt(C / (6 * 20)) * 2.0 ** (s - 1.5)
                for k, frac in enumerate((0.25, 0.5, 1.0)):
                    rows.append({"run": f"b{b}s{s}seed{seed}", "N": N, "D": frac * C * (1 + 0.002 * s) / (6 * N),
                                 "loss": 3.0 - 0.1 * b - 0.01 * k})
    frame = load_table(pd.DataFrame(rows)).frame
    groups = crossval.run_groups(frame)
    assert len(np.unique(groups)) == 6 * 4  # seeds of one configuration and a run's checkpoints: one group
    folds = crossval.rolling_origin(frame)
    assert len(folds) >= 2 and folds.key == "C"
    budget = np.round(np.log10(frame.groupby("run")["C"].transform("max")), 1)
    for train in folds.train:
        for g in np.unique(groups):
            assert len(set(train[groups == g])) == 1  # a group never straddles a cut
        assert set(budget[train]).isdisjoint(budget[~train])  # nor does a budget


def test_no_recompilation_across_candidates_and_a_second_auto_fit(synth):
    df = synth.isoflop(synth.chinchilla(synth.CHIN), noise=0.005, seed=5)
    fit(df, "auto")
    before = _solve_batch._cache_size()
    fit(synth.isoflop(synth.chinchilla(synth.CHIN), noise=0.005, seed=6), "auto")
    assert _solve_batch._cache_size() == before


def test_cli_law_auto_prints_the_ranking(tmp_path, capsys, synth):
    src = tmp_path / "runs.csv"
    synth.isoflop(synth.chinchilla(synth.UNTIED), noise=0.005, seed=0).to_csv(src, index=False)
    out = tmp_path / "fit.json"
    assert cli.main(["fit", str(src), "--law", "auto", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "law chosen by cross-validation" in text and "nominal -> empirical: 80% ->" in text
    assert FitResult.load(out).selection is not None


def test_routed_runs_of_one_length_get_the_moe_forms_and_stay_apart_by_e():
    # Runs differing only in their expert count are configurations of their own, not seeds of one.
    N = np.repeat([1e7, 3e7, 1e8, 3e8], 3)
    E = np.tile([1.0, 8.0, 64.0], 4)
    D = np.where(np.arange(12) % 5 == 0, 2.49e5, 2.5e5)  # one length, off by a step count's rounding
    df = pd.DataFrame({"N": N, "D": D, "E": E, "C": 6 * N * D, "loss": 3.0 - 0.1 * np.log(N / 1e7) - 0.02 * np.log(E)})
    table = load_table(df, n_kind="active")
    assert len(np.unique(crossval.run_groups(table.frame))) == 12
    assert [f.name for f in choice.forms(table)] == ["clark_routing", "clark_routing[c=0]", "clark_routing_e",
                                                     "clark_routing_e[gamma=0]"]
    dense = load_table(df.assign(E=1.0), n_kind="active")
    assert "clark_routing" not in {f.name for f in choice.forms(dense)}


JOINT_TRUTH = dict(a=406.4, alpha=-0.34, delta=-0.25, gamma=0.01, b=410.7, beta=-0.28, omega=-0.05, zeta=0.0,
                   c=1.69, E_start=1.2, E_max=300.0)  # Hoffmann et al.'s dense terms, experts lowering the N term


def _routed_runs(law, truth, routed: dict, noise=0.005, seed=0):
    """Every size x tokens-per-parameter x routed setting ({column: values}), loss from `law` x exp(noise z)."""
    col, values = next(iter(routed.items()))
    N, tpp, R = (a.ravel() for a in np.meshgrid(np.geomspace(2e7, 2e9, 6), [5.0, 20.0, 80.0], values,
                                                indexing="ij"))
    D = N * tpp
    loss = law.predict(truth, N=N, D=D, **{col: R}) * np.exp(np.random.default_rng(seed).normal(0, noise, len(N)))
    return pd.DataFrame({"N": N, "D": D, col: R, "C": 6 * N * D, "loss": loss})


def test_routed_runs_of_several_lengths_get_the_joint_law_and_forecast_larger_runs():
    # Runs from Ludziejewski et al.'s joint law in (N, D, E): the laws in N and E alone mix the lengths up
    # and the dense forms ignore E, so the candidates are the joint law with and without its interactions.
    joint = get_law("joint_moe")
    df = _routed_runs(joint, JOINT_TRUTH, {"E": [1.0, 4.0, 16.0, 64.0]})
    table = load_table(df, n_kind="active")
    assert [f.name for f in choice.forms(table)] == ["joint_moe", "joint_moe[gamma=0, zeta=0]"]
    assert len(np.unique(crossval.run_groups(table.frame))) == len(df)  # E alone sets runs apart
    big = (table.frame["N"] > 1.5e9).to_numpy()
    r = fit(table.subset(~big, "up to 800M"), "auto", bootstrap_resamples=0)
    assert r.law.name.startswith("joint_moe") and r.status == "converged"
    test = table.frame[big]
    x = {c: test[c].to_numpy(float) for c in ("N", "D", "E")}
    pred = r.predict(**x).loss
    print(f"\n{r.selection.table()}\nheld-out 2B runs: mean {np.mean(np.abs(pred / test['loss'] - 1)):.2%}, "
          f"max {np.max(np.abs(pred / test['loss'] - 1)):.2%}; the drawing law's own: "
          f"{np.mean(np.abs(joint.predict(JOINT_TRUTH, **x) / test['loss'] - 1)):.2%}")
    # The 2B runs (2.5x the largest fitted N) forecast as well as the noise (0.5%) allows, and close to
    # the law that drew them.
    assert np.mean(np.abs(pred / test["loss"] - 1)) < 0.01 and np.max(np.abs(pred / test["loss"] - 1)) < 0.025
    assert np.mean(np.abs(pred / joint.predict(JOINT_TRUTH, **x) - 1)) < 0.005
    assert r.values()["alpha"] == pytest.approx(-0.34, abs=0.05)


def test_granularity_with_several_lengths_gets_the_fine_grained_law_and_forecasts_larger_runs():
    fine = get_law("fine_grained_moe")
    truth = dict(a=300.0, alpha=0.34, b=410.7, beta=0.28, g=106.4, gamma=0.58, c=1.69)
    df = _routed_runs(fine, truth, {"G": [1.0, 2.0, 8.0]})
    table = load_table(df, n_kind="active")
    assert [f.name for f in choice.forms(table)] == ["fine_grained_moe"]
    big = (table.frame["N"] > 1.5e9).to_numpy()
    r = fit(table.subset(~big, "up to 800M"), "auto", bootstrap_resamples=0)
    test = table.frame[big]
    rel = np.abs(r.predict(**{c: test[c].to_numpy(float) for c in ("N", "D", "G")}).loss / test["loss"] - 1)
    print(f"\n{r.selection.table()}\nheld-out 2B runs: mean {rel.mean():.2%}, max {rel.max():.2%}")
    assert r.law.name == "fine_grained_moe" and rel.mean() < 0.01 and rel.max() < 0.025
    # E and G both varied: each routed law that reads one of them is a candidate.
    both = load_table(df.assign(E=np.where(df["G"] > 1, 8.0, 1.0)), n_kind="active")
    assert {f.name for f in choice.forms(both)} == {"joint_moe", "joint_moe[gamma=0, zeta=0]", "fine_grained_moe"}
    # Without the routed columns varying the dense design's forms come back.
    assert {f.name for f in choice.forms(load_table(df.assign(G=1.0), n_kind="active"))} == {
        "chinchilla", "chinchilla[a=0.5]"}
