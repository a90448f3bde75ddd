"""The run-folder format: its file names and one typed record per file, the one place its keys are spelled.

A run store is a folder of run folders. ``<store>/<run_id>/`` holds:

    spec.json       `SpecRecord`: what was run (configs, corpus, parameter counts, FLOPs per token, steps,
                    versions). Written first, by the trainer (scalefit.training.loop).
    metrics.jsonl   one `MetricRecord` per logged step, appended line by line.
    ckpt/state.npz  the train state (scalefit.training.checkpoint), every checkpoint_every steps.
    summary.json    `RunSummary`, written last: the run's outcome.
    plan.json       `PlanRecord`: where the run sits in its sweep (written by scalefit.sweep; absent for
                    a run of `scalefit train`).
    timing.json     `TimingRecord`: where the wall time of the sweep's last call went.

and ``<store>/sweep-<name>.json`` (`SweepIndex`) lists a sweep's run ids.

``to_dict()`` gives exactly the JSON object the file holds (same keys, in the same order) and
``from_dict()`` reads it back, from files written before a key existed as well (the field is then
None). JSON has no NaN or infinity, so a diverged value is written as null (`finite_or_none`). The
store knows nothing of JAX or of the trainer's config classes: the model and train configs are kept
as the mappings ``ModelConfig.to_dict()`` / ``TrainConfig.to_dict()`` wrote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Mapping

SPEC_FILE = "spec.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
PLAN_FILE = "plan.json"
TIMING_FILE = "timing.json"
CHECKPOINT_FILE = "ckpt/state.npz"
# Held (flock) by the process training the folder; two writers of one metrics log would corrupt it.
LOCK_FILE = ".lock"
# A diverged run retried by a sweep is moved aside to <run_id>.diverged-<n>; readers leave it out.
DIVERGED_ASIDE = ".diverged-"


def sweep_index_file(name: str) -> str:
    """File name of a sweep's index in its store: ``sweep-<name>.json``."""
    return f"sweep-{name}.json"


def finite_or_none(v: float) -> float | None:
    """``v``, or None when it is NaN or infinite (JSON has neither; the summary names the step)."""
    return v if math.isfinite(v) else None


class RunStatus(StrEnum):
    """The state of a run folder (`scalefit.store.folder.run_status`)."""

    COMPLETED = "completed"  # summary.json: trained to its budget
    DIVERGED = "diverged"  # summary.json: a loss turned NaN/inf; diverged_at_step names the step
    PARTIAL = "partial"  # a checkpoint (or a summary that does not read), not finished: training resumes it
    PENDING = "pending"  # nothing trained yet


# A summary with one of these is final: the trainer hands it back instead of training again.
FINISHED = (RunStatus.COMPLETED, RunStatus.DIVERGED)


class Role(StrEnum):
    """What a run is in its sweep's design."""

    RUN = "run"  # an independent run, trained from scratch
    TRUNK = "trunk"  # a WSD ladder's constant-rate stable phase, up to a branch point
    BRANCH = "branch"  # a WSD ladder's cooldown, started from its trunk's final checkpoint


def _missing(d: Mapping, *keys: str) -> None:
    gone = [k for k in keys if k not in d]
    if gone:
        raise KeyError(", ".join(gone))


@dataclass(frozen=True)
class ParamsRecord:
    """Parameter counts of the run's model (scalefit.training.counting.param_counts)."""

    total: int  # every parameter, embeddings included (Hoffmann et al. 2022's N)
    embedding: int  # input embedding, plus the output layer when untied
    non_embedding: int  # Kaplan et al. (2020)'s N: attention, MLP/experts, router, norms
    active: int  # non-embedding parameters one token uses (MoE top_k of E); = non_embedding if dense

    def to_dict(self) -> dict:
        """The JSON object of spec.json's (and summary.json's) ``params``."""
        return {"total": self.total, "embedding": self.embedding, "non_embedding": self.non_embedding,
                "active": self.active}

    @classmethod
    def from_dict(cls, d: Mapping) -> ParamsRecord:
        """Read `to_dict` output; KeyError naming a missing count."""
        _missing(d, "total", "embedding", "non_embedding", "active")
        return cls(total=d["total"], embedding=d["embedding"], non_embedding=d["non_embedding"],
                   active=d["active"])


@dataclass(frozen=True)
class FlopsPerTokenRecord:
    """Training FLOPs (forward + backward) of one token (scalefit.training.counting.flops_per_token)."""

    six_n: float  # 6 N_active (Kaplan et al. 2020, C = 6ND)
    exact: float  # matmul FLOPs incl. attention and the output layer, forward + backward

    def to_dict(self) -> dict:
        """The JSON object of spec.json's ``flops_per_token``."""
        return {"six_n": self.six_n, "exact": self.exact}

    @classmethod
    def from_dict(cls, d: Mapping) -> FlopsPerTokenRecord:
        """Read `to_dict` output."""
        _missing(d, "six_n", "exact")
        return cls(six_n=d["six_n"], exact=d["exact"])


