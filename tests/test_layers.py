"""The one-way flow as a checked contract: import-linter's contracts in pyproject.toml hold for the package.

``[tool.importlinter]`` in pyproject.toml declares the layers (a module imports only the layers below it), no import
circle between sibling modules, and that only the command line and the experiments import the package root. The
first test runs ``lint-imports`` on this checkout; the second runs it on a copy with one import against the flow
added, and expects it to fail, so the contract is known to bite.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _lint(where: Path):
    """``lint-imports --no-cache`` in ``where``, with ``where`` first on the path; ``(exit code, output)``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(where), os.environ.get("PYTHONPATH", "")]),
               NO_COLOR="1", COLUMNS="200")
    run = subprocess.run([sys.executable, "-c", LINT, "--no-cache", "--no-logo"], cwd=where, env=env,
                         capture_output=True, text=True, timeout=300)
    return run.returncode, run.stdout + run.stderr


def test_import_contracts_hold():
    code, out = _lint(ROOT)
    assert code == 0, f"an import breaks a contract of pyproject.toml [tool.importlinter]:\n{out[-6000:]}"
    assert "3 kept, 0 broken" in out, out[-3000:]


@pytest.mark.parametrize("module, line, contract", [
    ("graph.py", "from .sparsify import base as _against_the_flow", "One-way flow"),  # a lower layer imports up
    ("export/rules.py", "import graphprune as _root", "package root"),  # through the root: everything
    ("sparsify/base.py", "from . import spectral as _circle", "No import circle"),  # spectral imports base
])
def test_import_contracts_fail_on_a_bad_import(tmp_path, module, line, contract):
    shutil.copytree(ROOT / "graphprune", tmp_path / "graphprune", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "graphprune" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")
    code, out = _lint(tmp_path)
    assert code != 0, out[-3000:]
    broken = out[out.index("Broken contracts"):]
    assert contract in broken, broken[:3000]
