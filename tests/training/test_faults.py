"""Faults a run folder meets: a checkpoint cut or damaged (audit R11), temporary files a kill leaves (R3),
a kill inside a checkpoint write (R3, slow), and a finished run that lost its spec.json (R10)."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scalefit.store.folder import read_metrics
from scalefit.training import corpus as data
from scalefit.training import loop as train
from scalefit.training.checkpoint import CheckpointError, checkpoint_step, load_checkpoint
from scalefit.training.config import ModelConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = ModelConfig(seq_len=32, d_model=32, n_layer=1, n_head=2, n_kv_head=2, d_ff=64)
STEPS = 40


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(batch_size=8, tokens=STEPS * 8 * 32, log_every=1, checkpoint_every=10, n_evals=4,
                                 eval_batches=2), **kw})


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for name in ["textwrap.py", "string.py", "heapq.py", "bisect.py", "fnmatch.py", "glob.py", "shlex.py"]:
        shutil.copy(data.stdlib_root() / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def corpus(corpus_dir, tmp_path_factory):
    return data.load_corpus(corpus_dir, val_fraction=0.2, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def unbroken(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "unbroken"
    return out, train.train(TINY, _cfg(), out, corpus=corpus, progress=False)


class _Stop(Exception):
    pass


def _partial(out, corpus, at=25):
    """A run stopped after step ``at`` (its checkpoint at step 20)."""
    def hook(rec):
        if rec.step == at:
            raise _Stop
    with pytest.raises(_Stop):
        train.train(TINY, _cfg(), out, corpus=corpus, progress=False, on_step=hook)
    assert checkpoint_step(out) == 20


@pytest.mark.parametrize("cut", ["half", 1000, 0])
def test_a_cut_checkpoint_is_named_and_its_run_trained_again(unbroken, corpus, tmp_path, cut, caplog):  # R11
    out = tmp_path / "run"
    _partial(out, corpus)
    ck = out / "ckpt" / "state.npz"
    raw = ck.read_bytes()
    ck.write_bytes(raw[: len(raw) // 2 if cut == "half" else cut])
    with pytest.raises(CheckpointError, match=rf"^{ck}: damaged checkpoint \("):
        load_checkpoint(out, None)
    assert checkpoint_step(out) == 0  # read without JAX: a damaged file counts as no checkpoint
    with caplog.at_level(logging.WARNING):
        s = train.train(TINY, _cfg(), out, corpus=corpus, progress=False)
    (msg,) = [r.getMessage() for r in caplog.records if "damaged checkpoint" in r.getMessage()]
    assert msg.startswith(f"warning: {ck}: damaged checkpoint (") and msg.endswith(
        "; moved to state.npz.damaged-1, and the run starts again from its last good state")
    assert (out / "ckpt" / "state.npz.damaged-1").read_bytes() == ck.read_bytes()[:0] + raw[: len(raw) // 2 if cut == "half" else cut]
    ref_dir, ref = unbroken
    assert s.status == "completed" and s.steps == STEPS
    assert [r.step for r in read_metrics(out / "metrics.jsonl")] == list(range(1, STEPS + 1))  # each step once
    assert s.final_eval_loss == pytest.approx(ref.final_eval_loss, abs=1e-6)  # from scratch: the unbroken run


def test_temp_files_of_cut_writes_are_removed_on_resume(unbroken, corpus, tmp_path):  # R3
    out = tmp_path / "run"
    _partial(out, corpus)
    left = [out / "ckpt" / "state.npz.k2j4h1.tmp", out / "summary.json.a8b7c6.tmp", out / "metrics.jsonl.x1.tmp",
            out / "spec.json.q9.tmp"]
    for f in left:
        f.write_bytes(b"half a write")
    mine = [out / "notes.tmp", out / "ckpt" / "other.npz.tmp"]  # not a write of the trainer: kept
    for f in mine:
        f.write_text("the user's")
    s = train.train(TINY, _cfg(), out, corpus=corpus, progress=False)
    assert s.status == "completed"
    assert not any(f.exists() for f in left) and all(f.exists() for f in mine)
    assert s.final_eval_loss == pytest.approx(unbroken[1].final_eval_loss, abs=1e-5)


def test_a_finished_run_without_its_spec_is_not_handed_back_unchecked(unbroken, corpus, tmp_path):  # R10
    out = tmp_path / "run"
    shutil.copytree(unbroken[0], out)
    (out / "spec.json").unlink()
    with pytest.raises(FileNotFoundError, match=rf"^{out / 'spec.json'} is missing, so the finished run in {out} "
                                                r"cannot be checked against these configs"):
        train.train(TINY, _cfg(), out, corpus=corpus, progress=False)


# Kill this process inside the Nth checkpoint write: half the temporary file written ("mid"), or all of it
# before the rename ("prereplace"), as the audit's inject.py did.
INJECT = textwrap.dedent("""
    import os, signal, sys, tempfile
    from pathlib import Path
    import scalefit.training.checkpoint as ck
    from scalefit.training import loop
    from scalefit.training.config import ModelConfig, TrainConfig
    n, mode, out, corpus = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    real, count = ck.atomic_write_bytes, [0]
    def write(path, payload):
        count[0] += 1
        if count[0] < n:
            return real(path, payload)
        fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=Path(path).name + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(payload[: len(payload) // 2] if mode == "mid" else payload)
        os.kill(os.getpid(), signal.SIGKILL)
    ck.atomic_write_bytes = write
    m = ModelConfig(seq_len=32, d_model=32, n_layer=1, n_head=2, n_kv_head=2, d_ff=64)
    t = TrainConfig(batch_size=8, tokens=40 * 8 * 32, log_every=1, checkpoint_every=10, n_evals=4, eval_batches=2)
    loop.train(m, t, out, corpus=corpus, progress=False)
""")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["mid", "prereplace"])
def test_a_kill_inside_a_checkpoint_write_leaves_nothing_behind(unbroken, corpus, corpus_dir, tmp_path, mode):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT), SCALEFIT_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", INJECT, "3", mode, str(out), str(corpus_dir)], env=env,
                          capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert list((out / "ckpt").glob("*.tmp")) and checkpoint_step(out) == 20  # the 3rd write, at step 30, was cut
    s = train.train(TINY, _cfg(), out, corpus=train.load_corpus(corpus_dir, val_fraction=0.2), progress=False)
    assert not list(out.rglob("*.tmp"))
    assert [r.step for r in read_metrics(out / "metrics.jsonl")] == list(range(1, STEPS + 1))
    assert s.final_eval_loss == pytest.approx(unbroken[1].final_eval_loss, abs=1e-5)
