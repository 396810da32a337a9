"""The shape of collector/: no import circles (imports inside functions included), no import hidden in a
function outside the CLI, every exception in errors.py, every module opening with its docstring.

`make lint` (lint-imports, the contracts in pyproject.toml) holds the layers; this reads the code itself, so a
circle inside one package, or one that only an import inside a function closes, fails here too.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import collector

ROOT = Path(collector.__file__).resolve().parent
# Only the command line imports inside functions: each command loads what it needs, so `collector get` does not
# pay for Flask, RQ's worker and the platforms. Nothing imports the CLI, so these close no circle.
LAZY_ALLOWED = ("collector.cli.",)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def is_package(name: str) -> bool:
    return (ROOT.parent.joinpath(*name.split(".")) / "__init__.py").is_file()


def type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(tree: ast.Module, importer: str) -> Iterator[tuple[str, bool, int]]:
    """(imported collector module, whether the import sits inside a function, line) for every import that runs;
    those under `if TYPE_CHECKING:` never run and are left out."""

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and type_checking_only(child):
                for other in child.orelse:
                    yield from walk(other, in_function)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "collector":
                        yield alias.name, in_function, child.lineno
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolved against the importer's package
                    package = importer if is_package(importer) else importer.rsplit(".", 1)[0]
                    parts = package.split(".")
                    base = ".".join([*parts[: len(parts) - child.level + 1], *([base] if base else [])])
                if base.split(".")[0] != "collector":
                    continue
                for alias in child.names:
                    candidate = f"{base}.{alias.name}"
                    yield (candidate if is_module(candidate) else base), in_function, child.lineno
            yield from walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    yield from walk(tree, False)


def graph() -> dict[str, dict[str, list[tuple[bool, int]]]]:
    """module → imported module → [(inside a function, line), ...] over every module of collector/."""
    found: dict[str, dict[str, list[tuple[bool, int]]]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        edges = found.setdefault(name, {})
        for imported, in_function, line in imports(ast.parse(path.read_text(), str(path)), name):
            if imported != name:
                edges.setdefault(imported, []).append((in_function, line))
    return found


def circles(edges: dict[str, dict[str, list[tuple[bool, int]]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, {}):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles_among_collectors_modules() -> None:
    edges = graph()
    found = circles(edges)
    described = [
        " / ".join(f"{a} -> {b} (line {edges[a][b][0][1]})" for a in component for b in component
                   if b in edges.get(a, {}))
        for component in found
    ]
    assert not found, "import circles:\n" + "\n".join(described)


def test_no_import_hides_in_a_function_outside_the_cli() -> None:
    hidden = [
        f"{importer} line {line} imports {imported}"
        for importer, targets in graph().items()
        for imported, uses in targets.items()
        for in_function, line in uses
        if in_function and not importer.startswith(LAZY_ALLOWED)
    ]
    assert not hidden, "imports inside functions (import at the top; if that makes a circle, move the code):\n" + \
        "\n".join(hidden)


def test_package_faces_import_nothing_of_collector() -> None:
    """An `__init__.py` that imported its modules would tie every importer of one of them to all the others."""
    faces = {name: targets for name, targets in graph().items() if is_package(name)}
    assert {name: sorted(targets) for name, targets in faces.items() if targets} == {}


def test_every_exception_class_lives_in_errors() -> None:
    outside = []
    for info in pkgutil.walk_packages(collector.__path__, "collector."):
        if info.name == "collector.__main__":
            continue  # running it runs the CLI
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == info.name \
                    and info.name != "collector.errors":
                outside.append(f"{info.name}.{name}")
    assert outside == []


def test_every_module_opens_with_a_one_line_docstring() -> None:
    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text()), clean=False)
        if not docstring or not docstring.split("\n", 1)[0].strip():
            missing.append(str(path.relative_to(ROOT.parent)))
    assert missing == []
