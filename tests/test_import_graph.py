"""The package's import graph: no cycles (imports inside functions count too), and the method's modules
(mgvideo/multigrid/) import nothing else from mgvideo but mgvideo.errors."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mgvideo"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The mgvideo modules `path` imports anywhere in its body; `from pkg import sub` names the submodule
    alone when every imported name is a submodule (it then needs the package only as a namespace)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            found |= subs if len(subs) == len(node.names) else subs | {node.module}
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports_of(path, set(paths)) for name, path in paths.items()}
    for name in graph:  # a package's own __init__ importing its submodules is not a cycle
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_import_graph_has_no_cycles():
    assert find_cycle(import_graph()) is None


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_the_method_imports_only_errors_from_the_package():
    graph = import_graph()
    allowed = ("mgvideo.multigrid", "mgvideo.errors")
    outside = {name: sorted(m for m in deps if not m.startswith(allowed))
               for name, deps in graph.items() if name.startswith("mgvideo.multigrid")}
    assert {name: deps for name, deps in outside.items() if deps} == {}
