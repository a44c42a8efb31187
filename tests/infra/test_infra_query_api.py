"""infra/query_api.py in the real synthesized stack: least-privilege IAM, AWS_IAM on every
route, access logs and throttling on the stage, the URL output, and no cdk-nag errors."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

from framesink_core.shared import schema
from infra import build, error_annotations
from infra.query_api import ROUTES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    app, stack = build(outdir=str(tmp_path_factory.mktemp("cdk.out")))
    assembly = app.synth()
    template = assembly.get_stack_artifact(stack.artifact_id).template
    return assembly, template, stack


def resources(template, kind):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def query_function(template, handler="framesink_handlers.query.handler"):
    (logical_id,) = [k for k, v in resources(template, "AWS::Lambda::Function").items()
                     if v["Properties"].get("Handler") == handler]
    return logical_id


def role_statements(template, function_id):
    role = template["Resources"][function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    return [s for p in resources(template, "AWS::IAM::Policy").values() if {"Ref": role} in p["Properties"]["Roles"]
            for s in p["Properties"]["PolicyDocument"]["Statement"]]


def test_query_function_may_only_query_the_index_and_read_frames(synth):
    _, template, stack = synth
    function = template["Resources"][query_function(template)]
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    policies = [p for p in resources(template, "AWS::IAM::Policy").values()
                if {"Ref": role} in p["Properties"]["Roles"]]
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    table = [k for k in resources(template, "AWS::DynamoDB::Table")][0]
    data = {}
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        if any(a.startswith(("dynamodb:", "s3:")) for a in actions):
            data[tuple(actions)] = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        assert s["Effect"] == "Allow"
    assert set(data) == {("dynamodb:Query",), ("s3:GetObject",)}  # no Scan, no writes, nothing else
    index_arns = json.dumps(data[("dynamodb:Query",)])
    assert index_arns.count(table) == 1 + len(schema.TABLE_SCHEMA["global_secondary_indexes"])  # table + each GSI, named
    for gsi in schema.TABLE_SCHEMA["global_secondary_indexes"]:
        assert f"/index/{gsi['name']}" in index_arns
    assert "index/*" not in index_arns
    # presigned URLs for frames and exports only
    assert sorted(json.dumps(r).rsplit('"', 2)[-2] for r in data[("s3:GetObject",)]) == ["/exports/*", "/recordings/*"]
    # everything else the role holds is its own log group and X-Ray (functions.py)
    other = {a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert other - {"dynamodb:Query", "s3:GetObject"} <= {
        "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def test_every_route_needs_iam_auth(synth):
    _, template, _ = synth
    apis = {k: v for k, v in resources(template, "AWS::ApiGatewayV2::Api").items()
            if v["Properties"].get("ProtocolType") == "HTTP" and "query" in v["Properties"].get("Description", "")}
    (api,) = apis
    routes = [r["Properties"] for r in resources(template, "AWS::ApiGatewayV2::Route").values()
              if r["Properties"]["ApiId"] == {"Ref": api}]
    assert sorted(r["RouteKey"] for r in routes) == sorted([*(f"GET {p}" for p in ROUTES),
                                                            "DELETE /recordings/{recording_id}"])
    assert all(r["AuthorizationType"] == "AWS_IAM" for r in routes)
    # API Gateway may invoke the function only from this API
    fn = query_function(template)
    permissions = [p["Properties"] for p in resources(template, "AWS::Lambda::Permission").values()
                   if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [fn, "Arn"]}]
    assert permissions and all(api in json.dumps(p["SourceArn"]) for p in permissions)


def test_stage_logs_and_throttles_and_the_url_is_an_output(synth):
    _, template, stack = synth
    from aws_cdk.assertions import Template

    assertions = Template.from_json(template)
    assertions.has_resource_properties("AWS::ApiGatewayV2::Stage", {
        "StageName": "$default",
        "AutoDeploy": True,
        "AccessLogSettings": {"DestinationArn": Match.any_value(), "Format": Match.string_like_regexp("userArn")},
        "DefaultRouteSettings": {"ThrottlingRateLimit": Match.any_value(), "ThrottlingBurstLimit": Match.any_value()},
    })
    assert "QueryApiUrl" in template["Outputs"]


def test_no_cdk_nag_errors(synth):
    assembly, _, _ = synth
    # test_infra.py checks the whole app; here: nothing from this construct
    assert [e for e in error_annotations(assembly) if "/QueryApi/" in e] == []


def test_delete_function_may_only_delete_under_the_recording_prefixes(synth):
    _, template, _ = synth
    statements = role_statements(template, query_function(template, "framesink_handlers.delete.handler"))
    by_action = {}
    for st in statements:
        assert st["Effect"] == "Allow"
        for action in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]]):
            by_action.setdefault(action, []).append(st)
    assert set(by_action) == {"s3:ListBucket", "s3:DeleteObject", "dynamodb:Query", "dynamodb:GetItem",
                              "dynamodb:BatchWriteItem", "dynamodb:PutItem", "logs:CreateLogStream", "logs:PutLogEvents",
                              "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    (listing,) = by_action["s3:ListBucket"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["recordings/*", "exports/*"]}}
    (deleting,) = by_action["s3:DeleteObject"]
    assert sorted(json.dumps(r).rsplit('"', 2)[-2] for r in deleting["Resource"]) == ["/exports/*", "/recordings/*"]
    assert "s3:DeleteBucket" not in by_action and "dynamodb:DeleteTable" not in by_action
