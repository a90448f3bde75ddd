"""The executor registry and the one driver: what is submitted when, with a stand-in executor."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scalefit import cli
from scalefit.store import folder
from scalefit.store.records import ParamsRecord, Role, RunStatus, RunSummary, TimingRecord
from scalefit.sweep import executors
from scalefit.sweep.execute import RunResult
from scalefit.sweep.plan import plan_sweep
from scalefit.sweep.run import run_sweep
from scalefit.training import corpus as data

ROOT = Path(__file__).resolve().parents[2]


def test_registry_names_the_cli_choices_and_loads_nothing_heavy(capsys):
    assert set(executors.EXECUTORS) == {"local", "ray"}
    with pytest.raises(SystemExit):
        cli.main(["sweep", "run", "x.toml", "--executor", "slurm"])
    assert "(choose from 'local', 'ray')" in capsys.readouterr().err
    code = ("import sys; import scalefit.sweep.executors; "
            "print(sorted(m for m in sys.modules if m in ('ray', 'jax') or m.endswith('_executor')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.stdout.strip() == "[]"


class _Fake:
    """Trains nothing: writes the summary a run would end with (diverged for the ids in ``diverge``)."""

    def __init__(self, plan, out, slots, diverge):
        self.plan, self.out, self.slots, self.diverge = plan, Path(out), slots, diverge
        self.queued, self.submitted, self.closed = [], [], False

    def submit(self, run):
        done = {r for r in self.submitted if folder.run_status(self.out / r) is RunStatus.COMPLETED}
        assert run.parent is None or run.parent in done  # the driver waits for parents
        assert len(self.queued) < self.slots
        self.queued.append(run)
        self.submitted.append(run.spec.run_id)

    def wait(self):
        run = self.queued.pop(0)
        status = RunStatus.DIVERGED if run.spec.run_id in self.diverge else RunStatus.COMPLETED
        summary = RunSummary(status=status, diverged_at_step=None, steps=run.steps, planned_steps=run.steps,
                             tokens=run.tokens, flops_6N=run.flops_6n, flops_exact=run.flops_exact,
                             final_train_loss=2.0, final_eval_loss=2.0, params=ParamsRecord(1, 0, 1, 1),
                             corpus_fingerprint="x", wall_time=0.0)
        folder.write_summary(self.out / run.spec.run_id, summary)
        return RunResult(run.spec.run_id, summary, TimingRecord(1.0, 0.5, 0.0, 0.5, 0.0, 0.0, run.own_steps))

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ladder")
    corpus = tmp / "corpus"
    corpus.mkdir()
    for name in ["textwrap.py", "string.py", "heapq.py", "bisect.py", "fnmatch.py", "glob.py"]:
        shutil.copy(data.stdlib_root() / name, corpus / name)
    f = tmp / "l.toml"
    f.write_text(f'[sweep]\nname = "l"\ndesign = "wsd-ladder"\ncorpus = "{corpus}"\n[model]\nseq_len = 32\n'
                 '[train]\nbatch_size = 4\n[wsd-ladder]\nsizes = ["d16-l1", "d24-l1"]\ntokens = [2560, 5120]\n'
                 'cooldown_frac = 0.25\nwarmup_steps = 2\n')
    return plan_sweep(f)


def _with_fake(monkeypatch, slots, diverge=()):
    made = []

    def open_fake(plan, out, *, address, log):
        made.append(_Fake(plan, out, slots, set(diverge)))
        return made[-1]

    monkeypatch.setitem(executors.EXECUTORS, "fake", executors.ExecutorEntry(open_fake, "a stand-in"))
    return made


@pytest.mark.parametrize("slots", [1, 3])
def test_driver_submits_each_run_after_its_parent(ladder, tmp_path, monkeypatch, slots):
    made = _with_fake(monkeypatch, slots)
    rep = run_sweep(ladder, tmp_path, executor="fake", progress=False, log=lambda s: None)
    fake = made[0]
    assert fake.closed and set(rep.trained) == {r.spec.run_id for r in ladder.runs}
    if slots == 1:  # one at a time: exactly the plan's order
        assert fake.submitted == [r.spec.run_id for r in ladder.runs]
    assert rep.found == {r.spec.run_id: RunStatus.PENDING for r in ladder.runs}
    assert all(isinstance(t, TimingRecord) for t in rep.timings.values()) and rep.out == tmp_path
    again = run_sweep(ladder, tmp_path, executor="fake", progress=False, log=lambda s: None)
    assert again.trained == () and set(again.found.values()) == {RunStatus.COMPLETED}


def test_children_of_a_diverged_parent_are_skipped_and_said(ladder, tmp_path, monkeypatch):
    trunk = next(r for r in ladder.runs if r.role == Role.TRUNK)
    _with_fake(monkeypatch, 2, diverge={trunk.spec.run_id})
    lines = []
    rep = run_sweep(ladder, tmp_path, executor="fake", progress=False, log=lines.append)
    children = [r for r in ladder.runs if r.parent == trunk.spec.run_id]
    assert children and not {r.spec.run_id for r in children} & set(rep.trained)
    for r in children:
        assert any(line.startswith(r.label) and f"skipped: its parent {trunk.spec.run_id} is diverged" in line
                   for line in lines)
    other = {r.spec.run_id for r in ladder.runs if r.preset != trunk.preset}
    assert other <= set(rep.trained)  # the other size's ladder is trained all the same


def test_unknown_executor_is_refused_before_anything_moves(ladder, tmp_path):
    with pytest.raises(ValueError, match="executor must be one of 'local', 'ray', got 'slurm'"):
        run_sweep(ladder, tmp_path, executor="slurm", progress=False, log=lambda s: None)
    assert not list(tmp_path.iterdir())
