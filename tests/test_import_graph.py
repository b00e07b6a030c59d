"""The project's import graph: no module imports a module that imports it back, and imports
flow one way: pipelines -> converters -> bnnprune_tf."""

import ast
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"bnnprune_tf": 0, "converters": 1, "pipelines": 2}


def project_modules() -> dict[str, Path]:
    out = {}
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, modules: dict) -> set[str]:
    """Project modules that ``path`` imports anywhere (top level or inside functions);
    ``from package import module`` counts as importing the module only."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            subs = [f"{node.module}.{a.name}" for a in node.names
                    if f"{node.module}.{a.name}" in modules]
            found |= set(subs) if len(subs) == len(node.names) else {node.module, *subs}
    return {m for m in found if m in modules}


def test_no_module_imports_one_that_imports_it_back():
    modules = project_modules()
    graph = {name: imports(path, modules) - {name} for name, path in modules.items()}
    assert "bnnprune_tf.methods.registry" in graph and "pipelines.stages.base" in graph
    cycles = [(a, b) for a, b in itertools.combinations(graph, 2)
              if b in graph[a] and a in graph[b]]
    assert cycles == []


def test_imports_flow_from_pipelines_to_converters_to_the_library():
    modules = project_modules()
    wrong = [(name, dep) for name, path in modules.items() for dep in imports(path, modules)
             if LAYERS[dep.split(".")[0]] > LAYERS[name.split(".")[0]]]
    assert wrong == []
