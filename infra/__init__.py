"""framesink's CDK app: constructs (one per concern), the stack, and how the app is built.

``build()`` is what app.py and the tests call, so both synthesize the same app: cdk.json's
context (feature flags and setting defaults) plus any overrides, with cdk-nag attached.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, Aspects, cx_api
from cdk_nag import AwsSolutionsChecks

from .settings import InfraSettings, check_region
from .stack import FramesinkStack

CDK_JSON = Path(__file__).resolve().parents[1] / "cdk.json"


def cdk_json() -> dict[str, Any]:
    return json.loads(CDK_JSON.read_text())


def build(context: Mapping[str, Any] | None = None, outdir: str | None = None) -> tuple[App, FramesinkStack]:
    """The app with its one stack and the cdk-nag AwsSolutions checks.

    cdk.json's context goes in as the app's base context, which the CDK CLI's own context
    (``cdk synth -c k=v``, passed through the environment) overrides; ``context`` here
    overrides both (tests).
    """
    config = cdk_json()
    app = App(
        context=config["context"],
        post_cli_context=dict(context or {}),
        outdir=outdir,
        # The CLI reads "versionReporting" from cdk.json; in-process builds read it here.
        analytics_reporting=config.get("versionReporting"),
    )
    settings = InfraSettings.from_context(app.node.try_get_context)
    # The CDK CLI names the profile's region here; the stack itself stays region-agnostic.
    check_region(settings, os.environ.get("CDK_DEFAULT_REGION") or os.environ.get("AWS_REGION"))
    stack = FramesinkStack(app, "Framesink", stack_name=settings.stack_name, settings=settings)
    Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app, stack


def error_annotations(assembly: cx_api.CloudAssembly) -> list[str]:
    """Every error annotation (unsuppressed cdk-nag findings among them) in an assembly.

    The CDK CLI refuses to go on when a stack carries one; app.py checks too, so running
    `python app.py` directly fails the same way.
    """
    errors = []
    for stack in assembly.stacks_recursively:
        for message in stack.messages:
            if message.level == cx_api.SynthesisMessageLevel.ERROR:
                errors.append(f"{message.id}: {message.entry.data}")
    return errors


__all__ = ["FramesinkStack", "InfraSettings", "build", "error_annotations"]
