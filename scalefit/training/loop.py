"""Train one model to a token or FLOP budget, writing a resumable run folder.

Run folder ``<out>/`` (the format of scalefit.store.records; written through scalefit.store.folder):
    spec.json      SpecRecord: model and train configs, corpus fingerprint, parameter counts, FLOPs per
                   token (6N and exact), total steps, versions and backend. Written first.
    metrics.jsonl  one MetricRecord per logged step, appended and flushed line by line.
    ckpt/state.npz params + optimizer state + step (scalefit.training.checkpoint), every
                   ``checkpoint_every`` steps and at the end.
    summary.json   RunSummary, written last: status completed or diverged, final losses, steps, FLOPs.

Resuming: calling :func:`train` again on the same folder with the same configs continues from the
checkpoint. metrics.jsonl is cut back to the checkpoint's step first (including a half-written last
line from a kill), so the finished log has every logged step exactly once, and because batches are a
pure function of (seed, step) the resumed run is the unbroken run. A finished folder (summary.json
present) is not trained again; if it lost its spec.json, a sweep writes it again from the configs
when the summary agrees with them (`restore_spec`). Temporary files that a kill left from a cut write
are removed, and a checkpoint that does not read (cut or damaged outside the trainer; its writes are
atomic) is moved to ``ckpt/state.npz.damaged-<n>`` with a warning naming it, and the run starts again
from step 0.

Conventions: losses are nats per token (cross-entropy, without the MoE load-balancing term, which is
logged as aux_loss); ``tokens`` are training tokens; ``flops_6N`` = 6 * N * tokens with the N of
``counting.flops_per_token(cfg).six_n`` and ``flops_exact`` = exact forward+backward matmul FLOPs per
token * tokens, both cumulative training FLOPs (evaluation is not counted).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from scalefit.store import folder
from scalefit.store.records import (FINISHED, LOCK_FILE, METRICS_FILE, SPEC_FILE, SUMMARY_FILE, MetricRecord,
                                    RunStatus, RunSummary, SpecRecord)
from scalefit.training import counting, model, runfolder
from scalefit.training.runfolder import LOSS_UNIT, restore_spec  # noqa: F401  (importable from here too)
from scalefit.training.checkpoint import load_checkpoint, save_checkpoint, set_aside_if_damaged
from scalefit.training.host import keep_freed_memory
from scalefit.training.config import ComputeConfig, ModelConfig, RunSpec, TrainConfig
from scalefit.training.corpus import Corpus, check_length, eval_batches, get_batch, load_corpus
from scalefit.training.optim import lr_table, make_optimizer
from scalefit.training.parallel import Placement, constrain, is_writer, placement, single_device, to_host

log = logging.getLogger(__name__)  # unconfigured, a warning reaches stderr as its bare message


class TrainState(NamedTuple):
    """Everything that changes during training; a pytree, saved whole in checkpoints."""

    params: dict  # model parameters (see model.init_params), f32 leaves
    opt_state: Any  # optax state of the AdamW chain: moments shaped like params, step counters []
    step: jax.Array  # int32 [] optimizer steps taken so far


def eval_schedule(steps: int, n_evals: int) -> frozenset[int]:
    """Steps after which validation runs: ``n_evals`` log-spaced in [1, steps], plus the last step.

    Log spacing puts evaluations where the loss curve bends (early) without crowding the long tail.
    """
    pts = np.unique(np.round(np.geomspace(1, steps, n_evals)).astype(int)) if steps > 1 else [1]
    return frozenset(int(s) for s in pts) | {steps}


def init_state(model_cfg: ModelConfig, tx: optax.GradientTransformation, seed: int,
               place: Placement | None = None) -> TrainState:
    """Fresh parameters from ``seed`` and the optimizer state for them, at step 0, laid out as ``place``
    says (one device when None). The values do not depend on the layout (JAX's partitionable threefry)."""
    return _make_init(model_cfg, tx, place or single_device(model_cfg))(jax.random.PRNGKey(seed))


# Seconds a run folder's lock is waited for before it counts as another process's: a worker killed with its
# sweep lets go only once it is gone, which takes as long as the write it was in (an fsync) to finish.
LOCK_GRACE_S = 10.0
# Compiled functions are cached on (model config, optimizer object, placement); make_optimizer(cfg)
# returns one object per set of graph hyperparameters, so every budget of a model in a process shares them.
_COMPILED_CACHE = 64


def _init_fn(model_cfg: ModelConfig, tx: optax.GradientTransformation) -> Callable:
    def init(key: jax.Array) -> TrainState:
        params = model.init_params(model_cfg, key=key)
        return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))

    return init


