"""Deployed code size per Lambda function: synthesize the CDK app and measure its assets.

``app.py`` is run as the CDK CLI runs it, with CDK_OUTDIR pointing at a fresh directory and
``ingress=both`` so every construct is in the assembly, plus the asset metadata the CLI asks for. Each AWS::Lambda::Function names its
asset directory in ``aws:asset:path`` metadata; the directory is what CDK zips and uploads.
Unzipped = the sum of its file sizes (what counts against Lambda's 250 MB limit); zipped =
the same files deflated, as the upload is (50 MB limit for a direct upload).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from . import ROOT, Row

UNZIPPED_LIMIT = 250 * 1024 * 1024
ZIPPED_LIMIT = 50 * 1024 * 1024


def synth(outdir: Path) -> float:
    env = {**os.environ, "CDK_OUTDIR": str(outdir), "CDK_CONTEXT_JSON": json.dumps({"ingress": "both", "aws:cdk:enable-asset-metadata": True}),
           "CDK_DISABLE_VERSION_CHECK": "1", "JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION": "1"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"app.py failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def measure(directory: Path) -> dict:
    files = [p for p in sorted(directory.rglob("*")) if p.is_file()]
    unzipped = sum(p.stat().st_size for p in files)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, path.relative_to(directory))
    by_package: dict[str, int] = {}
    for path in files:
        top = path.relative_to(directory).parts[0]
        by_package[top] = by_package.get(top, 0) + path.stat().st_size
    heaviest = sorted(by_package.items(), key=lambda kv: -kv[1])[:8]
    return {"files": len(files), "unzipped_bytes": unzipped, "zipped_bytes": len(buffer.getvalue()),
            "largest_entries": heaviest}


def run(quick: bool = False) -> tuple[list[Row], dict]:
    with tempfile.TemporaryDirectory(prefix="framesink-synth-") as tmp:
        outdir = Path(tmp)
        seconds = synth(outdir)
        templates = list(outdir.glob("*.template.json"))
        functions, assets = {}, {}
        for template in templates:
            for logical_id, resource in json.loads(template.read_text())["Resources"].items():
                if resource["Type"] != "AWS::Lambda::Function":
                    continue
                asset = resource.get("Metadata", {}).get("aws:asset:path")
                if not asset:
                    continue  # inline code (e.g. CDK's own custom resources)
                handler = resource["Properties"].get("Handler", "")
                functions[logical_id] = {"handler": handler, "asset": asset,
                                         "memory_mb": resource["Properties"].get("MemorySize")}
                if asset not in assets:
                    assets[asset] = measure(outdir / asset)
    rows = []
    sharing = {a: sum(fn["asset"] == a for fn in functions.values()) for a in assets}
    for logical_id, fn in sorted(functions.items(), key=lambda kv: kv[1]["handler"]):
        size = assets[fn["asset"]]
        ours = fn["handler"].startswith("framesink_handlers.")
        name = (fn["handler"].removeprefix("framesink_handlers.").removesuffix(".handler") + " function"
                if ours else f"{logical_id} (CDK's own)")
        shared = f" (one asset shared by {sharing[fn['asset']]} functions)" if sharing[fn["asset"]] > 1 else ""
        rows.append(Row("assets", f"{name} code, zipped", size["zipped_bytes"] / 2**20, "MiB",
                        note=f"{size['unzipped_bytes'] / 2**20:.1f} MiB unzipped, {size['files']} files{shared}"))
    details = {"synth_seconds": seconds, "functions": functions, "assets": assets,
               "limits": {"zipped_bytes": ZIPPED_LIMIT, "unzipped_bytes": UNZIPPED_LIMIT}}
    return rows, details


if __name__ == "__main__":
    result_rows, result_details = run()
    for row in result_rows:
        print(f"{row.name}: {row.value:.2f} {row.unit} ({row.note})")
    print(json.dumps(result_details, indent=2))
