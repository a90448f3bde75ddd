"""Files scalefit ships: the reference datasets (`datasets/`) and the sweep files (`experiments/`).

In the repository they live at the top level, beside the package (this folder links to them); a wheel
carries copies. Read them with `files()`, which works from a checkout, an editable install and a wheel.
"""

from __future__ import annotations

from importlib.resources import files as _files


def files():
    """The resources folder as an `importlib.resources` Traversable."""
    return _files(__name__)


def sweep_file(name_or_path) -> "Path":
    """A sweep file: `name_or_path` itself when it is a file, else the shipped experiments/<name>.toml
    (e.g. "quickstart"); FileNotFoundError naming both places otherwise."""
    from pathlib import Path

    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = Path(str(files().joinpath("experiments")))
    stem = p.name[:-5] if p.name.endswith(".toml") else p.name
    q = shipped / f"{stem}.toml"
    if p.parent == Path(".") and q.is_file():
        return q
    names = sorted(f.stem for f in shipped.glob("*.toml"))
    raise FileNotFoundError(f"no sweep file {name_or_path}: not a file, and not one of the shipped sweeps "
                            f"({', '.join(names)})")
