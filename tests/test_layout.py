"""The layout a newcomer follows: imports go one way (kernel <- schemas <- producers / routing
<- consumers <- scenarios <- CLI), modules stay small, functions stay short."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Each package may import only packages of a strictly lower rank (and itself). Packages of
#: the same rank (producers, routing) may not import each other.
RANK = {
    "planr": 0,
    "schemas": 1,
    "producers": 2,
    "routing": 2,
    "consumers": 3,
    "scenarios": 4,
    "cli": 5,
}
#: Tests and benchmarks sit on top and may import any package, but not each other.
TOP = {"tests", "benchmarks"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _tracked_python() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.py"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.split() if (ROOT / line).exists()]


def imported_packages(source: str) -> set[str]:
    """The top-level package of every absolute import in ``source`` (at any depth)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def violations(package: str, source: str) -> set[str]:
    """The project packages that a module of ``package`` may not import but does."""
    imported = imported_packages(source) & (set(RANK) | TOP)
    if package in TOP:
        return imported & (TOP - {package})
    return {p for p in imported - {package} if p in TOP or RANK[p] >= RANK[package]}


def test_the_rule_rejects_upward_peer_and_test_imports():
    assert violations("planr", "from cli.settings import Settings\n") == {"cli"}
    assert violations("schemas", "def f():\n    import routing.engine\n") == {"routing"}
    assert violations("routing", "from producers.publisher import Publisher\n") == {"producers"}
    assert violations("consumers", "from scenarios import ftf\n") == {"scenarios"}
    assert violations("routing", "from tests.conftest import broker\n") == {"tests"}
    assert violations("benchmarks", "from tests.test_store import url\n") == {"tests"}
    assert violations("cli", "from consumers.store import Database\nimport planr\n") == set()


def test_every_import_goes_one_way():
    bad = {}
    for path in _tracked_python():
        package = path.relative_to(ROOT).parts[0]
        if package not in RANK and package not in TOP:
            continue
        wrong = violations(package, path.read_text(encoding="utf-8"))
        if wrong:
            bad[str(path.relative_to(ROOT))] = sorted(wrong)
    assert bad == {}


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in _tracked_python()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_function_outside_tests_is_over_60_lines():
    long = {}
    for path in _tracked_python():
        if path.relative_to(ROOT).parts[0] == "tests":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.name}"] = n
    assert long == {}


@pytest.mark.parametrize("package", sorted(RANK))
def test_every_package_is_typed_and_installed(package: str):
    assert (ROOT / package / "py.typed").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"{package}*"' in pyproject
