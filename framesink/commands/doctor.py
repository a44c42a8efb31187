"""`framesink doctor (--local | --stack NAME)`: prove a deploy end to end, then clean up.

What a Recall bot and an on-call engineer depend on, each as one PASS/FAIL/SKIP line (a FAIL
with its likely cause and fix):

1. outputs: the stack's outputs (or the local state file) name the URL, bucket and table;
2. handshake without a token: 401 from the receiver through the public URL (a 502/504 here
   is CloudFront not reaching the ALB);
3. a token: minted for a doctor bot with your AWS credentials (DynamoDB, not Recall), 10 min;
4. handshake with it: 101;
5. frames: a 480x360 webcam and a 1280x720 screenshare PNG, read back byte-identical from S3
   and found in the index;
6. live feed: both frames' "Frame Stored" events, read from a subscription of the doctor's own
   on the stack's frame bus (rules and a queue made for the run, removed after it; an older
   stack without the FrameBusName output: the frame queue, when there is one);
   novelty: both frames' "Frame Scored" events, when the novelty function is deployed;
7. webhook: a signed bot status delivery answered 2xx, a forged one 401 (when the signing
   secret is set);
8. alarm -> topic: the topic's policy lets CloudWatch publish (the deployed template, or
   --template), and with --stack a test alarm set to ALARM whose history shows the SNS
   action succeeded;
9. cleanup: the doctor's recording, its bot's items and its test alarm deleted.

Exit 0 only when nothing failed. No token is ever printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .. import target
from ..cli import CliError

TOKEN_TTL_SECONDS = 600
STORE_WAIT_SECONDS = 30.0
FEED_WAIT_SECONDS = 20.0
ALARM_WAIT_SECONDS = 90.0
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
# (participant, type) -> (width, height, seed): a real-size webcam and screenshare frame, camera-like
# PNGs of 250 KB and 1.2 MB (over API Gateway's 128 KB message limit, as Recall's are).
SAMPLE_FRAMES = {("1", "webcam"): (480, 360, 7), ("2", "screenshare"): (1280, 720, 8)}
OUTPUT_WEBHOOK_URL = "RecallWebhookUrl"
OUTPUT_WEBHOOK_SECRET = "RecallWebhookSecretArn"
OUTPUT_TOPIC = "AlarmTopicArn"
OUTPUT_FRAME_QUEUE = "FrameQueueUrl"
# What a 5xx at the handshake means on the default deploy (CloudFront -> internal ALB -> task).
ORIGIN_UNREACHABLE = (
    "CloudFront (or the ALB) could not reach a receiver: the ALB's security group must admit CloudFront's "
    "origin-facing prefix list on port 80, and a receiver task must be healthy",
    "check the ALB security group's inbound rule and the target group's healthy targets "
    "(aws elbv2 describe-target-health); redeploy if the rule is missing")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="prove a deploy (or the local stack) end to end, then clean up",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--template", type=Path, metavar="FILE",
                   help="a synthesized template (cdk.out/framesink-<stage>.template.json) whose alarm topic policy "
                   "to check; with --stack the deployed template is read instead")
    p.add_argument("--timeout", type=_seconds, default=STORE_WAIT_SECONDS, metavar="SECONDS",
                   help=f"how long to wait for the frames to be stored (default {STORE_WAIT_SECONDS:g})")
    target.add_arguments(p, storage=False)
    p.set_defaults(func=run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 600:  # nan fails too
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds in (0, 600]")
    return value


@dataclass
class Step:
    name: str
    status: str
    detail: str = ""
    cause: str = ""
    fix: str = ""

    def lines(self) -> list[str]:
        out = [f"{self.status}  {self.name:<28} {self.detail}".rstrip()]
        if self.status == FAIL:
            out += [f"      likely cause: {self.cause}" if self.cause else "",
                    f"      fix: {self.fix}" if self.fix else ""]
        return [line for line in out if line]


@dataclass
class Doctor:
    where: target.Target
    url: str  # the websocket URL bots get, without a token
    template: dict | None = None
    bot_id: str = field(default_factory=lambda: f"framesink-doctor-{uuid.uuid4().hex[:10]}")
    recording_id: str = ""
    token: str | None = None
    stored_keys: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    alarm_name: str | None = None
    subscription: object | None = None  # framesink.subscription.Subscription, while the doctor runs
    novelty: bool = True  # the novelty function is deployed: expect "Frame Scored" events

    def __post_init__(self):
        self.recording_id = self.bot_id.replace("framesink-", "")

    def report(self, step: Step) -> Step:
        self.steps.append(step)
        for line in step.lines():
            print(line, flush=True)
        return step

    # --- the steps --------------------------------------------------------------------------

    def outputs(self) -> None:
        w = self.where
        where = f"local stack ({w.endpoint_url})" if w.local else f"stack {w.stack_name} ({w.region or 'default region'})"
        self.report(Step("outputs", PASS, f"{where}: {self.url}, bucket {w.bucket}, table {w.table}"))

    def handshake_without_token(self) -> bool:
        from framesink_core.access.probe import handshake

        result = handshake(self.url, None)
        if result.status == 401:
            self.report(Step("handshake without a token", PASS, f"401 in {result.seconds * 1000:.0f} ms"))
            return True
        cause, fix = _handshake_failure(result, expected=401)
        self.report(Step("handshake without a token", FAIL, _seen(result), cause, fix))
        return False

    def mint_token(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        from framesink_core.access.auth import TokenStore

        try:
            self.token = TokenStore(self.where.table, self.where.client("dynamodb")).issue(self.bot_id, TOKEN_TTL_SECONDS)
        except (ClientError, BotoCoreError) as exc:
            self.report(Step("token", FAIL, f"cannot write a token to table {self.where.table}",
                             f"{_one_line(exc)}", "check that the table exists in this account and region, and that "
                             "your credentials may dynamodb:PutItem on it"))
            return False
        self.report(Step("token", PASS, f"a {TOKEN_TTL_SECONDS // 60}-minute token for bot {self.bot_id} "
                                        "(written with your AWS credentials)"))
        return True

    def handshake_with_token(self) -> bool:
        from framesink_core.access.probe import handshake

        result = handshake(self.url, self.token)
        if result.status == 101:
            self.report(Step("handshake with the token", PASS, f"101 in {result.seconds * 1000:.0f} ms"))
            return True
        cause, fix = _handshake_failure(result, expected=101, table=self.where.table)
        self.report(Step("handshake with the token", FAIL, _seen(result), cause, fix))
        return False

    def frames(self, wait: float) -> bool:
        from framesink.synthetic import frame_message, make_png
        from framesink_core.shared import schema

        pngs = {(pid, kind): make_png(width, height, seed=seed)
                for (pid, kind), (width, height, seed) in SAMPLE_FRAMES.items()}
        messages = [frame_message(png, recording_id=self.recording_id, participant_id=int(pid), frame_type=kind,
                                  relative=0.5, bot_id=self.bot_id) for (pid, kind), png in pngs.items()]
        started = time.monotonic()
        close = asyncio.run(_send(self.token_url(), messages))
        if close is not None:
            cause, fix = ("this URL is API Gateway's (32 KB frames, 128 KB messages), which closes real frames with 1009",
                          "send bots to the container receiver (ingress=both or container; locally "
                          "`framesink local --ingress direct`)") if close == 1009 else \
                (f"the connection closed with {close} before both frames were sent", "see the receiver's log")
            self.report(Step("frames", FAIL, f"closed with {close}", cause, fix))
            return False
        s3, index = self.where.client("s3"), self.where.index()
        keys = {(pid, kind): schema.frame_key(self.recording_id, pid, kind, 500) for pid, kind in pngs}
        missing = dict(keys)
        while missing and time.monotonic() - started < wait:
            indexed = {(str(f["participant_id"]), f["type"]) for f in index.frames(self.recording_id).items}
            for k in [k for k in missing if k in indexed]:
                body = _get(s3, self.where.bucket, keys[k])
                if body is not None:
                    if body != pngs[k]:
                        self.report(Step("frames", FAIL, f"{keys[k]} differs from what was sent ({len(body)} bytes "
                                                         f"vs {len(pngs[k])})", "a frame was altered on the way",
                                         "report this: framesink stores the exact decoded bytes"))
                        return False
                    del missing[k]
            if missing:
                time.sleep(0.25)
        self.stored_keys = [keys[k] for k in keys if k not in missing]
        if missing:
            self.report(Step("frames", FAIL, f"{len(missing)} of {len(keys)} not in S3 and the index after {wait:g} s",
                             "the receiver accepted the connection but could not store (S3/DynamoDB permissions, "
                             "an outage) or stores elsewhere", "see the receiver's log lines 'frame not stored'"))
            return False
        sizes = ", ".join(f"{len(pngs[k]) // 1024} KB {k[1]} {width}x{height}"
                          for k, (width, height, _) in SAMPLE_FRAMES.items())
        self.report(Step("frames", PASS, f"{len(keys)} frames ({sizes}) byte-identical in S3 and indexed in "
                                         f"{time.monotonic() - started:.1f} s"))
        return True

    def token_url(self) -> str:
        from framesink_core.access.probe import with_token

        return with_token(self.url, self.token)

    def subscribe(self, bus: str | None) -> None:
        """Before any frame is stored: the doctor's own rules (its recording's "Frame Stored" and
        "Frame Scored" events) and queue on the frame bus."""
        from botocore.exceptions import BotoCoreError, ClientError

        from framesink_core.ingest.outlet import FRAME_SCORED, SOURCE
        from framesink_core.read.feed import frames_pattern

        from ..subscription import Subscription

        if not bus:
            return
        try:
            self.subscription = Subscription(self.where, bus, f"doctor-{uuid.uuid4().hex[:6]}", [
                frames_pattern(recording_id=self.recording_id),
                {"source": [SOURCE], "detail-type": [FRAME_SCORED], "detail": {"recording_id": [self.recording_id]}},
            ], tries=1)
        except (ClientError, BotoCoreError) as exc:
            self.report(Step("live feed", FAIL, "could not subscribe to the frame bus", _one_line(exc),
                             "your credentials need events:PutRule/PutTargets and sqs:CreateQueue"))

    def bus_feed(self, novelty: bool) -> None:
        """Both frames' "Frame Stored" (and with ``novelty``, "Frame Scored") events on the
        doctor's own subscription."""
        if not self.stored_keys:
            self.report(Step("live feed", SKIP, "no frames were stored"))
            return
        from framesink_core.ingest.outlet import FRAME_SCORED

        sqs, url = self.subscription.sqs, self.subscription.url
        stored, scored = set(self.stored_keys), set(self.stored_keys) if novelty else set()
        lags: dict[str, list[float]] = {"stored": [], "scored": []}  # stored_at -> received here, ms
        started = time.monotonic()
        while (stored or scored) and time.monotonic() - started < FEED_WAIT_SECONDS:
            for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                               WaitTimeSeconds=1).get("Messages", []):
                key = _event_key(message["Body"])
                event = json.loads(message["Body"])
                kind = "scored" if event.get("detail-type") == FRAME_SCORED else "stored"
                if key in (scored if kind == "scored" else stored):
                    (scored if kind == "scored" else stored).discard(key)
                    at = (event.get("detail") or {}).get("stored_at")
                    if isinstance(at, int):
                        lags[kind].append(time.time() * 1000 - at)
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

        def worst(kind: str) -> str:
            return f"{max(lags[kind]) / 1000:.1f} s" if lags[kind] else "?"

        if stored:
            self.report(Step("live feed", FAIL, f"{len(stored)} of {len(self.stored_keys)} \"Frame Stored\" events "
                                                f"not on the frame bus after {FEED_WAIT_SECONDS:g} s",
                             "the ingress's events:PutEvents on the bus (log lines 'frame event not published')",
                             "check the ingress's logs and role; redeploy"))
        else:
            self.report(Step("live feed", PASS, f"both frames' events on the frame bus, stored -> received at most "
                                                f"{worst('stored')} (the doctor's own subscription)"))
        if not novelty:
            self.report(Step("novelty", SKIP, "the novelty function is not deployed (-c novelty=false)"))
        elif scored:
            self.report(Step("novelty", FAIL, f"{len(scored)} of {len(self.stored_keys)} frames not scored after "
                                              f"{FEED_WAIT_SECONDS:g} s",
                             "the rule -> novelty function invoke (its Lambda permission), the function's errors, or its "
                             "events:PutEvents on the bus",
                             "check the novelty function's logs and its dead-letter queue alarm"))
        else:
            self.report(Step("novelty", PASS, f"both frames scored (\"Frame Scored\"), stored -> received at most "
                                              f"{worst('scored')}"))

    def live_feed(self, queue_url: str | None) -> None:
        if self.subscription is not None:
            self.bus_feed(self.novelty)
            return
        if not queue_url:
            self.report(Step("live feed", SKIP, "no frame queue (deploy with -c frameQueue=true, or "
                                                "`framesink local --frame-queue`)"))
            return
        if not self.stored_keys:
            self.report(Step("live feed", SKIP, "no frames were stored"))
            return
        sqs = self.where.client("sqs")
        waiting, started = set(self.stored_keys), time.monotonic()
        while waiting and time.monotonic() - started < FEED_WAIT_SECONDS:
            got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for message in got.get("Messages", []):
                key = _event_key(message["Body"])
                if key in waiting:
                    waiting.discard(key)
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                else:  # another consumer's frame: back on the queue at once
                    sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"],
                                                  VisibilityTimeout=0)
        if waiting:
            self.report(Step("live feed", FAIL, f"{len(waiting)} of {len(self.stored_keys)} frame events not on the "
                                                f"queue after {FEED_WAIT_SECONDS:g} s",
                             "ingress -> frame bus -> queue is broken: the ingress's events:PutEvents on the bus "
                             "(log lines 'frame event not published'), the rule, or the queue policy "
                             "(events.amazonaws.com may sqs:SendMessage)",
                             "check the rule's FailedInvocations metric; redeploy"))
        else:
            self.report(Step("live feed", PASS, f"both frame events on the queue in {time.monotonic() - started:.1f} s"))

    def webhook(self, url: str | None, secret: str | None, why_not: str) -> None:
        from framesink.simulator import post_webhook
        from framesink_core.access.auth import sign_headers

        if not (url and secret):
            self.report(Step("webhook", SKIP, why_not))
            return
        body = json.dumps({"event": "bot.joining_call", "data": {
            "data": {"code": "joining_call", "sub_code": None,
                     "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())},
            "bot": {"id": self.bot_id, "metadata": {}}}}).encode()
        signed = {"content-type": "application/json",
                  **sign_headers(secret, f"msg_{uuid.uuid4().hex}", int(time.time()), body)}
        forged = {**signed, "webhook-id": f"msg_{uuid.uuid4().hex}",
                  "webhook-signature": "v1," + "A" * 43 + "="}
        good, bad = post_webhook(url, body, signed), post_webhook(url, body, forged)
        if isinstance(good, int) and 200 <= good < 300 and bad == 401:
            self.report(Step("webhook", PASS, f"a signed delivery -> {good}, a forged one -> {bad}"))
        elif bad != 401 and isinstance(good, int) and 200 <= good < 300:
            self.report(Step("webhook", FAIL, f"a forged delivery -> {bad}", "signatures are not checked",
                             "report this: the webhook function must refuse unsigned deliveries"))
        else:
            self.report(Step("webhook", FAIL, f"a signed delivery -> {good}",
                             "the route is unreachable, or the function holds another signing secret",
                             "put Recall's whsec_ secret in the secret RecallWebhookSecretArn names "
                             "(aws secretsmanager put-secret-value)"))

    def alarm_topic(self, topic_arn: str | None, live: bool) -> None:
        if self.template is None and not live:
            self.report(Step("alarm -> topic", SKIP, "no alarms in the local stack (pass --template "
                                                     "cdk.out/framesink-live.template.json to check the synthesized "
                                                     "topic policy)"))
            return
        if self.template is not None:
            gaps = topic_policy_gaps(self.template)
            if gaps:
                self.report(Step("alarm -> topic", FAIL, gaps[0],
                                 "a topic policy replaces SNS's default one; without an Allow for "
                                 "cloudwatch.amazonaws.com every alarm action fails",
                                 "deploy a framesink version whose alarm topic policy allows CloudWatch "
                                 "(infra/monitoring.py)"))
                return
            if not live:
                self.report(Step("alarm -> topic", PASS, "the template's topic policy and key let CloudWatch publish"))
                return
        self.report(self._test_alarm(topic_arn))

    def _test_alarm(self, topic_arn: str | None) -> Step:
        from botocore.exceptions import BotoCoreError, ClientError

        if not topic_arn:
            return Step("alarm -> topic", FAIL, f"no {OUTPUT_TOPIC} output", "an old or partial stack", "redeploy")
        cloudwatch = self.where.client("cloudwatch")
        self.alarm_name = f"{self.bot_id}-alarm"
        try:
            cloudwatch.put_metric_alarm(
                AlarmName=self.alarm_name, AlarmDescription="framesink doctor: proves an alarm reaches the topic",
                Namespace="framesink/doctor", MetricName="Nothing", Statistic="Sum", Period=60, EvaluationPeriods=1,
                Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="notBreaching",
                AlarmActions=[topic_arn])
            cloudwatch.set_alarm_state(AlarmName=self.alarm_name, StateValue="ALARM",
                                       StateReason="framesink doctor: a test of the alarm action")
            started = time.monotonic()
            while time.monotonic() - started < ALARM_WAIT_SECONDS:
                history = cloudwatch.describe_alarm_history(AlarmName=self.alarm_name, HistoryItemType="Action")
                for item in history.get("AlarmHistoryItems", []):
                    summary = item.get("HistorySummary", "")
                    if summary.startswith("Successfully executed action"):
                        return Step("alarm -> topic", PASS, f"a test alarm's SNS action succeeded in "
                                                            f"{time.monotonic() - started:.0f} s")
                    if summary.startswith("Failed to execute action"):
                        return Step("alarm -> topic", FAIL, summary[:200],
                                    "the topic policy or its KMS key refuses CloudWatch",
                                    "allow cloudwatch.amazonaws.com sns:Publish on the topic and kms:GenerateDataKey* "
                                    "+ kms:Decrypt on its key")
                time.sleep(3)
        except (ClientError, BotoCoreError) as exc:
            operation = getattr(exc, "operation_name", "") or "CloudWatch"
            return Step("alarm -> topic", FAIL, f"the test alarm failed at {operation}", _one_line(exc),
                        "run with credentials that may cloudwatch:PutMetricAlarm, SetAlarmState, "
                        "DescribeAlarmHistory and DeleteAlarms")
        return Step("alarm -> topic", FAIL, f"no action in the test alarm's history after {ALARM_WAIT_SECONDS:g} s",
                    "CloudWatch did not act on the alarm", "look at the alarm's history in the console")

    def cleanup(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        from framesink_core.read.delete import delete_recording

        done = []
        try:
            if self.subscription is not None:
                self.subscription.remove()
                done.append("its bus subscription")
            result = delete_recording(self.where.client("s3"), self.where.client("dynamodb"), self.where.bucket,
                                      self.where.table, self.recording_id, dry_run=False,
                                      settle_seconds=0)  # its frames were all read back already
            done.append(f"recording {self.recording_id} ({result.objects} objects, {result.items} index items)")
            done.append(f"bot {self.bot_id} ({_delete_partition(self.where, self.bot_id)} items, its token included)")
            if self.alarm_name:
                self.where.client("cloudwatch").delete_alarms(AlarmNames=[self.alarm_name])
                done.append("the test alarm")
        except (ClientError, BotoCoreError) as exc:
            self.report(Step("cleanup", FAIL, f"after deleting {', '.join(done) or 'nothing'}", _one_line(exc),
                             f"framesink delete --recording {self.recording_id} --yes"))
            return
        self.report(Step("cleanup", PASS, "deleted " + ", ".join(done) + " (connection records and the delete's "
                                          "tombstone expire by TTL)"))


def run(args: argparse.Namespace) -> int:
    if not args.local and not args.stack_name:
        raise CliError("say which stack to check: --local, or --stack NAME (e.g. framesink-live)")
    where = target.resolve(args)
    template = _read_template(args.template) if args.template else None
    if where.local:
        from framesink_core.access.probe import public

        url = public(where.state["ws_url"])
        queue_url, topic_arn = where.state.get("frame_queue_url"), None
        webhook_url, secret = where.state.get("webhook_url"), where.state.get("webhook_secret")
        why_not = "the local state file has no webhook route"
    else:
        outputs = where.stack_outputs()
        url = outputs.get(target.OUTPUT_WS_URL)
        if not url:
            raise CliError(f"stack {where.stack_name} has no {target.OUTPUT_WS_URL} output: is it a framesink stack?")
        queue_url, topic_arn = outputs.get(OUTPUT_FRAME_QUEUE), outputs.get(OUTPUT_TOPIC)
        webhook_url = outputs.get(OUTPUT_WEBHOOK_URL)
        secret, why_not = _webhook_secret(where, outputs.get(OUTPUT_WEBHOOK_SECRET))
        if template is None:
            template = _deployed_template(where)
    doctor = Doctor(where, url, template)
    doctor.novelty = where.local or template is None or _deploys_novelty(template)
    doctor.outputs()
    try:
        doctor.subscribe(where.state.get("event_bus") if where.local
                         else where.stack_outputs().get("FrameBusName"))
        if doctor.handshake_without_token() and doctor.mint_token() and doctor.handshake_with_token():
            doctor.frames(args.timeout)
        else:
            doctor.report(Step("frames", SKIP, "needs an accepted handshake"))
        doctor.live_feed(queue_url)
        doctor.webhook(webhook_url, secret, why_not)
        doctor.alarm_topic(topic_arn, live=not where.local)
    finally:
        doctor.cleanup()
    failed = [s.name for s in doctor.steps if s.status == FAIL]
    print(f"{len(doctor.steps) - len(failed)} of {len(doctor.steps)} steps passed or skipped"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


# --- helpers -----------------------------------------------------------------------------------


def topic_policy_gaps(template: dict) -> list[str]:
    """For each alarm topic the template's alarms notify: is there an Allow for CloudWatch in
    its topic policy (when it has one), and in its KMS key's policy (when encrypted)?"""
    resources = template.get("Resources", {})
    topics = {action.get("Ref") for r in resources.values() if r.get("Type") == "AWS::CloudWatch::Alarm"
              for action in r.get("Properties", {}).get("AlarmActions", []) if isinstance(action, dict)}
    gaps = []
    for topic in sorted(t for t in topics if resources.get(t, {}).get("Type") == "AWS::SNS::Topic"):
        policies = [r["Properties"]["PolicyDocument"] for r in resources.values()
                    if r.get("Type") == "AWS::SNS::TopicPolicy" and {"Ref": topic} in r["Properties"].get("Topics", [])]
        if policies and not any(_allows(p, "cloudwatch.amazonaws.com", "sns:publish") for p in policies):
            gaps.append(f"topic {topic}'s policy does not let cloudwatch.amazonaws.com sns:Publish")
        key = resources[topic].get("Properties", {}).get("KmsMasterKeyId")
        key_id = key.get("Fn::GetAtt", [None])[0] if isinstance(key, dict) else None
        if key_id in resources:
            policy = resources[key_id]["Properties"]["KeyPolicy"]
            for action in ("kms:generatedatakey", "kms:decrypt"):
                if not _allows(policy, "cloudwatch.amazonaws.com", action):
                    gaps.append(f"topic {topic}'s key {key_id} does not let CloudWatch {action}")
    return gaps


def _allows(document: dict, service: str, action: str) -> bool:
    import fnmatch

    for statement in document.get("Statement", []):
        services = statement.get("Principal", {}).get("Service", []) if isinstance(statement.get("Principal"), dict) else []
        services = services if isinstance(services, list) else [services]
        actions = statement.get("Action", [])
        actions = actions if isinstance(actions, list) else [actions]
        if statement.get("Effect") == "Allow" and service in services and \
                any(fnmatch.fnmatchcase(action, a.lower()) for a in actions):
            return True
    return False


async def _send(url: str, messages: list[str]) -> int | None:
    """Send the messages on one connection; the close code if the server closed it first."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    try:
        async with connect(url, compression=None, max_size=None, open_timeout=10) as ws:
            for message in messages:
                await ws.send(message)
            # Let the server read them before the close frame; an oversize message closes now.
            try:
                await asyncio.wait_for(ws.wait_closed(), timeout=1.0)
                return ws.close_code
            except asyncio.TimeoutError:
                return None
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else 1006


def _get(s3, bucket: str, key: str) -> bytes | None:
    from botocore.exceptions import ClientError

    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError:
        return None


def _deploys_novelty(template: dict) -> bool:
    return any(r.get("Properties", {}).get("Handler") == "framesink_handlers.novelty.handler"
               for r in template.get("Resources", {}).values())


def _event_key(body: str) -> str | None:
    from framesink_core.read.feed import FrameRef

    try:
        ref = FrameRef.from_event(json.loads(body))
    except ValueError:
        return None
    return ref.key if ref else None


def _delete_partition(where: target.Target, bot_id: str) -> int:
    """Every item under the doctor bot's partition (its token links, status events), and the
    token items they name."""
    from framesink_core.shared import schema
    from framesink_core.shared.items import from_item, to_item

    dynamodb, deleted = where.client("dynamodb"), 0
    pages = dynamodb.get_paginator("query").paginate(
        TableName=where.table, KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues=to_item({":pk": schema.bot_pk(bot_id)}), ProjectionExpression="pk, sk")
    for page in pages:
        for raw in page.get("Items", []):
            item = from_item(raw)
            if item["sk"].startswith("TOKEN#"):
                dynamodb.delete_item(TableName=where.table, Key=to_item({"pk": schema.token_pk(item["sk"][6:]),
                                                                         "sk": schema.META_SK}))
                deleted += 1
            dynamodb.delete_item(TableName=where.table, Key=to_item({"pk": item["pk"], "sk": item["sk"]}))
            deleted += 1
    return deleted


def _handshake_failure(result, *, expected: int, table: str | None = None) -> tuple[str, str]:
    status = result.status
    if status is None:
        if "refused" in result.error.lower():
            return ("nothing listens at this address: the receiver is down (or the URL is wrong)",
                    "start it (`framesink local`), or check the ECS service's running tasks")
        if result.error.startswith("no answer within"):
            # CloudFront tries an unreachable origin 3 times, 10 s each, before its 504.
            return (f"{result.error}: " + ORIGIN_UNREACHABLE[0], ORIGIN_UNREACHABLE[1])
        return (f"no HTTP answer: {result.error}", "check the URL, DNS and that the distribution is deployed")
    if status in (502, 503, 504):
        return ORIGIN_UNREACHABLE
    if status == 101 and expected == 401:
        return ("the receiver accepted a connection without a token", "report this: every handshake needs a token")
    if status == 403 and expected == 101:
        return (f"the receiver does not know the token the doctor wrote to table {table}",
                "the receiver reads another table than the stack's TableName (or a different local stack)")
    if status == 401 and expected == 101:
        return ("the token did not reach the receiver (a proxy dropped the query string?)",
                "CloudFront must forward the query string (origin request policy ALL_VIEWER)")
    return (f"expected {expected}, got {status}", "see the receiver's log for this connection")


def _seen(result) -> str:
    return f"got {result.status}" if result.status is not None else f"no answer ({result.error})"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def _read_template(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the template {path}: {exc}") from None


def _deployed_template(where: target.Target) -> dict | None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        body = where.client("cloudformation").get_template(StackName=where.stack_name)["TemplateBody"]
    except (ClientError, BotoCoreError):
        return None  # the live alarm test still runs
    return body if isinstance(body, dict) else json.loads(body)


def _webhook_secret(where: target.Target, secret_arn: str | None) -> tuple[str | None, str]:
    """Recall's whsec_ secret from the stack's secret, or None and why the step is skipped."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not secret_arn:
        return None, f"no {OUTPUT_WEBHOOK_SECRET} output"
    try:
        value = where.client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"]
    except (ClientError, BotoCoreError) as exc:
        return None, f"cannot read the webhook secret ({_one_line(exc)[:120]})"
    if not value.strip().startswith("whsec_"):
        return None, "the webhook signing secret is still the placeholder (put Recall's whsec_ value in it)"
    return value.strip(), ""
