"""The code's shape, as import-linter checks it (the contracts are in pyproject.toml's
[tool.importlinter]): the core's folders layered as a frame flows, no import circle at any
depth in any of framesink's packages (imports inside functions count: a lazy import is still
a dependency, and hiding a circle in one is how it grows), and the adapters apart."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import framesink_core

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(config: Path, *paths: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache", "--no-logo"],
                          cwd=config.parent, env=env, capture_output=True, text=True, timeout=120)


def test_every_contract_is_kept():
    result = lint_imports(ROOT / "pyproject.toml", ROOT / "lambdas", ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


def test_the_cores_docstring_names_each_layer_in_order():
    """framesink_core/__init__.py is where a newcomer reads the layers: it must say what the
    contract enforces, top layer last, each folder once."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    bottom_up = [name.strip() for layer in reversed(layers) for name in layer.split("|")]
    listed = [line.split()[0] for line in framesink_core.__doc__.splitlines() if line.startswith("    ")]
    assert listed == bottom_up


def test_lint_imports_catches_a_circle_a_lazy_one_and_an_upward_import(tmp_path):
    """The same contracts on a small core that breaks them: a circle made by an import inside
    a function, and a lower layer importing a higher one."""
    core = tmp_path / "src" / "mini_core"
    files = {
        "__init__.py": "",
        "shared/__init__.py": "",
        "shared/keys.py": "from mini_core.read import query\n",  # upward
        "read/__init__.py": "",
        "read/query.py": "from mini_core.read import export\n",
        "read/export.py": textwrap.dedent("""
            def later():
                from mini_core.read import query  # lazy, still a circle
        """),
    }
    for name, text in files.items():
        (core / name).parent.mkdir(parents=True, exist_ok=True)
        (core / name).write_text(text)
    config = tmp_path / "lint.toml"
    config.write_text(textwrap.dedent("""
        [tool.importlinter]
        root_packages = ["mini_core"]
        [[tool.importlinter.contracts]]
        name = "layers"
        type = "layers"
        containers = ["mini_core"]
        layers = ["read", "shared"]
        exhaustive = true
        [[tool.importlinter.contracts]]
        name = "acyclic"
        type = "acyclic_siblings"
        ancestors = ["mini_core"]
    """))
    result = lint_imports(config, tmp_path / "src")
    assert result.returncode != 0
    assert "0 kept, 2 broken" in result.stdout, result.stdout
    assert "mini_core.shared.keys -> mini_core.read.query" in result.stdout
    assert "acyclic BROKEN" in result.stdout and "- .query -> .export (1 import)" in result.stdout
