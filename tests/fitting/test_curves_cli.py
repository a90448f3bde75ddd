"""`scalefit curves`: fit a table with a per-step rate column, forecast, optimise, derive (N, D) rows, plot."""

import json

import numpy as np
import pandas as pd

from scalefit import cli
from scalefit.fitting.curves import curves_from_frame
from scalefit.fitting.laws.curves import TISSUE
from scalefit.fitting.schedules import from_spec, read_schedule
from scalefit.fitting.table import load_table

TRUE = np.array([[2.8, 0.45, 0.5, 0.15, 0.995]])  # L0, A, alpha, C, lam


def _table(tmp_path):
    """Two curves as a CSV with a row for every step (the rate) and a loss every 10 steps (Tissue's law,
    0.1% noise)."""
    scheds = {"wsd": from_spec("wsd:steps=800,lr=1e-3,warmup=30,cooldown=160,min_ratio=0.05"),
              "cosine": from_spec("cosine:steps=800,lr=1e-3,warmup=30,min_ratio=0.1")}
    pts = pd.concat([pd.DataFrame({"curve": c, "step": np.arange(10, 801, 10), "loss": 1.0}) for c in scheds])
    table = curves_from_frame(pts, scheds)
    loss = TISSUE.evaluate(TRUE, table.points(TISSUE.spec))[0]
    loss *= np.exp(1e-3 * np.random.default_rng(0).standard_normal(loss.size))
    per_step = pd.concat([pd.DataFrame({"curve": c, "step": np.arange(1, 801), "lr": s.rates})
                          for c, s in scheds.items()])
    observed = table.frame[["curve", "step"]].assign(loss=loss)
    df = per_step.merge(observed, on=["curve", "step"], how="left")
    path = tmp_path / "curves.csv"
    df.to_csv(path, index=False)
    return path


def test_curves_commands_end_to_end(tmp_path, capsys, is_blank):
    table = _table(tmp_path)
    fit = tmp_path / "fit.json"
    assert cli.main(["curves", "fit", str(table), "--law", "tissue[lam=0.995]", "--test", "cosine", "--n", "1e6",
                     "--out", str(fit)]) == 0
    out = capsys.readouterr().out
    assert "tissue[lam=0.995]" in out and "test cosine" in out and "held out: mean error" in out
    assert json.loads(fit.read_text())["law"] == "tissue[lam=0.995]"

    assert cli.main(["curves", "forecast", str(fit), "--schedule", "constant:steps=800,lr=1e-3,warmup=30",
                     "--points", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1] == "step,lr,loss,param_low,param_high,low,high" and len(lines) == 7

    best = tmp_path / "best.json"
    assert cli.main(["curves", "optimise", str(fit), "--reference", "cosine:steps=800,lr=1e-3,warmup=30,min_ratio=0.1",
                     "--out", str(best)]) == 0
    assert "predicted final loss" in capsys.readouterr().out
    s = read_schedule(best)
    assert s.steps == 800 and np.all(np.diff(s.rates[29:]) <= 0)

    rows = tmp_path / "derived.csv"
    assert cli.main(["curves", "derive", str(fit), str(table), "--n", "1e6", "--lengths", "200,400",
                     "--out", str(rows)]) == 0
    derived = pd.read_csv(rows)
    assert len(derived) == 4 and derived["derived"].all() and (derived["N"] == 1e6).all()
    assert len(load_table(rows)) == 4  # rows the (N, D) fit reads

    png = tmp_path / "curves.png"
    assert cli.main(["curves", "plot", str(fit), str(table), "--out", str(png)]) == 0
    assert not is_blank(png)


def test_bad_input_is_one_line(tmp_path, capsys):
    path = tmp_path / "t.csv"
    pd.DataFrame({"curve": "a", "step": [1, 2, 4], "lr": 1e-3, "loss": 3.0}).to_csv(path, index=False)
    assert cli.main(["curves", "fit", str(path)]) == 2
    assert "every step 1..4; 1 are missing, e.g. step 3" in capsys.readouterr().err
