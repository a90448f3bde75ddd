"""The layout holds: no import from a lower layer to a higher one, no import cycle (imports inside
functions included), and the two halves meet only through the run-folder format."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "scalefit"

# Package -> the packages it may import from (besides itself). Bottom to top.
ALLOWED = {
    "conventions": set(), "atomic": set(), "resources": set(),
    "store": {"conventions", "atomic"},
    "training": {"conventions", "atomic", "store"},
    # training.lr: a run's learning rates are rebuilt from its spec.json by the trainer's own (numpy) schedules
    "fitting": {"conventions", "atomic", "store", "resources", "training.config", "training.lr"},
    "sweep": {"conventions", "atomic", "store", "training", "resources"},
    "analysis": {"conventions", "atomic", "store", "fitting", "training.config", "training.counting"},
    "report": {"conventions", "atomic", "store", "fitting", "analysis"},
    "cli": {"*"},
}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(path: Path, module: str):
    """scalefit modules `path` imports at run time, inside functions too (a name imported from a package
    counts as its submodule when one of that name exists); imports under `if TYPE_CHECKING:` (annotations,
    never executed) are left out."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "scalefit")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "scalefit":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                base = PKG.parent / Path(*sub.split("."))
                yield sub if base.with_suffix(".py").exists() or (base / "__init__.py").exists() else node.module


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _allowed(src: str, dst: str) -> bool:
    a, b = _layer(src), _layer(dst)
    if a == b or b == "" or b == "__version__":
        return True
    rules = ALLOWED.get(a, set())
    if "*" in rules or b in rules:
        return True
    return ".".join(dst.split(".")[1:3]) in rules


GRAPH = {m: sorted(set(_imports(p, m))) for m, p in _modules()}


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _layer(m)))
def test_no_import_from_a_higher_layer(module):
    bad = [d for d in GRAPH[module] if not _allowed(module, d)]
    assert not bad, f"{module} imports {bad} (layer {_layer(module)} may use {sorted(ALLOWED[_layer(module)])})"


def test_no_import_cycle():
    known = set(GRAPH)
    edges = {m: [d for d in ds if d in known and d != m] for m, ds in GRAPH.items() if m != "scalefit"}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_library_modules_stay_small():
    big = {m: n for m, p in _modules() if (n := len(p.read_text().splitlines())) > 400}
    assert not big, f"modules over 400 lines: {big}"
