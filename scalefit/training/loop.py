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
present) is not trained again.

Conventions: losses are nats per token (cross-entropy, without the MoE load-balancing term, which is
logged as aux_loss); ``tokens`` are training tokens; ``flops_6N`` = 6 * N * tokens with the N of
``counting.flops_per_token(cfg).six_n`` and ``flops_exact`` = exact forward+backward matmul FLOPs per
token * tokens, both cumulative training FLOPs (evaluation is not counted).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import math
import os
import platform
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import scalefit
from scalefit.store import folder
from scalefit.store.records import (FINISHED, LOCK_FILE, METRICS_FILE, SPEC_FILE, SUMMARY_FILE,
                                    FlopsPerTokenRecord, MetricRecord, MoeStats, ParamsRecord, RunStatus,
                                    RunSummary, SpecRecord, finite_or_none)
from scalefit.training import counting, model
from scalefit.training.checkpoint import load_checkpoint, save_checkpoint
from scalefit.training.config import ModelConfig, RunSpec, TrainConfig
from scalefit.training.corpus import Corpus, check_length, eval_batches, get_batch, load_corpus
from scalefit.training.optim import lr_table, make_optimizer, warmup_steps

LOSS_UNIT = "nats per token (cross-entropy, natural log)"  # spec.json's loss_unit


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


def init_state(model_cfg: ModelConfig, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """Fresh parameters from ``seed`` and the optimizer state for them, at step 0."""
    return _make_init(model_cfg, tx)(jax.random.PRNGKey(seed))


# Compiled functions are cached on (model config, optimizer object); make_optimizer(cfg) returns one
# object per set of graph hyperparameters, so every budget of a model in a process shares them.
_COMPILED_CACHE = 64


@functools.lru_cache(maxsize=_COMPILED_CACHE)
def _make_init(model_cfg: ModelConfig, tx: optax.GradientTransformation) -> Callable:
    """Jitted ``key -> TrainState`` (one program instead of a compiled op per optimizer-state leaf)."""

    def init(key: jax.Array) -> TrainState:
        params = model.init_params(model_cfg, key=key)
        return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))

    return jax.jit(init)


@functools.lru_cache(maxsize=_COMPILED_CACHE)
def make_train_step(model_cfg: ModelConfig, tx: optax.GradientTransformation) -> Callable:
    """Jitted ``(state, x, y, lr=None) -> (state, stats)``: one AdamW step on model.loss_fn's objective.

    ``lr`` (float32 []) is the rate of this step, a traced argument, so one compilation serves every
    run length and schedule; with ``lr=None`` the optimizer must carry its own schedule
    (``make_optimizer(cfg, total_steps)``). The same (config, optimizer) pair returns the same
    function, whose compilations are reused. stats: loss (objective incl. MoE aux term), ce,
    aux_loss, expert_load [L, E], dropped_frac and grad_norm (global L2 norm before clipping), all
    for the batch before the update.
    """

    def step(state: TrainState, x: jax.Array, y: jax.Array, lr: jax.Array | None = None):
        grad_fn = jax.value_and_grad(model.loss_fn, has_aux=True)
        (loss, aux), grads = grad_fn(state.params, x, y, model_cfg)
        fed = {} if lr is None else {"lr": lr}
        updates, opt_state = tx.update(grads, state.opt_state, state.params, **fed)
        params = optax.apply_updates(state.params, updates)
        stats = {"loss": loss, "ce": aux["ce"], "aux_loss": aux["aux_loss"],
                 "expert_load": aux["expert_load"], "dropped_frac": aux["dropped_frac"],
                 "grad_norm": optax.tree.norm(grads)}
        return TrainState(params, opt_state, state.step + 1), stats

    return jax.jit(step)


@functools.lru_cache(maxsize=_COMPILED_CACHE)
def make_eval_fn(model_cfg: ModelConfig) -> Callable:
    """Jitted ``(params, x, y) -> ce``: mean cross-entropy (nats/token) of one batch."""
    return jax.jit(lambda params, x, y: model.loss_fn(params, x, y, model_cfg)[1]["ce"])


