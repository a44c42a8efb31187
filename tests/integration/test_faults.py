"""Fault injection: S3 and DynamoDB throttling, 500s and timeouts under the real handlers.

Faults are injected at the botocore level, on the clients the handlers themselves use, with a
``before-send.<service>.<Operation>`` hook (tests/test_storage.py has the simpler original).
Each kind says whether the request reached the service, because that is what retries and
idempotency have to survive:

- ``refused``: the service never sees the attempt and the client gets an error response
  (throttling: S3 503 SlowDown, DynamoDB 400 ProvisionedThroughputExceededException /
  ThrottlingException; or a 500);
- ``lost``: the write lands, then the client gets a 500 instead of the response;
- ``connect_timeout``: botocore ConnectTimeoutError, nothing sent;
- ``read_timeout``: the write lands, then botocore ReadTimeoutError.

The promise under test (docs/ingest.md): a frame is either stored (after retries),
exactly once in S3 and in the index, or reported failed (log + metric) and never reported
stored; an index write lost after the S3 write is repaired by reindex; and the connection
stays open through all of it. First through the Lambda handlers with API Gateway events,
then over real websockets through ``framesink local`` (both ingresses). The container
receiver's S3 puts go through obstore, not botocore (framesink_core/shared/objects.py): their faults
are real ones on the wire, from a proxy in front of moto (tests/faultproxy.py).
"""

from __future__ import annotations

import json
import uuid
from contextlib import ExitStack, contextmanager

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from botocore.retries.standard import ExponentialBackoff
from conftest import TOKEN, ws_event

from framesink.synthetic import frame_message, make_png
from framesink_core.read.query import FrameIndex
from framesink_core.read.reindex import reindex_recording
from framesink_core.shared import schema
from framesink_core.shared.items import from_item
from framesink_handlers import _runtime, connect, disconnect, ingest
from tests.faultproxy import FaultProxy, route_native_puts

LIVE_ATTEMPTS = 5 * (1 + 3)  # the receiver's PUT: obstore's 5 attempts, framesink's 3 more rounds
GUARD = 60  # seconds: a hang guard for the end-to-end runs, never an assertion about speed

# Error responses as each service sends them (S3: REST-XML; DynamoDB: JSON 1.0).
S3_ERRORS = {
    503: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
}
DDB_PREFIX = "com.amazonaws.dynamodb.v20120810#"
DDB_ERRORS = {
    "ProvisionedThroughputExceededException": (400, "The level of configured provisioned throughput was exceeded."),
    "ThrottlingException": (400, "Rate of requests exceeds the allowed throughput."),
    "InternalServerError": (500, "Internal server error"),
}


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_):
        yield self.data


def error_response(client, request, code: str) -> AWSResponse:
    if client.meta.service_model.service_name == "s3":
        status = next(s for s, (c, _) in S3_ERRORS.items() if c == code)
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>{S3_ERRORS[status][1]}</Message><RequestId>fault</RequestId></Error>").encode()
        headers = {"Content-Type": "application/xml"}
    else:
        status, message = DDB_ERRORS[code]
        body = json.dumps({"__type": DDB_PREFIX + code, "message": message}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "fault"}
    return AWSResponse(request.url, status, headers, _Body(body))


def _deliver(client, request) -> None:
    """Send the request to moto for real, so the write lands before the injected failure.

    In-process moto (mock_aws) answers through its botocore stubber; a moto server over HTTP.
    """
    from moto.core.models import botocore_stubber

    if botocore_stubber.enabled:
        botocore_stubber(event_name="before-send", request=request)
    else:
        client._endpoint.http_session.send(request)


NOWHERE = "http://fault-injected.invalid/"  # a URL no moto backend matches


