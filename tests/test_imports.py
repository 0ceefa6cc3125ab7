"""No import circles anywhere in the tree.

Every module of the repository (the daemon, its verbs, the sandboxes, bench/, examples/
and the tests themselves) is read with `ast`, and each import it makes, at the top or
inside a function, is an edge to the module it names. A circle in that graph is a
failure, printed module by module: two modules that need each other are one module
split in the wrong place, and a function-level import that closes a circle only hides
it until the day the import moves.

Imports under `if TYPE_CHECKING:` count too: they are never executed, but two modules
that name each other even for the type checker still cannot be read, changed or moved
one without the other. Not edges: imports of what is not in the tree (the standard
library, the packages of requirements.txt). `from pkg import name` is an edge to
`pkg.name` when that is a module of the tree, else to `pkg`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".venv", ".git", "build", "node_modules", "__pycache__", "demo-run"}

# No circle is allowed. (The last one, channels/base.py <-> wechat_api.py <->
# wechat_errors.py, went when the channel seam closed.)
KNOWN: set[frozenset[str]] = set()


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the repository."""
    found: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if any(part in SKIP or part.startswith(".") for part in rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts:
            found[".".join(parts)] = path
    return found


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth (inside functions, under `if`, in `try`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def edges_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..pkg import y
                anchor = package.split(".") if package else []
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = []
            for alias in node.names:
                full = f"{base}.{alias.name}" if base else alias.name
                targets.append(full if full in known else base)
        out.update(t for t in targets if t in known and t != name)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: edges_of(name, path, known) for name, path in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as
    one circle through all of them where there is one, sorted for a stable message."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:  # iterative: the tree is deep enough to matter
        nonlocal counter
        work = [(start, iter(sorted(g[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(g[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        item = stack.pop()
                        on_stack.discard(item)
                        component.append(item)
                        if item == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for name in sorted(g):
        if name not in index:
            visit(name)
    return sorted(found)


def circle_through(g: dict[str, set[str]], component: list[str]) -> list[str]:
    """One path a -> ... -> a inside the component, for the failure message."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(g[node] & members):
            if child == start:
                return [*paths[node], start]
            if child not in paths:
                paths[child] = [*paths[node], child]
                queue.append(child)
    return component


def test_no_module_imports_itself_round_a_circle() -> None:
    g = graph()
    assert len(g) > 100 and sum(map(len, g.values())) > 300, "the walk found too little"
    found = [c for c in cycles(g) if frozenset(c) not in KNOWN]
    shown = "\n".join(" -> ".join(circle_through(g, c)) for c in found)
    assert not found, f"import circles:\n{shown}"


def test_the_walk_sees_function_level_imports_and_finds_a_circle(tmp_path: Path) -> None:
    """The detector itself: a circle closed only inside a function, or only for the type
    checker, is still found; relative imports resolve."""
    known = {"a": tmp_path / "a.py", "b": tmp_path / "b.py", "c": tmp_path / "c.py",
             "pkg": tmp_path / "pkg" / "__init__.py", "pkg.d": tmp_path / "pkg" / "d.py"}
    (tmp_path / "pkg").mkdir()
    known["a"].write_text("import b\n")
    known["b"].write_text("def f():\n    from a import thing\n")
    known["c"].write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                          "    from pkg import d\n")
    known["pkg"].write_text("from . import d\n")
    known["pkg.d"].write_text("from .. import c\n")
    g = {name: edges_of(name, path, known) for name, path in known.items()}
    assert g == {"a": {"b"}, "b": {"a"}, "c": {"pkg.d"}, "pkg": {"pkg.d"}, "pkg.d": {"c"}}
    assert cycles(g) == [["a", "b"], ["c", "pkg.d"]]
    assert circle_through(g, ["a", "b"]) == ["a", "b", "a"]
