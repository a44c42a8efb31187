"""framesink/target.py: which stack a command talks to (state file, flags, env, stack outputs)."""

import argparse
import json

import boto3
import pytest

from framesink import target
from framesink.cli import CliError

TEMPLATE = {
    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},  # a stack needs one resource
    "Outputs": {
        "BucketName": {"Value": "bucket-from-stack"},
        "TableName": {"Value": "table-from-stack"},
        "Region": {"Value": "us-east-1"},
        "QueryApiUrl": {"Value": "https://q.example/"},
        "FrameExpiryDays": {"Value": "7"},
    },
}


def parse(*argv):
    parser = argparse.ArgumentParser()
    target.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def deployed(aws, monkeypatch):
    monkeypatch.delenv("FRAMESINK_BUCKET", raising=False)
    monkeypatch.delenv("FRAMESINK_TABLE", raising=False)
    monkeypatch.delenv("FRAMESINK_STACK", raising=False)
    cfn = boto3.client("cloudformation", region_name="us-east-1")
    cfn.create_stack(StackName="framesink-live", TemplateBody=json.dumps(TEMPLATE))
    cfn.create_stack(StackName="framesink-dev", TemplateBody=json.dumps(
        {**TEMPLATE, "Outputs": {"BucketName": {"Value": "dev-bucket"}, "TableName": {"Value": "dev-table"}}}))
    return cfn


def test_stack_outputs_fill_in_what_flags_and_env_do_not_give(deployed, monkeypatch):
    t = target.resolve(parse())
    assert (t.bucket, t.table, t.stack_name, t.local) == ("bucket-from-stack", "table-from-stack", "framesink-live", False)
    assert t.output(target.OUTPUT_QUERY_API_URL) == "https://q.example/"
    with pytest.raises(CliError, match="BotApiUrl is not in stack framesink-live"):
        t.output("BotApiUrl")

    monkeypatch.setenv("FRAMESINK_TABLE", "table-from-env")
    t = target.resolve(parse("--bucket", "bucket-from-flag"))
    assert (t.bucket, t.table) == ("bucket-from-flag", "table-from-env")
    assert t.outputs == {}  # everything was given: no DescribeStacks call

    t = target.resolve(parse("--stack", "framesink-dev", "--table", "t"))
    assert (t.bucket, t.table) == ("dev-bucket", "t")
    monkeypatch.setenv("FRAMESINK_STACK", "framesink-dev")
    monkeypatch.delenv("FRAMESINK_TABLE")
    assert target.resolve(parse()).table == "dev-table"


def test_reindex_expiry_days_come_from_env_then_stack_output_then_default(deployed, monkeypatch):
    monkeypatch.delenv("FRAMESINK_FRAME_EXPIRY_DAYS", raising=False)
    assert target.resolve(parse()).frame_expiry_days() == 7  # the stack's frameExpiryDays
    assert target.resolve(parse("--stack", "framesink-dev")).frame_expiry_days() == 30  # no such output
    named = target.resolve(parse("--stack", "gone", "--bucket", "b", "--table", "t"))
    assert named.frame_expiry_days() == 30  # unreadable stack: the default
    monkeypatch.setenv("FRAMESINK_FRAME_EXPIRY_DAYS", "3")
    assert target.resolve(parse()).frame_expiry_days() == 3
    assert target.resolve(parse()).store().frame_expiry_days == 3


def test_a_missing_stack_says_what_to_do(deployed):
    with pytest.raises(CliError, match="cannot read stack nope.*--bucket/--table, or --local"):
        target.resolve(parse("--stack-name", "nope"))


def test_local_reads_the_state_file(tmp_path):
    state = {"ws_url": "ws://127.0.0.1:1/live?token=t", "endpoint_url": "http://127.0.0.1:2", "bucket": "b",
             "table": "t", "token": "t", "region": "eu-west-1"}
    path = tmp_path / "local.json"
    path.write_text(json.dumps(state))
    t = target.resolve(parse("--local", "--state-file", str(path), "--bucket", "ignored"))
    assert (t.local, t.bucket, t.table, t.region, t.endpoint_url) == (True, "b", "t", "eu-west-1", "http://127.0.0.1:2")
    assert t.output("ws_url") == state["ws_url"]
    s3 = t.client("s3")
    assert s3.meta.endpoint_url == "http://127.0.0.1:2" and s3.meta.region_name == "eu-west-1"

    path.write_text(json.dumps({"bucket": "b"}))
    with pytest.raises(CliError, match="lacks ws_url, endpoint_url, table, region"):
        target.resolve(parse("--local", "--state-file", str(path)))
    path.write_text("{not json")
    with pytest.raises(CliError, match="not a framesink local state file"):
        target.resolve(parse("--local", "--state-file", str(path)))
    with pytest.raises(CliError, match="start one with `framesink local`"):
        target.resolve(parse("--local", "--state-file", str(tmp_path / "absent.json")))


def test_a_hint_names_the_stack_the_command_used():
    """`framesink recording R --local` suggests `framesink slides ... --local`, not a command
    that would talk to the default deployed stack."""
    assert target.same_stack(parse("--local")) == " --local"
    assert target.same_stack(parse("--local", "--state-file", "/tmp/a b.json")) == " --local --state-file '/tmp/a b.json'"
    assert target.same_stack(parse("--stack-name", "framesink-dev", "--region", "eu-west-1")) == \
        " --stack-name framesink-dev --region eu-west-1"
    assert target.same_stack(parse()) == ""