@dataclass(frozen=True)
class CorpusRecord:
    """The data of a run (scalefit.training.corpus.Corpus.info)."""

    source: str  # "stdlib:<path>" for the default corpus, else the resolved user path
    fingerprint: str  # sha256 hex over (relative path, bytes) of every document: names the data exactly
    tokenizer: str  # "bytes": one token per byte
    vocab_size: int  # 256 for byte tokens
    n_documents: int  # documents used (train + validation)
    n_val_documents: int  # documents held out for validation
    split: str  # "document" (hash of the relative path) or "tail" (one document: its last bytes held out)
    train_tokens: int  # tokens of the train stream
    val_tokens: int  # tokens of the validation stream
    excluded: Mapping[str, int]  # reason -> count of files left out

    def to_dict(self) -> dict:
        """The JSON object of spec.json's ``corpus``."""
        return {"source": self.source, "fingerprint": self.fingerprint, "tokenizer": self.tokenizer,
                "vocab_size": self.vocab_size, "n_documents": self.n_documents,
                "n_val_documents": self.n_val_documents, "split": self.split, "train_tokens": self.train_tokens,
                "val_tokens": self.val_tokens, "excluded": dict(self.excluded)}

    @classmethod
    def from_dict(cls, d: Mapping) -> CorpusRecord:
        """Read `to_dict` output."""
        keys = ("source", "fingerprint", "tokenizer", "vocab_size", "n_documents", "n_val_documents", "split",
                "train_tokens", "val_tokens", "excluded")
        _missing(d, *keys)
        return cls(**{k: d[k] for k in keys})


@dataclass(frozen=True)
class SpecRecord:
    """spec.json: what a run folder trains, written before its first step and checked on every resume."""

    model: Mapping[str, Any]  # ModelConfig.to_dict() (scalefit.training.config), kept as written
    train: Mapping[str, Any]  # TrainConfig.to_dict(), kept as written
    corpus: CorpusRecord  # the data, with its fingerprint
    params: ParamsRecord  # parameter counts of the model
    flops_per_token: FlopsPerTokenRecord  # training FLOPs per token, 6N and exact
    steps: int  # optimizer steps the budget pays for
    tokens_per_step: int  # batch_size * seq_len
    warmup_steps: int  # linear warmup in steps
    loss_unit: str  # "nats per token (cross-entropy, natural log)"
    scalefit_version: str  # scalefit.__version__ of the trainer
    python_version: str | None  # the interpreter (the default corpus is its stdlib); None in older files
    jax_version: str  # jax.__version__
    backend: str  # jax.default_backend(), e.g. "cpu"
    devices: tuple[str, ...]  # str() of every jax device

    def to_dict(self) -> dict:
        """The JSON object of spec.json."""
        d = {"model": dict(self.model), "train": dict(self.train), "corpus": self.corpus.to_dict(),
             "params": self.params.to_dict(), "flops_per_token": self.flops_per_token.to_dict(),
             "steps": self.steps, "tokens_per_step": self.tokens_per_step, "warmup_steps": self.warmup_steps,
             "loss_unit": self.loss_unit, "scalefit_version": self.scalefit_version,
             "python_version": self.python_version, "jax_version": self.jax_version, "backend": self.backend,
             "devices": list(self.devices)}
        if self.python_version is None:
            del d["python_version"]  # files from before the key existed read back as they were
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> SpecRecord:
        """Read spec.json (``python_version`` may be absent); KeyError naming missing keys."""
        _missing(d, "model", "train", "corpus", "params", "flops_per_token", "steps", "tokens_per_step",
                 "warmup_steps", "loss_unit", "scalefit_version", "jax_version", "backend", "devices")
        return cls(model=dict(d["model"]), train=dict(d["train"]), corpus=CorpusRecord.from_dict(d["corpus"]),
                   params=ParamsRecord.from_dict(d["params"]),
                   flops_per_token=FlopsPerTokenRecord.from_dict(d["flops_per_token"]), steps=d["steps"],
                   tokens_per_step=d["tokens_per_step"], warmup_steps=d["warmup_steps"], loss_unit=d["loss_unit"],
                   scalefit_version=d["scalefit_version"], python_version=d.get("python_version"),
                   jax_version=d["jax_version"], backend=d["backend"], devices=tuple(d["devices"]))


@dataclass(frozen=True)
class MoeStats:
    """The router's statistics of one logged step (MoE models only)."""

    aux_loss: float | None  # Switch/GShard load-balancing loss (not in train_loss); None if non-finite
    expert_load: tuple[tuple[float, ...], ...]  # [L][E] share of routed tokens per expert, rounded to 1e-6
    dropped_frac: float | None  # share of token-expert assignments over capacity; 0 when dropless


