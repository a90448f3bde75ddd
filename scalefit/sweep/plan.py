"""Sweep files -> a `SweepPlan`: every run of a model family, with its counts, budget and run id.

A sweep file (TOML, schema in docs/sweeps.md) names a family (dense or MoE), a corpus, training
settings and one design; the designs, and the keys of their tables, are the registry
`scalefit.sweep.designs.DESIGNS`. `read_sweep_file` checks every table and key against `SWEEP_KEYS`
(naming the line of a wrong one); `plan_sweep` lays out the runs and attaches the identifiability
warnings of `scalefit.sweep.checks`.

A run's id is a hash of everything that determines its result (model, training config, corpus
fingerprint and the run it starts from), so changing any setting makes a new run folder.

Planning is arithmetic on configs (scalefit.training.counting): it never imports JAX.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import replace
from pathlib import Path

from scalefit.store.records import Role
from scalefit.sweep.checks import identifiability_warnings
from scalefit.sweep.designs import DESIGNS, DesignError, DesignInput
from scalefit.sweep.planned import PlannedRun, SweepPlan
from scalefit.training import counting
from scalefit.training.config import PRESETS, ModelConfig, RunSpec, TrainConfig, get_preset
from scalefit.training.corpus import load_corpus

# Allowed keys of each table of a sweep file; anything else is an error naming its line. The budget
# is the design's to set, and so is the cooldown (a wsd-ladder's own key).
_TRAIN_KEYS = frozenset(f.name for f in TrainConfig.__dataclass_fields__.values()) - {
    "tokens", "flops", "flops_convention", "schedule", "cooldown_frac"}
BASE_KEYS: dict[str, frozenset[str]] = {
    "sweep": frozenset({"name", "design", "corpus", "val_fraction"}),
    "model": frozenset({"family", "ladder", "seq_len", "compute_dtype", "tie_embeddings"}),
    "train": _TRAIN_KEYS | {"schedule"},
}
# Every table a sweep file may hold: the base tables and one per design, with the design's own keys.
SWEEP_KEYS: dict[str, frozenset[str]] = {**BASE_KEYS, **{name: d.keys for name, d in DESIGNS.items()}}


class SweepFileError(ValueError):
    """A sweep file that does not follow the schema; the message names the file, key and line."""


def _key_lines(text: str) -> dict[tuple[str, str], int]:
    """(table, key) -> 1-based line of ``key = ...`` in ``text`` (tomllib reports no positions)."""
    where, table = {}, ""
    for i, line in enumerate(text.splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if m := re.fullmatch(r"\[\s*([^\[\]]+?)\s*\]", s):
            table = m.group(1).strip().strip('"')
            where.setdefault(("", table), i)
        elif m := re.match(r"""^["']?([A-Za-z0-9_\-]+)["']?\s*=""", s):
            where.setdefault((table, m.group(1)), i)
    return where


def read_sweep_file(path: str | Path) -> dict:
    """Parse a sweep file and check every table and key against `SWEEP_KEYS`.

    SweepFileError naming the file, the offending key and its line for unknown tables or keys, a
    missing design table or a design name outside `DESIGNS`.
    """
    p = Path(path)
    text = p.read_text()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SweepFileError(f"{p}: not valid TOML ({e})") from None
    lines = _key_lines(text)
    for table, body in doc.items():
        if table not in SWEEP_KEYS or not isinstance(body, dict):
            raise SweepFileError(f"{p}, line {lines.get(('', table), '?')}: unknown table [{table}]; expected one of "
                                 f"{sorted(SWEEP_KEYS)}")
        for key in body:
            if key not in SWEEP_KEYS[table]:
                raise SweepFileError(f"{p}, line {lines.get((table, key), '?')}: unknown key {key!r} in "
                                     f"[{table}]; allowed keys: {sorted(SWEEP_KEYS[table])}")
    design = doc.get("sweep", {}).get("design")
    if design not in DESIGNS:
        raise SweepFileError(f"{p}, line {lines.get(('sweep', 'design'), '?')}: [sweep] design must be one "
                             f"of {tuple(DESIGNS)}, got {design!r}")
    if design not in doc:
        raise SweepFileError(f"{p}: design {design!r} needs a [{design}] table")
    return doc


def _ladder(doc: dict, p: Path) -> list[str]:
    m = doc.get("model", {})
    family = m.get("family", "dense")
    if family not in ("dense", "moe"):
        raise SweepFileError(f"{p}: [model] family must be 'dense' or 'moe', got {family!r}")
    names = m.get("ladder") or [k for k, c in PRESETS.items()
                                if (c.is_moe == (family == "moe")) and not c.tie_embeddings and c.n_kv_head == c.n_head]
    for n in names:
        get_preset(n)
    return names


def _corpus(doc: dict, p: Path) -> str | None:
    c = doc.get("sweep", {}).get("corpus", "stdlib")
    if c in (None, "stdlib"):
        return None
    q = Path(c).expanduser()
    return str(q if q.is_absolute() else (p.parent / q).resolve())


def run_id(model: ModelConfig, train: TrainConfig, corpus_fingerprint: str, parent: str | None,
           prefix: str) -> str:
    """``prefix-<12 hex>``: sha256 over the canonical JSON of everything that decides the result.

    The configs in their ``to_dict()`` form, the one spec.json records (RunSpec.to_dict), with sorted keys.
    """
    blob = json.dumps({"model": model.to_dict(), "train": train.to_dict(), "corpus": corpus_fingerprint,
                       "parent": parent}, sort_keys=True, default=str)
    return f"{prefix}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _make(model: ModelConfig, train: TrainConfig, fp: str, corpus: str | None, *, label: str, preset: str,
          group: str, role: Role = Role.RUN, budget: float | None = None, parent: str | None = None,
          start_step: int = 0) -> PlannedRun:
    """One planned run: its steps and tokens for the budget, its counts, and its run id."""
    steps = counting.total_steps(model, train)
    tokens = steps * counting.tokens_per_step(model, train)
    pc, fpt = counting.param_counts(model), counting.flops_per_token(model)
    rid = run_id(model, train, fp, parent, re.sub(r"[^A-Za-z0-9.+\-]", "_", preset))
    return PlannedRun(RunSpec(run_id=rid, model=model, train=train, corpus=corpus), label, preset, group,
                      role, budget, parent, start_step, steps, tokens, pc.total, pc.non_embedding,
                      pc.active, fpt.six_n * tokens, fpt.exact * tokens)


def plan_sweep(path: str | Path) -> SweepPlan:
    """Read a sweep file and lay out every run (the designs: scalefit.sweep.designs)."""
    p = Path(path)
    doc = read_sweep_file(p)
    s = doc["sweep"]
    design = s["design"]
    corpus = _corpus(doc, p)
    fp = load_corpus(corpus, **({"val_fraction": s["val_fraction"]} if "val_fraction" in s else {})).fingerprint

    def make(model, train, **where) -> PlannedRun:
        return _make(model, train, fp, corpus, **where)

    try:
        runs, warns, notes = DESIGNS[design].build(DesignInput(doc, tuple(_ladder(doc, p)), make))
    except DesignError as e:
        raise SweepFileError(f"{p}: {e}") from None
    except (KeyError, TypeError) as e:
        raise SweepFileError(f"{p}: [{design}] missing or malformed setting: {e}") from None
    ids = [r.spec.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise SweepFileError(f"{p}: two runs of the design are identical (same shape and budget); "
                             "remove the duplicate sizes or budgets")
    plan = SweepPlan(s.get("name", p.stem), design, str(p), corpus, tuple(runs), tuple(notes))
    return replace(plan, warnings=tuple(warns) + identifiability_warnings(plan))
