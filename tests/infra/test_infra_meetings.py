"""Meetings in the synthesized default stack: the public webhook route (no authorizer: the
function checks Svix signatures), its throttled, logged stage, the signing secret (generated,
never in the template), the export job (queue, dead-letter queue, media asset, size, roles)
and the outputs; cdk-nag is checked in test_infra.py for the whole default stack."""

from __future__ import annotations

import json

import pytest

from infra import build
from infra.meetings import EXPORT_CONCURRENCY, EXPORT_TMP_MB, WEBHOOK_PATH
from infra.settings import DEFAULTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    app, stack = build(outdir=str(tmp_path_factory.mktemp("cdk-meetings")))
    return app.synth().get_stack_artifact(stack.artifact_id).template


def of_type(template, kind):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def function(template, handler):
    (found,) = [k for k, v in of_type(template, "AWS::Lambda::Function").items()
                if v["Properties"].get("Handler") == handler]
    return found


def actions_of(template, function_id) -> dict[str, list]:
    """action -> resources, over every policy of the function's role."""
    role = template["Resources"][function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    out: dict[str, list] = {}
    for policy in of_type(template, "AWS::IAM::Policy").values():
        if {"Ref": role} not in policy["Properties"]["Roles"]:
            continue
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert st["Effect"] == "Allow"
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            for action in st["Action"] if isinstance(st["Action"], list) else [st["Action"]]:
                out.setdefault(action, []).extend(resources)
    return out


def suffixes(resources) -> set[str]:
    return {json.dumps(r).rsplit('"', 2)[-2] for r in resources}


def test_the_webhook_route_is_public_post_only_on_its_own_throttled_logged_api(template):
    webhook = function(template, "framesink_handlers.webhooks.handler")
    integrations = {k for k, v in of_type(template, "AWS::ApiGatewayV2::Integration").items()
                    if webhook in json.dumps(v["Properties"]["IntegrationUri"])}
    routes = [r["Properties"] for r in of_type(template, "AWS::ApiGatewayV2::Route").values()
              if any(i in json.dumps(r["Properties"].get("Target", "")) for i in integrations)]
    assert [(r["RouteKey"], r.get("AuthorizationType", "NONE")) for r in routes] == [(f"POST {WEBHOOK_PATH}", "NONE")]
    api = routes[0]["ApiId"]["Ref"]
    # the API holds that route alone: nothing else is reachable without IAM
    assert [r["Properties"]["RouteKey"] for r in of_type(template, "AWS::ApiGatewayV2::Route").values()
            if r["Properties"]["ApiId"] == {"Ref": api}] == [f"POST {WEBHOOK_PATH}"]
    (stage,) = [s["Properties"] for s in of_type(template, "AWS::ApiGatewayV2::Stage").values()
                if s["Properties"]["ApiId"] == {"Ref": api}]
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] > 0 and "AccessLogSettings" in stage
    # the access log format never includes the body or the signature headers
    assert "webhook-signature" not in stage["AccessLogSettings"]["Format"]
    (permission,) = [p["Properties"] for p in of_type(template, "AWS::Lambda::Permission").values()
                     if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [webhook, "Arn"]}]
    assert api in json.dumps(permission["SourceArn"])


def test_the_webhook_function_answers_within_svix_timeout_and_holds_least_privilege(template):
    webhook = function(template, "framesink_handlers.webhooks.handler")
    props = template["Resources"][webhook]["Properties"]
    assert props["Timeout"] <= 15  # Svix gives up on a delivery after 15 s
    env = props["Environment"]["Variables"]
    assert set(env) >= {"FRAMESINK_WEBHOOK_SECRET_ID", "FRAMESINK_EXPORT_QUEUE_URL"}
    assert not any("whsec_" in json.dumps(v) for v in env.values())  # a secret's id, never its value
    actions = actions_of(template, webhook)
    assert set(actions) == {"secretsmanager:GetSecretValue", "dynamodb:PutItem", "dynamodb:UpdateItem",
                            "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:Query", "sqs:SendMessage",
                            "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments",
                            "xray:PutTelemetryRecords"}
    (queue,) = [k for k in of_type(template, "AWS::SQS::Queue") if "ExportQueue" in k]
    assert actions["sqs:SendMessage"] == [{"Fn::GetAtt": [queue, "Arn"]}]
    assert not any(a.startswith("s3:") for a in actions)  # it stores no frame and reads none
    assert all("/index/" not in json.dumps(r) for r in actions["dynamodb:Query"])


