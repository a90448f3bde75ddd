"""The records the trainer writes about a run (scalefit.store.records), built from its configs and numbers.

`spec_record` (spec.json: configs, corpus, exact parameter and FLOP counts, versions, devices),
`metric_record` (one metrics.jsonl line), `summary_record` (summary.json); `check_same_run` refuses a
folder that holds another run, and `restore_spec` writes again the spec.json a finished sweep run lost.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

import scalefit
from scalefit.store import folder
from scalefit.store.records import (SPEC_FILE, SUMMARY_FILE, FlopsPerTokenRecord, MetricRecord, MoeStats,
                                    ParamsRecord, RunStatus, RunSummary, SpecRecord, finite_or_none)
from scalefit.training import counting
from scalefit.training.config import ModelConfig, RunSpec, TrainConfig
from scalefit.training.corpus import Corpus, load_corpus
from scalefit.training.optim import warmup_steps
from scalefit.training.parallel import Placement, single_device

LOSS_UNIT = "nats per token (cross-entropy, natural log)"  # spec.json's loss_unit
log = logging.getLogger("scalefit.training.loop")  # the trainer's logger: one name for its warnings


def spec_record(model_cfg: ModelConfig, train_cfg: TrainConfig, corpus: Corpus, steps: int,
                place: Placement) -> SpecRecord:
    """spec.json of a run: its configs, corpus, exact counts and the versions and devices it runs on."""
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
        devices=tuple(str(d) for d in place.mesh.devices.flat))


def check_same_config(path: Path, key: str, old: Mapping, new: dict) -> None:
    """ValueError when the folder's recorded `key` config is not `new`, naming the fields that differ."""
    if dict(old) != new:
        diff = sorted(k for k in new if old.get(k) != new[k])
        raise ValueError(f"{path} holds a run with a different {key} config (fields {diff}); "
                         "use a new output folder")


def check_same_run(path: Path, old: SpecRecord, new: SpecRecord) -> None:
    """ValueError when a run folder already holds a different run."""
    check_same_config(path, "model", old.model, dict(new.model))
    check_same_config(path, "train", old.train, dict(new.train))
    if old.corpus.fingerprint != new.corpus.fingerprint:
        raise ValueError(f"{path} holds a run on a different corpus (fingerprint "
                         f"{old.corpus.fingerprint} vs {new.corpus.fingerprint})")


def restore_spec(spec: RunSpec, root: str | os.PathLike) -> Path:
    """Write again the spec.json of a finished run of a sweep that lost it; returns the file.

    Only for a sweep's run folder ``<root>/<run_id>``: its name is the hash of these configs and the
    corpus (scalefit.sweep.plan.run_id), so they are the run's own. Its summary.json must agree too
    (steps, parameter counts, corpus fingerprint), else ValueError naming the folder. The spec is a
    function of the configs and the corpus; only its versions and devices are this process's.
    """
    out = Path(root) / spec.run_id
    summary = folder.read_summary(out)
    corpus = load_corpus(spec.corpus)
    new = spec_record(spec.model, spec.train, corpus, counting.total_steps(spec.model, spec.train),
                      single_device(spec.model))
    if (summary.planned_steps, summary.params, summary.corpus_fingerprint) != \
            (new.steps, new.params, new.corpus.fingerprint):
        raise ValueError(f"{out / SPEC_FILE} is missing and {out / SUMMARY_FILE} is not a run of its configs "
                         "(steps, parameters or corpus differ); move the folder aside to train the run again")
    path = folder.write_spec(out, new)
    log.warning(f"warning: {path} was missing: written again from the run's configs (its summary agrees on steps, "
                "parameters and corpus; versions and devices are this process's)")
    return path


def metric_record(step: int, spec: SpecRecord, stats: dict, lr, eval_loss: float | None, is_moe: bool,
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


def summary_record(spec: SpecRecord, status: RunStatus, diverged_at: int | None, last: MetricRecord | None,
                   wall: float) -> RunSummary:
    """summary.json: the run's outcome, from its last metrics record."""
    return RunSummary(
        status=status, diverged_at_step=diverged_at, steps=last.step if last else 0, planned_steps=spec.steps,
        tokens=last.tokens if last else 0, flops_6N=last.flops_6N if last else 0.0,
        flops_exact=last.flops_exact if last else 0.0, final_train_loss=last.train_loss if last else None,
        final_eval_loss=last.eval_loss if last else None, params=spec.params,
        corpus_fingerprint=spec.corpus.fingerprint, wall_time=round(wall, 4))
