"""The typed schema of a sweep file: one pydantic model per table, checked before anything is laid out.

TOML gives every value its type (true, 3, 3.0, "3", [3]); the schema says which one each key takes and
refuses any other, so ``tie_embeddings = "no"`` is not read as true, ``lr = true`` not as 1.0 and
``budgets = "123"`` not as the budgets 1, 2 and 3. Validation is strict (pydantic's strict mode: no
string is read as a number, no boolean as a number, no float as an integer; an integer is a valid
number), numbers must be finite, and ranges that no run could use (``sizes_per_budget = 0``, a
negative seed) are refused here, at plan time, rather than when a run starts. Values are checked, not
converted: the planner reads the file's own values, so the run ids of existing sweeps do not change.

`SweepSchemaError` lists each wrong value with its table, key and what was expected; `scalefit.sweep.plan`
adds the file and line. The [train] table is built from `scalefit.training.config.TrainConfig`'s own
fields and annotations (one definition of what a train setting is), less the keys a design sets.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from scalefit.training.config import TrainConfig

# strict: no coercion between types; forbid: unknown keys are refused (the planner names their line first).
_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

Positive = Annotated[float, Field(gt=0)]  # a finite number > 0
PositiveInt = Annotated[int, Field(ge=1)]
Names = Annotated[list[str], Field(min_length=1)]  # a non-empty list of preset names
# A sweep name becomes a folder (runs/<name>) and a file (sweep-<name>.json) in the store: a plain name only.
NAME_PATTERN = r"^[A-Za-z0-9._-]+$"
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]  # jax.random.PRNGKey takes a non-negative int32


class SweepTable(BaseModel):
    """[sweep]: the sweep's name, design and data."""

    model_config = _STRICT
    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=200)] | None = None  # default: the file's stem
    design: str  # a name in scalefit.sweep.designs.DESIGNS (checked by the planner, which lists them)
    corpus: str = "stdlib"  # text file or folder, relative to the sweep file, inside its folder
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.02  # share of documents held out for validation


class ModelTable(BaseModel):
    """[model]: the family, the ladder of presets and the overrides applied to every preset."""

    model_config = _STRICT
    family: Literal["dense", "moe"] = "dense"
    ladder: Names | None = None  # default: every plain preset of the family
    seq_len: PositiveInt | None = None
    compute_dtype: str | None = None  # checked by ModelConfig (float32 or bfloat16)
    tie_embeddings: bool | None = None


# Keys of [train] a design sets itself (the budget; a wsd-ladder its own cooldown).
DESIGN_SET_TRAIN_KEYS = frozenset({"tokens", "flops", "flops_convention", "cooldown_frac"})
# Ranges TrainConfig does not check itself because its API takes any int (a seed outside them fails in JAX).
_TRAIN_EXTRA: dict[str, Any] = {"seed": Seed}


def _train_table() -> type[BaseModel]:
    hints = typing.get_type_hints(TrainConfig)
    fields = {f: (_TRAIN_EXTRA.get(f, hints[f]), None) for f in TrainConfig.__dataclass_fields__
              if f not in DESIGN_SET_TRAIN_KEYS}
    return create_model("TrainTable", __config__=_STRICT, __doc__="[train]: TrainConfig's fields.", **fields)


TrainTable = _train_table()


class IsoflopTable(BaseModel):
    """[isoflop]: FLOP budgets and the sizes laid out around each one's prior optimum."""

    model_config = _STRICT
    budgets: Annotated[list[Positive], Field(min_length=1)]
    sizes_per_budget: PositiveInt = 4
    tokens_per_param: Positive = 20.0
    n_kind: str = "total"  # checked by NKind.parse
    flops_convention: str = "exact"  # checked by CKind.parse


class GridTable(BaseModel):
    """[grid]: sizes x token counts."""

    model_config = _STRICT
    sizes: Names | None = None
    tokens: Annotated[list[Positive], Field(min_length=1)]


class WsdLadderTable(BaseModel):
    """[wsd-ladder]: sizes, the token counts of the branches, the cooldown share and the warmup."""

    model_config = _STRICT
    sizes: Names | None = None
    tokens: Annotated[list[Positive], Field(min_length=1)]
    cooldown_frac: Annotated[float, Field(gt=0, le=1)] = 0.2
    warmup_steps: Annotated[int, Field(ge=0)] | None = None


class MoeTable(BaseModel):
    """[moe]: expert counts x top-k x base sizes."""

    model_config = _STRICT
    sizes: Names | None = None
    experts: Annotated[list[PositiveInt], Field(min_length=1)]  # 1 = the dense baseline
    top_k: Annotated[list[PositiveInt], Field(min_length=1)] = [1]
    tokens_per_param: Positive = 20.0
    tokens: Positive | None = None


BASE_TABLES: dict[str, type[BaseModel]] = {"sweep": SweepTable, "model": ModelTable, "train": TrainTable}


def keys(table: type[BaseModel]) -> frozenset[str]:
    """The keys a table takes."""
    return frozenset(table.model_fields)


class SweepSchemaError(ValueError):
    """Values of a sweep file of the wrong type or range; ``problems`` holds (table, key, message)."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        super().__init__("; ".join(f"[{t}] {msg}" for t, _, msg in problems))
        self.problems = problems


def _toml(v: Any) -> str:
    """A value as the file spells it, with its TOML type."""
    if isinstance(v, bool):
        return f"{str(v).lower()} (a boolean)"
    if isinstance(v, str):
        return f"{v!r} (a string)" if len(v) < 60 else f"{v[:57]!r}... (a string)"
    if isinstance(v, list):
        return "a list" if len(repr(v)) > 60 else f"{v!r} (a list)"
    if isinstance(v, dict):
        return "a table"
    return f"{v!r} ({'an integer' if isinstance(v, int) else 'a number'})"


def _expected(err: dict) -> str:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    words = {"float_type": "a number", "int_type": "an integer", "bool_type": "true or false",
             "string_type": "a string", "list_type": "a list", "finite_number": "a finite number",
             "int_from_float": "an integer", "extra_forbidden": "no such key", "missing": "a value (the key is required)"}
    if kind in words:
        return words[kind]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"a value {op} {bound}"
    if kind == "too_short":
        return "a non-empty list"
    if kind == "too_long":
        return f"at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return "a plain name: letters, digits, '.', '_' or '-', not '.' or '..'"
    if kind == "literal_error":
        return f"one of {ctx.get('expected')}"
    return err["msg"]


def check_table(table: str, schema: type[BaseModel], body: dict) -> None:
    """SweepSchemaError listing every value of ``body`` that ``schema`` refuses."""
    try:
        schema.model_validate(body)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = [str(x) for x in err["loc"]]
            # A union (e.g. `list | None`) reports each branch; the first names the real expectation.
            loc = [x for x in loc if not x.startswith(("list[", "constrained-", "function-"))
                   and x not in ("str", "int", "float", "bool", "none")]
            key = loc[0] if loc else "?"
            where = key + "".join(f"[{i}]" for i in loc[1:])
            if any(p[1] == key for p in problems):
                continue  # one message per key
            got = "" if err["type"] == "missing" else f", got {_toml(err['input'])}"
            problems.append((table, key, f"{where}: expected {_expected(err)}{got}"))
        raise SweepSchemaError(problems) from None
    if table == "sweep" and body.get("name") in (".", ".."):
        raise SweepSchemaError([(table, "name", f"name: expected {_expected({'type': 'string_pattern_mismatch'})}"
                                               f", got {_toml(body['name'])}")])
