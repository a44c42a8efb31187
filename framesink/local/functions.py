"""How the real Lambda handlers run on this machine: the context object Powertools reads,
a function's environment pointed at moto, and the event sources a deploy wires (an SQS queue
or an EventBridge target, the webhook HTTP API route), each calling the real handler."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from framesink_core.shared.observability import flush_metrics

# No "framesink" in the name: Powertools filters any such logger out of the root handlers.
log = logging.getLogger("local_stack")

DEFAULT_REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that Powertools reads."""

    function_name: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: int = 512
    log_group_name: str = ""
    log_stream_name: str = "local"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{DEFAULT_REGION}:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000  # API Gateway's integration timeout


def apigw_id() -> str:
    """An id shaped like API Gateway's connection/request ids, e.g. ``L0SM9cOFvHcCIhw=``."""
    return base64.b64encode(os.urandom(11)).decode()


def handler_of(module: str):
    """A handler of framesink_handlers, imported when the local stack starts."""
    import importlib

    return importlib.import_module(f"framesink_handlers.{module}").handler


class QueueWorker:
    """Feeds a Lambda handler the events an SQS queue holds, one at a time, as an event source
    mapping would: a message is deleted once the handler returns, left for a retry if it
    raised. ``processed`` counts the events handled, ``failed`` the ones that raised."""

    def __init__(self, sqs, queue_url: str, handler, function_name: str, wait_seconds: int = 1,
                 sqs_records: bool = False):
        self.sqs, self.queue_url, self.handler = sqs, queue_url, handler
        self.function_name = function_name
        # True: the handler gets what an SQS event source sends ({"Records": [...]}); False:
        # the message body itself (an EventBridge event, as an EventBridge target gets it).
        self.sqs_records = sqs_records
        self.wait_seconds = wait_seconds
        self.processed = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=function_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.wait_seconds + 30)

    def idle(self) -> bool:
        """True when the queue holds nothing, visible or in flight."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                            "ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return not any(int(v) for v in attributes.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                                    WaitTimeSeconds=self.wait_seconds).get("Messages", [])
            except Exception:  # moto stopping under us
                if self._stop.is_set():
                    return
                log.exception("%s: cannot read its queue", self.function_name)
                time.sleep(1)
                continue
            for message in messages:
                event = ({"Records": [{"messageId": message["MessageId"], "body": message["Body"],
                                       "eventSource": "aws:sqs"}]} if self.sqs_records else json.loads(message["Body"]))
                try:
                    self.handler(event, LambdaContext(function_name=self.function_name))
                    self.processed += 1
                except Exception:
                    self.failed += 1
                    log.exception("%s failed on an event; it stays queued for a retry", self.function_name)
                    continue
                finally:
                    flush_metrics()
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


class WebhookServer:
    """``POST /recall/events`` on 127.0.0.1, as the stack's webhook HTTP API: each request is one
    API Gateway HTTP API (payload 2.0) event for the real handler, its answer sent back."""

    def __init__(self, handler, port: int = 0):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= 10 << 20:  # API Gateway HTTP APIs take at most 10 MB
                    self.send_error(413 if length > 0 else 400)
                    return
                body = self.rfile.read(length)
                if urlsplit(self.path).path != "/recall/events":
                    self.send_error(404)
                    return
                event = {
                    "version": "2.0", "routeKey": "POST /recall/events", "rawPath": "/recall/events",
                    "rawQueryString": "", "headers": {k.lower(): v for k, v in self.headers.items()},
                    "requestContext": {"http": {"method": "POST", "path": "/recall/events",
                                                "sourceIp": self.client_address[0]}, "requestId": apigw_id(),
                                       "routeKey": "POST /recall/events", "stage": "$default"},
                    "body": base64.b64encode(body).decode(), "isBase64Encoded": True,
                }
                try:
                    answer = outer.handler(event, LambdaContext(function_name="framesink-recall-webhook"))
                except Exception:
                    log.exception("webhook handler failed")
                    answer = {"statusCode": 500, "body": '{"message": "Internal Server Error"}'}
                finally:
                    flush_metrics()
                data = str(answer.get("body", "")).encode()
                self.send_response(int(answer.get("statusCode", 200)))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # the handler logs what matters
                pass

        self.handler = handler
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/recall/events"
        self._thread = threading.Thread(target=self.server.serve_forever, name="recall-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def local_lambda_env(endpoint_url: str, region: str) -> dict[str, str]:
    """The AWS part of a Lambda function's environment, pointed at the local moto server."""
    return {
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }


@contextlib.contextmanager
def lambda_environment(env: dict[str, str], log_level: str, log_stream=None):
    """The real handlers, called in this process, see ``env`` as a function's environment and
    log at ``log_level`` (to ``log_stream`` if given); all restored on exit. The environment
    is process-wide, so the handlers' cached Service is rebuilt on both sides."""
    from framesink_core.shared.observability import logger
    from framesink_handlers import _runtime

    saved_env = {k: os.environ.get(k) for k in env}
    handler = logger.registered_handler
    saved_level, saved_stream = logger.log_level, getattr(handler, "stream", None)
    os.environ.update(env)
    logger.setLevel(log_level)
    if log_stream is not None and saved_stream is not None:
        handler.setStream(log_stream)
    _runtime.service.cache_clear()
    try:
        yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        logger.setLevel(saved_level)
        if log_stream is not None and saved_stream is not None:
            handler.setStream(saved_stream)
        _runtime.service.cache_clear()
