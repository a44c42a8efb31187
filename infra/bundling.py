"""Docker-free bundling of the Lambda assets: framesink's two packages plus Linux wheels.

Two assets: the base one (lambdas/requirements.txt) every function runs on, and the media
one (lambdas/requirements-media.txt: the base plus Pillow and PyAV) for the functions that
decode pixels (the slide analyzer, the export job), so the ingest path never carries 100 MB
of FFmpeg.

CDK's Python bundling (aws-lambda-python-alpha) runs pip inside a Docker image. Here pip
runs on the host instead, asking PyPI for wheels built for the Lambda platform
(``--platform manylinux2014_<arch> --only-binary=:all:``), which gives the same files
without Docker. The pip output is cached under ``.cache/lambda-deps/<hash>`` keyed by the
requirements, platform and Python version, so repeated synths (tests) copy it instead
of running pip again.

lambdas/requirements.txt pins the whole closure; a build that installs a distribution it does
not pin fails, so nothing floats in unnoticed. boto3 and its dependencies are removed after
pip: the Lambda runtime provides them, precompiled and matched to its boto3.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from importlib import metadata
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, ILocalBundling
from aws_cdk import aws_lambda as lambda_

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS_DIR = ROOT / "lambdas"
REQUIREMENTS = LAMBDAS_DIR / "requirements.txt"
MEDIA_REQUIREMENTS = LAMBDAS_DIR / "requirements-media.txt"
CACHE_DIR = ROOT / ".cache" / "lambda-deps"

# What the asset holds besides the dependencies: the core and the thin handlers, nothing else.
PACKAGES = ("framesink_core", "framesink_handlers")

# The Lambda Python runtime ships boto3 and its dependencies (distribution names). aws-xray-sdk
# pulls botocore and its closure in, so pip installs them, and they are removed again here:
# 31 MB of the 45, and a bundled copy would shadow the runtime's (AWS warns of urllib3 doing
# that). Cold start gains too: the runtime's copies are precompiled, /var/task never is.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")
# Their top-level import names, for checks on the asset.
RUNTIME_PROVIDED_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")

# Lambda's deployment package limit, unzipped (Lambda quotas: "250 MB ... including layers").
LAMBDA_UNZIPPED_LIMIT = 250 * 1000 * 1000
ANALYZER_CACHE_DIR = ROOT / ".cache" / "analyzers"

# Bump when the way the cache is built changes, so old cache entries are not reused.
CACHE_FORMAT = "4"


def canonical(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements_bytes(requirements: Path) -> bytes:
    """A requirements file with the files it includes (``-r other.txt``), for hashing and pins."""
    out = []
    for line in requirements.read_text().splitlines():
        included = re.fullmatch(r"\s*-r\s+(\S+)\s*", line)
        out.append(_requirements_bytes(requirements.parent / included[1]) if included else line.encode())
    return b"\n".join(out)


def pinned(requirements: Path = REQUIREMENTS, text: bytes | None = None) -> dict[str, str]:
    """``{name: version}`` of the ``name[extras]==version`` lines of a requirements file
    (and of the files it includes)."""
    pins = {}
    for line in (text if text is not None else _requirements_bytes(requirements)).decode().splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;#]+)\s*(#.*)?", line)
        if match:
            pins[canonical(match[1])] = match[3]
    return pins


def _check_pinned(target: Path, requirements: Path, text: bytes | None = None) -> None:
    """Every distribution pip installed is pinned at the version installed."""
    pins = pinned(requirements, text)
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions(path=[str(target)])}
    unpinned = {name: version for name, version in installed.items() if pins.get(name) != version}
    if unpinned:
        raise RuntimeError(
            f"pip installed distributions that {requirements} does not pin (or pins at another version): "
            + ", ".join(f"{n}=={v}" for n, v in sorted(unpinned.items()))
            + "; regenerate the pins (see the comment at the top of the file)"
        )


def _remove_runtime_provided(target: Path) -> None:
    """Delete the files of the runtime-provided distributions, as their RECORD lists them."""
    root = target.resolve()
    provided = [d for d in metadata.distributions(path=[str(root)]) if canonical(d.metadata["Name"]) in RUNTIME_PROVIDED]
    for dist in provided:
        files = [(root / f).resolve() for f in dist.files or []]  # read RECORD before deleting it
        files = [f for f in files if f.is_relative_to(root)]  # RECORD may list ../../bin scripts
        for file in files:
            file.unlink(missing_ok=True)
        for directory in sorted({f.parent for f in files}, key=lambda p: -len(p.parts)):
            while directory != root and directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
                directory = directory.parent


PLATFORMS = {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}
# Pillow and PyAV publish manylinux_2_28 wheels only: the Python 3.14 runtime (Amazon Linux
# 2023, glibc 2.34) runs them. The base asset keeps manylinux2014, so its files never change.
MEDIA_PLATFORMS = {"arm64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64"),
                   "x86_64": ("manylinux2014_x86_64", "manylinux_2_28_x86_64")}


def pip_platform(architecture: lambda_.Architecture) -> str:
    return PLATFORMS[architecture.name]


def python_version(runtime: lambda_.Runtime) -> str:
    return runtime.name.removeprefix("python")  # "python3.14" -> "3.14"


def dependencies_dir(platform: str | tuple[str, ...], version: str, requirements: Path = REQUIREMENTS,
                     cache_dir: Path = CACHE_DIR, check_pins: bool = True) -> Path:
    """The pip --target directory for these requirements, built once and then reused."""
    platforms = (platform,) if isinstance(platform, str) else tuple(platform)
    key = hashlib.sha256(
        b"\0".join([CACHE_FORMAT.encode(), " ".join(platforms).encode(), version.encode(),
                    _requirements_bytes(requirements)])
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
        *[arg for p in platforms for arg in ("--platform", p)], "--implementation", "cp", "--python-version", version,
        "--only-binary=:all:", "--target", str(work), "-r", str(requirements),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(
            f"pip could not install {requirements} for {' '.join(platforms)} / Python {version} "
            f"(exit {result.returncode}):\n{result.stderr.strip()[-2000:]}"
        )
    try:
        if check_pins:  # a user's analyzer requirements may float; framesink's own never do
            _check_pinned(work, requirements, _requirements_bytes(requirements))
    except RuntimeError:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _remove_runtime_provided(work)
    shutil.rmtree(work / "bin", ignore_errors=True)  # console scripts: unused in Lambda
    try:
        work.rename(final)
    except OSError:  # another worker finished first: use its copy
        shutil.rmtree(work, ignore_errors=True)
    return final


@jsii.implements(ILocalBundling)
class LocalPythonBundling:
    """Builds the asset on the host; CDK never falls back to Docker (tryBundle returns True)."""

    def __init__(self, platform: str | tuple[str, ...], version: str, requirements: Path = REQUIREMENTS,
                 analyzer_dir: Path | None = None):
        self.platform = platform
        self.version = version
        self.requirements = requirements
        self.analyzer_dir = analyzer_dir  # a kit analyzer's own directory, copied to the asset's root

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:  # noqa: ARG002
        out = Path(output_dir)
        shutil.copytree(dependencies_dir(self.platform, self.version, self.requirements,
                                         check_pins=self.analyzer_dir is None), out, dirs_exist_ok=True)
        if self.analyzer_dir is not None:
            shutil.copytree(self.analyzer_dir, out, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
            size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
            if size > LAMBDA_UNZIPPED_LIMIT:
                raise RuntimeError(
                    f"the analyzer {self.analyzer_dir} makes a {size / 1e6:.0f} MB Lambda asset; Lambda takes at most "
                    f"{LAMBDA_UNZIPPED_LIMIT / 1e6:.0f} MB unzipped: deploy it with \"runtime\": \"container\"")
        for package in PACKAGES:
            shutil.copytree(
                LAMBDAS_DIR / package,
                out / package,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                dirs_exist_ok=True,
            )
        return True


def lambda_code(runtime: lambda_.Runtime, architecture: lambda_.Architecture, *, media: bool = False) -> lambda_.Code:
    """The base asset (every function shares the returned object), or the media one."""
    platform = MEDIA_PLATFORMS[architecture.name] if media else pip_platform(architecture)
    return lambda_.Code.from_asset(
        str(LAMBDAS_DIR),
        # Hash what was bundled: the default (the source folder) would give arm64 and
        # x86_64 bundles the same hash, and a changed architecture would not be uploaded.
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(
            # Required by the API, never pulled: local bundling always succeeds or raises.
            image=runtime.bundling_image,
            # CDK caches a bundle by the asset's source path and options, not by the local
            # bundler: this keeps the two assets (same source folder) apart.
            environment={"FRAMESINK_ASSET": "media" if media else "base"},
            local=LocalPythonBundling(platform, python_version(runtime), MEDIA_REQUIREMENTS if media else REQUIREMENTS),
        ),
    )


def analyzer_requirements(analyzer_dir: Path) -> Path:
    """The requirements of a kit analyzer's asset: framesink's base closure, Pillow (the kit's
    Frame.image()) and the analyzer's own requirements.txt, if it has one."""
    pillow = pinned(MEDIA_REQUIREMENTS)["pillow"]
    own = analyzer_dir / "requirements.txt"
    text = f"-r {REQUIREMENTS}\npillow=={pillow}\n" + (f"-r {own}\n" if own.is_file() else "")
    path = ANALYZER_CACHE_DIR / f"requirements-{hashlib.sha256(_text_with_includes(text)).hexdigest()[:16]}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(text)
    return path


