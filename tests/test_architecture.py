"""The layering of the code, read from its imports (ast, nothing imported).

Dependencies run one way (app -> backend -> precompute's model code): the read side
(backend) never reaches into the pipeline's stages, and no two project modules import
each other, directly or around a loop. Every import that runs counts: module-level
ones and those deferred into a function (a deferred import hides a cycle, it does not
remove it); only imports under ``if TYPE_CHECKING`` (never run) are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "backend", "precompute", "frontend")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(path: Path, name: str, deferred: bool = True) -> set[str]:
    """The modules ``path`` imports when it runs: its top-level statements, ``try``/``if`` blocks included,
    and (``deferred``) the imports inside its functions and classes; never those under ``if TYPE_CHECKING``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    statements = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while statements:
        node = statements.pop()
        if isinstance(node, ast.If) and _type_checking(node):
            statements += node.orelse
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}  # ``from pkg import module``
        elif deferred or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            statements += [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports at module level (a submodule also needs its package)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = {m for m in runtime_imports(path, name) if m in modules and m != name}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_module_graph_has_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_read_side_never_imports_the_pipeline_stages():
    leaks = {}
    for name, path in project_modules().items():
        if name.split(".")[0] == "backend":
            bad = sorted(m for m in runtime_imports(path, name)
                         if m == "precompute.pipeline" or m.startswith(("precompute.pipeline.", "precompute.stages")))
            if bad:
                leaks[name] = bad
    assert not leaks, f"backend modules importing precompute.stages or precompute.pipeline: {leaks}"


def test_the_cycle_finder_finds_a_planted_cycle():
    # the control: a loop of three and a self-contained pair are found, a chain is not
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert cycles(graph) == [["a", "b", "c"], ["d", "e"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