def state_shardings(model_cfg: ModelConfig, tx: optax.GradientTransformation, place: Placement):
    """The TrainState pytree of shardings of ``place`` (traced abstractly: nothing is computed)."""
    return place.shardings(jax.eval_shape(_init_fn(model_cfg, tx), jax.random.PRNGKey(0)))


@functools.lru_cache(maxsize=_COMPILED_CACHE)
def _make_init(model_cfg: ModelConfig, tx: optax.GradientTransformation, place: Placement) -> Callable:
    """``key -> TrainState`` in its layout. The parameters come from `model.init_params`' per-shape samplers
    (compiled once for all configs, not once per config), the optimizer state from one jitted program
    (instead of a compiled op per leaf)."""
    shard = state_shardings(model_cfg, tx, place)
    opt_init = jax.jit(tx.init, out_shardings=shard.opt_state)

    def init(key: jax.Array) -> TrainState:
        params = jax.device_put(model.init_params(model_cfg, key=key), shard.params)
        return TrainState(params, opt_init(params), jax.device_put(jnp.zeros((), jnp.int32), shard.step))

    return init


def make_train_step(model_cfg: ModelConfig, tx: optax.GradientTransformation,
                    place: Placement | None = None) -> Callable:
    """Jitted ``(state, x, y, lr=None) -> (state, stats)``: one AdamW step on model.loss_fn's objective.

    ``place`` (one device when None) lays the step out: the batch is split over its data axis and the
    state keeps its layout (replicated, or FSDP: parameters gathered for the loss, gradients
    reduce-scattered back to the shards the update runs on); the attention is its kernel.

    ``lr`` (float32 []) is the rate of this step, a traced argument, so one compilation serves every
    run length and schedule; with ``lr=None`` the optimizer must carry its own schedule
    (``make_optimizer(cfg, total_steps)``). The same (config, optimizer) pair returns the same
    function, whose compilations are reused. stats: loss (objective incl. MoE aux term), ce,
    aux_loss, expert_load [L, E], dropped_frac and grad_norm (global L2 norm before clipping), all
    for the batch before the update.
    """

    return _make_train_step(model_cfg, tx, place or single_device(model_cfg))


@functools.lru_cache(maxsize=_COMPILED_CACHE)
def _make_train_step(model_cfg: ModelConfig, tx: optax.GradientTransformation, place: Placement) -> Callable:
    keep_freed_memory()  # the step's temporaries come back from the heap, not from freshly faulted pages
    shard = state_shardings(model_cfg, tx, place)
    loss_fn = functools.partial(model.loss_fn, cfg=model_cfg, attention_kernel=place.attention)

    def step(state: TrainState, x: jax.Array, y: jax.Array, lr: jax.Array | None = None):
        x, y = constrain(x, place.batch), constrain(y, place.batch)
        params = constrain(state.params, place.replicated) if place.sharded else state.params
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        if place.sharded:  # reduce-scatter; replicated gradients need no hint (which would change fusions)
            grads = constrain(grads, shard.params)
        fed = {} if lr is None else {"lr": lr}
        updates, opt_state = tx.update(grads, state.opt_state, state.params, **fed)
        params = optax.apply_updates(state.params, updates)
        stats = {"loss": loss, "ce": aux["ce"], "aux_loss": aux["aux_loss"],
                 "expert_load": aux["expert_load"], "dropped_frac": aux["dropped_frac"],
                 "grad_norm": optax.tree.norm(grads)}
        return TrainState(params, opt_state, state.step + 1), stats

    return jax.jit(step, out_shardings=(shard, place.replicated))


def make_eval_fn(model_cfg: ModelConfig, place: Placement | None = None) -> Callable:
    """Jitted ``(params, x, y) -> ce``: mean cross-entropy (nats/token) of one batch, laid out as ``place``."""
    return _make_eval_fn(model_cfg, place or single_device(model_cfg))


@functools.lru_cache(maxsize=_COMPILED_CACHE)
def _make_eval_fn(model_cfg: ModelConfig, place: Placement) -> Callable:

    def ce(params, x, y):
        x, y = constrain(x, place.batch), constrain(y, place.batch)
        params = constrain(params, place.replicated) if place.sharded else params
        return model.loss_fn(params, x, y, model_cfg, attention_kernel=place.attention)[1]["ce"]

    return jax.jit(ce, out_shardings=place.replicated)


