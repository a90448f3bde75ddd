"""Train one model to a token or FLOP budget, writing a resumable run directory.

Run directory ``<out>/``:
    spec.json      what was run: model and train configs, corpus fingerprint, parameter counts, FLOPs
                   per token (6N and exact), total steps, jax version and backend. Written first.
    metrics.jsonl  one JSON object per logged step, appended and flushed line by line.
    ckpt/state.npz params + optimizer state + step, every ``checkpoint_every`` steps and at the end.
    summary.json   written last: status "completed" or "diverged", final losses, steps, tokens, FLOPs.

Resuming: calling :func:`train` again on the same directory with the same configs continues from the
checkpoint. metrics.jsonl is cut back to the checkpoint's step first (including a half-written last
line from a kill), so the finished log has every logged step exactly once, and because batches are a
pure function of (seed, step) the resumed run is the unbroken run. A finished directory (summary.json
present) is not trained again.

Conventions: losses are nats per token (cross-entropy, without the MoE load-balancing term, which is
logged as aux_loss); ``tokens`` are training tokens; ``flops_6N`` = 6 * N * tokens with the N of
``counting.flops_per_token(cfg).six_n`` and ``flops_exact`` = exact forward+backward matmul FLOPs per
token * tokens, both cumulative training FLOPs (evaluation is not counted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import math
import os
import platform
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import scalefit
from scalefit.conventions import CKind
from scalefit.training import counting
from scalefit.training import model
from scalefit.training.checkpoint import (load_checkpoint, read_json, save_checkpoint, truncate_metrics,
                                 write_json)
from scalefit.training.config import ModelConfig, RunSpec, TrainConfig
from scalefit.training.corpus import Corpus, check_length, eval_batches, get_batch, load_corpus
from scalefit.training.optim import lr_table, make_optimizer, warmup_steps

FINISHED = ("completed", "diverged")


class TrainState(NamedTuple):
    """Everything that changes during training; a pytree, saved whole in checkpoints."""

    params: dict  # model parameters (see model.init_params), f32 leaves
    opt_state: Any  # optax state of the AdamW chain: moments shaped like params, step counters []
    step: jax.Array  # int32 [] optimizer steps taken so far


def tokens_per_step(model_cfg: ModelConfig, train_cfg: TrainConfig) -> int:
    """Training tokens in one optimizer step: batch_size * seq_len."""
    return train_cfg.batch_size * model_cfg.seq_len


def total_steps(model_cfg: ModelConfig, train_cfg: TrainConfig) -> int:
    """Optimizer steps the budget pays for, rounded down: D / (B*T), or C / (flops_per_token * B*T).

    ValueError when the budget does not cover a single step, before anything is compiled.
    """
    tps = tokens_per_step(model_cfg, train_cfg)
    if train_cfg.tokens is not None:
        per_step, budget, unit = tps, train_cfg.tokens, "tokens"
    else:
        fpt = counting.flops_per_token(model_cfg)
        per_token = fpt.exact if train_cfg.flops_convention == CKind.EXACT else fpt.six_n
        per_step, budget, unit = per_token * tps, train_cfg.flops, f"FLOPs ({train_cfg.flops_convention})"
    steps = int(budget // per_step)
    if steps < 1:
        raise ValueError(
            f"budget of {budget:.4g} {unit} is smaller than one optimizer step ({per_step:.4g} {unit} "
            f"= batch_size {train_cfg.batch_size} x seq_len {model_cfg.seq_len} tokens); raise the "
            "budget or shrink the batch")
    return steps


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
        params = model.init_params(model_cfg, key)
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


def _finite_or_none(v: float) -> float | None:
    # JSON has no NaN/inf; a diverged value is recorded as null and the summary names the step.
    return v if math.isfinite(v) else None


def _spec(model_cfg, train_cfg, corpus: Corpus, steps: int) -> dict:
    pc = counting.param_counts(model_cfg)
    fpt = counting.flops_per_token(model_cfg)
    return {
        "model": _asdict(model_cfg),
        "train": _asdict(train_cfg),
        "corpus": corpus.info(),
        "params": {"total": pc.total, "embedding": pc.embedding, "non_embedding": pc.non_embedding,
                   "active": pc.active},
        "flops_per_token": {"six_n": fpt.six_n, "exact": fpt.exact},
        "steps": steps,
        "tokens_per_step": tokens_per_step(model_cfg, train_cfg),
        "warmup_steps": warmup_steps(train_cfg, steps),
        "loss_unit": "nats per token (cross-entropy, natural log)",
        "scalefit_version": scalefit.__version__,
        "python_version": platform.python_version(),  # the default corpus is this stdlib's source
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def _asdict(cfg) -> dict:
    # Through JSON, so a config compares equal to the spec.json it was written to (tuples read back as lists).
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _check_same_config(path: Path, key: str, old: dict, new: dict) -> None:
    if old.get(key) != new:
        diff = sorted(k for k in new if old.get(key, {}).get(k) != new[k])
        raise ValueError(f"{path} holds a run with a different {key} config (fields {diff}); "
                         "use a new output folder")


def _check_same_run(path: Path, old: dict, new: dict) -> None:
    """ValueError when a run directory already holds a different run."""
    for key in ("model", "train"):
        _check_same_config(path, key, old, new[key])
    if old.get("corpus", {}).get("fingerprint") != new["corpus"]["fingerprint"]:
        raise ValueError(f"{path} holds a run on a different corpus (fingerprint "
                         f"{old.get('corpus', {}).get('fingerprint')} vs {new['corpus']['fingerprint']})")


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, out_dir: str | os.PathLike,
          corpus: Corpus | str | os.PathLike | None = None, progress: bool = True,
          on_step: Callable[[dict], None] | None = None) -> dict:
    """Train ``model_cfg`` to the budget of ``train_cfg``; write and return the run's summary.

    ``corpus``: None for the standard-library corpus, a path to text files, or a loaded Corpus.
    ``on_step`` is called with each metrics record after it is written; an exception it raises stops
    the run (which stays resumable from its last checkpoint). A loss that turns NaN/inf ends the run
    with status "diverged" and ``diverged_at_step``; it does not raise.
    """
    out = Path(out_dir)
    if (out / "summary.json").exists():
        summary = read_json(out / "summary.json")
        if summary.get("status") in FINISHED:
            old = read_json(out / "spec.json")
            for key, cfg in (("model", model_cfg), ("train", train_cfg)):
                _check_same_config(out / "spec.json", key, old, _asdict(cfg))
            # A finished run on another corpus is not this run: refuse rather than hand it back.
            fp = (corpus if isinstance(corpus, Corpus) else load_corpus(corpus)).fingerprint
            if old.get("corpus", {}).get("fingerprint") != fp:
                raise ValueError(f"{out / 'spec.json'} holds a finished run on a different corpus "
                                 f"(fingerprint {old.get('corpus', {}).get('fingerprint')} vs {fp})")
            return summary
    steps = total_steps(model_cfg, train_cfg)  # budget errors before the corpus is read
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus)
    check_length(corpus.train, model_cfg.seq_len, f"corpus {corpus.source} (train split)")
    check_length(corpus.val, model_cfg.seq_len, f"corpus {corpus.source} (validation split)")
    spec = _spec(model_cfg, train_cfg, corpus, steps)
    if (out / "spec.json").exists():
        _check_same_run(out / "spec.json", read_json(out / "spec.json"), spec)
    else:
        write_json(out / "spec.json", spec)

    with _run_lock(out):
        tx = make_optimizer(train_cfg)  # the rate is fed per step from lr_table
        state = init_state(model_cfg, tx, train_cfg.seed)
        restored = load_checkpoint(out, state)
        start, wall0 = 0, 0.0
        if restored is not None:
            state, extra = restored
            state = jax.tree.map(jnp.asarray, state)
            start, wall0 = int(state.step), float(extra.get("wall_time", 0.0))
        records = truncate_metrics(out / "metrics.jsonl", start)
        return _loop(model_cfg, train_cfg, out, corpus, spec, tx, state, start, wall0, records,
                     progress, on_step)


@contextlib.contextmanager
def _run_lock(out: Path):
    """Exclusive lock on the run folder: two processes appending to one metrics log would corrupt it
    (e.g. a sweep retrying a run whose first worker is still alive). The OS drops it on exit or kill."""
    with open(out / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{out} is being trained by another process") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def train_run(spec: RunSpec, root: str | os.PathLike, progress: bool = False,
              on_step: Callable[[dict], None] | None = None) -> dict:
    """:func:`train` for a RunSpec, in the folder ``<root>/<spec.run_id>``."""
    return train(spec.model, spec.train, Path(root) / spec.run_id, corpus=spec.corpus,
                 progress=progress, on_step=on_step)


def _loop(model_cfg, train_cfg, out, corpus, spec, tx, state, start, wall0, records, progress,
          on_step) -> dict:
    steps = spec["steps"]
    tps = spec["tokens_per_step"]
    f6, fx = spec["flops_per_token"]["six_n"], spec["flops_per_token"]["exact"]
    lrs = lr_table(train_cfg, steps)  # float32 [steps], fed to the step: no compile per run length
    evals = eval_schedule(steps, train_cfg.n_evals)
    val = eval_batches(corpus.val, train_cfg.eval_batches, train_cfg.batch_size, model_cfg.seq_len)
    step_fn, eval_fn = make_train_step(model_cfg, tx), make_eval_fn(model_cfg)
    t0 = time.perf_counter()
    last = records[-1] if records else None
    status, diverged_at = "completed", None

    from tqdm.auto import tqdm

    bar = tqdm(total=steps * tps, initial=start * tps, unit="tok", unit_scale=True,
               disable=not progress, dynamic_ncols=True)
    with open(out / "metrics.jsonl", "a") as log:
        batch = partial(get_batch, corpus.train, batch_size=train_cfg.batch_size,
                        seq_len=model_cfg.seq_len, seed=train_cfg.seed)
        nxt = batch(start)
        for s in range(start, steps):
            state, stats = step_fn(state, *nxt, lrs[s])
            done = s + 1
            if done < steps:
                nxt = batch(done)  # built on the host while the step runs (dispatch is async)
            # One host sync per step, so divergence is caught on the step it happens.
            loss, objective = (float(v) for v in jax.device_get((stats["ce"], stats["loss"])))
            finite = math.isfinite(loss) and math.isfinite(objective)
            if not finite or done % train_cfg.log_every == 0 or done in evals:
                eval_loss = evaluate(eval_fn, state.params, val) if finite and done in evals else None
                last = _record(done, tps, f6, fx, stats, lrs[s], eval_loss, model_cfg,
                               wall0 + time.perf_counter() - t0)
                log.write(json.dumps(last) + "\n")
                log.flush()
                shown = {"loss": f"{loss:.3f}"}
                if eval_loss is not None:
                    shown["eval"] = f"{eval_loss:.3f}"
                bar.set_postfix(shown)
                if on_step is not None:
                    on_step(last)
            bar.update(tps)
            if not finite:
                status, diverged_at = "diverged", done
                break
            if done % train_cfg.checkpoint_every == 0 or done == steps:
                save_checkpoint(out, state, {"wall_time": wall0 + time.perf_counter() - t0})
    bar.close()
    summary = _summary(spec, status, diverged_at, last, wall0 + time.perf_counter() - t0)
    write_json(out / "summary.json", summary)
    return summary


def _record(step, tps, f6, fx, stats, lr, eval_loss, model_cfg, wall) -> dict:
    """One metrics.jsonl line for the state after ``step`` updates."""
    tokens = step * tps
    rec = {
        "step": step,
        "tokens": tokens,
        "flops_6N": f6 * tokens,
        "flops_exact": fx * tokens,
        "train_loss": _finite_or_none(float(stats["ce"])),
        "eval_loss": eval_loss,
        "lr": float(lr),
        "grad_norm": _finite_or_none(float(stats["grad_norm"])),
        "wall_time": round(wall, 4),
    }
    if model_cfg.is_moe:
        rec["aux_loss"] = _finite_or_none(float(stats["aux_loss"]))
        rec["expert_load"] = np.asarray(stats["expert_load"]).round(6).tolist()  # [L][E]
        rec["dropped_frac"] = _finite_or_none(float(stats["dropped_frac"]))
    return rec


def _summary(spec: dict, status: str, diverged_at: int | None, last: dict | None, wall: float) -> dict:
    """summary.json: the run's outcome, from its last metrics record."""
    last = last or {}
    return {
        "status": status,
        "diverged_at_step": diverged_at,
        "steps": last.get("step", 0),
        "planned_steps": spec["steps"],
        "tokens": last.get("tokens", 0),
        "flops_6N": last.get("flops_6N", 0.0),
        "flops_exact": last.get("flops_exact", 0.0),
        "final_train_loss": last.get("train_loss"),
        "final_eval_loss": last.get("eval_loss"),
        "params": spec["params"],
        "corpus_fingerprint": spec["corpus"]["fingerprint"],
        "wall_time": round(wall, 4),
    }