def test_the_signing_secret_is_generated_not_written_into_the_template(template):
    secrets = [v["Properties"] for k, v in of_type(template, "AWS::SecretsManager::Secret").items()
               if "RecallWebhookSecret" in k]
    assert len(secrets) == 1 and "SecretString" not in secrets[0] and "GenerateSecretString" in secrets[0]
    outputs = template["Outputs"]
    assert "RecallWebhookUrl" in outputs and "RecallWebhookSecretArn" in outputs
    assert WEBHOOK_PATH in json.dumps(outputs["RecallWebhookUrl"]["Value"])


def test_the_export_job_runs_one_stream_per_invocation_on_the_media_asset(template):
    export = function(template, "framesink_handlers.export.handler")
    props = template["Resources"][export]["Properties"]
    # New accounts allow at most 3008 MB until a quota increase: the default fits it.
    assert (props["MemorySize"], props["Timeout"]) == (DEFAULTS["exportMemoryMb"], 900)
    assert props["MemorySize"] <= 3008
    assert props["EphemeralStorage"] == {"Size": EXPORT_TMP_MB}
    query = template["Resources"][function(template, "framesink_handlers.query.handler")]["Properties"]
    assert props["Code"]["S3Key"] != query["Code"]["S3Key"]  # PyAV and Pillow: the media asset
    (mapping,) = [m["Properties"] for m in of_type(template, "AWS::Lambda::EventSourceMapping").values()
                  if m["Properties"]["FunctionName"] == {"Ref": export}]
    assert mapping["BatchSize"] == 1
    # The poller never hands the function more than its reserved concurrency: a throttled
    # batch would come back with a receive counted, and 3 of them park an export in the DLQ.
    assert props["ReservedConcurrentExecutions"] == mapping["ScalingConfig"]["MaximumConcurrency"] == EXPORT_CONCURRENCY
    queues = of_type(template, "AWS::SQS::Queue")
    (queue,) = [k for k in queues if "ExportQueue" in k]
    q = queues[queue]["Properties"]
    assert json.dumps(mapping["EventSourceArn"]) == json.dumps({"Fn::GetAtt": [queue, "Arn"]})
    assert q["RedrivePolicy"]["maxReceiveCount"] == 3  # retried, then parked (and alarmed: test_infra_feed)
    assert q["VisibilityTimeout"] > props["Timeout"]  # a message is not redelivered while it is encoded
    assert "KmsMasterKeyId" in q or q.get("SqsManagedSseEnabled")


def test_the_export_role_reads_frames_writes_exports_and_nothing_else(template):
    actions = actions_of(template, function(template, "framesink_handlers.export.handler"))
    assert suffixes(actions["s3:GetObject"]) == {"/recordings/*"}
    assert suffixes(actions["s3:PutObject"]) == {"/exports/*"}
    # It may remove only what it writes (a recording deleted while it encoded: delete.py).
    assert suffixes(actions["s3:DeleteObject"]) == {"/exports/*"}
    assert not {"s3:ListBucket", "dynamodb:Scan", "dynamodb:BatchWriteItem"} & set(actions)
    assert set(actions) - {"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"} <= {
        "dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
        "sqs:SendMessage",
        "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl", "kms:Decrypt", "kms:Encrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*",
        "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
