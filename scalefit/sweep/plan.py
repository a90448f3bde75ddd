"""Sweep files -> a `SweepPlan`: every run of a model family, with its counts, budget and run id.

A sweep file (TOML, schema in docs/sweeps.md) names a family (dense or MoE), a corpus, training
settings and one design:

- ``isoflop``: per FLOP budget C, the ``sizes_per_budget`` ladder shapes nearest (in log N) to the
  compute-optimal size of a prior D/N = ``tokens_per_param`` (Hoffmann et al. 2022 found ~20), so
  each IsoFLOP curve brackets its minimum; D = C / (FLOPs per token), FLOPs per token exact or 6N
  (``flops_convention``; exact by default, see scalefit.training.counting).
- ``grid``: sizes x token counts (Hoffmann et al. 2022, Approach 3 data).
- ``wsd-ladder``: per size, one constant-rate trunk with a 1-sqrt cooldown branch for each token count
  (Hägele et al. 2024): branch i resumes the trunk's checkpoint at step S_i - K_i and cools down over
  K_i = cooldown_frac * S_i steps, so one trunk yields several D. Trunk segments are separate runs
  (each continues the previous one's final checkpoint), so every branch point is an exact checkpoint.
- ``moe``: expert counts x top-k x dense base sizes at matched active parameters (expert width
  d_ff / top_k), all at the same token budget per size (Clark et al. 2022, unified MoE scaling).

A run's id is a hash of everything that determines its result (model, training config, corpus
fingerprint and the run it starts from), so changing any setting makes a new run folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from scalefit.conventions import CKind, NKind
from scalefit.training import counting
from scalefit.training.config import PRESETS, ModelConfig, RunSpec, TrainConfig, get_preset
from scalefit.training.corpus import load_corpus

DESIGNS = ("isoflop", "grid", "wsd-ladder", "moe")
# Allowed keys of each table of a sweep file; anything else is an error naming its line.
_TRAIN_KEYS = frozenset(f.name for f in TrainConfig.__dataclass_fields__.values()) - {
    "tokens", "flops", "flops_convention", "schedule", "cooldown_frac"}
SCHEMA: dict[str, frozenset[str]] = {
    "sweep": frozenset({"name", "design", "corpus", "val_fraction"}),
    "model": frozenset({"family", "ladder", "seq_len", "compute_dtype", "tie_embeddings"}),
    "train": _TRAIN_KEYS | {"schedule"},
    "isoflop": frozenset({"budgets", "sizes_per_budget", "tokens_per_param", "n_kind", "flops_convention"}),
    "grid": frozenset({"sizes", "tokens"}),
    "wsd-ladder": frozenset({"sizes", "tokens", "cooldown_frac", "warmup_steps"}),
    "moe": frozenset({"sizes", "experts", "top_k", "tokens_per_param", "tokens"}),
}


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its RunSpec plus where it sits in the design."""

    spec: RunSpec  # model, train config, corpus; spec.run_id = label + hash of everything below
    label: str  # human-readable name, e.g. "C3e+11/d64-l2" or "d64-l2/D2.1e+06"
    preset: str  # ladder shape the model came from
    group: str  # the design's group: budget for isoflop, size for grid/ladder, base size for moe
    role: str  # "run" (independent), "trunk" (ladder stable phase) or "branch" (ladder cooldown)
    budget: float | None  # requested FLOPs for isoflop runs (in flops_convention), else None
    parent: str | None  # run_id whose final checkpoint this run starts from (ladder), else None
    start_step: int  # steps inherited from the parent (0 when trained from scratch)
    steps: int  # optimizer steps at the end of the run (inherited steps included)
    tokens: int  # D: training tokens at the end = steps * batch_size * seq_len
    n_total: int  # N with embeddings (Chinchilla's N)
    n_non_embedding: int  # Kaplan's N
    n_active: int  # non-embedding parameters used per token (MoE); == n_non_embedding when dense
    flops_6n: float  # 6 * n_active * tokens
    flops_exact: float  # exact matmul FLOPs per token * tokens (scalefit.training.counting)

    @property
    def own_steps(self) -> int:
        """Steps this run computes itself (a branch reuses its trunk's first start_step steps)."""
        return self.steps - self.start_step


