"""Reading a fit-result JSON file: one clear error naming the file and the field for anything that is not
what `FitResult.to_dict` writes (a folder, bytes that are not UTF-8, invalid JSON, a field of the wrong
shape or a null where a number belongs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping


def read_json(path) -> object:
    """The JSON value in the file at `path`; ValueError / FileNotFoundError naming it otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a fit result JSON file (scalefit fit --out)")
    if not path.exists():
        raise FileNotFoundError(f"cannot read {path}: no such file (a fit result JSON, scalefit fit --out)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file in UTF-8 ({e.reason} at byte {e.start}); expected a fit "
                         "result JSON file (scalefit fit --out)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def check_shape(d: Mapping, law) -> None:
    """ValueError naming the first field of a fit-result dict whose shape is not what `to_dict` writes."""
    for key in ("params", "derived"):
        if not isinstance(d.get(key), Mapping):
            raise ValueError(f"field {key!r} must be an object of name: estimate, got {_kind(d.get(key))}")
    missing = [k for k in law.param_names if k not in d["params"]]
    if missing:
        raise ValueError(f"field 'params' lacks {', '.join(map(repr, missing))} of law {law.name} (parameters "
                         f"{', '.join(law.param_names)}; the file has {', '.join(d['params']) or 'none'})")
    for key in ("params", "derived"):
        for name, est in d[key].items():
            where = f"{key}.{name}"
            if not isinstance(est, Mapping):
                raise ValueError(f"field {where} must be an object with a 'value', got {_kind(est)}")
            if key == "params" and not _is_number(est.get("value")):
                raise ValueError(f"field {where}.value must be a number, got {_kind(est.get('value'))}")
            if est.get("se") is not None and not _is_number(est["se"]):
                raise ValueError(f"field {where}.se must be a number or null, got {_kind(est['se'])}")
            ci = est.get("ci")
            if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and all(map(_is_number, ci))):
                raise ValueError(f"field {where}.ci must be [low, high] (numbers) or null, got {_kind(ci)}")
    samples = d.get("samples")
    if samples is not None and not (isinstance(samples, list) and all(
            isinstance(row, list) and len(row) == len(law.param_names) and
            all(v is None or _is_number(v) for v in row) for row in samples)):
        raise ValueError(f"field 'samples' must be a list of [{', '.join(law.param_names)}] rows of numbers, or "
                         "null")
    for key in ("objective", "n_points", "n_runs", "seed"):
        if key in d and not _is_number(d[key]):
            raise ValueError(f"field {key!r} must be a number, got {_kind(d[key])}")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _kind(x) -> str:
    return "null" if x is None else f"{type(x).__name__} {x!r}"[:80]
