"""The layers import only downward (import-linter contracts in pyproject.toml), and studio/ and models/ never
import Qt or widgets/."""
from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("PySide6", "PyQt5", "PyQt6", "shiboken6", "widgets")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_core_sources_do_not_import_qt():
    offenders = []
    for package in ("studio", "models"):
        for path in (ROOT / package).rglob("*.py"):
            for name in _imports(path):
                if name.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_importing_every_core_module_loads_no_qt():
    """Also catches indirect imports: load every module in a clean interpreter and inspect sys.modules."""
    modules = []
    for package in ("studio", "models"):
        pkg = importlib.import_module(package)
        modules.append(package)
        modules += [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}.")
                    if not m.name.endswith("__main__")]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter's own command on the packages under ``root`` with the project's contracts."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; "
               "sys.exit(c.main(standalone_mode=False, args=['--config', sys.argv[1], '--no-cache']))",
               str(root / "pyproject.toml")]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "4 kept, 0 broken" in result.stdout


@pytest.fixture(scope="module")
def copy_of_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    for package in ("studio", "models", "widgets"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize("where, line, contract", [
    ("models/_upward.py", "import studio.ranking", "widgets > studio (application) > models"),
    ("studio/core/_upward.py", "from studio import session", "studio.core is the bottom"),
    ("studio/core/_upward.py", "import models.base", "studio.core imports neither models nor widgets"),
    ("studio/_upward.py", "import widgets.canvas", "widgets > studio (application) > models"),
    ("models/_qt.py", "import PySide6.QtCore", "studio and models never import Qt"),
])
def test_an_upward_import_breaks_a_contract(copy_of_tree, where, line, contract):
    path = copy_of_tree / where
    path.write_text(f"{line}\n")
    try:
        result = _lint_imports(copy_of_tree)
    finally:
        path.unlink()
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert any(contract in row for row in broken), result.stdout[-3000:]
