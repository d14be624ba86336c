"""The layout's rules, checked on the source: one run spine (one file builds a Trainer), no import circle, short lab
files, packages free of Lightning and of each other where they must be, tests that import helpers only from
builders.py, and --help that answers fast without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from builders import ROOT

SOURCES = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "packages").rglob("src/**/*.py")])


def module_name(path: Path) -> str:
    parts = path.with_suffix("").parts
    name = ".".join(parts[parts.index("affectlab"):])
    return name.removesuffix(".__init__")


def imports_of(path: Path) -> set[str]:
    """Every affectlab module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("affectlab"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("affectlab"))
    return found


def test_no_import_circle_among_the_projects_modules():
    modules = {module_name(path): path for path in SOURCES}
    graph = {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for child in sorted(graph[name]):
            if state.get(child) == 1:
                cycle = stack[stack.index(child):] + [child]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if child not in state:
                visit(child)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_exactly_one_file_builds_a_trainer():
    builders = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name == "Trainer":
                    builders.append(path.relative_to(ROOT))
    assert sorted(set(builders)) == [Path("src/affectlab/lab/run.py")]


def test_no_lab_file_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "src").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long


def test_packages_never_import_lightning_and_fusion_reads_no_dataset():
    for path in (ROOT / "packages").rglob("src/**/*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(n.split(".")[0] in ("lightning", "pytorch_lightning") for n in names), path
        if "fusion" in path.parts:
            assert not any(n.startswith("affectlab.datasets") for n in names), path
    project = tomllib.loads((ROOT / "packages" / "fusion" / "pyproject.toml").read_text())
    assert not any(dep.startswith("affectlab") for dep in project["project"]["dependencies"])


def test_no_test_module_imports_another():
    for path in (ROOT / "tests").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {n for n in names if n.startswith(("test_", "conftest"))}, path


@pytest.mark.parametrize("experiment", ["raer", "cexpr", "meld", "probing"])
def test_help_lists_commands_and_keys_fast_without_torch(experiment):
    script = ROOT / "experiments" / f"{experiment}.py"
    probe = ("import runpy, sys; sys.argv = [sys.argv[1], '--help']; runpy.run_path(sys.argv[0], run_name='__main__');"
             " print('TORCH LOADED' if 'torch' in sys.modules else 'no torch')")
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", probe, str(script)], capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("no torch")
    assert "commands:" in done.stdout and "seed " in done.stdout and "trainer.max_epochs" in done.stdout
    assert seconds < 5, seconds
