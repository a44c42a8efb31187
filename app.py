#!/usr/bin/env python3
"""The CDK app (cdk.json runs it): one framesink stack, checked by cdk-nag AwsSolutions."""

import sys

from infra import build, error_annotations
from infra.settings import SettingsError


def main() -> int:
    try:
        app, _stack = build()
    except SettingsError as exc:  # a setting or region the deploy cannot use: one line, no traceback
        print(f"synth refused: {exc}", file=sys.stderr)
        return 1
    try:
        assembly = app.synth()
    except RuntimeError as exc:
        # cdk.json sets @aws-cdk/core:annotationsInValidationReport, so synth itself fails
        # on error annotations (unsuppressed cdk-nag findings) with a report naming each.
        if "ValidationFailed" not in str(exc):
            raise
        print(f"synth failed: {exc}", file=sys.stderr)
        return 1
    # Without that flag synth succeeds and only the CDK CLI would stop; check here too.
    errors = error_annotations(assembly)
    for error in errors:
        print(f"synth failed: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
