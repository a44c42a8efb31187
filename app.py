#!/usr/bin/env python3
"""The CDK app (cdk.json runs it): one framesink stack, checked by cdk-nag AwsSolutions."""

import sys

from infra import build, error_annotations


def main() -> int:
    app, _stack = build()
    errors = error_annotations(app.synth())
    if errors:
        # The CDK CLI would stop on these too; failing here covers `python app.py` as well.
        print(f"synth failed: {len(errors)} error annotation(s)", file=sys.stderr)
        for error in errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
