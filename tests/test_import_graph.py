"""No import cycles between the modules of ``sparsec/`` (file level).

Every ``.py`` file under ``sparsec/`` is parsed with :mod:`ast` (nothing is imported). Each file is a node;
an edge ``a -> b`` exists when module ``a`` imports module ``b`` anywhere in its text. Counted as imports:

- top-level ``import x`` / ``from x import y`` statements;
- relative imports (``from . import y``, ``from ..x import y``), resolved against the file's package;
- imports inside functions, methods, ``if TYPE_CHECKING:`` blocks and ``try:`` blocks — a function-local
  import is still a dependency, hiding an import in a function does not break a cycle.

``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg`` itself (its
``__init__``). Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``, but those package edges
are not counted: a package ``__init__`` that re-exports its children would otherwise make every child that
imports a sibling look cyclic. A cycle found is printed as ``a -> b -> ... -> a``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "sparsec"


def _module_name(path: Path) -> str:
    """``sparsec/x/y.py`` -> ``sparsec.x.y``; ``sparsec/x/__init__.py`` -> ``sparsec.x``."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    """Every module of sparsec/ by dotted name."""
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is or lies inside, or None for modules outside sparsec."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(mod: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The sparsec modules that ``mod`` imports anywhere in its file (file level, local imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, known)
                if target:
                    out.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join(base_parts)
                full = f"{base}.{node.module}" if node.module else base
            else:
                full = node.module or ""
            for alias in node.names:
                sub = f"{full}.{alias.name}"
                target = sub if sub in known else _resolve(full, known)
                if target:
                    out.add(target)
    out.discard(mod)
    return out


def import_graph() -> dict[str, set[str]]:
    """The module graph of sparsec/: module -> the sparsec modules it imports."""
    known = _modules()
    return {mod: _imports(mod, path, known) for mod, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None when it is acyclic (iterative DFS)."""
    color: dict[str, int] = {}
    for start in sorted(graph):
        if color.get(start):
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path = [start]
        color[start] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                color[node] = 2
                continue
            nxt = todo.pop()
            state = color.get(nxt, 0)
            if state == 1:
                return path[path.index(nxt):] + [nxt]
            if state == 0:
                color[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph.get(nxt, ()))))
    return None


def test_graph_sees_local_and_relative_imports() -> None:
    """The parser counts function-local and relative imports (a check of the checker itself)."""
    src = "from . import b\nfrom .c import d\ndef f():\n    import sparsec.e\n"
    known = {"sparsec.p": Path(), "sparsec.p.b": Path(), "sparsec.p.c": Path(), "sparsec.e": Path()}
    tmp = Path(__file__).parent / "_import_graph_probe.py"
    try:
        tmp.write_text(src)
        assert _imports("sparsec.p.a", tmp, known) == {"sparsec.p.b", "sparsec.p.c", "sparsec.e"}
    finally:
        tmp.unlink()


def test_no_import_cycles() -> None:
    """sparsec/ has no import cycle between its modules; the first one found is printed."""
    cycle = find_cycle(import_graph())
    if cycle:
        print("import cycle:", " -> ".join(cycle))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
