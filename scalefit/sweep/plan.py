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
import os
import tomllib
from dataclasses import replace
from pathlib import Path

from scalefit.store.records import Role
from scalefit.sweep import schema
from scalefit.sweep.checks import identifiability_warnings
from scalefit.sweep.designs import DESIGNS, DesignError, DesignInput
from scalefit.sweep.planned import PlannedRun, SweepPlan
from scalefit.training import counting
from scalefit.training.config import PRESETS, ModelConfig, RunSpec, TrainConfig, get_preset
from scalefit.training.corpus import load_corpus

# Allowed keys of each table of a sweep file (scalefit.sweep.schema); anything else is an error naming
# its line. The budget is the design's to set, and so is the cooldown (a wsd-ladder's own key).
_TRAIN_KEYS = schema.keys(schema.TrainTable) - {"schedule"}
BASE_KEYS: dict[str, frozenset[str]] = {t: schema.keys(m) for t, m in schema.BASE_TABLES.items()}
# Every table a sweep file may hold: the base tables and one per design, with the design's own keys.
SWEEP_KEYS: dict[str, frozenset[str]] = {**BASE_KEYS, **{name: d.keys for name, d in DESIGNS.items()}}
_SCHEMAS = {**schema.BASE_TABLES, **{name: d.schema for name, d in DESIGNS.items()}}


class SweepFileError(ValueError):
    """A sweep file that does not follow the schema; the message names the file, key and line."""