def evaluate(eval_fn: Callable, params: dict, batches: list) -> float:
    """Mean cross-entropy over fixed validation batches (equal sizes, so the mean of means)."""
    return float(np.mean([float(eval_fn(params, x, y)) for x, y in batches]))


def _spec(model_cfg: ModelConfig, train_cfg: TrainConfig, corpus: Corpus, steps: int) -> SpecRecord:
    pc = counting.param_counts(model_cfg)
    fpt = counting.flops_per_token(model_cfg)
    return SpecRecord(
        model=model_cfg.to_dict(), train=train_cfg.to_dict(), corpus=corpus.info(),
        params=ParamsRecord(total=pc.total, embedding=pc.embedding, non_embedding=pc.non_embedding,
                            active=pc.active),
        flops_per_token=FlopsPerTokenRecord(six_n=fpt.six_n, exact=fpt.exact),
        steps=steps, tokens_per_step=counting.tokens_per_step(model_cfg, train_cfg),
        warmup_steps=warmup_steps(train_cfg, steps), loss_unit=LOSS_UNIT,
        scalefit_version=scalefit.__version__,
        python_version=platform.python_version(),  # the default corpus is this stdlib's source
        jax_version=jax.__version__, backend=jax.default_backend(),
        devices=tuple(str(d) for d in jax.devices()))


def _check_same_config(path: Path, key: str, old: Mapping, new: dict) -> None:
    if dict(old) != new:
        diff = sorted(k for k in new if old.get(k) != new[k])
        raise ValueError(f"{path} holds a run with a different {key} config (fields {diff}); "
                         "use a new output folder")


def _check_same_run(path: Path, old: SpecRecord, new: SpecRecord) -> None:
    """ValueError when a run folder already holds a different run."""
    _check_same_config(path, "model", old.model, dict(new.model))
    _check_same_config(path, "train", old.train, dict(new.train))
    if old.corpus.fingerprint != new.corpus.fingerprint:
        raise ValueError(f"{path} holds a run on a different corpus (fingerprint "
                         f"{old.corpus.fingerprint} vs {new.corpus.fingerprint})")


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, out_dir: str | os.PathLike, *,
          corpus: Corpus | str | os.PathLike | None = None, progress: bool = True,
          on_step: Callable[[MetricRecord], None] | None = None) -> RunSummary:
    """Train ``model_cfg`` to the budget of ``train_cfg``; write and return the run's summary.

    ``corpus``: None for the standard-library corpus, a path to text files, or a loaded Corpus.
    ``on_step`` is called with each metrics record after it is written; an exception it raises stops
    the run (which stays resumable from its last checkpoint). A loss that turns NaN/inf ends the run
    with status diverged and ``diverged_at_step``; it does not raise.
    """
    out = Path(out_dir)
    if (out / SUMMARY_FILE).exists():
        summary = folder.read_summary(out)
        if summary.status in FINISHED:
            old = folder.read_spec(out)
            _check_same_config(out / SPEC_FILE, "model", old.model, model_cfg.to_dict())
            _check_same_config(out / SPEC_FILE, "train", old.train, train_cfg.to_dict())
            # A finished run on another corpus is not this run: refuse rather than hand it back.
            fp = (corpus if isinstance(corpus, Corpus) else load_corpus(corpus)).fingerprint
            if old.corpus.fingerprint != fp:
                raise ValueError(f"{out / SPEC_FILE} holds a finished run on a different corpus "
                                 f"(fingerprint {old.corpus.fingerprint} vs {fp})")
            return summary
    steps = counting.total_steps(model_cfg, train_cfg)  # budget errors before the corpus is read
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus)
    check_length(corpus.train, model_cfg.seq_len, f"corpus {corpus.source} (train split)")
    check_length(corpus.val, model_cfg.seq_len, f"corpus {corpus.source} (validation split)")
    spec = _spec(model_cfg, train_cfg, corpus, steps)
    if (out / SPEC_FILE).exists():
        _check_same_run(out / SPEC_FILE, folder.read_spec(out), spec)
    else:
        folder.write_spec(out, spec)

    with _run_lock(out):
        tx = make_optimizer(train_cfg)  # the rate is fed per step from lr_table
        state = init_state(model_cfg, tx, train_cfg.seed)
        restored = load_checkpoint(out, state)
        start, wall0 = 0, 0.0
        if restored is not None:
            state, extra = restored
            state = jax.tree.map(jnp.asarray, state)
            start, wall0 = int(state.step), float(extra.get("wall_time", 0.0))
        records = folder.truncate_metrics(out / METRICS_FILE, start)
        run = _RunContext(model_cfg, train_cfg, out, corpus, spec, tx, progress, on_step)
        return _loop(run, state, _Resume(start, wall0, records[-1] if records else None))