def inject(client, operation: str, kind: str, *, code: str | None = None, fail=None, times: int = 0) -> dict:
    """Fail attempts of ``operation`` on ``client``; returns counters {attempts, failed}.

    ``fail(n)`` says whether attempt ``n`` (1-based) fails; default: the first ``times``.
    """
    counts = {"attempts": 0, "failed": 0}
    should_fail = fail or (lambda n: n <= times)

    def hook(request, **_):
        # A refused attempt pointed the (reused) request at NOWHERE; the retry goes to moto.
        original = request.__dict__.pop("_fault_url", None)
        if original:
            request.url = original
        counts["attempts"] += 1
        if not should_fail(counts["attempts"]):
            return None
        counts["failed"] += 1
        if kind == "connect_timeout":
            raise ConnectTimeoutError(endpoint_url=request.url)
        if kind == "read_timeout":
            _deliver(client, request)
            raise ReadTimeoutError(endpoint_url=request.url)
        if kind == "unprocessed":  # BatchWriteItem throttled: 200, every item handed back
            body = json.loads(request.body)
            request._fault_url, request.url = request.url, NOWHERE
            return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.0"},
                               _Body(json.dumps({"UnprocessedItems": body["RequestItems"]}).encode()))
        response = error_response(client, request, code)
        if kind == "refused":
            # In-process moto's stubber runs after this hook unless the URL matches no backend.
            request._fault_url, request.url = request.url, NOWHERE
        elif kind == "lost":
            from moto.core.models import botocore_stubber

            if not botocore_stubber.enabled:  # in-process moto's stubber delivers it after this hook
                _deliver(client, request)
        return response

    client.meta.events.register(f"before-send.{client.meta.service_model.service_name}.{operation}", hook)
    return counts


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    """Retries happen exactly as configured (attempts, retry quota), without the sleeps."""
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


# --- through the Lambda handlers (API Gateway events, in-process moto) -------------------------

REC = "rec-faults"


@pytest.fixture
def svc(stack, lambda_context):
    """A connection opened through $connect; the handlers' own Service (whose clients get the faults)."""
    assert connect.handler(ws_event("$connect", "conn-f", query={"token": TOKEN}), lambda_context)["statusCode"] == 200
    return _runtime.service()


def send(lambda_context, png: bytes, relative: float, pid: int = 100) -> dict:
    body = frame_message(png, recording_id=REC, participant_id=pid, relative=relative)
    return ingest.handler(ws_event("$default", "conn-f", body=body), lambda_context)


def stored(aws, stack, rec: str = REC) -> tuple[dict[str, bytes], dict[str, dict]]:
    """(S3 objects by key -> bytes, index frame items by s3_key) of a recording."""
    objects = {}
    for page in aws["s3"].get_paginator("list_objects_v2").paginate(Bucket=stack.bucket,
                                                                   Prefix=schema.recording_prefix(rec)):
        for obj in page.get("Contents", []):
            objects[obj["Key"]] = aws["s3"].get_object(Bucket=stack.bucket, Key=obj["Key"])["Body"].read()
    items = list(FrameIndex(stack.table, aws["dynamodb"]).iter_frames(rec))
    index = {i["s3_key"]: i for i in items}
    assert len(index) == len(items)  # one index item per frame
    return objects, index


def participant(aws, stack, pid: int = 100, rec: str = REC) -> dict:
    item = aws["dynamodb"].get_item(TableName=stack.table, Key={"pk": {"S": schema.recording_pk(rec)},
                                                                 "sk": {"S": schema.participant_sk(str(pid))}})
    return from_item(item.get("Item", {}))


PNGS = [make_png(32, 24, seed=s, detailed=False) for s in range(4)]

TRANSIENT = [
    # (client, operation, kind, code)
    ("s3", "PutObject", "refused", "SlowDown"),
    ("s3", "PutObject", "lost", "InternalError"),
    ("s3", "PutObject", "connect_timeout", None),
    ("s3", "PutObject", "read_timeout", None),
    ("dynamodb", "PutItem", "refused", "ProvisionedThroughputExceededException"),
    ("dynamodb", "PutItem", "refused", "ThrottlingException"),
    ("dynamodb", "PutItem", "lost", "InternalServerError"),
    ("dynamodb", "PutItem", "read_timeout", None),
    ("dynamodb", "UpdateItem", "refused", "ProvisionedThroughputExceededException"),
    ("dynamodb", "UpdateItem", "lost", "InternalServerError"),
    ("dynamodb", "UpdateItem", "read_timeout", None),
]


@pytest.mark.parametrize("service_name, operation, kind, code", TRANSIENT,
                         ids=[f"{s}-{o}-{k}-{c or ''}".rstrip("-") for s, o, k, c in TRANSIENT])
