"""The package's shape: no import circle, no oversized module, a map that matches the tree.

The import graph is read from the source (ast), not by importing: an edge A -> B means module A
imports module B. ``from pkg import name`` counts as an edge to ``pkg.name`` when that is a
module, else to ``pkg``. Importing a submodule also runs its parents' ``__init__``; those implicit
edges are not counted (a package's ``__init__`` re-exporting its own submodules is not a circle).
Module-level imports must form no circle; imports inside functions may be mutual within one
subpackage (lazy, run later), but never reach a later layer of the data flow.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "metaalliance"
ARCHITECTURE = REPO / "docs" / "architecture.md"
MAX_LINES = 800


def module_files() -> dict:
    """Dotted module name -> file, for every .py file of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    is_package = MODULES[module].name == "__init__.py"
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, *, function_level: bool) -> set:
    """The package modules ``module`` imports (module level, or everywhere)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    nodes = ast.walk(tree) if function_level else _module_level(tree.body)
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target
                     for a in node.names]
        else:
            continue
        out |= {n for n in names if n in MODULES and n != module}
    return out


def _module_level(body):
    """Statements run at import time: the module body, including if/try blocks, not functions."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    yield from _module_level([child] if not isinstance(child, ast.ExceptHandler)
                                             else child.body)


MODULES = module_files()


def find_cycle(graph: dict) -> list | None:
    """A cycle of ``graph`` as a list of nodes (first == last), or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_the_graph_reader_finds_a_cycle_and_resolves_imports():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert "metaalliance.report.render" in imports("metaalliance.report.build",
                                                   function_level=False)
    # from metaalliance.figures import plots -> the module, not the package
    assert "metaalliance.figures.plots" in imports("metaalliance.report.drawing",
                                                   function_level=True)
    assert len(MODULES) >= 40


def test_no_import_circle_between_modules():
    graph = {m: imports(m, function_level=False) for m in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


#: the layers of docs/architecture.md, in the order data flows; shared top-level modules are 0;
#: the explorer is an application beside the commands (each may call the other)
LAYERS = {"dataset": 1, "engine": 2, "analyses": 3, "figures": 4, "report": 5, "commands": 6,
          "explorer": 6}


def layer(module: str) -> int:
    parts = module.split(".")
    if module == "metaalliance.cli":
        return LAYERS["commands"]
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def test_layers_import_only_from_the_layers_before_them():
    # imports inside functions count too, so no circle can run across layers even lazily;
    # inside one subpackage a lazy mutual import (dataset.findings <-> dataset.flow) is allowed
    assert layer("metaalliance.engine.models") < layer("metaalliance.report.build")
    upward = [f"{m} -> {dep}" for m in MODULES for dep in imports(m, function_level=True)
              if layer(dep) > layer(m)]
    assert not upward, "imports against the data flow: " + ", ".join(sorted(upward))


def oversized(paths, root) -> list:
    """``rel (n lines)`` for each file over MAX_LINES lines without a ``# size:`` comment."""
    too_long = []
    for path in paths:
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_LINES and \
                not any(re.match(r"\s*#.*\bsize:", line) for line in lines):
            too_long.append(f"{path.relative_to(root).as_posix()} ({len(lines)} lines)")
    return too_long


def test_the_size_check_flags_a_long_module_unless_it_says_why(tmp_path):
    body = "x = 1\n" * (MAX_LINES + 1)
    (tmp_path / "long.py").write_text(body, encoding="utf-8")
    (tmp_path / "fits.py").write_text("x = 1\n" * MAX_LINES, encoding="utf-8")
    (tmp_path / "says_why.py").write_text("# size: one table of constants\n" + body,
                                          encoding="utf-8")
    found = oversized(sorted(tmp_path.glob("*.py")), tmp_path)
    assert found == [f"long.py ({MAX_LINES + 1} lines)"]


def test_no_module_over_800_lines_without_a_reason():
    too_long = oversized(MODULES.values(), PACKAGE)
    assert not too_long, ("over 800 lines without a '# size:' comment saying why: "
                          + ", ".join(too_long))


def test_docs_architecture_names_every_module_and_only_real_ones():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    missing = []
    for path in MODULES.values():
        rel = path.relative_to(PACKAGE).as_posix()
        if path.name == "__init__.py":
            rel = rel.removesuffix("__init__.py") or "__init__.py"
        if not re.search(rf"(?<![\w/]){re.escape(rel)}(?![\w])", text):
            missing.append(rel)
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"
    named = set(re.findall(r"(?<![\w/.])((?:[a-z_]+/)*[a-z_]+\.py)\b", text))
    stale = sorted(n for n in named if not (PACKAGE / n).is_file() and not (REPO / n).is_file())
    assert not stale, f"docs/architecture.md names files that do not exist: {', '.join(stale)}"


def test_public_api_points_at_the_defining_modules():
    import importlib

    import metaalliance

    for name, module in metaalliance._API.items():
        obj = getattr(importlib.import_module(module), name)
        assert getattr(obj, "__module__", module) == module, \
            f"_API[{name!r}] = {module!r} but it is defined in {obj.__module__}"


@pytest.mark.parametrize("facade", ["metaalliance.figures.plots", "metaalliance.report"])
def test_facades_keep_their_old_names(facade):
    import importlib

    mod = importlib.import_module(facade)
    names = {"metaalliance.figures.plots": [
        "forest_plot", "forest_figures", "forest_rows", "funnel_plot", "bubble_plot",
        "interval_plot", "cumulative_forest_plot", "leave_one_out_plot", "IntervalTable",
        "save_figure", "journal_rc", "width_inches", "FORMATS", "JOURNAL_WIDTHS_MM",
        "PAGE_HEIGHT_MM", "SORTS", "model_name", "heterogeneity_text",
        # used by modules written against the one-file plots.py (figures/prisma.py, tests)
        "fmt_int", "_new_figure", "_text_width_pt", "TEXT_WIDTH_SAFETY", "COLUMN_TITLES"],
        "metaalliance.report": [
        "DEFAULT_CONFIG", "Analysis", "analyse", "check_out_dir", "figures", "html_report",
        "load_config", "markdown_report", "run", "short_citation", "summary_paragraph",
        "tables"]}[facade]
    for name in names:
        assert hasattr(mod, name), f"{facade}.{name} is gone"
