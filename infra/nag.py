"""cdk-nag suppressions for what CDK and third-party constructs create as stack-level
singletons (one per stack, shared by every construct that asks for it): they are children
of the stack, not of the construct that caused them, so they are found by their id prefix."""

from __future__ import annotations

from aws_cdk import Stack
from cdk_nag import NagPackSuppression, NagSuppressions


def suppress_singletons(stack: Stack, id_prefix: str, suppressions: list[NagPackSuppression]) -> int:
    """Suppress on every stack child whose id starts with ``id_prefix`` (and their children).
    Call it after the construct that makes the singleton. Returns how many were found."""
    found = [child for child in stack.node.children if child.node.id.startswith(id_prefix)]
    for child in found:
        NagSuppressions.add_resource_suppressions(child, suppressions, apply_to_children=True)
    return len(found)
