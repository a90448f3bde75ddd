"""Training loop, run directory, checkpoint/resume, divergence, budgets and schedules."""

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scalefit import cli

from scalefit.training import counting

from scalefit.training import corpus as data

from scalefit.training import model

from scalefit.training import loop as train
from scalefit.store.folder import read_metrics
from scalefit.training.config import ModelConfig, RunSpec, TrainConfig, get_preset
from scalefit.training.optim import cosine_schedule, lr_table, make_optimizer, make_schedule, wsd_schedule

TINY = ModelConfig(seq_len=32, d_model=32, n_layer=1, n_head=2, n_kv_head=2, d_ff=64)
TINY_MOE = TINY.with_overrides(n_expert=4, top_k=1)
STEP_TOKENS = 8 * 32


def _cfg(steps=40, **kw):
    base = dict(batch_size=8, lr=3e-3, tokens=steps * STEP_TOKENS, log_every=1, checkpoint_every=10,
                n_evals=4, eval_batches=2)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def small_corpus_dir(tmp_path_factory):
    """A handful of standard-library modules (~200 KB): real text, quick to read."""
    folder = tmp_path_factory.mktemp("corpus")
    root = data.stdlib_root()
    for name in ["json/decoder.py", "json/encoder.py", "json/scanner.py", "json/__init__.py",
                 "textwrap.py", "string.py", "heapq.py", "bisect.py", "fnmatch.py", "glob.py",
                 "shlex.py", "difflib.py", "argparse.py", "calendar.py", "colorsys.py"]:
        dst = folder / name.replace("/", "_")
        shutil.copy(root / name, dst)
    return folder


