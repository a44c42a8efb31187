"""A CLI command's own subscription to the stack's frame bus (`framesink analyze`, `framesink
live`): EventBridge rules feeding a queue of its own, removed when the command stops."""

from __future__ import annotations

import json

from . import target
from .cli import CliError

OUTPUT_FRAME_BUS = "FrameBusName"


def frame_bus(where: target.Target, otherwise: str = "") -> str:
    """The stack's frame bus name (the local state's, or the FrameBusName output)."""
    bus = where.state.get("event_bus") if where.local else where.stack_outputs().get(OUTPUT_FRAME_BUS)
    if not bus:
        raise CliError("no frame bus: " + ("start a newer `framesink local`" if where.local
                                           else f"stack {where.stack_name} has no {OUTPUT_FRAME_BUS} output: "
                                           f"deploy this version") + (f", {otherwise}" if otherwise else ""))
    return bus


class Subscription:
    """A queue of its own (+ a dead-letter queue after ``tries`` receives) and one rule per
    pattern filling it from the bus."""

    def __init__(self, where: target.Target, bus: str, name: str, patterns: list[dict], tries: int = 5):
        self.events, self.sqs = where.client("events"), where.client("sqs")
        prefix = (where.bucket if where.local else where.stack_name or target.default_stack())[:20]
        self.name = f"{prefix}-analyze-{name}"[:64]  # an EventBridge rule name is at most 64 characters
        self.bus = bus
        dlq = self._queue(f"{self.name}-dlq", {"SqsManagedSseEnabled": "true",
                                               "MessageRetentionPeriod": str(14 * 24 * 3600)})
        self.dead_letter_url = dlq
        dlq_arn = self._arn(dlq)
        self.rules = [self.name if n == 0 else f"{self.name[:60]}-{n}" for n in range(len(patterns))]
        rule_arns = [self.events.put_rule(Name=rule, EventBusName=bus, EventPattern=json.dumps(pattern),
                                          Description="framesink: frames for a command's own queue")["RuleArn"]
                     for rule, pattern in zip(self.rules, patterns)]
        queue_arn = f"{dlq_arn.rsplit(':', 1)[0]}:{self.name}"  # same partition, region and account
        # Only these rules may send (https://docs.aws.amazon.com/eventbridge/latest/userguide/
        # eb-use-resource-based.html#eb-sqs-permissions), and only over TLS.
        policy = {"Version": "2012-10-17", "Statement": [
            {"Sid": "EventBridgeRule", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
             "Action": "sqs:SendMessage", "Resource": queue_arn, "Condition": {"ArnEquals": {"aws:SourceArn": rule_arns}}},
            {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Resource": queue_arn,
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}
        attributes = {"SqsManagedSseEnabled": "true", "VisibilityTimeout": "120",
                      "MessageRetentionPeriod": str(24 * 3600),
                      "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": tries})}
        if not where.local:  # moto takes the policy, then refuses its own plain-HTTP calls
            attributes["Policy"] = json.dumps(policy)
        self.url = self._queue(self.name, attributes)
        for rule in self.rules:
            self.events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": "queue", "Arn": self._arn(self.url)}])

    def _queue(self, name: str, attributes: dict) -> str:
        """The queue, created, or (kept by an earlier run's --keep) given these attributes:
        SQS refuses to create an existing queue with other attributes (QueueAlreadyExists)."""
        from botocore.exceptions import ClientError

        try:
            return self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
        url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        self.sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        return url

    def _arn(self, url: str) -> str:
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def dead_letters(self) -> int:
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.dead_letter_url,
                                                   AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
        return int(attributes.get("ApproximateNumberOfMessages", 0))

    def remove(self) -> None:
        for rule in self.rules:
            self.events.remove_targets(Rule=rule, EventBusName=self.bus, Ids=["queue"])
            self.events.delete_rule(Name=rule, EventBusName=self.bus)
        self.sqs.delete_queue(QueueUrl=self.url)
        self.sqs.delete_queue(QueueUrl=self.dead_letter_url)


