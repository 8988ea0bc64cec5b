"""The package's shape: no import circles (imports inside functions count), at most three loose
top-level modules, and nothing below `inspection/` importing it."""
import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bilstm_tagger"
# Besides these and the deprecation shims, at most three modules may sit at the top level.
TOP_LEVEL_ALLOWED = {"__init__", "__main__", "errors"}
MAX_LOOSE = 3
BELOW_INSPECTION = ("bilstm_tagger.ml", "bilstm_tagger.pipeline", "bilstm_tagger.data", "bilstm_tagger.util", "bilstm_tagger.tags", "bilstm_tagger.errors")
# (importer, imported) pairs allowed inside a function only.
LAZY_INSPECTION = {("bilstm_tagger.pipeline.component", "bilstm_tagger.inspection.inspect")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> Dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def is_shim(path: Path) -> bool:
    return "forward(__name__" in path.read_text()


def imports(path: Path, known: Set[str], top_level_only: bool = False) -> Set[str]:
    """The package modules `path` imports, at any depth (or only at module level)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module:
                found.add(target)
            for alias in node.names:  # `from . import crf` imports the submodule
                found.add(f"{target}.{alias.name}")
    return {m for m in found if m in known and m != name}


def graph() -> Dict[str, Set[str]]:
    mods = modules()
    return {name: imports(path, set(mods)) for name, path in mods.items()}


def find_cycle(edges: Dict[str, Set[str]]) -> List[str]:
    """One import circle as a list of modules, or [] when the graph is acyclic."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_cycle_finder_sees_a_circle_hidden_in_a_function(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_imports_inside_functions_are_edges():
    edges = graph()
    # component.py imports inspection/inspect.py inside its `inspect` method only
    assert "bilstm_tagger.inspection.inspect" in edges["bilstm_tagger.pipeline.component"]
    assert "bilstm_tagger.ml.crf" in edges["bilstm_tagger.ml.decoder"]  # `from . import crf`


def test_the_package_has_no_import_circles():
    assert find_cycle(graph()) == []


def test_at_most_three_loose_top_level_modules():
    loose = sorted(
        p.stem for p in PACKAGE.glob("*.py") if p.stem not in TOP_LEVEL_ALLOWED and not is_shim(p)
    )
    assert len(loose) <= MAX_LOOSE, loose


def test_every_old_top_level_path_is_a_shim():
    for old in ("component", "model", "readers", "scoring", "schedules", "confidence", "introspect", "inspect_pipe", "calibrate", "explain"):
        assert is_shim(PACKAGE / f"{old}.py"), old
    assert all(is_shim(p) for p in (PACKAGE / "report").glob("*.py"))


@pytest.mark.parametrize("top_level_only", [True, False])
def test_nothing_below_inspection_imports_it(top_level_only):
    mods = modules()
    for name, path in mods.items():
        if not name.startswith(BELOW_INSPECTION) or is_shim(path):
            continue
        for imported in imports(path, set(mods), top_level_only):
            if imported.startswith("bilstm_tagger.inspection"):
                assert not top_level_only and (name, imported) in LAZY_INSPECTION, f"{name} imports {imported}"
