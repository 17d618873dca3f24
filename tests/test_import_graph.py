"""The import graph of ``mega_plugin``: no import cycles, and the layers import downwards only.

Every module is parsed with ``ast``; nothing is imported. An edge A -> B means that importing A
runs B's body (or needs it to have run):

* imports at module level count, including those inside ``try``/``if`` blocks and class bodies;
  imports inside functions do not, nor those under ``if TYPE_CHECKING:`` (annotations only);
* relative imports are resolved; ``import a.b.c`` and ``from a.b import c`` also run the packages
  ``a`` and ``a.b`` (their ``__init__``); ``from a.b import c`` runs the module ``a.b.c`` when
  there is one, else it reads the name ``c`` from the ``__init__`` of ``a.b``;
* a package that encloses A is not an edge of A when A only passes through it: Python has
  started that package's ``__init__`` before A's body runs, so passing through runs nothing
  (counting it would make every package whose ``__init__`` re-exports a submodule a cycle).
  Reading a name from it (``from .. import name``) is an edge.

The layering rules look at every import, wherever it stands (functions and ``TYPE_CHECKING``
blocks included): ``mega_plugin.core`` imports nothing of ``mega_plugin`` outside itself, and
neither the plugin registry nor the formats and converters import the framework adapters.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Final, Iterator

import pytest

PACKAGE_DIR: Final = Path(__file__).resolve().parents[1] / "mega_plugin"
PACKAGE_NAME: Final = "mega_plugin"


@dataclass(frozen=True)
class SourceModule:
    """One ``.py`` file of the package tree."""

    name: str
    """Dotted module name (a package's ``__init__.py`` is named after the package)."""

    path: Path
    """The file."""

    is_package: bool
    """Whether the file is a package's ``__init__.py``."""

    def encloses(self, other: str) -> bool:
        """Whether ``other`` is a package this module lives in (not the module itself)."""
        return self.name.startswith(f"{other}.")


@dataclass(frozen=True)
class ImportedName:
    """What one name of an import statement brings in."""

    modules: tuple[str, ...]
    """Every module the import runs, enclosing packages first (``a``, ``a.b``, ``a.b.c``)."""

    reads_package_attribute: bool
    """``from a.b import c`` where ``a.b.c`` is no module: ``c`` is read from ``a.b``'s ``__init__``."""

    line: int
    """Line of the import statement."""


def source_modules(package_dir: Path, package_name: str) -> dict[str, SourceModule]:
    """Every module below ``package_dir`` (which is the package ``package_name``), by dotted name."""
    modules: dict[str, SourceModule] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package_name, *path.relative_to(package_dir).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = SourceModule(".".join(parts), path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (not in functions or TYPE_CHECKING)."""
    for statement in body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            yield statement
        elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(statement, ast.If) and _is_type_checking(statement.test):
            yield from module_level_imports(statement.orelse)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                block = getattr(statement, field, None)
                if isinstance(block, list):
                    yield from module_level_imports(block)


def every_import(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of the module, wherever it stands."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def _with_enclosing_packages(name: str) -> tuple[str, ...]:
    parts = name.split(".")
    return tuple(".".join(parts[: i + 1]) for i in range(len(parts)))


def imported_names(
    importer: SourceModule, statement: ast.Import | ast.ImportFrom, known: dict[str, SourceModule]
) -> list[ImportedName]:
    """What each name of ``statement`` (in ``importer``) brings in; relative imports resolved."""
    if isinstance(statement, ast.Import):
        return [ImportedName(_with_enclosing_packages(a.name), False, statement.lineno) for a in statement.names]
    base = statement.module or ""
    if statement.level:
        package = (importer.name if importer.is_package else importer.name.rpartition(".")[0]).split(".")
        anchor = package[: len(package) - statement.level + 1]
        base = ".".join([*anchor, *([statement.module] if statement.module else [])])
    names = []
    for alias in statement.names:
        submodule = f"{base}.{alias.name}"
        if submodule in known:
            names.append(ImportedName(_with_enclosing_packages(submodule), False, statement.lineno))
        else:
            names.append(ImportedName(_with_enclosing_packages(base), True, statement.lineno))
    return names


def import_graph(modules: dict[str, SourceModule]) -> dict[str, dict[str, int]]:
    """module -> {module its import runs: line of the import}, within ``modules`` (see the module docstring)."""
    graph: dict[str, dict[str, int]] = {}
    for module in modules.values():
        edges: dict[str, int] = {}
        tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
        for statement in module_level_imports(tree.body):
            for imported in imported_names(module, statement, modules):
                targets = [m for m in imported.modules if not module.encloses(m)]
                if imported.reads_package_attribute and imported.modules[-1] not in targets:
                    targets.append(imported.modules[-1])  # a name read from an enclosing package's __init__
                for target in targets:
                    if target in modules and target != module.name:
                        edges.setdefault(target, imported.line)
        graph[module.name] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None when the graph has none (iterative depth-first search)."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path = [start]
        pending = [iter(sorted(graph[start]))]
        while pending:
            target = next(pending[-1], None)
            if target is None:
                done.add(path.pop())
                pending.pop()
            elif target in path:
                return [*path[path.index(target):], target]
            elif target not in done:
                path.append(target)
                pending.append(iter(sorted(graph[target])))
    return None


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    """``a (line 3) -> b (line 7) -> a``: each step with the line of the import that makes it."""
    steps = [f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join([*steps, cycle[-1]])


def _inside(name: str, layer: str) -> bool:
    return name == layer or name.startswith(f"{layer}.")


def forbidden_imports(
    modules: dict[str, SourceModule], layer: str, *, allowed: Callable[[str], bool]
) -> dict[str, list[str]]:
    """module of ``layer`` -> the modules of the package it imports anywhere that ``allowed`` refuses.

    Each import counts by its innermost module (``from a.b import c``: ``a.b.c`` or ``a.b``);
    modules with nothing refused are left out, so a clean layer gives ``{}``.
    """
    refused: dict[str, list[str]] = {}
    for module in modules.values():
        if not _inside(module.name, layer):
            continue
        tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
        targets = {
            imported.modules[-1]
            for statement in every_import(tree)
            for imported in imported_names(module, statement, modules)
        }
        bad = sorted(t for t in targets if _inside(t, PACKAGE_NAME) and not allowed(t))
        if bad:
            refused[module.name] = bad
    return refused


@pytest.fixture(scope="module")
def modules() -> dict[str, SourceModule]:
    return source_modules(PACKAGE_DIR, PACKAGE_NAME)


def test_mega_plugin_has_no_import_cycle(modules: dict[str, SourceModule]) -> None:
    graph = import_graph(modules)
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {describe_cycle(cycle, graph)}"


def test_the_graph_sees_imports_through_package_inits_and_skips_annotation_only_ones(
    modules: dict[str, SourceModule],
) -> None:
    graph = import_graph(modules)
    builtin = graph["mega_plugin.registry.builtin"]
    assert {"mega_plugin.converters", "mega_plugin.converters.fairseq_mega"} <= set(builtin)  # their __init__s run
    assert "mega_plugin.registry" not in builtin  # the enclosing package is only passed through
    assert "mega_plugin.registry.registries" not in graph["mega_plugin.registry.hookspecs"]  # under TYPE_CHECKING


def test_core_imports_nothing_of_mega_plugin_outside_core(modules: dict[str, SourceModule]) -> None:
    assert forbidden_imports(modules, "mega_plugin.core", allowed=lambda name: _inside(name, "mega_plugin.core")) == {}


@pytest.mark.parametrize("layer", ["mega_plugin.registry", "mega_plugin.formats", "mega_plugin.converters"])
def test_layer_does_not_import_the_adapters(modules: dict[str, SourceModule], layer: str) -> None:
    assert layer in modules
    assert forbidden_imports(modules, layer, allowed=lambda name: not _inside(name, "mega_plugin.adapters")) == {}


FAKE_PACKAGES: Final[dict[str, dict[str, str]]] = {
    "cycle-through-init": {
        "__init__.py": "",
        "a.py": "from .sub.b import B\nA = 1\n",
        "sub/__init__.py": "try:\n    from ..c import C\nexcept ImportError:\n    C = None\n",
        "sub/b.py": "B = 1\n",
        "c.py": "from fake import a\nC = 1\n",
    },
    "no-cycle": {
        "__init__.py": "from .a import A\nfrom .sub import b\n",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub.b import B\nA = 1\n",
        "sub/__init__.py": "from .b import B\n",
        "sub/b.py": "from .. import c\n\ndef later() -> None:\n    from ..a import A\n\nB = 1\n",
        "c.py": "C = 1\n",
    },
    "name-from-enclosing-init": {"__init__.py": "from .a import A\nVERSION = 1\n", "a.py": "from . import VERSION\n"},
}
"""Small packages named ``fake``: a cycle through a package ``__init__``; imports in a function, under
TYPE_CHECKING and through enclosing packages (no cycle); a name read from the enclosing ``__init__``."""


def fake_package_graph(root: Path, name: str) -> dict[str, dict[str, int]]:
    """The import graph of ``FAKE_PACKAGES[name]``, written below ``root``."""
    for relative, text in FAKE_PACKAGES[name].items():
        path = root / "fake" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return import_graph(source_modules(root / "fake", "fake"))


@pytest.mark.parametrize(
    "name, cycle",
    [
        ("cycle-through-init", ["fake.a", "fake.sub", "fake.c", "fake.a"]),
        ("no-cycle", None),
        ("name-from-enclosing-init", ["fake", "fake.a", "fake"]),
    ],
)
def test_the_cycle_finder_on_small_packages(tmp_path: Path, name: str, cycle: list[str] | None) -> None:
    assert find_cycle(fake_package_graph(tmp_path, name)) == cycle


def test_a_cycle_is_printed_with_the_line_of_each_import(tmp_path: Path) -> None:
    graph = fake_package_graph(tmp_path, "cycle-through-init")
    described = describe_cycle(["fake.a", "fake.sub", "fake.c", "fake.a"], graph)
    assert described == "fake.a (line 1) -> fake.sub (line 2) -> fake.c (line 1) -> fake.a"


def test_only_module_level_imports_outside_enclosing_packages_are_edges(tmp_path: Path) -> None:
    graph = fake_package_graph(tmp_path, "no-cycle")
    assert graph["fake.sub.b"] == {"fake.c": 1}  # not fake, fake.sub (enclosing) nor fake.a (in a function)
    assert graph["fake.a"] == {}  # the TYPE_CHECKING import
