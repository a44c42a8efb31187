"""framesink local's resources (framesink/local/aws.py) over moto: which queues get the frames."""

import json

import boto3
from moto import mock_aws

from framesink.local.aws import provision
from framesink_core.ingest.outlet import entry

REGION = "us-east-1"


def _provision(**flags):
    clients = {name: boto3.client(name, region_name=REGION)
               for name in ("s3", "dynamodb", "secretsmanager", "events", "sqs")}
    env = provision(**clients, bucket="frames-local", table="framesink-index", token="tok", **flags)
    return clients, env


def _received(sqs, url):
    return sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])


def test_novelty_queue_gets_every_frame_event_unless_turned_off():
    frame = {"bucket": "frames-local", "key": "recordings/r/participants/1/webcam/0000000500.png",
             "recording_id": "r", "participant_id": "1", "frame_type": "webcam", "relative_ms": 500}
    with mock_aws():
        clients, env = _provision()
        bus = env["FRAMESINK_EVENT_BUS"]
        assert clients["events"].put_events(Entries=[entry(bus, frame)])["FailedEntryCount"] == 0
        [message] = _received(clients["sqs"], env["novelty_queue_url"])
        assert json.loads(message["Body"])["detail"]["key"] == frame["key"]
    with mock_aws():  # the benchmark's stack: no novelty queue, so no rule fills one nobody reads
        clients, env = _provision(novelty=False)
        assert env["novelty_queue_url"] is None
        queues = clients["sqs"].list_queues().get("QueueUrls", [])
        assert not [q for q in queues if "novelty" in q] and [q for q in queues if "screenshares" in q]
        rules = clients["events"].list_rules(EventBusName=env["FRAMESINK_EVENT_BUS"])["Rules"]
        assert [r["Name"] for r in rules] == ["frames-local-screenshares"]