def evaluate(eval_fn: Callable, params: dict, batches: list) -> float:
    """Mean cross-entropy over fixed validation batches (equal sizes, so the mean of means)."""
    return float(np.mean([float(to_host(eval_fn(params, x, y))) for x, y in batches]))


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, out_dir: str | os.PathLike, *,
          corpus: Corpus | str | os.PathLike | None = None, progress: bool = True,
          on_step: Callable[[MetricRecord], None] | None = None,
          compute: ComputeConfig | None = None) -> RunSummary:
    """Train ``model_cfg`` to the budget of ``train_cfg``; write and return the run's summary.

    ``corpus``: None for the standard-library corpus, a path to text files, or a loaded Corpus.
    ``on_step`` is called with each metrics record after it is written; an exception it raises stops
    the run (which stays resumable from its last checkpoint). A loss that turns NaN/inf ends the run
    with status diverged and ``diverged_at_step``; it does not raise. ``compute``: the devices, state
    layout and attention kernel (default: every device, replicated, the fastest kernel); it is not part
    of the run, so a run resumes under another one. Under `jax.distributed` every process calls `train`
    on the same (shared) folder; process 0 writes it.
    """
    out = Path(out_dir)
    if (out / SUMMARY_FILE).exists():
        summary = folder.read_summary(out)
        if summary.status in FINISHED:
            if not (out / SPEC_FILE).exists():
                raise FileNotFoundError(f"{out / SPEC_FILE} is missing, so the finished run in {out} cannot be "
                                        "checked against these configs (a sweep writes it again: scalefit sweep run)")
            corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
            old = folder.read_spec(out)
            runfolder.check_same_config(out / SPEC_FILE, "model", old.model, model_cfg.to_dict())
            runfolder.check_same_config(out / SPEC_FILE, "train", old.train, train_cfg.to_dict())
            # A finished run on another corpus is not this run: refuse rather than hand it back.
            fp = corpus.fingerprint
            if old.corpus.fingerprint != fp:
                raise ValueError(f"{out / SPEC_FILE} holds a finished run on a different corpus "
                                 f"(fingerprint {old.corpus.fingerprint} vs {fp})")
            return summary
    steps = counting.total_steps(model_cfg, train_cfg)  # budget errors before the corpus is read
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus)
    check_length(corpus.train, model_cfg.seq_len, f"corpus {corpus.source} (train split)")
    check_length(corpus.val, model_cfg.seq_len, f"corpus {corpus.source} (validation split)")
    place = placement(compute or ComputeConfig(), model_cfg)
    place.check_batch(train_cfg.batch_size)
    spec = runfolder.spec_record(model_cfg, train_cfg, corpus, steps, place)
    writer = is_writer()
    if (out / SPEC_FILE).exists():
        runfolder.check_same_run(out / SPEC_FILE, folder.read_spec(out), spec)
    elif writer:
        folder.write_spec(out, spec)

    with _run_lock(out) if writer else contextlib.nullcontext():
        if writer:
            for f in folder.remove_temp_files(out):  # writes a kill cut: the files they replace are intact
                log.info(f"removed {f}, left by an interrupted write")
            set_aside_if_damaged(out)  # a checkpoint cut or damaged outside: start again from step 0
        tx = make_optimizer(train_cfg)  # the rate is fed per step from lr_table
        state = init_state(model_cfg, tx, train_cfg.seed, place)
        restored = load_checkpoint(out, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state))
        start, wall0 = 0, 0.0
        if restored is not None:  # whole host arrays: laid out anew, whatever devices wrote them
            host, extra = restored
            state = place.put(host, state_shardings(model_cfg, tx, place))
            start, wall0 = int(host.step), float(extra.get("wall_time", 0.0))
        records = folder.truncate_metrics(out / METRICS_FILE, start) if writer else []
        run = _RunContext(model_cfg, train_cfg, out, corpus, spec, tx, progress and writer, on_step, place, writer)
        return _loop(run, state, _Resume(start, wall0, records[-1] if records else None))


@contextlib.contextmanager
def _run_lock(out: Path):
    """Exclusive lock on the run folder: two processes appending to one metrics log would corrupt it
    (e.g. a sweep retrying a run whose first worker is still alive). The OS drops it on exit or kill."""
    with open(out / LOCK_FILE, "w") as f:
        deadline = time.monotonic() + LOCK_GRACE_S
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ValueError(f"{out} is being trained by another process (its lock held for "
                                     f"{LOCK_GRACE_S:g} s)") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def train_run(spec: RunSpec, root: str | os.PathLike, *, progress: bool = False,
              on_step: Callable[[MetricRecord], None] | None = None) -> RunSummary:
    """:func:`train` for a RunSpec, in the folder ``<root>/<spec.run_id>``."""
    return train(spec.model, spec.train, Path(root) / spec.run_id, corpus=spec.corpus,
                 progress=progress, on_step=on_step)


