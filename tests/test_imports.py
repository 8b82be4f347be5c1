"""`import mhpo` pulls in torch only: no transformers, trl, verl, ray, matplotlib or rich."""

import ast
import pathlib
import subprocess
import sys

import pytest

import mhpo


def test_import_is_torch_only():
    code = (
        "import sys, mhpo; heavy = ['transformers', 'trl', 'verl', 'ray', 'matplotlib', 'rich', 'datasets'];"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def _package_imports(package: pathlib.Path) -> dict[str, set[str]]:
    """Each module of ``package`` and the modules of the same package it imports (relative
    imports, at any depth in the file: a function-local import is still a dependency)."""
    graph = {}
    for path in package.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(alias.name for alias in node.names)
        graph[path.stem] = deps & {p.stem for p in package.glob("*.py")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep, path + [dep])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"report": {"sweep"}, "sweep": {"report"}}) == ["report", "sweep", "report"]
    assert _cycle({"report": {"sweep", "runs"}, "sweep": {"runs"}, "runs": set()}) is None


@pytest.mark.parametrize("package", ["train", "study"])
def test_no_import_cycle_within_a_package(package):
    """One job per module, layered: a cycle (even one hidden by a function-local import) means
    two modules share a job."""
    root = pathlib.Path(mhpo.__file__).parent / package
    assert _cycle(_package_imports(root)) is None
