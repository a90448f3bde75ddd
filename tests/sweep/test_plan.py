"""Planning stays light (no JAX) and keeps its run ids: the quickstart plan names the shipped runs."""

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from scalefit.sweep.plan import plan_sweep, run_id
from scalefit.training.corpus import load_corpus

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "experiments" / "quickstart.toml"


def test_planning_does_not_import_jax():
    # Planning is budget arithmetic on configs; `scalefit sweep plan --no-calibrate` must not pay for JAX.
    code = ("import sys; from scalefit.sweep.plan import plan_sweep; plan = plan_sweep(sys.argv[1]); "
            "assert plan.runs; print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(QUICKSTART)], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.stdout.strip() == "False", out.stderr


def test_quickstart_run_ids_are_the_shipped_runs():
    with (ROOT / "tests" / "data" / "quickstart" / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    shipped = {r["run_id"] for r in rows}
    plan = plan_sweep(QUICKSTART)
    # The id hashes the corpus fingerprint, and the shipped runs were trained on Python 3.11.7's stdlib:
    # with that fingerprint, every planned config must hash to its shipped id on any machine.
    (fingerprint,) = {r["corpus_fingerprint"] for r in rows}
    assert {run_id(r.spec.model, r.spec.train, fingerprint, r.parent, r.preset) for r in plan.runs} == shipped
    if load_corpus(None).fingerprint == fingerprint:  # this machine's stdlib is the shipped one
        assert {r.spec.run_id for r in plan.runs} == shipped


def test_run_id_hashes_the_spec_form_of_the_configs():
    plan = plan_sweep(ROOT / "experiments" / "wsd_ladder.toml")  # branches have parents
    fp = load_corpus(plan.corpus).fingerprint
    for r in plan.runs:
        d = r.spec.to_dict()  # the configs as spec.json records them
        blob = json.dumps({"model": d["model"], "train": d["train"], "corpus": fp, "parent": r.parent}, sort_keys=True)
        assert r.spec.run_id == f"{r.preset}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
    assert any(r.parent for r in plan.runs)
