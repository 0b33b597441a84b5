"""The package floors hold: no import cycle, no import of a higher floor, no file over 300 lines.

The floors are written down here, once (docs/architecture.md explains them). A module may import
from its own package or from a lower floor; imports under ``if TYPE_CHECKING:`` are exempt (they
never run). Every module of exporter/ is parsed with ``ast``, nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 300
#: Lowest first. A name is a package (exporter.model) or a top-level module (exporter.cli).
FLOORS: tuple[tuple[str, ...], ...] = (
    ("exporter", "exporter.version", "exporter.logfmt"),
    ("exporter.model",),
    ("exporter.settings",),
    ("exporter.sources",),
    ("exporter.netns",),
    ("exporter.owners",),
    ("exporter.aggregate",),
    ("exporter.pipeline",),
    ("exporter.exposition",),
    ("exporter.web",),
    ("exporter.cli", "exporter.reload", "exporter.healthcheck", "exporter.sighup", "exporter.__main__"),
)


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the ``exporter`` package under ``root``."""
    out = {}
    for path in sorted((root / "exporter").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The exporter modules ``name`` imports at run time (lazy imports included, TYPE_CHECKING ones not)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    todo: list[ast.AST] = [ast.parse(path.read_text(), str(path))]
    while todo:
        node = todo.pop()
        if _type_checking_only(node):
            todo.extend(getattr(node, "orelse", []))
            continue
        todo.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found.update(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names)
    return {m for m in found if m in known and m != name}


def home(name: str) -> str:
    """The entry of FLOORS that ``name`` belongs to: the longest one it is or lies under."""
    return max((p for floor in FLOORS for p in floor if name == p or name.startswith(p + ".")), key=len)


def floor_of(name: str) -> int:
    return next(i for i, floor in enumerate(FLOORS) if home(name) in floor)


def violations(root: Path) -> list[str]:
    mods = modules(root)
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    found = []
    for name, path in mods.items():
        if (n := len(path.read_text().splitlines())) > MAX_LINES:
            found.append(f"{name}: {n} lines, over {MAX_LINES}")
        for dep in sorted(graph[name]):
            if floor_of(dep) > floor_of(name):
                found.append(f"{name} (floor {floor_of(name)}) imports {dep} (floor {floor_of(dep)}), a higher floor")
    found.extend(f"import cycle: {' -> '.join(c)}" for c in cycles(graph))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while (w := stack.pop()) != v:
                group.append(w)
            group.append(v)
            if len(group) > 1 or v in graph[v]:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_exporter_package_keeps_its_floors() -> None:
    assert violations(ROOT) == []


def test_every_package_has_a_floor() -> None:
    unplaced = [name for name in modules(ROOT) if name != "exporter" and home(name) == "exporter"]
    assert unplaced == [], "add them to FLOORS"
    assert floor_of("exporter.cli") > floor_of("exporter.web") > floor_of("exporter.exposition")
    assert floor_of("exporter.version") == 0


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_violating_tree_is_caught(tmp_path: Path) -> None:
    _write(tmp_path, {
        "exporter/__init__.py": "",
        "exporter/model/__init__.py": "",
        "exporter/model/table.py": "from ..sources import netlink\n",  # up: model imports sources
        "exporter/sources/__init__.py": "",
        "exporter/sources/netlink.py": "from . import procfs\n" + "x = 1\n" * 301,  # cycle, and too long
        "exporter/sources/procfs.py": "import exporter.sources.netlink\n",
        "exporter/pipeline/__init__.py": "",
        "exporter/pipeline/state.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    from ..exposition import registry\n",  # exempt
        "exporter/exposition/__init__.py": "",
        "exporter/exposition/registry.py": "from ..pipeline import state\n",
    })
    found = violations(tmp_path)
    assert "exporter.model.table (floor 1) imports exporter.sources.netlink (floor 3), a higher floor" in found
    assert "exporter.sources.netlink: 302 lines, over 300" in found
    assert "import cycle: exporter.sources.netlink -> exporter.sources.procfs" in found
    assert len(found) == 3, found  # the TYPE_CHECKING import and the downward one are allowed
