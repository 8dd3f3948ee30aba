"""The package's shape: no two fastgen modules import each other, directly or around a longer cycle
(lazy imports inside functions included), and the training path has no long functions."""

import ast
from pathlib import Path

import pytest

import fastgen

PACKAGE = Path(fastgen.__file__).parent
TRAINING_PATH = ("training", "models", "ops")  # what one batch goes through
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The fastgen modules `path` imports anywhere in its body: `from a.b import c` counts as a.b.c when
    that is a module, else as a.b."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def test_no_import_cycles():
    assert _cycle(_graph()) is None, f"import cycle: {' -> '.join(_cycle(_graph()))}"


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_training_path_functions_are_short():
    long = []
    for sub in TRAINING_PATH:
        for path in (PACKAGE / sub).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({lines} lines)")
    assert not long, long


def test_importing_the_entry_modules_keeps_the_functions_callable():
    import fastgen.compare
    import fastgen.evaluate
    import fastgen.train  # noqa: F401  (rebinds the attribute fastgen.train to the module)
    from fastgen.comparison import compare
    from fastgen.evaluation import evaluate
    from fastgen.training import train

    for name, function in (("train", train), ("evaluate", evaluate), ("compare", compare)):
        module = getattr(fastgen, name)
        assert callable(module) and module.function is function
    with pytest.raises(fastgen.FastgenError, match="--model is required"):
        fastgen.train(fastgen.TrainConfig())  # the module calls the function