# The fields every metrics line carries, in file order (the curves table's columns, after run_id).
METRIC_FIELDS = ("step", "tokens", "flops_6N", "flops_exact", "train_loss", "eval_loss", "lr", "grad_norm",
                 "wall_time")


@dataclass(frozen=True)
class MetricRecord:
    """One metrics.jsonl line: the state after ``step`` optimizer updates.

    Fields other than ``step`` are None when a line does not carry them (a line written by another
    tool); the trainer writes every one.
    """

    step: int  # optimizer updates taken
    tokens: int | None  # training tokens so far: step * tokens_per_step
    flops_6N: float | None  # 6 N_active * tokens, cumulative training FLOPs
    flops_exact: float | None  # exact FLOPs per token * tokens, cumulative (evaluation not counted)
    train_loss: float | None  # cross-entropy of the step's batch before its update, nats/token; None if NaN/inf
    eval_loss: float | None  # validation cross-entropy after the update, when an evaluation ran, else None
    lr: float | None  # learning rate of this step's update
    grad_norm: float | None  # global L2 norm of the gradient before clipping; None if NaN/inf
    wall_time: float | None  # seconds of training so far (resumed runs add their earlier calls)
    moe: MoeStats | None = None  # router statistics, MoE models only (their keys are absent otherwise)

    def to_dict(self) -> dict:
        """The JSON object of the line: METRIC_FIELDS, then aux_loss, expert_load, dropped_frac for MoE."""
        d = {k: getattr(self, k) for k in METRIC_FIELDS}
        if self.moe is not None:
            d.update(aux_loss=self.moe.aux_loss, expert_load=[list(row) for row in self.moe.expert_load],
                     dropped_frac=self.moe.dropped_frac)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> MetricRecord:
        """Read one line; ValueError unless it is an object with an integer ``step``."""
        if not isinstance(d, Mapping) or "step" not in d:
            raise ValueError("not a metrics record (an object with a step)")
        if not isinstance(d["step"], int) or isinstance(d["step"], bool):
            raise ValueError(f"step must be an integer, got {d['step']!r}")
        moe = None
        if "expert_load" in d or "aux_loss" in d:
            moe = MoeStats(aux_loss=d.get("aux_loss"), dropped_frac=d.get("dropped_frac"),
                           expert_load=tuple(tuple(row) for row in d.get("expert_load") or ()))
        return cls(**{k: d.get(k) for k in METRIC_FIELDS}, moe=moe)


@dataclass(frozen=True)
class RunSummary:
    """summary.json: a finished run's outcome, from its last metrics record. What `train` returns."""

    status: RunStatus  # COMPLETED or DIVERGED
    diverged_at_step: int | None  # the step whose loss turned NaN/inf; None unless diverged
    steps: int  # optimizer steps taken (= planned_steps when completed)
    planned_steps: int  # steps the budget pays for
    tokens: int  # training tokens seen
    flops_6N: float  # 6 N_active * tokens
    flops_exact: float  # exact training FLOPs
    final_train_loss: float | None  # training cross-entropy at the last logged step, nats/token
    final_eval_loss: float | None  # validation cross-entropy of the last logged step (None if it had none)
    params: ParamsRecord  # parameter counts, as in spec.json
    corpus_fingerprint: str  # the data, as in spec.json
    wall_time: float  # seconds of training, every call of a resumed run included

    def to_dict(self) -> dict:
        """The JSON object of summary.json."""
        return {"status": self.status.value, "diverged_at_step": self.diverged_at_step, "steps": self.steps,
                "planned_steps": self.planned_steps, "tokens": self.tokens, "flops_6N": self.flops_6N,
                "flops_exact": self.flops_exact, "final_train_loss": self.final_train_loss,
                "final_eval_loss": self.final_eval_loss, "params": self.params.to_dict(),
                "corpus_fingerprint": self.corpus_fingerprint, "wall_time": self.wall_time}

    @classmethod
    def from_dict(cls, d: Mapping) -> RunSummary:
        """Read summary.json; KeyError naming missing keys, ValueError for an unknown status."""
        _missing(d, "status", "diverged_at_step", "steps", "planned_steps", "tokens", "flops_6N", "flops_exact",
                 "final_train_loss", "final_eval_loss", "params", "corpus_fingerprint", "wall_time")
        return cls(status=RunStatus(d["status"]), diverged_at_step=d["diverged_at_step"], steps=d["steps"],
                   planned_steps=d["planned_steps"], tokens=d["tokens"], flops_6N=d["flops_6N"],
                   flops_exact=d["flops_exact"], final_train_loss=d["final_train_loss"],
                   final_eval_loss=d["final_eval_loss"], params=ParamsRecord.from_dict(d["params"]),
                   corpus_fingerprint=d["corpus_fingerprint"], wall_time=d["wall_time"])