@contextlib.contextmanager
def _run_lock(out: Path):
    """Exclusive lock on the run folder: two processes appending to one metrics log would corrupt it
    (e.g. a sweep retrying a run whose first worker is still alive). The OS drops it on exit or kill."""
    with open(out / LOCK_FILE, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{out} is being trained by another process") from None
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
    step_fn, eval_fn = make_train_step(run.model, run.tx), make_eval_fn(run.model)
    t0 = time.perf_counter()
    start, wall0, last = resume
    status, diverged_at = RunStatus.COMPLETED, None

    bar = tqdm(total=steps * tps, initial=start * tps, unit="tok", unit_scale=True,
               disable=not run.progress, dynamic_ncols=True)
    with folder.MetricsLog(run.out) as log:
        batch = partial(get_batch, run.corpus.train, batch_size=cfg.batch_size, seq_len=run.model.seq_len,
                        seed=cfg.seed)
        nxt = batch(start)
        for s in range(start, steps):
            state, stats = step_fn(state, *nxt, lrs[s])
            done = s + 1
            if done < steps:
                nxt = batch(done)  # built on the host while the step runs (dispatch is async)
            # One host sync per step, so divergence is caught on the step it happens.
            loss, objective = (float(v) for v in jax.device_get((stats["ce"], stats["loss"])))
            finite = math.isfinite(loss) and math.isfinite(objective)
            if not finite or done % cfg.log_every == 0 or done in evals:
                eval_loss = evaluate(eval_fn, state.params, val) if finite and done in evals else None
                last = _record(done, spec, stats, lrs[s], eval_loss, run.model.is_moe,
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
                save_checkpoint(run.out, state, {"wall_time": wall0 + time.perf_counter() - t0})
    bar.close()
    summary = _summary(spec, status, diverged_at, last, wall0 + time.perf_counter() - t0)
    folder.write_summary(run.out, summary)
    return summary


def _record(step: int, spec: SpecRecord, stats: dict, lr, eval_loss: float | None, is_moe: bool,
            wall: float) -> MetricRecord:
    """The metrics record of the state after ``step`` updates."""
    tokens = step * spec.tokens_per_step
    moe = None
    if is_moe:
        load = np.asarray(stats["expert_load"]).round(6).tolist()  # [L][E]
        moe = MoeStats(aux_loss=finite_or_none(float(stats["aux_loss"])), expert_load=tuple(map(tuple, load)),
                       dropped_frac=finite_or_none(float(stats["dropped_frac"])))
    return MetricRecord(step=step, tokens=tokens, flops_6N=spec.flops_per_token.six_n * tokens,
                        flops_exact=spec.flops_per_token.exact * tokens,
                        train_loss=finite_or_none(float(stats["ce"])), eval_loss=eval_loss, lr=float(lr),
                        grad_norm=finite_or_none(float(stats["grad_norm"])), wall_time=round(wall, 4), moe=moe)


def _summary(spec: SpecRecord, status: RunStatus, diverged_at: int | None, last: MetricRecord | None,
             wall: float) -> RunSummary:
    """summary.json: the run's outcome, from its last metrics record."""
    return RunSummary(
        status=status, diverged_at_step=diverged_at, steps=last.step if last else 0, planned_steps=spec.steps,
        tokens=last.tokens if last else 0, flops_6N=last.flops_6N if last else 0.0,
        flops_exact=last.flops_exact if last else 0.0, final_train_loss=last.train_loss if last else None,
        final_eval_loss=last.eval_loss if last else None, params=spec.params,
        corpus_fingerprint=spec.corpus.fingerprint, wall_time=round(wall, 4))