@dataclass(frozen=True)
class SweepPlan:
    """Every run of one sweep file, in an order where each parent precedes its children."""

    name: str  # sweep name (default: the file's stem); also the default output folder runs/<name>
    design: str  # one of DESIGNS
    source: str  # the sweep file
    corpus: str | None  # corpus path (None = standard library)
    runs: tuple[PlannedRun, ...]  # in execution order
    notes: tuple[str, ...]  # conventions used (which N centres the prior, which C sets D)
    warnings: tuple[str, ...] = field(default=())  # why the design may fail to identify the law

    def by_id(self) -> dict[str, PlannedRun]:
        """Runs keyed by run id."""
        return {r.spec.run_id: r for r in self.runs}

    def total_flops(self, own: bool = True) -> float:
        """Exact training FLOPs of the whole sweep; own=True counts inherited trunk steps once."""
        return sum(r.flops_exact * (r.own_steps / r.steps if own else 1.0) for r in self.runs)


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
    """Parse a sweep file and check every table and key against `SCHEMA`.

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
        if table not in SCHEMA or not isinstance(body, dict):
            raise SweepFileError(f"{p}, line {lines.get(('', table), '?')}: unknown table [{table}]; expected one of "
                                 f"{sorted(SCHEMA)}")
        for key in body:
            if key not in SCHEMA[table]:
                raise SweepFileError(f"{p}, line {lines.get((table, key), '?')}: unknown key {key!r} in "
                                     f"[{table}]; allowed keys: {sorted(SCHEMA[table])}")
    design = doc.get("sweep", {}).get("design")
    if design not in DESIGNS:
        raise SweepFileError(f"{p}, line {lines.get(('sweep', 'design'), '?')}: [sweep] design must be one "
                             f"of {DESIGNS}, got {design!r}")
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


def _shape(doc: dict, preset: str, **over) -> ModelConfig:
    m = doc.get("model", {})
    changes = {k: m[k] for k in ("seq_len", "compute_dtype", "tie_embeddings") if k in m}
    return get_preset(preset).with_overrides(**changes, **over)


def _train_cfg(doc: dict, p: Path, **over) -> TrainConfig:
    t = dict(doc.get("train", {}))
    t.update(over)
    try:
        return TrainConfig(**t)
    except (TypeError, ValueError) as e:
        raise SweepFileError(f"{p}: [train] {e}") from None


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


def _make(model, train, fp, corpus, *, label, preset, group, role="run", budget=None, parent=None,
          start_step=0) -> PlannedRun:
    steps = counting.total_steps(model, train)
    tokens = steps * counting.tokens_per_step(model, train)
    pc, fpt = counting.param_counts(model), counting.flops_per_token(model)
    rid = run_id(model, train, fp, parent, re.sub(r"[^A-Za-z0-9.+\-]", "_", preset))
    return PlannedRun(RunSpec(run_id=rid, model=model, train=train, corpus=corpus), label, preset, group,
                      role, budget, parent, start_step, steps, tokens, pc.total, pc.non_embedding,
                      pc.active, fpt.six_n * tokens, fpt.exact * tokens)


def _isoflop(doc, p, fp, corpus, ladder):
    cfg = doc["isoflop"]
    k = int(cfg.get("sizes_per_budget", 4))
    ratio = float(cfg.get("tokens_per_param", 20.0))
    try:
        n_kind = NKind.parse(cfg.get("n_kind", "total"), "[isoflop] n_kind")
        conv = CKind.parse(cfg.get("flops_convention", "exact"), "[isoflop] flops_convention")
    except ValueError as e:
        raise SweepFileError(f"{p}: {e}") from None
    shapes = {n: _shape(doc, n) for n in ladder}
    sizes = {n: getattr(counting.param_counts(m), n_kind.count_field) for n, m in shapes.items()}
    order = sorted(ladder, key=sizes.get)
    runs, warns = [], []
    for C in sorted(float(c) for c in cfg["budgets"]):
        n_opt = math.sqrt(C / (6.0 * ratio))  # C = 6 N D with D = ratio * N
        # The k consecutive ladder sizes whose log-centre is nearest the prior optimum bracket it.
        windows = [order[i:i + k] for i in range(max(1, len(order) - k + 1))]
        near = min(windows, key=lambda w: abs(sum(math.log(sizes[n] / n_opt) for n in w)))
        lo, hi = sizes[near[0]], sizes[near[-1]]
        if not lo < n_opt < hi:
            warns.append(f"C={C:.3g}: prior optimum N~{n_opt:.3g} ({n_kind}) lies outside the sizes "
                         f"[{lo:.3g}, {hi:.3g}]; the IsoFLOP minimum will likely sit on the edge")
        for n in near:
            t = _train_cfg(doc, p, flops=C, flops_convention=conv)
            runs.append(_make(shapes[n], t, fp, corpus, label=f"C{C:.3g}/{n}", preset=n, group=f"C={C:.3g}",
                              budget=C))
    return runs, warns, [f"IsoFLOP sizes centred on N_opt = sqrt(C / (6 * {ratio:g})) with N {n_kind}; "
                         f"D = C / ({conv} FLOPs per token), rounded down to whole steps"]


def _grid(doc, p, fp, corpus, ladder):
    g = doc["grid"]
    runs = [_make(_shape(doc, n), _train_cfg(doc, p, tokens=float(d)), fp, corpus, label=f"{n}/D{float(d):.3g}",
                  preset=n, group=n) for n in g.get("sizes", ladder) for d in g["tokens"]]
    return runs, [], ["grid: every size trained to every token count (cosine unless [train] schedule)"]


def _ladder_runs(doc, p, fp, corpus, ladder):
    w = doc["wsd-ladder"]
    if "schedule" in doc.get("train", {}):
        raise SweepFileError(f"{p}: [train] schedule cannot be set for a wsd-ladder (trunks are constant-rate, "
                             "branches WSD)")
    cf = float(w.get("cooldown_frac", 0.2))
    runs = []
    for n in w.get("sizes", ladder):
        model = _shape(doc, n)
        base = _train_cfg(doc, p, tokens=1.0)
        tps = counting.tokens_per_step(model, base)
        targets = sorted({max(1, int(float(d) // tps)) for d in w["tokens"]})  # S_i, steps
        warm = int(w.get("warmup_steps", round(base.warmup_frac * targets[0] * (1 - cf))))
        parent, prev = None, 0
        for S in targets:
            start = S - max(1, round(cf * S))  # the WSD schedule's own cooldown start
            if start < warm:
                raise SweepFileError(f"{p}: [wsd-ladder] size {n}: branch at {S} steps starts its cooldown at "
                                     f"step {start}, before warmup ends ({warm}); raise the token counts")
            if start > prev:  # trunk segment: constant rate, ends exactly at the branch point
                tt = _train_cfg(doc, p, tokens=float(start * tps), schedule="constant", warmup_steps=warm)
                trunk = _make(model, tt, fp, corpus, label=f"{n}/trunk{start}", preset=n, group=n, role="trunk",
                              parent=parent, start_step=prev)
                runs.append(trunk)
                parent, prev = trunk.spec.run_id, start
            bt = _train_cfg(doc, p, tokens=float(S * tps), schedule="wsd", cooldown_frac=cf, warmup_steps=warm)
            runs.append(_make(model, bt, fp, corpus, label=f"{n}/D{S * tps:.3g}", preset=n, group=n,
                              role="branch", parent=parent, start_step=prev))
    return runs, [], [f"wsd-ladder: constant-rate trunk, 1-sqrt cooldown over {cf:g} of each branch's steps "
                      "(Hägele et al. 2024)"]


def _moe(doc, p, fp, corpus, ladder):
    m = doc["moe"]
    runs = []
    for n in m.get("sizes", ladder):
        base = _shape(doc, n, n_expert=1, top_k=1)
        n_act = counting.param_counts(base).active
        tokens = float(m["tokens"]) if "tokens" in m else float(m.get("tokens_per_param", 20.0)) * n_act
        for e in m["experts"]:
            for k in (m.get("top_k", [1]) if e > 1 else [1]):
                if k > e:
                    continue
                d_ff = max(16, round(base.d_ff / k / 16) * 16)  # k experts of width d_ff/k ~ one dense MLP
                model = base.with_overrides(n_expert=int(e), top_k=int(k), d_ff=d_ff)
                tag = "dense" if e == 1 else f"moe{e}-top{k}"
                runs.append(_make(model, _train_cfg(doc, p, tokens=tokens), fp, corpus,
                                  label=f"{n}/{tag}", preset=n, group=n))
    return runs, [], ["moe: matched active parameters (expert width d_ff / top_k), same D per base size"]


_BUILDERS = {"isoflop": _isoflop, "grid": _grid, "wsd-ladder": _ladder_runs, "moe": _moe}


def plan_sweep(path: str | Path) -> SweepPlan:
    """Read a sweep file and lay out every run (see the module docstring for the designs)."""
    p = Path(path)
    doc = read_sweep_file(p)
    s = doc["sweep"]
    design = s["design"]
    corpus = _corpus(doc, p)
    fp = load_corpus(corpus, **({"val_fraction": s["val_fraction"]} if "val_fraction" in s else {})).fingerprint
    try:
        runs, warns, notes = _BUILDERS[design](doc, p, fp, corpus, _ladder(doc, p))
    except (KeyError, TypeError) as e:
        raise SweepFileError(f"{p}: [{design}] missing or malformed setting: {e}") from None
    ids = [r.spec.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise SweepFileError(f"{p}: two runs of the design are identical (same shape and budget); "
                             "remove the duplicate sizes or budgets")
    plan = SweepPlan(s.get("name", p.stem), design, str(p), corpus, tuple(runs), tuple(notes))
    return SweepPlan(**{**plan.__dict__, "warnings": tuple(warns) + identifiability_warnings(plan)})


def identifiability_warnings(plan: SweepPlan) -> tuple[str, ...]:
    """Why a plan may not identify L(N, D): one D/N ratio, < 3 sizes per budget, budgets off target.

    With a single tokens-per-parameter ratio N and D move together, so the N and D terms of
    L = E + A/N^alpha + B/D^beta cannot be told apart (Hoffmann et al. 2022 vary both).
    """
    runs = [r for r in plan.runs if r.role != "trunk"]
    out = []
    ratios = [r.tokens / r.n_total for r in runs]  # N total, as the tokens-per-parameter prior
    if max(ratios) < 2 * min(ratios):
        out.append(f"all runs have about the same D/N ratio ({min(ratios):.3g} to {max(ratios):.3g}, less than "
                   "2x apart): N and D effects cannot be separated")
    if len({r.preset for r in runs}) < 3:
        out.append("fewer than 3 model sizes in the whole sweep: no curvature in N can be fitted")
    groups: dict[str, list[PlannedRun]] = {}
    for r in runs:
        groups.setdefault(r.group, []).append(r)
    if plan.design == "isoflop":
        for g, rs in groups.items():
            if len({r.preset for r in rs}) < 3:
                out.append(f"{g}: fewer than 3 sizes; an IsoFLOP minimum needs at least 3 points")
            for r in rs:
                c = r.flops_exact if r.spec.train.flops_convention == "exact" else r.flops_6n
                if abs(c / r.budget - 1) > 0.01:
                    out.append(f"{r.label}: realised C {c:.4g} is {100 * (c / r.budget - 1):+.1f}% off the "
                               f"budget (only {r.steps} steps); raise the budget or shrink the batch")
    return tuple(out)


def format_plan(plan: SweepPlan, walls: list[float] | None = None) -> str:
    """The plan as a table, one line per run, then totals, the ladder's savings and the warnings.

    N: total / non-embedding / active parameters. D: training tokens. C: training FLOPs, 6N (=
    6 * N_active * D) and exact (scalefit.training.counting); for ladder branches, including the trunk steps
    they inherit. walls: estimated seconds per run on this machine (see scalefit.sweep.run.calibrate).
    """
    head = (f"{'run':24s} {'run_id':26s} {'d':>4s} {'L':>2s} {'E/k':>5s} {'N_total':>9s} {'N_nonemb':>9s} "
            f"{'N_active':>9s} {'D':>9s} {'steps':>6s} {'C_6N':>9s} {'C_exact':>9s}" + ("  est." if walls else ""))
    lines = [f"{plan.name}: design {plan.design}, {len(plan.runs)} runs, corpus "
             f"{plan.corpus or 'stdlib'} (from {plan.source})", head]
    for i, r in enumerate(plan.runs):
        m = r.spec.model
        ek = f"{m.n_expert}/{m.top_k}" if m.is_moe else "-"
        lines.append(f"{r.label:24s} {r.spec.run_id:26s} {m.d_model:4d} {m.n_layer:2d} {ek:>5s} {r.n_total:9.3g} "
                     f"{r.n_non_embedding:9.3g} {r.n_active:9.3g} {r.tokens:9.3g} {r.steps:6d} {r.flops_6n:9.3g} "
                     f"{r.flops_exact:9.3g}" + (f"  {walls[i]:5.0f}s" if walls else ""))
    own = plan.total_flops(own=True)
    lines.append(f"total: {own:.4g} FLOPs (exact) to train" + (f", about {sum(walls) / 60:.1f} min here" if walls else ""))
    if plan.design == "wsd-ladder":
        indep = sum(r.flops_exact for r in plan.runs if r.role == "branch")
        lines.append(f"ladder: {own:.4g} FLOPs vs {indep:.4g} for independent runs to the same D "
                     f"({100 * (1 - own / indep):.0f}% saved)")
    lines += [f"note: {n}" for n in plan.notes]
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)