def _text_with_includes(text: str) -> bytes:
    out = []
    for line in text.splitlines():
        included = re.fullmatch(r"\s*-r\s+(\S+)\s*", line)
        out.append(_requirements_bytes(Path(included[1])) if included else line.encode())
    return b"\n".join(out)


def analyzer_code(runtime: lambda_.Runtime, architecture: lambda_.Architecture, analyzer_dir: Path) -> lambda_.Code:
    """A kit analyzer's own asset: its directory at the root, framesink_core and the handlers,
    and the wheels (analyzer_requirements) for the Lambda platform."""
    return lambda_.Code.from_asset(
        str(analyzer_dir),
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(
            image=runtime.bundling_image,
            environment={"FRAMESINK_ASSET": f"analyzer:{analyzer_dir}"},
            local=LocalPythonBundling(MEDIA_PLATFORMS[architecture.name], python_version(runtime),
                                      analyzer_requirements(analyzer_dir), analyzer_dir=analyzer_dir),
        ),
    )


# The container analyzer's image: the kit worker (python -m framesink_core.analyze.worker)
# with the analyzer's directory on its path. Its base and user as the receiver's
# (container/Dockerfile).
ANALYZER_DOCKERFILE = """\
# Generated by infra/bundling.py (analyzer_image_context): a framesink kit analyzer reading its queue.
FROM public.ecr.aws/docker/library/python:3.13-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.txt analyzer-requirements.txt /app/
RUN pip install --no-cache-dir -r /app/requirements.txt -r /app/analyzer-requirements.txt
COPY framesink_core /app/framesink_core
COPY analyzer /app/analyzer
ENV PYTHONPATH=/app:/app/analyzer
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin framesink
USER 10001:10001
CMD ["python", "-m", "framesink_core.analyze.worker"]
"""
# What the worker imports besides the analyzer's own: framesink_core's runtime closure.
ANALYZER_IMAGE_PACKAGES = ("boto3", "aws-lambda-powertools", "orjson", "pybase64")


