"""Provision framesink's bucket, table, secrets and live feed in any AWS-compatible endpoint (moto).

The table comes from framesink_core.shared.schema, the same definition the CDK stack deploys; the
feed is what infra/frame_events.py deploys: an event bus the ingresses publish frame events on
(ingest/outlet.py), when asked a rule for every frame into a frame queue (`framesink watch`;
the deploy's -c frameQueue=true), and a rule on screenshare frames into the queue the local
slide analyzer reads and one on every frame into the novelty function's (in AWS those rules
invoke the Lambdas directly).
"""

from __future__ import annotations

import json

from framesink_core.read.feed import frames_pattern
from framesink_core.shared import schema


def provision(*, s3, dynamodb, secretsmanager, bucket: str, table: str, token: str | None,
              token_secret_name: str = "framesink/connection-token",
              verification_secret: str | None = None,
              verification_secret_name: str = "framesink/recall-verification-secret",
              events=None, sqs=None, frame_queue: bool = False, novelty: bool = True) -> dict:
    """Create the resources; returns the settings env entries that name the secrets and, with
    ``events`` and ``sqs`` clients, the event bus (``FRAMESINK_EVENT_BUS``), the analyzer's and
    the novelty function's queue URLs (``analyzer_queue_url``, ``novelty_queue_url``) and, with
    ``frame_queue`` (the deploy's ``-c frameQueue=true``), the frame queue's (``frame_queue_url``,
    else None); without ``novelty``, no novelty queue (``novelty_queue_url`` None)."""
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
    if events is not None and sqs is not None:
        bus = f"{bucket}-frames"
        events.create_event_bus(Name=bus)
        env["FRAMESINK_EVENT_BUS"] = bus
        # moto scans a queue's every message on each send, so a frame queue nobody reads makes
        # every store slower as it fills (linearly: ~3 ms per S3 put per 1,000 messages held).
        # Like the deploy, it exists only when asked for.
        env["frame_queue_url"] = _queue_rule(events, sqs, bus, f"{bucket}-frames", frames_pattern(),
                                             dead_letters=f"{bucket}-frames-dead-letters") if frame_queue else None
        env["analyzer_queue_url"] = _queue_rule(events, sqs, bus, f"{bucket}-screenshares",
                                                frames_pattern(frame_type="screenshare"))
        # Every frame, to the novelty function (deployed: a rule invoking it directly).
        env["novelty_queue_url"] = _queue_rule(events, sqs, bus, f"{bucket}-novelty", frames_pattern()) \
            if novelty else None
    return env


def _queue_rule(events, sqs, bus: str, name: str, pattern: dict, dead_letters: str | None = None) -> str:
    attributes = {"VisibilityTimeout": "30"}
    if dead_letters:  # as deployed: after 5 receives (a consumer failing on it), the event moves there
        dlq = sqs.create_queue(QueueName=dead_letters)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(pattern))
    events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])
    return url
