"""Training on several devices: 4 CPU devices (XLA's forced host device count, set before JAX starts, so in
a subprocess) give the run of 1 device, replicated or FSDP-sharded, dense and MoE; a checkpoint written on
4 devices resumes on 1 and on 2; two processes joined by jax.distributed train the run of one."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scalefit.training import corpus as data
from scalefit.training import loop
from scalefit.training.config import ComputeConfig, ModelConfig, TrainConfig
from scalefit.training.parallel import placement

ROOT = Path(__file__).resolve().parents[2]
FILES = ["textwrap.py", "string.py", "heapq.py", "bisect.py", "fnmatch.py", "glob.py", "difflib.py", "shlex.py"]

_COMMON = """
import json, sys
from pathlib import Path
import numpy as np
import jax
from scalefit.store.folder import read_metrics
from scalefit.training import corpus as data, loop, model
from scalefit.training.config import ComputeConfig, ModelConfig, TrainConfig

TINY = ModelConfig(seq_len=32, d_model=32, n_layer=2, n_head=2, n_kv_head=2, d_ff=64)
MODELS = {"dense": TINY, "moe": TINY.with_overrides(n_expert=4, top_k=2)}
# Adam divides by sqrt(v): a gradient element that cancels to near zero carries a large relative rounding
# error (the devices sum the batch in another order), which a floor of 1e-8 lets through as an update of
# order lr (one weight of 20k moved 2.7e-5 in 20 steps); a floor of 1e-6 keeps the run's arithmetic to
# rounding (3.4e-6 at most).
TCFG = TrainConfig(batch_size=8, lr=3e-3, eps=1e-6, tokens=20 * 8 * 32, log_every=1, checkpoint_every=10,
                   n_evals=3, eval_batches=2)
corpus = data.load_corpus(sys.argv[1], val_fraction=0.1, cache_dir=sys.argv[2])
out = Path(sys.argv[3])


def result(run_dir, m=TINY):
    recs = read_metrics(run_dir / "metrics.jsonl")
    z = np.load(run_dir / "ckpt" / "state.npz")
    n_params = len(jax.tree.leaves(jax.eval_shape(lambda: model.init_params(m, key=jax.random.PRNGKey(0)))))
    leaves = [z[f"leaf_{i:05d}"].astype(np.float64).ravel().tolist() for i in range(n_params)]  # params first
    return {"train": [r.train_loss for r in recs], "eval": [r.eval_loss for r in recs if r.eval_loss is not None],
            "grad_norm": [r.grad_norm for r in recs], "params": leaves, "steps": [r.step for r in recs]}


class Stop(Exception):
    pass


def stop_at(step):
    def hook(rec):
        if rec.step == step:
            raise Stop
    return hook
"""

_DEVICES = _COMMON + """
assert len(jax.devices()) == 4, jax.devices()
res = {}
for name, m in MODELS.items():
    for label, compute in {"1": ComputeConfig(devices=1), "4": ComputeConfig(devices=4),
                           "4-fsdp": ComputeConfig(devices=4, params="fsdp")}.items():
        d = out / f"{name}-{label}"
        loop.train(m, TCFG, d, corpus=corpus, progress=False, compute=compute)
        res[f"{name}/{label}"] = result(d, m)
# The layouts are real: the batch is split four ways, FSDP leaves are split, replicated ones whole.
place = loop.placement(ComputeConfig(devices=4, params="fsdp"), TINY)
tx = loop.make_optimizer(TCFG)
state = loop.init_state(TINY, tx, 0, place)
res["layout"] = {"embed": [list(s.data.shape) for s in state.params["embed"].addressable_shards],
                 "mu_wq": [list(s.data.shape) for s in state.opt_state[1].mu["layers"][0]["wq"].addressable_shards],
                 "batch": [list(s.data.shape) for s in place.put_batch(np.zeros((8, 32), np.int32)).addressable_shards]}
# A checkpoint written on 4 devices (FSDP) resumes on 1 and on 2.
for label, compute in {"1": ComputeConfig(devices=1), "2": ComputeConfig(devices=2, params="fsdp")}.items():
    d = out / f"resume-{label}"
    try:
        loop.train(TINY, TCFG, d, corpus=corpus, progress=False, on_step=stop_at(13),
                   compute=ComputeConfig(devices=4, params="fsdp"))
    except Stop:
        pass
    res[f"resume-{label}/partial"] = result(d)["steps"][-1]
    loop.train(TINY, TCFG, d, corpus=corpus, progress=False, compute=compute)
    res[f"resume-{label}"] = result(d)
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for name in FILES:
        shutil.copy(data.stdlib_root() / name, folder / name)
    return folder