@dataclass(frozen=True)
class PlanRecord:
    """plan.json: where a run sits in its sweep (scalefit.sweep.plan.PlannedRun)."""

    sweep: str  # the sweep's name
    design: str  # the sweep's design (scalefit.sweep.designs.DESIGNS)
    sweep_file: str  # the sweep file it was planned from
    label: str  # the run's name in its sweep, e.g. "C1e+12/d64-l2"
    preset: str  # ladder shape the model came from
    group: str  # the design's group: IsoFLOP budget, model size or MoE base size
    role: Role  # run, trunk or branch
    budget: float | None  # requested FLOPs of an IsoFLOP run (its flops_convention), else None
    parent: str | None  # run id whose final checkpoint this run starts from (ladder), else None
    start_step: int  # steps inherited from the parent (0 when trained from scratch)
    planned_tokens: int  # D at the end of the run

    def to_dict(self) -> dict:
        """The JSON object of plan.json."""
        return {"sweep": self.sweep, "design": self.design, "sweep_file": self.sweep_file, "label": self.label,
                "preset": self.preset, "group": self.group, "role": self.role.value, "budget": self.budget,
                "parent": self.parent, "start_step": self.start_step, "planned_tokens": self.planned_tokens}

    @classmethod
    def from_dict(cls, d: Mapping) -> PlanRecord:
        """Read plan.json; KeyError naming missing keys, ValueError for an unknown role."""
        keys = ("sweep", "design", "sweep_file", "label", "preset", "group", "role", "budget", "parent",
                "start_step", "planned_tokens")
        _missing(d, *keys)
        return cls(**{**{k: d[k] for k in keys}, "role": Role(d["role"])})


@dataclass(frozen=True)
class TimingRecord:
    """timing.json: where one call's wall time went, in seconds; overhead = wall - train.

    Split by scalefit.sweep.timing.split_wall from the host clock at each metrics record.
    """

    wall: float  # the train call, start to return (plus process start when it was the first run)
    train: float  # steps x mean step time of the plain intervals: the part that trains
    startup: float  # process start and imports charged to this run (first run of a process/worker)
    setup_compile: float  # corpus, init and the first step and evaluation (tracing + XLA compile)
    evaluation: float  # validation passes after the first
    checkpoint: float  # checkpoint writes, metrics and summary files
    steps: int  # steps trained in this call

    @property
    def other(self) -> float:
        """Overhead not attributed above: slower steps than the plain intervals' mean, host work."""
        return max(0.0, self.wall - self.train - self.startup - self.setup_compile - self.evaluation
                   - self.checkpoint)

    @property
    def overhead_frac(self) -> float:
        """Share of wall time not spent training."""
        return 1.0 - self.train / self.wall if self.wall > 0 else 0.0

    def line(self) -> str:
        """One printable line: wall, training, overhead share and its parts."""
        return (f"wall {self.wall:6.1f}s  train {self.train:6.1f}s  overhead {100 * self.overhead_frac:4.1f}% "
                f"(start {self.startup:.1f}s, setup+compile {self.setup_compile:.1f}s, eval "
                f"{self.evaluation:.1f}s, ckpt/io {self.checkpoint:.1f}s, other {self.other:.1f}s)")

    def to_dict(self) -> dict:
        """The JSON object of timing.json: the fields, then overhead_frac (derived, for readers)."""
        return {"wall": self.wall, "train": self.train, "startup": self.startup,
                "setup_compile": self.setup_compile, "evaluation": self.evaluation, "checkpoint": self.checkpoint,
                "steps": self.steps, "overhead_frac": self.overhead_frac}

    @classmethod
    def from_dict(cls, d: Mapping) -> TimingRecord:
        """Read timing.json (overhead_frac is derived, so not read)."""
        keys = ("wall", "train", "startup", "setup_compile", "evaluation", "checkpoint", "steps")
        _missing(d, *keys)
        return cls(**{k: d[k] for k in keys})


@dataclass(frozen=True)
class SweepIndex:
    """sweep-<name>.json: the runs of one sweep in a store."""

    name: str  # the sweep's name
    design: str  # its design
    source: str  # the sweep file
    runs: tuple[str, ...]  # run ids, in execution order

    def to_dict(self) -> dict:
        """The JSON object of the index file."""
        return {"name": self.name, "design": self.design, "source": self.source, "runs": list(self.runs)}

    @classmethod
    def from_dict(cls, d: Mapping) -> SweepIndex:
        """Read `to_dict` output."""
        _missing(d, "name", "design", "source", "runs")
        return cls(name=d["name"], design=d["design"], source=d["source"], runs=tuple(d["runs"]))