def test_transient_faults_are_retried_and_every_frame_is_stored_once(
        svc, aws, stack, lambda_context, service_name, operation, kind, code):
    client = svc.s3 if service_name == "s3" else svc.dynamodb
    # Two consecutive failed attempts per frame: attempts 1-2 fail, 3 succeeds, 4-5 fail, ...
    counts = inject(client, operation, kind, code=code, fail=lambda n: n % 3 != 0)
    results = [send(lambda_context, png, relative=k * 0.5) for k, png in enumerate(PNGS)]

    assert [r["body"] for r in results] == ["stored"] * len(PNGS)
    assert counts["failed"] >= 2 * len(PNGS)  # the faults really happened
    objects, index = stored(aws, stack)
    assert sorted(objects.values()) == sorted(PNGS)  # every frame, byte for byte, once
    assert set(index) == set(objects)
    assert all(index[key]["bytes"] == len(objects[key]) for key in objects)
    p = participant(aws, stack)
    assert (p["first_ms"], p["last_ms"]) == (0, 1500)
    if operation == "UpdateItem" and kind in ("lost", "read_timeout"):
        # A counter update that landed but whose answer was lost is applied again by the
        # retry: the participant's counters are at-least-once (reindex recomputes them).
        assert p["frame_count"] >= len(PNGS)
        reindex_recording(svc.store, REC)
        p = participant(aws, stack)
    assert p["frame_count"] == len(PNGS) and p["bytes"] == sum(map(len, PNGS))


def test_persistent_s3_throttling_fails_the_frame_loudly_and_the_connection_goes_on(
        svc, aws, stack, lambda_context, caplog_json):
    first = send(lambda_context, PNGS[0], relative=0.0)
    counts = inject(svc.s3, "PutObject", "refused", code="SlowDown", times=6)  # 1 attempt + 5 retries
    failed = send(lambda_context, PNGS[1], relative=0.5)
    later = [send(lambda_context, png, relative=1.0 + k * 0.5) for k, png in enumerate(PNGS[2:])]

    assert first["body"] == "stored" and all(r["body"] == "stored" for r in later)
    assert failed == {"statusCode": 500, "body": "failed"}  # never reported stored
    assert counts["failed"] == 6
    objects, index = stored(aws, stack)
    assert sorted(objects.values()) == sorted([PNGS[0], *PNGS[2:]]) and set(index) == set(objects)
    assert participant(aws, stack)["frame_count"] == len(PNGS) - 1
    lines = caplog_json()
    [log] = [line for line in lines if line.get("message") == "frame not stored"]
    assert log["reason"] == "s3_write_failed" and log["relative_ms"] == 500 and "SlowDown" in log["detail"]
    assert any(line.get("FrameStoreFailed") == [1.0] and line.get("reason") == "s3_write_failed" for line in lines)
    # the connection record is untouched by the failure, and closes normally
    assert disconnect.handler(ws_event("$disconnect", "conn-f", close_code=1000, close_reason="bye"),
                              lambda_context)["statusCode"] == 200


def test_index_write_lost_after_the_s3_write_is_repaired_by_reindex(svc, aws, stack, lambda_context, caplog_json):
    send(lambda_context, PNGS[0], relative=0.0)
    counts = inject(svc.dynamodb, "PutItem", "refused", code="ProvisionedThroughputExceededException", times=6)
    failed = send(lambda_context, PNGS[1], relative=0.5)
    later = [send(lambda_context, png, relative=1.0 + k * 0.5) for k, png in enumerate(PNGS[2:])]

    assert failed["body"] == "failed" and all(r["body"] == "stored" for r in later) and counts["failed"] == 6
    [log] = [line for line in caplog_json() if line.get("message") == "frame not stored"]
    assert log["reason"] == "index_write_failed"
    objects, index = stored(aws, stack)
    assert len(objects) == len(PNGS)  # the object landed...
    missing = set(objects) - set(index)
    assert len(missing) == 1 and missing.pop().endswith("/0000000500.png")  # ...its index item did not
    assert participant(aws, stack)["frame_count"] == len(PNGS) - 1

    result = reindex_recording(svc.store, REC)
    assert (result.objects, result.indexed, result.skipped) == (len(PNGS), len(PNGS), [])
    objects, index = stored(aws, stack)
    assert set(index) == set(objects)
    p = participant(aws, stack)
    assert (p["frame_count"], p["bytes"], p["first_ms"], p["last_ms"]) == (len(PNGS), sum(map(len, PNGS)), 0, 1500)
    # A redelivery of the repaired frame is now a duplicate: nothing is counted twice.
    assert send(lambda_context, PNGS[1], relative=0.5)["body"] == "duplicate"
    assert participant(aws, stack)["frame_count"] == len(PNGS)