def _env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _close(a, b, what, tol=1e-5):
    assert len(a["train"]) == len(b["train"]) == 20, what
    assert a["steps"] == b["steps"], what
    np.testing.assert_allclose(a["train"], b["train"], atol=tol, rtol=0, err_msg=what)
    np.testing.assert_allclose(a["eval"], b["eval"], atol=tol, rtol=0, err_msg=what)
    # The norm is of the mean gradient: a layout that summed the devices' gradients would show it 4x.
    np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=tol, err_msg=what)
    assert len(a["params"]) == len(b["params"]) > 10, what
    for x, y in zip(a["params"], b["params"]):
        np.testing.assert_allclose(x, y, atol=tol, rtol=0, err_msg=what)


@pytest.fixture(scope="module")
def four_devices(corpus_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("devices")
    proc = subprocess.run([sys.executable, "-c", _DEVICES, str(corpus_dir), str(tmp / "cache"), str(tmp / "runs")],
                          capture_output=True, text=True, timeout=900,
                          env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dense", "moe"])
@pytest.mark.parametrize("layout", ["4", "4-fsdp"])
def test_four_devices_train_the_one_device_run(four_devices, name, layout):
    _close(four_devices[f"{name}/{layout}"], four_devices[f"{name}/1"], f"{name} on {layout} devices")


@pytest.mark.slow
def test_the_layouts_split_what_they_say(four_devices):
    lay = four_devices["layout"]
    assert lay["batch"] == [[2, 32]] * 4  # 8 sequences, 2 per device
    assert lay["embed"] == [[64, 32]] * 4  # [256, 32] sharded on its largest axis
    assert lay["mu_wq"] == [[8, 32]] * 4  # Adam's moments sharded like their parameter


@pytest.mark.slow
@pytest.mark.parametrize("devices", ["1", "2"])
def test_checkpoint_written_on_four_devices_resumes_on_fewer(four_devices, devices):
    assert four_devices[f"resume-{devices}/partial"] == 13  # stopped after step 13, checkpoint at 10
    _close(four_devices[f"resume-{devices}"], four_devices["dense/1"], f"4 devices, then {devices}")


def test_layout_errors_are_clear(corpus_dir, tmp_path):
    cfg = ModelConfig(seq_len=32, d_model=32, n_layer=1, n_head=2, n_kv_head=2, d_ff=64)
    with pytest.raises(ValueError, match=r"ComputeConfig.devices = 2, but JAX sees 1 device"):
        placement(ComputeConfig(devices=2), cfg)
    with pytest.raises(ValueError, match="params must be one of"):
        ComputeConfig(params="zero")
    with pytest.raises(ValueError, match="devices must be a positive integer"):
        ComputeConfig(devices=0)
    with pytest.raises(ValueError, match=r"attention kernel 'cudnn' .* runs on \['cuda', 'gpu'\]"):
        placement(ComputeConfig(attention="cudnn"), cfg.with_overrides(compute_dtype="bfloat16"))
    place = placement(ComputeConfig(), cfg)
    assert place.size == 1 and not place.sharded and place.attention == "chunked"  # the CPU's kernel
    assert placement(ComputeConfig(params="fsdp"), cfg) == place  # one device: nothing to shard


_PROCESS = _COMMON + """
import os
pid, port = int(sys.argv[4]), int(sys.argv[5])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
assert len(jax.devices()) == 2 and len(jax.local_devices()) == 1
loop.train(TINY, TCFG, out / "two", corpus=corpus, progress=False, compute=ComputeConfig(params=sys.argv[6]))
jax.distributed.shutdown()
if pid == 0:
    print(json.dumps(result(out / "two")))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_the_one_device_run(four_devices, corpus_dir, tmp_path, params="fsdp"):
    # JAX's CPU collectives (gloo) join two local processes of one device each: one mesh of 2 devices.
    # FSDP: the batch and the state split across the processes, the checkpoint gathered from both.
    port = _free_port()
    args = [str(corpus_dir), str(tmp_path / "cache"), str(tmp_path / "runs"), "", str(port), params]
    procs = []
    for pid in (0, 1):
        args[3] = str(pid)
        procs.append(subprocess.Popen([sys.executable, "-c", _PROCESS, *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=_env()))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    got = json.loads(outs[0][0].strip().splitlines()[-1])
    _close(got, four_devices["dense/1"], f"two processes, {params}")
    # One writer: every step logged once (checked above), and the second process returned no result of its own.
    assert not any(line.startswith("{") for line in outs[1][0].splitlines())