@pytest.fixture(scope="module")
def small_corpus(small_corpus_dir, tmp_path_factory):
    return data.load_corpus(small_corpus_dir, val_fraction=0.1, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def unbroken(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "unbroken"
    summary = train.train(TINY, _cfg(), out, corpus=small_corpus, progress=False)
    return out, summary


def _steps(path):
    return [r.step for r in read_metrics(path / "metrics.jsonl")]


def _without_wall(records):
    return [dataclasses.replace(r, wall_time=None) for r in records]


def test_short_run_on_default_corpus_learns(tmp_path):
    mcfg = get_preset("d32-l2").with_overrides(seq_len=64)
    tcfg = TrainConfig(batch_size=16, lr=1e-2, tokens=150 * 16 * 64, log_every=5, n_evals=5,
                       eval_batches=4, checkpoint_every=1000)
    s = train.train(mcfg, tcfg, tmp_path / "run", progress=False)
    assert s.status == "completed" and s.steps == 150 and s.tokens == 150 * 16 * 64
    assert s.final_eval_loss < 3.6 < math.log(256)  # log(256) = 5.545: uniform over bytes
    recs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    evals = [r.eval_loss for r in recs if r.eval_loss is not None]
    assert evals[0] > 5.0 and evals[-1] == s.final_eval_loss
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert spec["corpus"]["source"].startswith("stdlib:")
    assert spec["corpus"]["fingerprint"] == s.corpus_fingerprint
    fpt = counting.flops_per_token(mcfg)
    assert spec["flops_per_token"] == {"six_n": fpt.six_n, "exact": fpt.exact}
    assert spec["params"]["total"] == counting.param_counts(mcfg).total
    assert s.flops_exact == pytest.approx(fpt.exact * s.tokens)
    assert s.flops_6N == pytest.approx(fpt.six_n * s.tokens)


def test_run_dir_format(unbroken):
    out, s = unbroken
    assert sorted(p.name for p in out.iterdir()) == [".lock", "ckpt", "metrics.jsonl", "spec.json",
                                                     "summary.json"]
    recs = read_metrics(out / "metrics.jsonl")
    assert [r.step for r in recs] == list(range(1, 41))
    r = recs[-1]
    assert set(r.to_dict()) == {"step", "tokens", "flops_6N", "flops_exact", "train_loss", "eval_loss", "lr",
                      "grad_norm", "wall_time"}
    assert r.tokens == 40 * STEP_TOKENS and r.eval_loss == s.final_eval_loss
    eval_steps = [r.step for r in recs if r.eval_loss is not None]
    assert eval_steps == sorted(train.eval_schedule(40, 4)) == [1, 3, 12, 40]
    assert all(b.wall_time >= a.wall_time for a, b in zip(recs, recs[1:]))
    assert s.status == "completed" and s.diverged_at_step is None and s.steps == 40


def test_same_seed_same_metrics(unbroken, small_corpus, tmp_path):
    out, s = unbroken
    s2 = train.train(TINY, _cfg(), tmp_path / "again", corpus=small_corpus, progress=False)
    assert _without_wall(read_metrics(tmp_path / "again" / "metrics.jsonl")) == \
        _without_wall(read_metrics(out / "metrics.jsonl"))
    assert s2.final_eval_loss == s.final_eval_loss
    s3 = train.train(TINY, _cfg(seed=1), tmp_path / "seed1", corpus=small_corpus, progress=False)
    assert s3.final_train_loss != s.final_train_loss


class _Stop(Exception):
    pass


def _stop_at(step):
    def hook(rec):
        if rec.step == step:
            raise _Stop

    return hook


def test_interrupted_run_resumes_to_the_same_result(unbroken, small_corpus, tmp_path):
    ref_dir, ref = unbroken
    out = tmp_path / "resumed"
    with pytest.raises(_Stop):
        train.train(TINY, _cfg(), out, corpus=small_corpus, progress=False, on_step=_stop_at(25))
    assert _steps(out) == list(range(1, 26)) and not (out / "summary.json").exists()
    # A kill mid-write leaves half a line behind.
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 26, "tokens": 66')
    s = train.train(TINY, _cfg(), out, corpus=small_corpus, progress=False)
    assert _steps(out) == list(range(1, 41))  # resumed from step 20: none missing, none twice
    assert abs(s.final_train_loss - ref.final_train_loss) < 1e-5
    assert abs(s.final_eval_loss - ref.final_eval_loss) < 1e-5
    for a, b in zip(read_metrics(out / "metrics.jsonl"), read_metrics(ref_dir / "metrics.jsonl")):
        assert a.train_loss == pytest.approx(b.train_loss, abs=1e-5)
        assert a.lr == b.lr and a.tokens == b.tokens


def test_finished_run_is_not_retrained(unbroken, small_corpus):
    out, s = unbroken
    before = (out / "metrics.jsonl").read_bytes()
    assert train.train(TINY, _cfg(), out, corpus=small_corpus, progress=False) == s
    assert (out / "metrics.jsonl").read_bytes() == before
    with pytest.raises(ValueError, match=r"different model config \(fields \['d_ff', 'd_model'\]\)"):
        train.train(TINY.with_overrides(d_model=64, d_ff=128), _cfg(), out, corpus=small_corpus,
                    progress=False)
    other = data.load_corpus(data.stdlib_root() / "json", val_fraction=0.2)
    with pytest.raises(ValueError, match="finished run on a different corpus"):
        train.train(TINY, _cfg(), out, corpus=other, progress=False)


def test_run_spec_round_trip_and_train_run(unbroken, small_corpus_dir):
    out, s = unbroken
    spec = RunSpec(run_id=out.name, model=TINY, train=_cfg(), corpus=str(small_corpus_dir))
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    want = dataclasses.asdict(spec)
    del want["train"]["schedule_table"]  # None: left out, so ids planned before the field existed stand
    assert spec.to_dict() == {**want, "corpus": str(small_corpus_dir)}
    assert train.train_run(spec, out.parent) == s  # finished: returned without training
    on_disk = json.loads((out / "spec.json").read_text())  # spec.json's configs are RunSpec.to_dict()'s
    assert {k: on_disk[k] for k in ("model", "train")} == {k: spec.to_dict()[k] for k in ("model", "train")}
    with pytest.raises(ValueError, match="plain folder name"):
        RunSpec(run_id="a/b", model=TINY, train=_cfg())


def test_killed_after_last_checkpoint_writes_summary(unbroken, small_corpus, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(unbroken[0], out)
    (out / "summary.json").unlink()
    s = train.train(TINY, _cfg(), out, corpus=small_corpus, progress=False)
    assert s == dataclasses.replace(unbroken[1], wall_time=s.wall_time)
    assert _steps(out) == list(range(1, 41))


def test_other_config_in_same_dir_is_refused(small_corpus, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(_Stop):
        train.train(TINY, _cfg(), out, corpus=small_corpus, progress=False, on_step=_stop_at(2))
    with pytest.raises(ValueError, match=r"different train config \(fields \['lr'\]\)"):
        train.train(TINY, _cfg(lr=1e-3), out, corpus=small_corpus, progress=False)


@contextlib.contextmanager
def _lock_held(path, seconds: float):
    """A child process holding the flock on ``path`` for ``seconds`` (then it exits and lets go)."""
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); "
                               "time.sleep(float(sys.argv[2]))", str(path), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_run_folder_in_use_is_refused_after_a_grace(small_corpus, tmp_path, monkeypatch):
    out = tmp_path / "busy"
    with pytest.raises(_Stop):
        train.train(TINY, _cfg(), out, corpus=small_corpus, progress=False, on_step=_stop_at(1))
    # Another process holds the lock (a child, since flock is per open file, not per process).
    with _lock_held(out / ".lock", seconds=60):
        monkeypatch.setattr(train, "LOCK_GRACE_S", 0.3)
        with pytest.raises(ValueError, match=r"being trained by another process \(its lock held for 0.3 s\)"):
            train.train(TINY, _cfg(), out, corpus=small_corpus, progress=False)
    # A holder that lets go within the grace (a worker dying with its killed sweep) is waited for.
    with _lock_held(out / ".lock", seconds=1):
        monkeypatch.setattr(train, "LOCK_GRACE_S", 30.0)
        train.train(TINY, _cfg(), out, corpus=small_corpus, progress=False)
    assert train.train(TINY, _cfg(), out, corpus=small_corpus, progress=False).status == "completed"


def test_bf16_matmuls_train(small_corpus, tmp_path):
    s32 = train.train(TINY, _cfg(steps=8, n_evals=2), tmp_path / "f32", corpus=small_corpus, progress=False)
    s16 = train.train(TINY.with_overrides(compute_dtype="bfloat16"), _cfg(steps=8, n_evals=2),
                      tmp_path / "bf16", corpus=small_corpus, progress=False)
    assert s16.status == "completed"
    assert s16.final_eval_loss != s32.final_eval_loss  # bf16 inputs really were used
    assert abs(s16.final_eval_loss - s32.final_eval_loss) < 0.05


def test_divergence_is_recorded_not_raised(small_corpus, tmp_path):
    out = tmp_path / "div"
    s = train.train(TINY, _cfg(lr=1e6, grad_clip=0.0, warmup_steps=0), out, corpus=small_corpus,
                    progress=False)
    assert s.status == "diverged"
    assert 1 <= s.diverged_at_step < 40 and s.steps == s.diverged_at_step
    last = read_metrics(out / "metrics.jsonl")[-1]
    assert last.step == s.diverged_at_step and last.train_loss is None
    assert all(r.train_loss is not None for r in read_metrics(out / "metrics.jsonl")[:-1])
    # The summary is final: a second call returns it without training.
    assert train.train(TINY, _cfg(lr=1e6, grad_clip=0.0, warmup_steps=0), out, corpus=small_corpus,
                       progress=False) == s


def test_moe_run_logs_expert_load(small_corpus, tmp_path):
    s = train.train(TINY_MOE, _cfg(steps=6, n_evals=2), tmp_path / "moe", corpus=small_corpus,
                    progress=False)
    assert s.status == "completed" and s.params.active < s.params.non_embedding
    r = read_metrics(tmp_path / "moe" / "metrics.jsonl")[-1]
    load = np.array(r.moe.expert_load)
    assert load.shape == (1, 4) and load.sum() == pytest.approx(1.0, abs=1e-4)
    assert r.moe.aux_loss > 0 and r.moe.dropped_frac == 0.0  # dropless routing


def test_flop_budget_sets_the_steps(small_corpus, tmp_path):
    fpt = counting.flops_per_token(TINY)
    cfg = _cfg(tokens=None, flops=7.5 * fpt.exact * STEP_TOKENS)
    assert counting.total_steps(TINY, cfg) == 7
    cfg6 = cfg.with_overrides(flops_convention="6N")
    assert counting.total_steps(TINY, cfg6) == int(7.5 * fpt.exact / fpt.six_n)
    s = train.train(TINY, cfg.with_overrides(n_evals=2), tmp_path / "f", corpus=small_corpus,
                    progress=False)
    assert s.steps == 7 and s.flops_exact <= cfg.flops


def test_bad_inputs_fail_before_compiling(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="smaller than one optimizer step"):
        train.train(TINY, _cfg(tokens=STEP_TOKENS - 1), out, progress=False)
    with pytest.raises(ValueError, match="smaller than one optimizer step"):
        train.train(TINY, _cfg(tokens=None, flops=1e3), out, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"corpus {empty}: folder holds no files"):
        train.train(TINY, _cfg(), out, corpus=empty, progress=False)
    short = tmp_path / "short"
    short.mkdir()
    (short / "a.txt").write_text("tiny")
    (short / "b.txt").write_text("text")
    with pytest.raises(ValueError, match=f"corpus {short}.*shorter than one sequence"):
        train.train(TINY, _cfg(), out, corpus=short, progress=False)
    assert not out.exists()
    with pytest.raises(ValueError, match="exactly one budget"):
        TrainConfig(tokens=1e6, flops=1e12)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(tokens=1e6, schedule="linear")


def _lrs(cfg, steps):
    return np.asarray([float(make_schedule(cfg, steps)(s)) for s in range(steps)])


def test_cosine_schedule_points():
    lr = _lrs(TrainConfig(tokens=1, lr=1.0, warmup_steps=10, min_lr_ratio=0.1), 110)
    np.testing.assert_allclose(lr[:10], np.arange(1, 11) / 10, rtol=1e-6)  # peak at warmup end
    assert lr[9] == pytest.approx(1.0)
    assert lr[59] == pytest.approx(0.55, abs=1e-6)  # half way: (1 + 0.1) / 2
    assert lr[-1] == pytest.approx(0.1, abs=1e-6)  # ends at min_lr_ratio * peak
    assert np.all(np.diff(lr[9:]) <= 1e-7)


def test_constant_and_wsd_schedule_points():
    const = _lrs(TrainConfig(tokens=1, lr=2.0, schedule="constant", warmup_steps=4), 50)
    np.testing.assert_allclose(const[:4], [0.5, 1.0, 1.5, 2.0], rtol=1e-6)
    assert np.all(const[3:] == pytest.approx(2.0))
    cfg = TrainConfig(tokens=1, lr=1.0, schedule="wsd", warmup_steps=5, cooldown_frac=0.2,
                      min_lr_ratio=0.0)
    lr = _lrs(cfg, 100)
    assert np.all(lr[4:80] == pytest.approx(1.0))  # stable phase up to the cooldown
    p = (np.arange(80, 100) - 80 + 1) / 20
    np.testing.assert_allclose(lr[80:], 1 - np.sqrt(p), atol=1e-6)  # 1-sqrt cooldown to 0
    assert lr[-1] == pytest.approx(0.0, abs=1e-7)
    # With a floor the cooldown ends at min_lr_ratio.
    f = wsd_schedule(1.0, 100, 0, 20, 0.1)
    assert float(f(99)) == pytest.approx(0.1)
    assert float(f(89)) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(0.5)))
    assert float(cosine_schedule(1.0, 10, 0, 0.0)(jnp.asarray(9))) == pytest.approx(0.0, abs=1e-7)


def test_budgets_share_one_compiled_train_step(small_corpus, tmp_path, monkeypatch):
    # The run length only reaches the step through the fed learning rate, so a second budget (and
    # schedule) of the same model traces nothing: model.loss_fn runs at trace time only.
    traces = []
    real_loss_fn = model.loss_fn

    def counting_loss_fn(params, tokens, targets, cfg, **kernel):
        traces.append(tokens.shape)
        return real_loss_fn(params, tokens, targets, cfg, **kernel)

    monkeypatch.setattr(model, "loss_fn", counting_loss_fn)
    for cached in (train._make_train_step, train._make_eval_fn, train._make_init):
        cached.cache_clear()
    a = train.train(TINY, _cfg(steps=12), tmp_path / "a", corpus=small_corpus, progress=False)
    assert len(traces) == 2  # the train step and the evaluation
    b = train.train(TINY, _cfg(steps=21, schedule="wsd", warmup_steps=3), tmp_path / "b",
                    corpus=small_corpus, progress=False)
    assert (a.steps, b.steps) == (12, 21)
    assert len(traces) == 2
    step = train.make_train_step(TINY, make_optimizer(_cfg(steps=99)))
    assert step._cache_size() == 1
    # The logged rates are still each run's own schedule.
    lrs = [r.lr for r in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    np.testing.assert_array_equal(lrs, lr_table(_cfg(steps=21, schedule="wsd", warmup_steps=3), 21))
    # A different optimizer hyperparameter is a different graph: a new step function.
    assert train.make_train_step(TINY, make_optimizer(_cfg(beta2=0.99))) is not step


def test_fed_rate_matches_the_optimizer_own_schedule(small_corpus):
    # make_optimizer(cfg, steps) reads its schedule inside the step; the trainer feeds the same
    # table value instead. Both must give the same update.
    cfg = _cfg(steps=30, warmup_steps=5)
    x, y = data.get_batch(small_corpus.train, 0, 8, TINY.seq_len, 0)
    fed_tx, own_tx = make_optimizer(cfg), make_optimizer(cfg, 30)
    fed, own = train.init_state(TINY, fed_tx, 0), train.init_state(TINY, own_tx, 0)
    table = lr_table(cfg, 30)
    for s in range(3):
        fed, _ = train.make_train_step(TINY, fed_tx)(fed, x, y, table[s])
        own, _ = train.make_train_step(TINY, own_tx)(own, x, y)
    for a, b in zip(jax.tree.leaves(fed), jax.tree.leaves(own)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="no schedule"):
        train.make_train_step(TINY, fed_tx)(fed, x, y)


def test_lr_table_is_the_schedule():
    cfg = TrainConfig(tokens=1, lr=1.0, schedule="wsd", warmup_steps=5, cooldown_frac=0.2)
    table = lr_table(cfg, 100)
    assert table.dtype == np.float32 and table.shape == (100,)
    np.testing.assert_array_equal(table, np.float32(_lrs(cfg, 100)))


_KILLABLE = """
import sys, time
from scalefit.training import corpus as data
from scalefit.training import loop as train
from scalefit.training.config import ModelConfig, TrainConfig
cfg = ModelConfig(seq_len=32, d_model=32, n_layer=1, n_head=2, n_kv_head=2, d_ff=64)
corpus = data.load_corpus(sys.argv[1], val_fraction=0.1, cache_dir=sys.argv[3])
tcfg = TrainConfig(batch_size=8, lr=3e-3, tokens=60 * 256, log_every=1, checkpoint_every=7,
                   n_evals=4, eval_batches=2)
# Slow each step down so the parent can kill the process mid-run.
train.train(cfg, tcfg, sys.argv[2], corpus=corpus, progress=False, on_step=lambda r: time.sleep(0.05))
"""


@pytest.mark.slow
def test_killed_process_resumes_without_gaps(small_corpus_dir, tmp_path):
    out, cache = tmp_path / "killed", tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(small_corpus_dir), str(out), str(cache)],
                            env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "ckpt" / "state.npz").exists() and len(_steps(out)) >= 16:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "summary.json").exists()
    corpus = data.load_corpus(small_corpus_dir, val_fraction=0.1, cache_dir=cache)
    tcfg = TrainConfig(batch_size=8, lr=3e-3, tokens=60 * 256, log_every=1, checkpoint_every=7,
                       n_evals=4, eval_batches=2)
    s = train.train(TINY, tcfg, out, corpus=corpus, progress=False)
    ref = train.train(TINY, tcfg, tmp_path / "ref", corpus=corpus, progress=False)
    assert _steps(out) == list(range(1, 61))
    assert abs(s.final_eval_loss - ref.final_eval_loss) < 1e-5
    assert abs(s.final_train_loss - ref.final_train_loss) < 1e-5


