"""The package layout is the chain: every import runs down it, and no module imports one that imports it back.

Layers, lowest first: errors; tflm (the ground truth: reading, running and planning a .tflite, TFLM's
arithmetic); nas (search space, supernet, training); quantize (QAT, conversion, export); compiler;
memory (the memory model and the measured report); board (targets, firmware, deploy); tuner; cli.
Imports are read from the source with `ast`, function-level ones included, so a lazy import that
runs up the chain fails here as well.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("mcuformer_tf.errors", "mcuformer_tf.tflm", "mcuformer_tf.nas", "mcuformer_tf.quantize",
          "mcuformer_tf.compiler", "mcuformer_tf.memory", "mcuformer_tf.board", "tuner", "mcuformer_tf.cli")
# May import any layer: the package's own __init__ (it only sets environment variables) and __main__.
ANYWHERE = ("mcuformer_tf", "mcuformer_tf.__main__")
MAX_LINES = 500
# Longer modules that are one idea each.
ONE_IDEA = {"mcuformer_tf.cli": "the command line: one click command per arrow of the chain",
            "mcuformer_tf.compiler.match": "the matcher proving a ViT block's structure, step by step"}


def _modules() -> dict:
    """Dotted module name -> path, for every module of mcuformer_tf/ and tuner/."""
    modules = {}
    for package in ("mcuformer_tf", "tuner"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(path: Path, modules: dict) -> set:
    """Our modules that `path` imports anywhere in it: `from a import b` is an import of a.b where
    that is a module, else of a (Python initialises a package before any of its modules, so a
    module's own package is not counted as imported by it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph() -> dict:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _layer(module: str) -> int:
    matches = [i for i, layer in enumerate(LAYERS) if module == layer or module.startswith(layer + ".")]
    assert matches, f"{module} is in no layer: add its package to LAYERS"
    return matches[-1]


def test_every_module_has_a_layer_and_imports_only_down_the_chain():
    upward = []
    for module, imported in _graph().items():
        if module in ANYWHERE:
            continue
        for other in imported:
            if other not in ANYWHERE and _layer(other) > _layer(module):
                upward.append(f"{module} -> {other}")
    assert upward == []


def test_no_module_imports_one_that_imports_it_back():
    graph = _graph()
    cycles = set()

    def visit(module, path):
        for other in graph[module]:
            if other in path:
                cycles.add(" -> ".join(path[path.index(other):] + [other]))
            elif other not in done:
                visit(other, path + [other])
        done.add(module)

    done = set()
    for module in graph:
        if module not in done:
            visit(module, [module])
    assert cycles == set()


def test_the_checks_see_a_real_import_and_an_upward_one():
    graph = _graph()
    assert "mcuformer_tf.tflm.tflite_graph" in graph["mcuformer_tf.compiler.ir"]
    assert "mcuformer_tf.compiler.unfuse" in graph["mcuformer_tf.memory.report"]
    assert _layer("mcuformer_tf.compiler.ir") > _layer("mcuformer_tf.tflm.arena_plan")
    assert _layer("tuner.budget") > _layer("mcuformer_tf.board.targets")


def test_modules_stay_small():
    lines = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in lines.items() if n > MAX_LINES and name not in ONE_IDEA} == {}