def analyzer_image_context(name: str, analyzer_dir: Path) -> Path:
    """The Docker build context of a container analyzer, staged from the sources at each synth
    under .cache/analyzers/images/<name>-<content hash> (parallel synths of the same sources
    share one; a changed source makes a new one, and a new asset hash)."""
    context = ANALYZER_CACHE_DIR / "images" / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    context.mkdir(parents=True)
    pins = {**pinned(ROOT / "container" / "requirements.txt"), **pinned(MEDIA_REQUIREMENTS)}
    (context / "requirements.txt").write_text(
        "".join(f"{p}=={pins[canonical(p)]}\n" for p in (*ANALYZER_IMAGE_PACKAGES, "pillow")))
    own = analyzer_dir / "requirements.txt"
    (context / "analyzer-requirements.txt").write_text(own.read_text() if own.is_file() else "")
    (context / "Dockerfile").write_text(ANALYZER_DOCKERFILE)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    shutil.copytree(LAMBDAS_DIR / "framesink_core", context / "framesink_core", ignore=ignore)
    shutil.copytree(analyzer_dir, context / "analyzer", ignore=ignore)
    digest = hashlib.sha256()
    for file in sorted(f for f in context.rglob("*") if f.is_file()):
        digest.update(str(file.relative_to(context)).encode() + b"\0" + file.read_bytes() + b"\0")
    final = context.with_name(f"{name}-{digest.hexdigest()[:16]}")
    try:
        context.rename(final)
    except OSError:  # already staged (by another worker): the same bytes
        shutil.rmtree(context, ignore_errors=True)
    return final