def test_cli_train(small_corpus_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli.main(["train", "--preset", "d32-l1", "--seq-len", "32", "--batch-size", "8",
                   "--tokens", str(12 * 256), "--schedule", "wsd", "--corpus", str(small_corpus_dir),
                   "--out", str(out), "--attention", "xla", "--params", "fsdp"])
    assert rc == 0
    assert "completed after 12 steps" in capsys.readouterr().out
    spec = json.loads((out / "spec.json").read_text())
    assert spec["train"]["schedule"] == "wsd" and spec["model"]["d_model"] == 32
    rc = cli.main(["train", "--preset", "d32-l1", "--tokens", "10", "--out", str(tmp_path / "x")])
    assert rc == 2 and "smaller than one optimizer step" in capsys.readouterr().err
    rc = cli.main(["train", "--preset", "d32-l1", "--seq-len", "32", "--batch-size", "8", "--tokens", "4096",
                   "--corpus", str(small_corpus_dir), "--devices", "2", "--out", str(tmp_path / "y")])
    assert rc == 2 and "ComputeConfig.devices = 2, but JAX sees 1 device" in capsys.readouterr().err


def test_damaged_metrics_line_is_an_error(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match="metrics.jsonl: line 2 is not valid JSON"):
        read_metrics(p)
    p.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "tok')  # cut mid-write by a kill
    assert [r.step for r in read_metrics(p)] == [1, 2]