@dataclass(frozen=True)
class _RunContext:
    """What one call of `train` trains: fixed for the whole loop."""

    model: ModelConfig  # the model shape
    train: TrainConfig  # optimizer, schedule, budget, logging and checkpoint intervals
    out: Path  # the run folder
    corpus: Corpus  # the loaded data
    spec: SpecRecord  # spec.json: steps, tokens per step, FLOPs per token, parameter counts
    tx: optax.GradientTransformation  # the AdamW chain; its rate is fed per step
    progress: bool  # show a tqdm bar of tokens
    on_step: Callable[[MetricRecord], None] | None  # called with each record after it is written
    place: Placement  # the devices, the state's layout and the attention kernel
    writer: bool  # this process writes the run folder (process 0)


class _Resume(NamedTuple):
    """Where the loop starts: a fresh run, or the run's checkpoint."""

    step: int  # optimizer steps already taken (0 for a fresh run)
    wall: float  # seconds of training before this call
    last: MetricRecord | None  # the log's last record up to ``step`` (None when nothing was logged)


def _loop(run: _RunContext, state: TrainState, resume: _Resume) -> RunSummary:
    cfg, spec = run.train, run.spec
    steps, tps = spec.steps, spec.tokens_per_step
    lrs = lr_table(cfg, steps)  # float32 [steps], fed to the step: no compile per run length
    evals = eval_schedule(steps, cfg.n_evals)
    val = eval_batches(run.corpus.val, cfg.eval_batches, cfg.batch_size, run.model.seq_len)
    step_fn, eval_fn = make_train_step(run.model, run.tx, run.place), make_eval_fn(run.model, run.place)
    val = [tuple(run.place.put_batch(a) for a in xy) for xy in val]
    t0 = time.perf_counter()
    start, wall0, last = resume
    status, diverged_at = RunStatus.COMPLETED, None

    bar = tqdm(total=steps * tps, initial=start * tps, unit="tok", unit_scale=True,
               disable=not run.progress, dynamic_ncols=True)
    with folder.MetricsLog(run.out) if run.writer else _NoLog() as log:
        def batch(s: int) -> tuple[jax.Array, jax.Array]:
            xy = get_batch(run.corpus.train, s, batch_size=cfg.batch_size, seq_len=run.model.seq_len, seed=cfg.seed)
            return run.place.put_batch(xy[0]), run.place.put_batch(xy[1])

        nxt = batch(start)
        for s in range(start, steps):
            state, stats = step_fn(state, *nxt, lrs[s])
            done = s + 1
            if done < steps:
                nxt = batch(done)  # built on the host while the step runs (dispatch is async)
            # One host sync per step, so divergence is caught on the step it happens.
            loss, objective = (float(v) for v in to_host((stats["ce"], stats["loss"])))
            finite = math.isfinite(loss) and math.isfinite(objective)
            if not finite or done % cfg.log_every == 0 or done in evals:
                eval_loss = evaluate(eval_fn, state.params, val) if finite and done in evals else None
                last = runfolder.metric_record(done, spec, to_host(stats), lrs[s], eval_loss, run.model.is_moe,
                               wall0 + time.perf_counter() - t0)
                log.append(last)
                shown = {"loss": f"{loss:.3f}"}
                if eval_loss is not None:
                    shown["eval"] = f"{eval_loss:.3f}"
                bar.set_postfix(shown)
                if run.on_step is not None:
                    run.on_step(last)
            bar.update(tps)
            if not finite:
                status, diverged_at = RunStatus.DIVERGED, done
                break
            if done % cfg.checkpoint_every == 0 or done == steps:
                host = to_host(state)  # every process takes part in the gather
                if run.writer:
                    save_checkpoint(run.out, host, {"wall_time": wall0 + time.perf_counter() - t0})
    bar.close()
    summary = runfolder.summary_record(spec, status, diverged_at, last, wall0 + time.perf_counter() - t0)
    if run.writer:
        folder.write_summary(run.out, summary)
    return summary


class _NoLog:
    """The metrics log of a process that does not write the run folder."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def append(self, record: MetricRecord) -> None:
        """Drop it: process 0 writes the log."""
