"""Sweep files, plans and their warnings, resumable execution (kill -9, Ray) and the WSD ladder."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scalefit.training import counting

from scalefit.training import corpus as data

from scalefit.store import tables as runs
from scalefit.sweep.checks import format_plan
from scalefit.sweep.plan import SweepFileError, plan_sweep, read_sweep_file
from scalefit.sweep.run import run_sweep
from scalefit.training.loop import train_run

ROOT = Path(__file__).resolve().parents[2]
FILES = ["json/decoder.py", "json/encoder.py", "textwrap.py", "string.py", "heapq.py", "bisect.py",
         "fnmatch.py", "glob.py", "shlex.py", "difflib.py", "argparse.py", "calendar.py"]
TINY_TRAIN = """
[train]
batch_size = 8
n_evals = 3
eval_batches = 2
log_every = 5
checkpoint_every = 20
"""


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for name in FILES:
        shutil.copy(data.stdlib_root() / name, folder / name.replace("/", "_"))
    return folder


def _write(tmp_path, corpus_dir, body, name="s.toml", model='ladder = ["d32-l1", "d32-l2", "d48-l2", "d64-l2"]'):
    p = tmp_path / name
    p.write_text(f'[sweep]\nname = "{p.stem}"\ncorpus = "{corpus_dir}"\n{body.split("|")[0]}\n'
                 f"[model]\n{model}\nseq_len = 32\n{TINY_TRAIN}\n{body.split('|')[1]}")
    return p


ISO = 'design = "isoflop"|[isoflop]\nbudgets = [2e11, 5e11, 1e12]\nsizes_per_budget = 3\ntokens_per_param = 20\n'


def test_isoflop_budgets_are_hit_and_bracket_the_prior_optimum(tmp_path, corpus_dir):
    plan = plan_sweep(_write(tmp_path, corpus_dir, ISO))
    budgets = sorted({r.budget for r in plan.runs})
    assert budgets == [2e11, 5e11, 1e12] and len(plan.runs) == 9
    for r in plan.runs:
        fpt = counting.flops_per_token(r.spec.model).exact
        assert r.flops_exact == pytest.approx(fpt * r.tokens)
        assert abs(r.flops_exact / r.budget - 1) < 0.01, r.label  # D = C / exact FLOPs per token
        assert r.tokens == r.steps * 8 * 32
    for C in budgets:
        ns = sorted(r.n_total for r in plan.runs if r.budget == C)
        assert len(ns) == 3 and ns[0] < math.sqrt(C / 120) < ns[-1]  # the prior optimum is interior
    assert not any("D/N" in w or "fewer than 3" in w for w in plan.warnings)
    ids = [r.spec.run_id for r in plan.runs]
    assert len(set(ids)) == len(ids)
    text = format_plan(plan, [1.0] * len(plan.runs))
    assert all(r.spec.run_id in text for r in plan.runs) and "C_exact" in text


def test_run_id_changes_with_any_setting(tmp_path, corpus_dir):
    a = plan_sweep(_write(tmp_path, corpus_dir, ISO))
    b = plan_sweep(_write(tmp_path, corpus_dir, ISO.replace("[isoflop]", "[isoflop]").replace(
        "sizes_per_budget", "flops_convention = \"exact\"\nsizes_per_budget"), name="s.toml"))
    assert [r.spec.run_id for r in a.runs] == [r.spec.run_id for r in b.runs]  # same settings, same ids
    p = _write(tmp_path, corpus_dir, ISO, name="lr.toml")
    p.write_text(p.read_text().replace("batch_size = 8", "batch_size = 8\nlr = 1e-3"))
    assert not {r.spec.run_id for r in plan_sweep(p).runs} & {r.spec.run_id for r in a.runs}


def test_one_ratio_and_few_sizes_designs_warn(tmp_path, corpus_dir):
    # Every run at D = 20 N_active: N and D move together.
    one = _write(tmp_path, corpus_dir, 'design = "moe"|[moe]\nsizes = ["d32-l1", "d48-l2", "d64-l2"]\n'
                 'experts = [1]\ntokens_per_param = 20\n', name="one.toml")
    w = plan_sweep(one).warnings
    assert any("same D/N ratio" in x for x in w)
    two = _write(tmp_path, corpus_dir, ISO.replace("sizes_per_budget = 3", "sizes_per_budget = 2"), name="two.toml")
    w2 = plan_sweep(two).warnings
    assert sum("fewer than 3 sizes" in x for x in w2) == 3
    edge = _write(tmp_path, corpus_dir, ISO.replace("2e11, 5e11, 1e12", "1e9, 2e10"), name="edge.toml")
    assert any("outside the sizes" in x and "C=1e+09" in x for x in plan_sweep(edge).warnings)


def test_unknown_key_is_named_with_its_line(tmp_path, corpus_dir):
    p = _write(tmp_path, corpus_dir, ISO)
    lines = p.read_text().splitlines()
    at = lines.index("[isoflop]") + 2
    lines.insert(at, "bugdets = [1e12]")
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(SweepFileError, match=rf"line {at + 1}: unknown key 'bugdets' in \[isoflop\]"):
        read_sweep_file(p)
    p.write_text(p.read_text().replace("bugdets = [1e12]\n", "").replace("[model]", "[modle]"))
    with pytest.raises(SweepFileError, match=r"unknown table \[modle\]"):
        plan_sweep(p)
    from scalefit import cli

    assert cli.main(["sweep", "plan", str(p), "--no-calibrate"]) == 2


def test_shipped_sweep_files_plan(capsys):
    for f in sorted((ROOT / "experiments").glob("*.toml")):
        plan = plan_sweep(f)
        assert plan.runs, f
    quick = plan_sweep(ROOT / "experiments" / "quickstart.toml")
    budgets = {r.budget for r in quick.runs}
    assert len(budgets) >= 3 and all(sum(r.budget == C for r in quick.runs) >= 4 for C in budgets)


GRID = 'design = "grid"|[grid]\nsizes = ["d32-l1", "d32-l2"]\ntokens = [40960, 81920]\n'


def _table(root):
    df = runs.load(root)
    cols = ["run_id", "status", "N_total", "D", "C_exact", "C_6N", "steps", "final_train_loss", "final_eval_loss"]
    return df[cols].sort_values("run_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory, corpus_dir):
    return _write(tmp_path_factory.mktemp("grid"), corpus_dir, GRID, name="grid.toml")


@pytest.fixture(scope="module")
def unbroken(grid_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("unbroken")
    rep = run_sweep(grid_file, out, progress=False, log=lambda s: None)
    assert len(rep.trained) == 4
    return out


def test_killed_sweep_resumes_without_retraining(grid_file, unbroken, tmp_path):
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "scalefit.cli", "sweep", "run", str(grid_file), "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    plan = plan_sweep(grid_file)
    done_before, partial = {}, None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        done = {r.spec.run_id for r in plan.runs if (out / r.spec.run_id / "summary.json").exists()}
        started = [r.spec.run_id for r in plan.runs if r.spec.run_id not in done
                   and (out / r.spec.run_id / "ckpt" / "state.npz").exists()]
        if done and started:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            done_before = {rid: (out / rid / "summary.json").stat().st_mtime_ns for rid in done}
            partial = started[0]
            break
        time.sleep(0.02)
    assert partial is not None, "the sweep finished before it could be killed mid-run"
    assert runs.load(out).set_index("run_id").loc[partial, "status"] == "partial"
    from scalefit.training.checkpoint import checkpoint_step

    ckpt_step = checkpoint_step(out / partial)
    assert ckpt_step > 0
    rep = run_sweep(grid_file, out, progress=False, log=lambda s: None)
    assert set(rep.trained).isdisjoint(done_before)  # completed runs are skipped
    assert rep.found[partial] == "partial"
    for rid, mtime in done_before.items():
        assert (out / rid / "summary.json").stat().st_mtime_ns == mtime
    total = next(r.steps for r in plan.runs if r.spec.run_id == partial)
    assert json.loads((out / partial / "timing.json").read_text())["steps"] == total - ckpt_step
    steps = [json.loads(line)["step"] for line in (out / partial / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # every logged step exactly once
    assert _table(out).equals(_table(unbroken))
    rep2 = run_sweep(grid_file, out, progress=False, log=lambda s: None)
    assert rep2.trained == ()


def test_diverged_runs_are_retried_only_when_asked(grid_file, unbroken, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(unbroken, out)
    rid = sorted(p.name for p in out.iterdir() if (p / "summary.json").exists())[0]
    s = json.loads((out / rid / "summary.json").read_text())
    (out / rid / "summary.json").write_text(json.dumps({**s, "status": "diverged"}))
    assert run_sweep(grid_file, out, progress=False, log=lambda s: None).trained == ()
    rep = run_sweep(grid_file, out, progress=False, log=lambda s: None, retry_diverged=True)
    assert rep.trained == (rid,) and (out / f"{rid}.diverged-1").is_dir()
    assert _table(out).equals(_table(unbroken))


@pytest.mark.slow
def test_ray_executor_matches_local(grid_file, unbroken, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    rep = run_sweep(grid_file, out, executor="ray", progress=False, log=lambda s: None)
    assert len(rep.trained) == 4
    a, b = _table(out), _table(unbroken)
    assert a[["run_id", "status", "N_total", "D", "C_exact", "steps"]].equals(
        b[["run_id", "status", "N_total", "D", "C_exact", "steps"]])
    np.testing.assert_allclose(a.final_eval_loss, b.final_eval_loss, rtol=1e-5)
    np.testing.assert_allclose(a.final_train_loss, b.final_train_loss, rtol=1e-5)


LADDER = ('design = "wsd-ladder"|[wsd-ladder]\nsizes = ["d32-l1"]\ntokens = [20480, 40960, 81920]\n'
          'cooldown_frac = 0.25\nwarmup_steps = 5\n')


def test_wsd_ladder_branches_equal_independent_runs(tmp_path, corpus_dir):
    f = _write(tmp_path, corpus_dir, LADDER, name="ladder.toml")
    plan = plan_sweep(f)
    branches = [r for r in plan.runs if r.role == "branch"]
    trunks = [r for r in plan.runs if r.role == "trunk"]
    assert [r.steps for r in branches] == [80, 160, 320] and [r.steps for r in trunks] == [60, 120, 240]
    assert plan.total_flops() < 0.8 * sum(r.flops_exact for r in branches)  # trunk 240 + cooldowns 20 + 40 + 80 = 380 of 560 steps
    assert "saved" in format_plan(plan)
    out = tmp_path / "store"
    run_sweep(f, out, progress=False, log=lambda s: None)
    df = runs.load(out).set_index("run_id")
    assert (df.status == "completed").all() and len(df) == 6
    # The last branch, trained alone from scratch with the same config, gives the same run.
    last = branches[-1]
    alone = train_run(last.spec, tmp_path / "alone")
    got = df.loc[last.spec.run_id]
    assert got.D == alone.tokens == 81920 and got.steps == 320
    assert got.final_eval_loss == pytest.approx(alone.final_eval_loss, rel=1e-5)
    assert got.final_train_loss == pytest.approx(alone.final_train_loss, rel=1e-5)
    assert got.wall_time_own < got.wall_time


def test_moe_design_matches_active_parameters(tmp_path, corpus_dir):
    f = _write(tmp_path, corpus_dir, 'design = "moe"|[moe]\nsizes = ["d64-l2"]\nexperts = [1, 4, 8]\n'
               'top_k = [1, 2]\ntokens = 51200\n', name="moe.toml", model='family = "moe"')
    plan = plan_sweep(f)
    assert [r.label for r in plan.runs] == ["d64-l2/dense", "d64-l2/moe4-top1", "d64-l2/moe4-top2",
                                            "d64-l2/moe8-top1", "d64-l2/moe8-top2"]
    dense = plan.runs[0]
    for r in plan.runs[1:]:
        assert r.n_active == pytest.approx(dense.n_active, rel=0.1) and r.n_total > dense.n_total
        assert r.tokens == dense.tokens == 51200
    assert plan.runs[3].n_non_embedding > plan.runs[1].n_non_embedding  # more experts, same active
