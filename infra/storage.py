"""Where frames live: the private frames bucket, its access-log bucket, and the index table.

The table is built from framesink_core.shared.schema (the same definition the local emulator and
the tests use), so keys and indexes cannot drift between the cloud and a laptop.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from framesink_core.shared import schema

from .settings import InfraSettings

ATTRIBUTE_TYPES = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER, "B": dynamodb.AttributeType.BINARY}
PROJECTIONS = {"ALL": dynamodb.ProjectionType.ALL, "KEYS_ONLY": dynamodb.ProjectionType.KEYS_ONLY}


class Storage(Construct):
    """``bucket`` (frames), ``access_logs`` (S3 server access logs) and ``table`` (index)."""

    def __init__(self, scope: Construct, id: str, *, settings: InfraSettings):
        super().__init__(scope, id)
        removal = settings.removal_policy
        destroy = settings.destroy_on_delete

        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            # S3 log delivery writes only to SSE-S3 buckets, not SSE-KMS.
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(settings.log_retention_days))],
            removal_policy=removal,
            auto_delete_objects=destroy,
        )
        NagSuppressions.add_resource_suppressions(
            self.access_logs,
            [
                NagPackSuppression(
                    id="AwsSolutions-S1",
                    reason="This is the server access log bucket of the frames bucket; logging "
                    "it to itself would loop and logging it elsewhere needs a third bucket.",
                )
            ],
        )

        self.bucket = s3.Bucket(
            self,
            "Frames",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # No versioning: a frame's key is a function of the frame, so a redelivery
            # rewrites identical bytes; versions would store every redelivery again and
            # keep expired frames as noncurrent versions. RETAIN guards against deletion.
            versioned=False,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="frames/",
            # No S3 event notifications: frame events come from the ingress itself, once the
            # frame is durable and within a second (framesink_core/ingest/outlet.py); S3's take
            # "typically seconds, sometimes a minute or longer" and nothing needs them.
            lifecycle_rules=(
                [
                    s3.LifecycleRule(
                        id="expire-frames",
                        prefix="recordings/",
                        expiration=Duration.days(settings.frame_expiry_days),
                    )
                ]
                if settings.frame_expiry_days
                else None
            ),
            removal_policy=removal,
            auto_delete_objects=destroy,
        )


        self.table = index_table(self, "Index", settings)


def index_table(scope: Construct, id: str, settings: InfraSettings) -> dynamodb.Table:
    """The DynamoDB table of framesink_core.shared.schema, read from the same boto3 arguments the
    local emulator uses for create_table (key types and projections included)."""
    spec = schema.create_table_kwargs("unused")
    types = {a["AttributeName"]: ATTRIBUTE_TYPES[a["AttributeType"]] for a in spec["AttributeDefinitions"]}

    def keys(key_schema: list[dict]) -> dict:
        out = {}
        for key in key_schema:
            name = key["AttributeName"]
            role = "partition_key" if key["KeyType"] == "HASH" else "sort_key"
            out[role] = dynamodb.Attribute(name=name, type=types[name])
        return out

    table = dynamodb.Table(
        scope,
        id,
        **keys(spec["KeySchema"]),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption=dynamodb.TableEncryption.AWS_MANAGED,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        time_to_live_attribute=schema.TABLE_SCHEMA["ttl_attribute"],
        deletion_protection=not settings.destroy_on_delete,
        removal_policy=settings.removal_policy,
    )
    for gsi in spec["GlobalSecondaryIndexes"]:
        table.add_global_secondary_index(
            index_name=gsi["IndexName"],
            **keys(gsi["KeySchema"]),
            projection_type=PROJECTIONS[gsi["Projection"]["ProjectionType"]],
        )
    return table