def _key_lines(text: str) -> dict[tuple[str, str], int]:
    """(table, key) -> 1-based line of ``key = ...`` in ``text`` (tomllib reports no positions)."""
    where, table = {}, ""
    for i, line in enumerate(text.splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if m := re.fullmatch(r"\[\[?\s*([^\[\]]+?)\s*\]\]?", s):
            table = m.group(1).strip().strip('"')
            where.setdefault(("", table), i)
        elif m := re.match(r"""^["']?([A-Za-z0-9_\-]+)["']?\s*=""", s):
            where.setdefault((table, m.group(1)), i)
    return where


def _text(p: Path) -> str:
    """The file's text; SweepFileError naming it when it is not a readable UTF-8 file."""
    if p.is_dir():
        raise SweepFileError(f"{p}: is a folder, expected a sweep file (TOML)")
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise SweepFileError(f"{p}: not a text file (byte {e.start} is not UTF-8); a sweep file is UTF-8 "
                             "TOML") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: no such sweep file") from None
    except OSError as e:
        raise OSError(e.errno, f"{p}: cannot read the sweep file ({e.strerror})") from None


def read_sweep_file(path: str | Path) -> dict:
    """Parse a sweep file and check it against the schema (scalefit.sweep.schema, `SWEEP_KEYS`).

    SweepFileError naming the file, the offending table and key, and its line, for unknown tables or
    keys, a value of the wrong type or range, a missing design table or a design name outside `DESIGNS`.
    """
    p = Path(path)
    text = _text(p)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SweepFileError(f"{p}: not valid TOML ({e})") from None
    lines = _key_lines(text)
    for table, body in doc.items():
        line = lines.get(("", table), "?")
        if table in SWEEP_KEYS and not isinstance(body, dict):
            what = "an array of tables [[...]]" if isinstance(body, list) else "a value"
            raise SweepFileError(f"{p}, line {line}: {table} is {what}; expected one table [{table}]")
        if table not in SWEEP_KEYS or not isinstance(body, dict):
            raise SweepFileError(f"{p}, line {line}: unknown table [{table}]; expected one of "
                                 f"{sorted(SWEEP_KEYS)}")
        for key in body:
            if key not in SWEEP_KEYS[table]:
                line = lines.get((table, key), lines.get(("", f"{table}.{key}"), "?"))  # [train.x] too
                raise SweepFileError(f"{p}, line {line}: unknown key {key!r} in "
                                     f"[{table}]; allowed keys: {sorted(SWEEP_KEYS[table])}")
    if "sweep" not in doc or "design" not in doc["sweep"]:
        raise SweepFileError(f"{p}: no [sweep] design; set design to one of {tuple(DESIGNS)}")
    design = doc["sweep"]["design"]
    if not isinstance(design, str) or design not in DESIGNS:
        raise SweepFileError(f"{p}, line {lines.get(('sweep', 'design'), '?')}: [sweep] design must be one "
                             f"of {tuple(DESIGNS)}, got {design!r}")
    if design not in doc:
        raise SweepFileError(f"{p}: design {design!r} needs a [{design}] table")
    problems = []
    for table, body in doc.items():
        try:
            schema.check_table(table, _SCHEMAS[table], body)
        except schema.SweepSchemaError as e:
            problems += e.problems
    if problems:
        raise SweepFileError("\n".join(f"{p}, line {lines.get((t, k), '?')}: [{t}] {msg}" for t, k, msg in problems))
    return doc


def _ladder(doc: dict, p: Path) -> list[str]:
    m = doc.get("model", {})
    family = m.get("family", "dense")
    names = m.get("ladder") or [k for k, c in PRESETS.items()
                                if (c.is_moe == (family == "moe")) and not c.tie_embeddings and c.n_kv_head == c.n_head]
    for n in names:
        try:
            get_preset(n)
        except ValueError as e:
            raise SweepFileError(f"{p}: [model] ladder: {e}") from None
    return names


def resolve_corpus(doc: dict, p: Path, corpus: str | os.PathLike | None = None) -> str | None:
    """The corpus path of a sweep (None = the standard library).

    ``corpus`` (the command line's ``--corpus``) is used as given: the user named it. The file's own
    ``[sweep] corpus`` is resolved relative to the sweep file's folder (symbolic links followed) and
    must stay inside it: a sweep file handed around must not make anyone train on (and cache) a file
    it points at elsewhere, such as /etc/shadow or ../../secret. SweepFileError naming the path otherwise.
    """
    if corpus is not None:
        return str(Path(corpus).expanduser().resolve())
    c = doc.get("sweep", {}).get("corpus", "stdlib")
    if c == "stdlib":
        return None
    home = p.parent.resolve()
    q = (home / Path(c).expanduser()).resolve()
    if not q.is_relative_to(home):
        raise SweepFileError(f"{p}: [sweep] corpus {c!r} leaves the sweep file's folder {home} (it resolves to "
                             f"{q}); a sweep file's corpus must lie inside its folder. To train on it, name it "
                             "on the command line: --corpus PATH")
    return str(q)


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


def plan_sweep(path: str | Path, *, corpus: str | os.PathLike | None = None) -> SweepPlan:
    """Read a sweep file and lay out every run (the designs: scalefit.sweep.designs).

    corpus: a corpus to use instead of the file's ``[sweep] corpus`` (see `resolve_corpus`).
    SweepFileError naming the file for anything in it that cannot be planned.
    """
    p = Path(path)
    doc = read_sweep_file(p)
    s = doc["sweep"]
    design = s["design"]
    name = s.get("name", p.stem)
    if not re.fullmatch(schema.NAME_PATTERN, name) or name in (".", ".."):
        raise SweepFileError(f"{p}: the sweep's name {name!r} (the file's stem) is not a plain name (letters, "
                             "digits, '.', '_' or '-'); set [sweep] name")
    corpus_path = resolve_corpus(doc, p, corpus)
    try:
        fp = load_corpus(corpus_path, **({"val_fraction": s["val_fraction"]} if "val_fraction" in s else {})
                         ).fingerprint
    except ValueError as e:
        raise SweepFileError(f"{p}: {e}") from None

    def make(model, train, **where) -> PlannedRun:
        return _make(model, train, fp, corpus_path, **where)

    try:
        runs, warns, notes = DESIGNS[design].build(DesignInput(doc, tuple(_ladder(doc, p)), make))
    except SweepFileError:
        raise
    except (ValueError, KeyError, TypeError) as e:  # a DesignError, or a budget no run can train on
        raise SweepFileError(f"{p}: {e}") from None
    if not runs:
        raise SweepFileError(f"{p}: the [{design}] table lays out no runs")
    ids = [r.spec.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise SweepFileError(f"{p}: two runs of the design are identical (same shape and budget); "
                             "remove the duplicate sizes or budgets")
    plan = SweepPlan(name, design, str(p), corpus_path, tuple(runs), tuple(notes))
    return replace(plan, warnings=tuple(warns) + identifiability_warnings(plan))