def test_a_long_outage_drains_the_retry_quota_and_later_frames_are_stored(svc, aws, stack, lambda_context):
    # botocore's standard mode spends retry tokens on failed attempts and earns them back on
    # success: in a long outage each frame soon gets one attempt, not six, and fails fast.
    outage = {"on": True}
    counts = inject(svc.s3, "PutObject", "refused", code="SlowDown", fail=lambda n: outage["on"])
    during = [send(lambda_context, PNGS[k % 4], relative=k * 0.5)["body"] for k in range(60)]
    outage["on"] = False
    after = [send(lambda_context, PNGS[k % 4], relative=100 + k * 0.5)["body"] for k in range(4)]
    assert set(during) == {"failed"} and after == ["stored"] * 4
    assert counts["failed"] < 6 * 60  # retries stopped once the quota ran out
    objects, index = stored(aws, stack)
    assert len(objects) == 4 and set(index) == set(objects)


# --- over real websockets through `framesink local` (moto server over HTTP) ----------------------


def local_stack(ingress: str):
    """`framesink local` with ``ingress`` on a background loop (``local.run(coro)``)."""
    from framesink.local import LocalConfig, background_stack

    return background_stack(LocalConfig.isolated("faults", ingress=ingress, max_frame_bytes=512 * 1024),
                            timeout=GUARD)


def ingress_service(local):
    """The Service whose clients store the frames: the handlers' (apigw) or the receiver's."""
    return local.receiver.service if local.receiver is not None else _runtime.service()


@contextmanager
def native_put_faults(local, plan):
    """The receiver's S3 puts (obstore) through a proxy in front of moto that fails them on
    the wire as ``plan(n, path)`` says: slowdown (503, refused), lost (landed, answer
    dropped), drop (connection dropped, nothing sent). Yields the proxy."""
    proxy = FaultProxy(local.endpoint_url, plan)
    route_native_puts(local.receiver.service.store, proxy)
    try:
        yield proxy
    finally:
        proxy.stop()


def remote_stored(local, rec: str) -> tuple[dict[str, int], dict[str, dict]]:
    s3, ddb = local.client("s3"), local.client("dynamodb")
    objects = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=local.config.bucket,
                                                             Prefix=schema.recording_prefix(rec)):
        objects.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    items = list(FrameIndex(local.config.table, ddb).iter_frames(rec))
    index = {i["s3_key"]: i for i in items}
    assert len(index) == len(items)
    return objects, index


@pytest.mark.slow
@pytest.mark.parametrize("ingress", ["apigw", "direct"])
def test_flaky_storage_over_a_real_websocket_loses_nothing(ingress):
    """A simulated Recall bot streams through the local stack while S3 and DynamoDB misbehave
    (throttling, 500s, timeouts on every few calls): every frame is stored exactly once and
    the bot's connection is never dropped."""
    from framesink.simulator import SimConfig, simulate

    def scenario(local):
        run = local.run
        svc = ingress_service(local)
        # The receiver writes index items with BatchWriteItem (index_batch.py), a Lambda with
        # PutItem; participant totals are UpdateItems, written every few seconds.
        index_op = "BatchWriteItem" if ingress == "direct" else "PutItem"
        if ingress == "apigw":
            faults = [inject(svc.s3, "PutObject", "refused", code="SlowDown", fail=lambda n: n % 3 == 1),
                      inject(svc.s3, "PutObject", "read_timeout", fail=lambda n: n % 7 == 3)]
        else:  # the same two, on the wire: refused (503 SlowDown), landed with its answer lost
            wire = stack.enter_context(native_put_faults(
                local, lambda n, _path: "slowdown" if n % 3 == 1 else "lost" if n % 7 == 3 else None))
            faults = [wire.counts]
        faults += [
            inject(svc.dynamodb, index_op, "read_timeout", fail=lambda n: n % 4 == 2),
            inject(svc.dynamodb, index_op, "refused", code="ThrottlingException", fail=lambda n: n % 5 == 4),
            inject(svc.dynamodb, "UpdateItem", "refused", code="ProvisionedThroughputExceededException",
                   fail=lambda n: n % 3 == 0),
        ]
        if ingress == "direct":
            faults.append(inject(svc.dynamodb, index_op, "unprocessed", fail=lambda n: n % 6 == 5))
        rec = f"rec-{uuid.uuid4().hex[:8]}"
        report = run(simulate(SimConfig(url=local.state["ws_url"], participants=3, seconds=3, small=True,
                                        recording_id=rec, reconnect_delay=0.2)))
        run(local.wait_idle())
        return report, faults, remote_stored(local, rec)

    with local_stack(ingress) as local, ExitStack() as stack:
        report, faults, (objects, index) = scenario(local)
    stats = local.final_stats
    assert report.frames_sent == report.frames_generated and report.frames_lost == 0
    assert report.connections == 1 and report.reconnects == 0 and report.closes == {"1000": 1}
    assert all(f["failed"] > 0 for f in faults)  # every kind of fault fired
    assert ingress == "apigw" or (faults[0].get("slowdown") and faults[0].get("lost"))
    assert stats["outcomes"] == {"stored": report.frames_sent}
    assert len(objects) == report.frames_sent and set(index) == set(objects)
    assert all(index[key]["bytes"] == size for key, size in objects.items())


