"""Provision framesink's bucket, table and secrets in any AWS-compatible endpoint (moto).

The table comes from framesink_core.schema, the same definition the CDK stack deploys.
"""

from __future__ import annotations

from framesink_core import schema


def provision(*, s3, dynamodb, secretsmanager, bucket: str, table: str, token: str | None,
              token_secret_name: str = "framesink/connection-token",
              verification_secret: str | None = None,
              verification_secret_name: str = "framesink/recall-verification-secret") -> dict:
    """Create the resources; returns the settings env entries that name the secrets."""
    s3.create_bucket(Bucket=bucket)
    dynamodb.create_table(**schema.create_table_kwargs(table))
    dynamodb.get_waiter("table_exists").wait(TableName=table)
    dynamodb.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": schema.TTL_ATTRIBUTE},
    )
    env = {}
    if token:
        arn = secretsmanager.create_secret(Name=token_secret_name, SecretString=token)["ARN"]
        env["FRAMESINK_TOKEN_SECRET_ID"] = arn
    if verification_secret:
        arn = secretsmanager.create_secret(Name=verification_secret_name, SecretString=verification_secret)["ARN"]
        env["FRAMESINK_VERIFICATION_SECRET_ID"] = arn
    return env
