"""The layers of the run half: store/ at the bottom, training/ over it, sweep/ over both, no cycles.

Every import counts, those inside functions too; only imports under ``if TYPE_CHECKING:`` (annotations,
never executed) are left out.
"""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "scalefit"
# Package -> the scalefit packages and modules it may import.
ALLOWED = {
    "store": {"scalefit.conventions", "scalefit.atomic", "scalefit.store"},
    "training": {"scalefit", "scalefit.conventions", "scalefit.atomic", "scalefit.store", "scalefit.training"},
    "sweep": {"scalefit.conventions", "scalefit.atomic", "scalefit.store", "scalefit.training", "scalefit.sweep"},
}


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """scalefit modules imported by ``path`` at run time (a name imported from a package counts as its
    submodule when one of that name exists)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for stmt in node.body for n in ast.walk(stmt)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "scalefit"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "scalefit":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                is_module = (PKG.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                out.add(sub if is_module else node.module)
    return out


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for pkg in ALLOWED for p in sorted((PKG / pkg).glob("*.py"))}


def test_no_import_reaches_a_higher_layer():
    for mod, deps in _graph().items():
        allowed = ALLOWED[mod.split(".")[1]]
        bad = sorted(d for d in deps if not any(d == a or d.startswith(a + ".") for a in allowed))
        assert not bad, f"{mod} imports {bad}"


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m, path):
        state[m] = 1
        for d in graph.get(m, ()):
            assert state.get(d) != 1, "import cycle: " + " -> ".join([*path, m, d])
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
