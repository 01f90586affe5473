"""The house's rules, checked by reading the source (docs/architecture.md).

- Layers: a module imports only from its own layer and the ones below it.
- No module reaches into another object's underscore names, nor imports one.
- The built-in model is reached only through the registry: "digits" appears in generic code
  only in the registry and in CLI help.
"""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "scoresde"
# lowest first; each layer may import from itself and from the ones before it
LAYERS = [
    ("core", ["scoresde.core"]),
    ("solvers", ["scoresde.solvers"]),
    ("drivers", ["scoresde.sample", "scoresde.likelihood"]),
    ("models", ["scoresde.models"]),
    ("training", ["scoresde.training"]),
    ("evaluation", ["scoresde.evaluation"]),
    ("digits", ["scoresde.digits"]),
    ("commands", ["scoresde.commands", "scoresde.__main__"]),
]
REGISTRY = "scoresde/models/builtins.py"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def _sources():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _imports(tree: ast.AST, module: str):
    """(imported module, names, line) of every scoresde import, the lazy ones inside
    functions too."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scoresde"):
            yield node.module, [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("scoresde"):
                    yield a.name, [], node.lineno


def test_every_module_has_a_layer():
    unplaced = [
        _module_name(p)
        for p in _sources()
        if _layer(_module_name(p)) is None and _module_name(p) != "scoresde"
    ]
    assert not unplaced, f"modules outside the layers of docs/architecture.md: {unplaced}"


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    bad = []
    for path in _sources():
        module = _module_name(path)
        here = _layer(module)
        if here is None:
            continue  # the package's __init__ re-exports from every layer
        for target, names, line in _imports(ast.parse(path.read_text()), module):
            targets = [target] if names == [] else [f"{target}.{n}" for n in names] + [target]
            there = min((t for t in (_layer(x) for x in targets) if t is not None), default=None)
            if target == "scoresde" and set(names) - {"__version__"}:
                # the package's __init__ re-exports every layer: importing from it is an
                # arrow to the top (and a circular import)
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports from scoresde")
                continue
            if there is not None and there > here:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def _underscore_reaches(path: Path) -> list[str]:
    """``x._y`` for any x but self/cls/super(), and ``from scoresde... import _y``."""
    bad = []
    rel = path.relative_to(PACKAGE.parent)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and re.fullmatch(r"_[a-z]\w*", node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and getattr(owner.func, "id", "") == "super":
                continue
            bad.append(f"{rel}:{node.lineno} .{node.attr}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scoresde"):
            bad += [
                f"{rel}:{node.lineno} imports {a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
    return bad


def test_no_module_reaches_into_another_objects_underscore_names():
    bad = [line for path in _sources() for line in _underscore_reaches(path)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("folder", ["tests", "benchmarks", "docs", "examples"])
def test_tests_docs_and_scripts_use_public_names_only(folder):
    paths = sorted((PACKAGE.parent / folder).rglob("*.py"))
    bad = [line for path in paths for line in _underscore_reaches(path)]
    assert not bad, "\n".join(bad)


def _help_lines(path: Path) -> set[int]:
    """The source lines of every ``help=...`` argument value in ``path``."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "help":
            lines.update(range(node.value.lineno, node.value.end_lineno + 1))
    return lines


def test_the_built_in_model_is_named_only_by_the_registry_and_cli_help():
    bad = []
    for path in _sources():
        rel = str(path.relative_to(PACKAGE.parent))
        if rel.startswith("scoresde/digits/") or rel == REGISTRY:
            continue
        # CLI help text names the built-in model and its defaults
        allowed = _help_lines(path) if rel == "scoresde/commands/cli.py" else set()
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if "digits" in line and i not in allowed:
                bad.append(f"{rel}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)
