"""The trainer's "table" schedule: knots from a file, run exactly, recorded whole in spec.json, resumable."""

import json

import numpy as np
import pytest

from scalefit import cli
from scalefit.fitting.curve_sources import curves_from_store
from scalefit.fitting.schedules import from_knots, from_run_spec, train_overrides
from scalefit.training import loop
from scalefit.training.config import ModelConfig, RunSpec, TrainConfig
from scalefit.training.optim import lr_table, warmup_steps

TINY = ModelConfig(seq_len=32, d_model=32, n_layer=1, n_head=2, n_kv_head=2, d_ff=64)
KNOTS = ((0, 0.1), (9, 1.0), (20, 1.0), (39, 0.02))  # warmup to step 9, flat, linear decay to 2%


def _cfg(**kw):
    return TrainConfig(batch_size=8, lr=2e-3, tokens=40 * 8 * 32, log_every=1, checkpoint_every=10, n_evals=4,
                       eval_batches=2, schedule="table", schedule_table=KNOTS, **kw)


def test_table_schedule_is_the_interpolated_knots():
    cfg = _cfg()
    want = np.interp(np.arange(40), [s for s, _ in KNOTS], [v for _, v in KNOTS]) * 2e-3
    np.testing.assert_array_equal(lr_table(cfg, 40), want.astype(np.float32))
    assert warmup_steps(cfg, 40) == 10
    # the fitting side builds the same rates from the same knots
    np.testing.assert_allclose(from_knots(KNOTS, 40, scale=2e-3).rates, want, rtol=1e-15)


def test_table_config_is_validated_and_round_trips_json():
    with pytest.raises(ValueError, match="exactly when schedule is 'table'"):
        TrainConfig(tokens=1e4, schedule="cosine", schedule_table=KNOTS)
    with pytest.raises(ValueError, match="exactly when schedule is 'table'"):
        TrainConfig(tokens=1e4, schedule="table")
    with pytest.raises(ValueError, match="strictly increasing"):
        TrainConfig(tokens=1e4, schedule="table", schedule_table=((5, 1.0), (5, 0.5)))
    spec = RunSpec(run_id="r", model=TINY, train=_cfg())
    back = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec and hash(back.train) == hash(spec.train)


def test_a_table_run_records_its_schedule_exactly_and_resumes(tmp_path):
    out = tmp_path / "run"
    cfg = _cfg()
    def kill_at_15(rec):
        if rec.step == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.train(TINY, cfg, out, progress=False, on_step=kill_at_15)
    s = loop.train(TINY, cfg, out, progress=False)  # resumes: the spec.json (lists) matches the config (tuples)
    assert s.status == "completed" and s.steps == 40
    spec = json.loads((out / "spec.json").read_text())
    assert spec["train"]["schedule_table"] == [list(k) for k in KNOTS]
    np.testing.assert_array_equal(from_run_spec(spec).rates, lr_table(cfg, 40).astype(np.float64))
    curves = curves_from_store(tmp_path, loss="train")  # logged lr checked against the rebuilt schedule
    assert len(curves.curves) == 1 and not curves.excluded


def test_train_command_runs_a_schedule_file(tmp_path, capsys):
    sched = from_knots(((0, 1e-4), (9, 1e-3), (39, 2e-5)), 40)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(sched.to_dict()))
    over = train_overrides(sched)
    assert over["lr"] == pytest.approx(1e-3) and over["schedule"] == "table"
    args = ["train", "--preset", "d16-l1", "--seq-len", "32", "--batch-size", "8", "--schedule-file", str(path)]
    rc = cli.main([*args, "--tokens", str(40 * 8 * 32), "--out", str(tmp_path / "run"), "--log-every", "5"])
    assert rc == 0
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())
    np.testing.assert_allclose(from_run_spec(spec).rates, sched.rates, rtol=1e-6)
    rc = cli.main([*args, "--tokens", str(41 * 8 * 32), "--out", str(tmp_path / "other")])
    assert rc == 2 and "schedule of 40 steps, but the budget buys 41" in capsys.readouterr().err
