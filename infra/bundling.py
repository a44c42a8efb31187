"""Docker-free bundling of the Lambda asset: framesink's two packages plus Linux wheels.

CDK's Python bundling (aws-lambda-python-alpha) runs pip inside a Docker image. Here pip
runs on the host instead, asking PyPI for wheels built for the Lambda platform
(``--platform manylinux2014_<arch> --only-binary=:all:``), which gives the same files
without Docker. The pip output is cached under ``.cache/lambda-deps/<hash>`` keyed by the
requirements, platform and Python version, so repeated synths (tests) copy it instead
of running pip again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, ILocalBundling
from aws_cdk import aws_lambda as lambda_

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS_DIR = ROOT / "lambdas"
REQUIREMENTS = LAMBDAS_DIR / "requirements.txt"
CACHE_DIR = ROOT / ".cache" / "lambda-deps"

# What the asset holds besides the dependencies: the core and the thin handlers, nothing else.
PACKAGES = ("framesink_core", "framesink_handlers")

# The Lambda Python runtime ships boto3/botocore/s3transfer; aws-xray-sdk pulls botocore
# in as a dependency, so pip installs it, and it is removed again here (31 MB of the 45).
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")

# Bump when the way the cache is built changes, so old cache entries are not reused.
CACHE_FORMAT = "2"

PLATFORMS = {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}


def pip_platform(architecture: lambda_.Architecture) -> str:
    return PLATFORMS[architecture.name]


def python_version(runtime: lambda_.Runtime) -> str:
    return runtime.name.removeprefix("python")  # "python3.14" -> "3.14"


def dependencies_dir(platform: str, version: str, requirements: Path = REQUIREMENTS, cache_dir: Path = CACHE_DIR) -> Path:
    """The pip --target directory for these requirements, built once and then reused."""
    key = hashlib.sha256(
        b"\0".join([CACHE_FORMAT.encode(), platform.encode(), version.encode(), requirements.read_bytes()])
    ).hexdigest()[:16]
    final = cache_dir / key
    if final.is_dir():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Build beside the final name and rename: parallel test workers may build the same
    # entry at once, and a half-written directory must never look like a finished one.
    work = cache_dir / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-compile",  # .pyc made by the host Python would not match the runtime's
        "--platform", platform, "--implementation", "cp", "--python-version", version,
        "--only-binary=:all:", "--target", str(work), "-r", str(requirements),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(
            f"pip could not install {requirements} for {platform} / Python {version} "
            f"(exit {result.returncode}):\n{result.stderr.strip()[-2000:]}"
        )
    for name in RUNTIME_PROVIDED:
        for path in [work / name, *work.glob(f"{name}-*.dist-info")]:
            shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(work / "bin", ignore_errors=True)  # console scripts: unused in Lambda
    try:
        work.rename(final)
    except OSError:  # another worker finished first: use its copy
        shutil.rmtree(work, ignore_errors=True)
    return final


@jsii.implements(ILocalBundling)
class LocalPythonBundling:
    """Builds the asset on the host; CDK never falls back to Docker (tryBundle returns True)."""

    def __init__(self, platform: str, version: str):
        self.platform = platform
        self.version = version

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:  # noqa: ARG002
        out = Path(output_dir)
        shutil.copytree(dependencies_dir(self.platform, self.version), out, dirs_exist_ok=True)
        for package in PACKAGES:
            shutil.copytree(
                LAMBDAS_DIR / package,
                out / package,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                dirs_exist_ok=True,
            )
        return True


def lambda_code(runtime: lambda_.Runtime, architecture: lambda_.Architecture) -> lambda_.Code:
    """One asset for every framesink function (share the returned object across them)."""
    return lambda_.Code.from_asset(
        str(LAMBDAS_DIR),
        # Hash what was bundled: the default (the source folder) would give arm64 and
        # x86_64 bundles the same hash, and a changed architecture would not be uploaded.
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(
            # Required by the API, never pulled: local bundling always succeeds or raises.
            image=runtime.bundling_image,
            local=LocalPythonBundling(pip_platform(architecture), python_version(runtime)),
        ),
    )
