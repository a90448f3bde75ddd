"""Property tests of the sweep-file parser: any file gives a plan or one SweepFileError naming it, never a
traceback (hypothesis draws the files: any text, any bytes, and TOML of the schema's tables with values of
any type at the schema's keys)."""

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalefit.sweep.designs import DESIGNS
from scalefit.sweep.plan import SWEEP_KEYS, SweepFileError, plan_sweep, read_sweep_file
from scalefit.sweep.planned import SweepPlan

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    database=None)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("props")
    (d / "c.txt").write_text("a small corpus for planning, a few kilobytes of text\n" * 100)
    return d


def _toml(v) -> str:
    """A TOML value (inline tables for dicts); strings as JSON strings, which TOML reads alike or refuses."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, (int, str)):
        return json.dumps(v, ensure_ascii=False) if isinstance(v, str) else str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml(x)}" for k, x in v.items()) + "}"


TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)  # TOML has no lone surrogates
PRESET = st.sampled_from(["d16-l1", "d24-l1", "d32-l1", "d48-l2", "moe4-top1-d64-l2", "d999"])
SCALARS = (st.booleans() | st.integers(-2**63, 2**63 - 1) | st.integers(-3, 40)
           | st.floats(allow_nan=True, allow_infinity=True) | st.floats(1e2, 1e13) | TEXT
           | st.sampled_from(["d16-l1", "dense", "moe", "stdlib", "c.txt", "cosine", "wsd", "exact", "6ND", "total"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=2),
                      max_leaves=6)
# Values a key takes when right, so that many drawn files get past the first check and are laid out.
GOOD = {"budgets": st.lists(st.floats(1e9, 1e13), min_size=1, max_size=3),
        "tokens": st.lists(st.floats(2e3, 3e5), min_size=1, max_size=3) | st.floats(2e3, 3e5),
        "sizes": st.lists(PRESET, min_size=1, max_size=3), "ladder": st.lists(PRESET, min_size=1, max_size=4),
        "experts": st.lists(st.integers(0, 8), min_size=1, max_size=3),
        "top_k": st.lists(st.integers(0, 4), min_size=1, max_size=2),
        "seq_len": st.integers(0, 64), "batch_size": st.integers(0, 8), "sizes_per_budget": st.integers(0, 5),
        "tokens_per_param": st.floats(0, 50), "cooldown_frac": st.floats(0, 1.5), "warmup_steps": st.integers(-1, 5),
        "family": st.sampled_from(["dense", "moe"]), "val_fraction": st.floats(0, 1), "seed": st.integers(-1, 9),
        "lr": st.floats(0, 1) | st.booleans(), "tie_embeddings": st.booleans(), "schedule": st.sampled_from(
            ["cosine", "constant", "wsd"]), "name": st.from_regex(r"[A-Za-z0-9._/-]{0,8}", fullmatch=True),
        "n_kind": st.sampled_from(["total", "active", "non-embedding", "x"]),
        "flops_convention": st.sampled_from(["exact", "6ND", "x"]),
        "compute_dtype": st.sampled_from(["float32", "bfloat16", "float16"])}
NUMBER = st.integers(0, 5) | st.floats(0, 1)  # most other keys are small counts or shares


def _value(key):
    good = GOOD.get(key, NUMBER)
    return st.one_of(good, good, good, good, VALUES)


# One small valid file per design; drawn files change a few of its values, or add keys and tables.
VALID = {
    "isoflop": {"isoflop": {"budgets": [1e10, 3e10], "sizes_per_budget": 3, "tokens_per_param": 5}},
    "grid": {"grid": {"sizes": ["d16-l1", "d24-l1"], "tokens": [5e3, 1e4]}},
    "wsd-ladder": {"wsd-ladder": {"sizes": ["d16-l1"], "tokens": [5e3, 1e4], "cooldown_frac": 0.25,
                                  "warmup_steps": 2}},
    "moe": {"moe": {"sizes": ["d16-l1"], "experts": [1, 2, 4], "top_k": [1, 2], "tokens": 5e3}},
}


@st.composite
def sweep_docs(draw) -> str:
    """A valid sweep file of any design with up to 3 values changed to anything (any type, any key)."""
    design = draw(st.sampled_from(sorted(VALID)))
    tables = {"sweep": {"name": "p", "design": design, "corpus": "c.txt"},
              "model": {"ladder": ["d16-l1", "d24-l1", "d32-l1"], "seq_len": 16}, "train": {"batch_size": 2},
              **json.loads(json.dumps(VALID[design]))}
    for _ in range(draw(st.integers(0, 3))):
        table = draw(st.sampled_from(sorted(SWEEP_KEYS)) | st.sampled_from(sorted(tables)))
        key = draw(st.sampled_from(sorted(SWEEP_KEYS[table])) | st.sampled_from(sorted(SWEEP_KEYS[table])) | TEXT)
        tables.setdefault(table, {})[key] = draw(_value(key))
    return "\n".join(f"[{json.dumps(t, ensure_ascii=False)}]\n" + "".join(
        f"{json.dumps(k, ensure_ascii=False)} = {_toml(v)}\n" for k, v in body.items()) for t, body in tables.items())


def _plan_or_one_error(path):
    try:
        return plan_sweep(path)
    except SweepFileError as e:
        assert str(path) in str(e)  # every message names the file
        return e


@SETTINGS
@given(text=sweep_docs())
def test_any_sweep_file_plans_or_gives_one_clear_error(folder, text):
    p = folder / "s.toml"
    p.write_text(text)
    got = _plan_or_one_error(p)
    if isinstance(got, SweepPlan):
        assert got.runs and all(r.steps >= 1 for r in got.runs)


@SETTINGS
@given(text=st.text(max_size=300))
def test_any_text_reads_or_gives_one_clear_error(folder, text):
    p = folder / "t.toml"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        assert isinstance(read_sweep_file(p), dict)
    except SweepFileError as e:
        assert str(p) in str(e)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_any_bytes_read_or_give_one_clear_error(folder, data):
    p = folder / "b.toml"
    p.write_bytes(data)
    try:
        assert isinstance(read_sweep_file(p), dict)
    except SweepFileError as e:
        assert str(p) in str(e)
