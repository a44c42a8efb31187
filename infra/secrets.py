"""Secrets Manager: the shared connection token (generated here) and, optionally, Recall's
whsec_ verification secret (created by you, imported by name).

Functions get names/ARNs in their environment and read values at run time; no secret value
ever appears in the template, an environment variable or a stack output.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from .settings import InfraSettings

TOKEN_LENGTH = 48  # letters and digits: ~285 bits


class Secrets(Construct):
    def __init__(self, scope: Construct, id: str, *, settings: InfraSettings):
        super().__init__(scope, id)
        self.token_secret: secretsmanager.Secret | None = None
        self.verification_secret_name = settings.verification_secret_name

        if settings.static_token:
            self.token_secret = secretsmanager.Secret(
                self,
                "ConnectionToken",
                description="framesink shared connection token: wss://<api>/<stage>?token=<value>",
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    # Letters and digits only, so the token goes into a URL without escaping.
                    exclude_punctuation=True,
                    include_space=False,
                    password_length=TOKEN_LENGTH,
                ),
                removal_policy=settings.removal_policy,
            )
            NagSuppressions.add_resource_suppressions(
                self.token_secret,
                [
                    NagPackSuppression(
                        id="AwsSolutions-SMG4",
                        reason="The shared token is embedded in the URL Recall holds for a bot's "
                        "whole meeting; automatic rotation would cut live streams. Rotate it "
                        "between meetings with `aws secretsmanager put-secret-value`, and prefer "
                        "the per-bot tokens create-bot mints (hashed, with a TTL).",
                    )
                ],
            )

    @property
    def token_secret_id(self) -> str:
        """What FRAMESINK_TOKEN_SECRET_ID holds: the secret's ARN, or "" if none."""
        return self.token_secret.secret_arn if self.token_secret else ""

    @property
    def verification_secret_arn(self) -> str | None:
        """IAM resource of the imported secret: its name plus Secrets Manager's 6-char suffix."""
        if not self.verification_secret_name:
            return None
        return Stack.of(self).format_arn(
            service="secretsmanager",
            resource="secret",
            resource_name=f"{self.verification_secret_name}-??????",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )

    def verification_statements(self) -> list[iam.PolicyStatement]:
        """GetSecretValue on the Recall verification secret alone (none configured: none)."""
        arn = self.verification_secret_arn
        return [iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[arn])] if arn else []

    def read_statements(self) -> list[iam.PolicyStatement]:
        """GetSecretValue on exactly the configured secrets (none: no statement)."""
        resources = [r for r in (self.token_secret_id, self.verification_secret_arn) if r]
        if not resources:
            return []
        return [iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=resources)]
