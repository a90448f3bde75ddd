"""A sweep over a damaged, full or read-only store (audit R10-R13) and Ctrl-C during a sweep (C3): the store
stays readable, nothing disappears without a line saying why, and each fault is one clear error."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalefit import cli
from scalefit.fitting.sources import read_runs
from scalefit.store import tables as runs
from scalefit.sweep.plan import plan_sweep
from scalefit.sweep.run import run_sweep
from scalefit.training import corpus as data

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ('[sweep]\nname = "f"\ndesign = "grid"\ncorpus = "corpus"\n[model]\nseq_len = 32\n'
         '[train]\nbatch_size = 4\nn_evals = 2\neval_batches = 2\nlog_every = 5\ncheckpoint_every = 10\n'
         '[grid]\nsizes = ["d16-l1"]\ntokens = [2560, 5120, 7680]\n')  # 20, 40 and 60 steps


def _quiet(_):
    pass


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    (tmp / "corpus").mkdir()
    for name in ["textwrap.py", "string.py", "heapq.py", "bisect.py", "fnmatch.py", "glob.py"]:
        shutil.copy(data.stdlib_root() / name, tmp / "corpus" / name)
    (tmp / "f.toml").write_text(SWEEP)
    return tmp / "f.toml"


@pytest.fixture(scope="module")
def finished(sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "store"
    assert len(run_sweep(sweep, out, progress=False, log=_quiet).trained) == 3
    return out


def _ids(sweep):
    return [r.spec.run_id for r in plan_sweep(sweep).runs]


def _snapshot(root: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}


def _table(out):
    cols = ["run_id", "status", "steps", "final_train_loss", "final_eval_loss"]
    return runs.load(out)[cols].sort_values("run_id").reset_index(drop=True)


def test_a_run_without_spec_json_is_listed_as_left_out_and_repaired(sweep, finished, tmp_path, capsys):  # R10
    out = tmp_path / "store"
    shutil.copytree(finished, out)
    rid = _ids(sweep)[1]
    spec = json.loads((out / rid / "spec.json").read_text())
    (out / rid / "spec.json").unlink()
    why = (f"skipped {out / rid / 'spec.json'}: missing, so the run (completed) has no configs or parameter counts; "
           "run left out (`scalefit sweep run` on its sweep file writes it again)")
    assert cli.main(["runs", "ls", str(out)]) == 0
    ls = capsys.readouterr().out
    assert "2 runs: 2 completed" in ls and why in ls  # not gone without a word
    assert f"skipped {out / rid / 'spec.json'}: missing" in " ".join(read_runs(out).notes)  # fit and report's reader
    lines = []
    rep = run_sweep(sweep, out, progress=False, log=lines.append)
    assert f"d16-l1/D5.12e+03: completed but {out / rid / 'spec.json'} is missing (the run table leaves it out): " \
           "writing it again" in lines
    assert rep.trained == (rid,)
    assert json.loads((out / rid / "spec.json").read_text()) == spec  # the same machine: the same file
    assert _table(out).equals(_table(finished))


def test_a_cut_checkpoint_in_a_sweep_is_named_and_the_sweep_goes_on(sweep, finished, tmp_path, caplog):  # R11
    out = tmp_path / "store"
    ids = _ids(sweep)
    shutil.copytree(finished, out)
    for rid in ids[1:]:  # two runs back to partial (no summary), the checkpoint of the first of them cut
        (out / rid / "summary.json").unlink()
    ck = out / ids[1] / "ckpt" / "state.npz"
    ck.write_bytes(ck.read_bytes()[:1000])
    rep = run_sweep(sweep, out, progress=False, log=_quiet)
    assert rep.trained == tuple(ids[1:])  # the damaged one trained again, and the sweep went on
    assert any(r.getMessage().startswith(f"warning: {ck}: damaged checkpoint (") for r in caplog.records)
    assert (ck.parent / "state.npz.damaged-1").stat().st_size == 1000
    assert _table(out).equals(_table(finished))


def test_a_full_disk_is_one_clear_error_and_the_store_resumes(sweep, finished, tmp_path, monkeypatch):  # R12
    import scalefit.training.checkpoint as ck

    out = tmp_path / "store"
    real, calls = ck.atomic_write_bytes, [0]

    def full(path, payload):  # the disk fills up at the 5th checkpoint write (the second run's first)
        calls[0] += 1
        if calls[0] >= 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, payload)

    monkeypatch.setattr(ck, "atomic_write_bytes", full)
    second = _ids(sweep)[1]
    with pytest.raises(OSError, match=rf"^\[Errno 28\] {out / second}: No space left on device while training "
                                      r"d16-l1/D5.12e\+03; the finished runs and this run's last checkpoint are "
                                      "intact: fix it and run the sweep again to resume$"):
        run_sweep(sweep, out, progress=False, log=_quiet)
    assert runs.load(out)["status"].tolist().count("completed") == 1
    monkeypatch.setattr(ck, "atomic_write_bytes", real)  # space again
    run_sweep(sweep, out, progress=False, log=_quiet)
    assert _table(out).equals(_table(finished))


def test_a_finished_store_is_read_and_run_again_without_a_write(sweep, finished, capsys):  # R13
    before = _snapshot(finished)
    assert run_sweep(sweep, finished, progress=False, log=_quiet).trained == ()
    assert cli.main(["runs", "ls", str(finished)]) == 0
    assert "3 runs: 3 completed" in capsys.readouterr().out
    assert _snapshot(finished) == before  # so a read-only mount serves it as well


def test_a_store_that_cannot_be_written_is_named_before_any_work(sweep, finished, tmp_path, monkeypatch):  # R13
    import scalefit.sweep.run as driver

    out = tmp_path / "store"
    shutil.copytree(finished, out)
    (out / _ids(sweep)[2] / "summary.json").unlink()  # one run left to train

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(driver.tempfile, "TemporaryFile", read_only)
    before = _snapshot(out)
    with pytest.raises(OSError, match=rf"^\[Errno 30\] run store {out} is not writable \(Read-only file system\): 1 "
                                      rf"runs left to train; the finished ones read as they are \(scalefit runs ls "
                                      rf"{out}\)$"):
        run_sweep(sweep, out, progress=False, log=_quiet)
    assert _snapshot(out) == before


@pytest.mark.slow
@pytest.mark.usefixtures("default_sigint")
def test_ctrl_c_during_a_sweep_stops_cleanly_with_130(sweep, finished, tmp_path):  # C3
    out = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "scalefit.cli", "sweep", "run", str(sweep), "--out", str(out)],
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = out / _ids(sweep)[0] / "summary.json"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"scalefit: interrupted; what was finished is kept in {out}: run the same "
                                            "command again to resume")
    run_sweep(sweep, out, progress=False, log=_quiet)
    assert _table(out).equals(_table(finished))


def test_a_cut_branch_checkpoint_starts_again_from_its_trunk(sweep, tmp_path, caplog):  # R11, a ladder branch
    f = sweep.parent / "ladder.toml"
    f.write_text('[sweep]\nname = "l"\ndesign = "wsd-ladder"\ncorpus = "corpus"\n[model]\nseq_len = 32\n'
                 '[train]\nbatch_size = 4\nn_evals = 2\neval_batches = 2\nlog_every = 5\ncheckpoint_every = 10\n'
                 '[wsd-ladder]\nsizes = ["d16-l1"]\ntokens = [2560, 5120]\ncooldown_frac = 0.25\nwarmup_steps = 2\n')
    ref, out = tmp_path / "ref", tmp_path / "store"
    run_sweep(f, ref, progress=False, log=_quiet)
    shutil.copytree(ref, out)
    branch = [r for r in plan_sweep(f).runs if r.role == "branch"][-1]
    (out / branch.spec.run_id / "summary.json").unlink()
    ck = out / branch.spec.run_id / "ckpt" / "state.npz"
    ck.write_bytes(b"")
    assert run_sweep(f, out, progress=False, log=_quiet).trained == (branch.spec.run_id,)
    assert any(f"{ck}: damaged checkpoint" in r.getMessage() for r in caplog.records)
    assert _table(out).equals(_table(ref))  # trained again from the trunk's final state: the same run


@pytest.mark.slow
def test_a_ladder_killed_again_and_again_resumes_to_the_unbroken_runs(sweep, tmp_path):  # R2
    f = sweep.parent / "kill-ladder.toml"
    f.write_text('[sweep]\nname = "kl"\ndesign = "wsd-ladder"\ncorpus = "corpus"\n[model]\nseq_len = 32\n'
                 '[train]\nbatch_size = 4\nn_evals = 2\neval_batches = 2\nlog_every = 2\ncheckpoint_every = 4\n'
                 '[wsd-ladder]\nsizes = ["d16-l1"]\ntokens = [2560, 5120, 7680]\ncooldown_frac = 0.25\n'
                 'warmup_steps = 2\n')
    ref, out = tmp_path / "ref", tmp_path / "store"
    run_sweep(f, ref, progress=False, log=_quiet)
    cmd = [sys.executable, "-m", "scalefit.cli", "sweep", "run", str(f), "--out", str(out)]
    for kill in range(3):  # SIGKILL once a checkpoint more than before has been written
        seen = {p: p.stat().st_mtime_ns for p in out.rglob("state.npz")} if out.exists() else {}
        proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            now = {p: p.stat().st_mtime_ns for p in out.rglob("state.npz")} if out.exists() else {}
            if any(seen.get(p) != t for p, t in now.items()):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait()
    run_sweep(f, out, progress=False, log=_quiet)
    assert not list(out.rglob("*.tmp"))
    assert _table(out).equals(_table(ref))
    for rid in _ids(f):
        steps = [json.loads(line)["step"] for line in (out / rid / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps))  # every logged step once


def test_a_temp_file_cut_after_the_summary_is_removed_by_the_next_sweep(sweep, finished, tmp_path):  # R3
    out = tmp_path / "store"
    shutil.copytree(finished, out)
    rid = _ids(sweep)[0]
    cut = out / rid / "timing.json.k3j2h1.tmp"  # killed between summary.json and timing.json
    cut.write_text('{"wall": 1.')
    assert run_sweep(sweep, out, progress=False, log=_quiet).trained == ()
    assert not cut.exists() and _table(out).equals(_table(finished))


def test_a_cut_write_of_the_sweep_index_is_removed_by_the_next_sweep(sweep, finished, tmp_path):  # R3
    out = tmp_path / "store"
    shutil.copytree(finished, out)
    (index,) = out.glob("sweep-*.json")
    cut = out / f"{index.name}.a8f2k1.tmp"  # killed inside the index's write
    cut.write_text('{"name": "f", "ru')
    before = index.read_text()
    assert run_sweep(sweep, out, progress=False, log=_quiet).trained == ()
    assert not cut.exists() and index.read_text() == before