@pytest.mark.slow
@pytest.mark.parametrize("ingress", ["apigw", "direct"])
def test_an_s3_outage_fails_frames_visibly_on_lambda_and_spools_them_on_the_receiver(ingress):
    """During an outage longer than the retries the stream goes on. The Lambda ingress cannot
    hold a frame: those frames are counted failed (not stored, not reported stored). The
    receiver spools them and stores them from its disk once S3 answers: nothing lost."""
    from collections import Counter

    from framesink.simulator import SimConfig, simulate

    def scenario(local):
        run = local.run
        svc = ingress_service(local)
        if ingress == "apigw":
            # Attempts 7-30 fail: with 6 attempts per frame, that is ~4 frames failed for good.
            outage = inject(svc.s3, "PutObject", "connect_timeout", fail=lambda n: 7 <= n <= 30)
        else:
            # The receiver stores several frames at once, so an outage counted in attempts
            # would spread over them: here it is the frames captured from 1 s to 2 s, every
            # attempt of their live write dropped on the wire (obstore's 5, 4 times: framesink
            # retries what obstore gives up on as a GenericError), then S3 is back.
            tries: Counter = Counter()

            def plan(_n, path):
                if 1000 <= int(path.rsplit("/", 1)[1][:10]) < 2000:
                    tries[path] += 1
                    return "drop" if tries[path] <= LIVE_ATTEMPTS else None
                return None

            seen["proxy"] = stack.enter_context(native_put_faults(local, plan))
            outage = seen["proxy"].counts
        rec = f"rec-{uuid.uuid4().hex[:8]}"
        report = run(simulate(SimConfig(url=local.state["ws_url"], participants=2, seconds=4, small=True,
                                        recording_id=rec, reconnect_delay=0.2)))
        run(local.wait_idle())
        return report, outage, remote_stored(local, rec)

    seen: dict = {}
    with local_stack(ingress) as local, ExitStack() as stack:
        report, outage, (objects, index) = scenario(local)
    stats = local.final_stats
    outcomes = stats["outcomes"]
    assert report.frames_lost == 0 and report.connections == 1 and report.closes == {"1000": 1}
    assert len(objects) == len(set(objects)) and set(index) == set(objects)
    if ingress == "apigw":
        assert outage["failed"] == 24
        assert outcomes.get("failed", 0) >= 1 and outcomes["stored"] + outcomes["failed"] == report.frames_sent
        assert len(objects) == outcomes["stored"]
    else:  # the outage's frames were spooled (and those behind them, in order), then all stored
        failed_keys = {p.split("/", 2)[2] for p in seen["proxy"].failed_paths}
        assert failed_keys and outage["failed"] == LIVE_ATTEMPTS * len(failed_keys)
        assert "failed" not in outcomes and outcomes["spooled"] >= len(failed_keys)
        assert outcomes["stored"] + outcomes["spooled"] == report.frames_sent == len(objects)
        assert stats["spool"] == {"drained": outcomes["spooled"], "left": 0}
