"""The Lambda asset's dependencies (infra/bundling.py): pinned closure, runtime-provided SDK removed.

Builds run the real pip for the functions' platform (PyPI or pip's cache), into tmp_path
except the first test, which shares the synth tests' cache entry.
"""

from __future__ import annotations

from importlib import metadata

import pytest

from bench import coldstart
from infra.bundling import (
    REQUIREMENTS,
    RUNTIME_PROVIDED,
    RUNTIME_PROVIDED_MODULES,
    canonical,
    dependencies_dir,
    pinned,
)

PLATFORM, VERSION = "manylinux2014_aarch64", "3.14"
PINS = pinned(REQUIREMENTS)


def installed(directory) -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions(path=[str(directory)])}


def test_the_asset_holds_exactly_the_pinned_closure_minus_the_runtime_sdk():
    deps = dependencies_dir(PLATFORM, VERSION)
    assert installed(deps) == {name: v for name, v in PINS.items() if name not in RUNTIME_PROVIDED}
    assert "aws-lambda-powertools" in installed(deps) and "aws-xray-sdk" in installed(deps)
    top = {p.name.removesuffix(".py") for p in deps.iterdir()}
    assert not top & set(RUNTIME_PROVIDED_MODULES)


def test_a_dependency_the_file_does_not_pin_fails_the_build(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"python-dateutil=={PINS['python-dateutil']}\n")  # needs six, unpinned here
    with pytest.raises(RuntimeError, match=r"does not pin.*\bsix=="):
        dependencies_dir(PLATFORM, VERSION, requirements, cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())  # no half-built entry is left to be reused


def test_runtime_provided_distributions_are_removed_file_by_file(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("".join(f"{n}=={PINS[n]}\n" for n in ("python-dateutil", "six", "typing-extensions")))
    deps = dependencies_dir(PLATFORM, VERSION, requirements, cache_dir=tmp_path / "cache")
    assert installed(deps) == {"typing-extensions": PINS["typing-extensions"]}
    assert sorted(p.name for p in deps.iterdir()) == [
        "typing_extensions-" + PINS["typing-extensions"] + ".dist-info", "typing_extensions.py"]


def test_the_dev_environment_runs_the_pinned_versions():
    """requirements-dev.txt installs lambdas/requirements.txt: tests and bench run the asset's code."""
    assert {name: metadata.version(name) for name in PINS} == PINS


def test_the_cold_start_bench_lays_out_the_runtime_as_bundling_does():
    assert coldstart.RUNTIME_PROVIDED == RUNTIME_PROVIDED
    # The import names are those the installed distributions actually provide.
    tops = {f.parts[0].removesuffix(".py") for name in RUNTIME_PROVIDED for f in metadata.files(name) or []
            if f.parts[0] != ".." and not f.parts[0].endswith((".dist-info", "__pycache__"))}
    assert tops == set(RUNTIME_PROVIDED_MODULES)
