"""`framesink local`'s stack: moto (S3, DynamoDB, SQS, EventBridge, Secrets Manager), an
ingress (the container receiver, or the API Gateway emulator), the webhook route, the export
job and the slide analyzer, all in this process, and the state file other commands find."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import urllib.request
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import boto3

from framesink.local.apigw import APIGW_IDLE_TIMEOUT, APIGW_MAX_AGE, DEFAULT_STAGE, ApiGatewayEmulator
from framesink.local.aws import provision
from framesink.local.functions import (
    DEFAULT_REGION,
    FAKE_CREDENTIALS,
    QueueWorker,
    WebhookServer,
    handler_of,
    lambda_environment,
    local_lambda_env,
)
from framesink.target import DEFAULT_STATE_FILE
from framesink_core.access.auth import mint_token
from framesink_core.shared.settings import DEFAULT_MAX_FRAME_BYTES, Settings

# No "framesink" in the name: Powertools filters any such logger out of the root handlers.
log = logging.getLogger("local_stack")

DEFAULT_PORT = 3456
NOVELTY_WORKERS = 3


@dataclass
class LocalConfig:
    port: int = DEFAULT_PORT  # 0 = any free port
    ingress: str = "apigw"  # "apigw": this emulator; "direct": the container receiver (framesink_receiver)
    token: str | None = None  # None = mint a random one
    stage: str = DEFAULT_STAGE
    region: str = DEFAULT_REGION
    bucket: str = "framesink-local"
    table: str = "framesink-local"
    # Secrets live in the process-wide moto backend: in-process stacks (tests) need unique names.
    token_secret_name: str = "framesink/connection-token"
    verification_secret: str | None = None
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    idle_timeout: float = APIGW_IDLE_TIMEOUT
    max_age: float = APIGW_MAX_AGE
    state_file: Path | None = DEFAULT_STATE_FILE
    handler_log_level: str = "WARNING"
    # moto's state is process-wide: an in-process stack (demo, tests) wipes it when it stops so
    # the next one starts clean. `framesink local` keeps it: its process exit ends it anyway.
    reset_on_stop: bool = False
    workers: int = 8  # concurrent handler invocations (Lambda concurrency, in threads)
    # Recall's webhook signing secret for the local webhook route (None = generate one; it is
    # written to the state file, so `framesink simulate` can sign status events with it).
    webhook_secret: str | None = None
    webhook_port: int = 0  # the webhook route's port (0 = any free port)
    moto_port: int = 0  # moto's port, the AWS endpoint (0 = any free port)
    export_quiet_seconds: int = 600  # bot.call_ended -> export, when no bot.done comes
    # The frame queue `framesink watch` reads (the deploy's -c frameQueue=true); off as there:
    # without a reader, moto's queue slows every store as it fills (framesink/local/aws.py).
    frame_queue: bool = False
    # moto in a process of its own (`python -m moto.server`): its request handling then has a
    # core of its own instead of sharing this process's GIL with the receiver, the novelty
    # workers and the analyzers. Measured (docs/performance.md): at 10 participants the frame
    # queue's stored -> seen p50 went from ~4 s to ~0.2 s. False: a thread of this process.
    moto_process: bool = True
    # The novelty function (every frame decoded and scored) and its queue. In AWS it is a
    # Lambda of its own; here its workers share this process with the ingress, so
    # bench/e2e.py turns it off to measure the ingress alone.
    novelty: bool = True

    @classmethod
    def isolated(cls, name: str, **changes) -> "LocalConfig":
        """An in-process stack (tests, benchmarks) beside others in one process: any free port,
        bucket, table and secrets of its own (moto's state is process-wide), no state file, and
        moto wiped when it stops."""
        unique = f"{name}-{uuid.uuid4().hex[:8]}"
        return cls(**{"port": 0, "state_file": None, "bucket": unique, "table": unique,
                      "token_secret_name": unique.replace("-", "/", 1), "reset_on_stop": True, **changes})


class LocalStack:
    """moto (S3, DynamoDB, Secrets Manager) + the emulator, with the handlers' Lambda env set.

    The Lambda env is process-wide (the handlers read it), so one LocalStack runs per process
    at a time; stop() restores the environment it found.
    """

    def __init__(self, config: LocalConfig | None = None):
        self.config = config or LocalConfig()
        self.token = self.config.token or mint_token()
        self.moto = None
        self.emulator: ApiGatewayEmulator | None = None
        self.receiver = None  # the container receiver, when started (ingress "direct")
        self.analyzer: QueueWorker | None = None  # the example slide analyzer's event loop
        self.novelty: list[QueueWorker] = []  # the novelty function's event loops
        self.exporter: QueueWorker | None = None  # the export job's
        self.webhooks: WebhookServer | None = None  # Recall's webhook route
        self.webhook_secret: str | None = None
        self.endpoint_url = ""
        self.state: dict = {}
        self._lambda_env = contextlib.ExitStack()  # the handlers' environment, undone by stop()
        self.loop: asyncio.AbstractEventLoop | None = None  # set by background_stack()

    async def start(self) -> dict:
        cfg = self.config
        # moto's server logs every request through werkzeug; the handlers' logs say what matters.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # Metrics are off locally, so Powertools warns on every invocation that none were added.
        warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)
        self.moto = MotoProcess(cfg.moto_port) if cfg.moto_process else MotoThread(cfg.moto_port)
        self.endpoint_url = await asyncio.get_running_loop().run_in_executor(None, self.moto.start)
        try:
            secret_env = provision(
                **{name: self.client(name) for name in ("s3", "dynamodb", "secretsmanager", "events", "sqs")},
                bucket=cfg.bucket, table=cfg.table, token=self.token,
                token_secret_name=cfg.token_secret_name,
                verification_secret=cfg.verification_secret,
                verification_secret_name=cfg.token_secret_name + "-verification",
                frame_queue=cfg.frame_queue, novelty=cfg.novelty,
            )
            frame_queue_url = secret_env.pop("frame_queue_url")
            analyzer_queue_url = secret_env.pop("analyzer_queue_url")
            novelty_queue_url = secret_env.pop("novelty_queue_url")
            sqs, secrets_client = self.client("sqs"), self.client("secretsmanager")
            export_queue_url = sqs.create_queue(QueueName=f"{cfg.bucket}-exports",
                                                Attributes={"VisibilityTimeout": "600"})["QueueUrl"]
            self.webhook_secret = cfg.webhook_secret or "whsec_" + base64.b64encode(os.urandom(24)).decode()
            webhook_secret_arn = secrets_client.create_secret(Name=cfg.token_secret_name + "-webhook",
                                                              SecretString=self.webhook_secret)["ARN"]
            settings = Settings(
                bucket=cfg.bucket, table=cfg.table, max_frame_bytes=cfg.max_frame_bytes,
                token_secret_id=secret_env.get("FRAMESINK_TOKEN_SECRET_ID", ""),
                verification_secret_id=secret_env.get("FRAMESINK_VERIFICATION_SECRET_ID", ""),
                webhook_secret_id=webhook_secret_arn, export_queue_url=export_queue_url,
                export_quiet_seconds=cfg.export_quiet_seconds, event_bus=secret_env.get("FRAMESINK_EVENT_BUS", ""),
            )
            self._lambda_env.enter_context(lambda_environment(
                {**settings.as_env(), **local_lambda_env(self.endpoint_url, cfg.region)}, cfg.handler_log_level))
            # The example analyzer, fed its EventBridge events through a queue (in AWS the rule
            # invokes the Lambda itself).
            self.analyzer = QueueWorker(self.client("sqs"), analyzer_queue_url, handler_of("slides"),
                                        "framesink-slide-analyzer")
            self.analyzer.start()
            # Novelty on every frame: Lambda runs one invocation per event at once; NOVELTY_WORKERS
            # loops keep up with a local meeting (the stream's state item orders them).
            self.novelty = [QueueWorker(self.client("sqs"), novelty_queue_url, handler_of("novelty"),
                                        f"framesink-novelty-{n}") for n in range(NOVELTY_WORKERS)] \
                if novelty_queue_url else []
            for worker in self.novelty:
                worker.start()
            # The export job, fed by its queue as Lambda's SQS event source feeds it (batch 1).
            self.exporter = QueueWorker(self.client("sqs"), export_queue_url, handler_of("export"),
                                        "framesink-export", sqs_records=True)
            self.exporter.start()
            # Recall's webhook route, POST /recall/events, served by the real handler.
            self.webhooks = WebhookServer(handler_of("webhooks"), cfg.webhook_port)
            self.webhooks.start()
            if cfg.ingress == "direct":
                ws_url = await self.start_direct(cfg.port)
            else:
                self.emulator = ApiGatewayEmulator(
                    port=cfg.port, stage=cfg.stage, idle_timeout=cfg.idle_timeout, max_age=cfg.max_age,
                    workers=cfg.workers,
                )
                await self.emulator.start()
                ws_url = f"{self.emulator.url}?token={self.token}"
        except BaseException:
            await self.stop(reset=True)  # nothing was served: undo the provisioning
            raise
        self.state = {
            "ws_url": ws_url,
            "endpoint_url": self.endpoint_url,
            "bucket": cfg.bucket,
            "table": cfg.table,
            "token": self.token,
            "region": cfg.region,
            "frame_queue_url": frame_queue_url,
            "event_bus": settings.event_bus,
            "export_queue_url": export_queue_url,
            "webhook_url": self.webhooks.url,
            "webhook_secret": self.webhook_secret,
        }
        if cfg.state_file:
            write_state_file(cfg.state_file, self.state)
        return self.state

    async def start_direct(self, port: int = 0) -> str:
        """Start the container receiver (no API Gateway limits) on the same moto; its ws URL."""
        from framesink_receiver import Receiver, ReceiverConfig, receiver_service

        self.receiver = Receiver(receiver_service(), ReceiverConfig(port=port))  # as in the container
        await self.receiver.start()
        return f"{self.receiver.url}?token={self.token}"

    async def wait_idle(self, analyzer: bool = False, exports: bool = False) -> None:
        """Return once every message received so far (by either ingress) has been handled (a
        frame in the receiver's spool, once stored from it), and the participant totals it added are written (they are otherwise written every
        few seconds: framesink_core/ingest/totals.py); with ``analyzer``, once the slide analyzer
        and the novelty function have handled every event queued for them too; with ``exports``, once the export queue
        is empty (delayed messages included)."""
        if self.emulator is not None:
            await self.emulator.wait_idle()
        # The receiver has no idle event; its counters say when its connections are done.
        while self.receiver is not None and (self.receiver.stats.open or self.receiver.stats.held):
            await asyncio.sleep(0.02)
        # Frames the store refused wait in the receiver's spool until it takes them.
        while self.receiver is not None and self.receiver.spool is not None and self.receiver.spool.active:
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.flush_totals)
        # Frame events leave the receiver up to 20 ms after their frame (ingest/outlet.py).
        while self.receiver is not None and not self.receiver.service.store.outlet.idle():
            await asyncio.sleep(0.01)
        while analyzer and self.analyzer is not None and not await loop.run_in_executor(None, self.analyzer.idle):
            await asyncio.sleep(0.1)
        while analyzer and self.novelty and not await loop.run_in_executor(None, self.novelty[0].idle):
            await asyncio.sleep(0.1)
        while exports and self.exporter is not None and not await loop.run_in_executor(None, self.exporter.idle):
            await asyncio.sleep(0.1)

    def flush_totals(self) -> None:
        """Write every participant total held in this process (handlers' and receiver's)."""
        from framesink_handlers import _runtime

        if _runtime.service.cache_info().currsize:
            _runtime.service().store.totals.flush_all()
        if self.receiver is not None:
            self.receiver.service.store.totals.flush_all()

    async def stop(self, reset: bool | None = None) -> dict:
        """Stop in order: connections and handler calls first, then moto. Returns the stats
        of the ingress the stack was started with."""
        stats: dict = {}
        try:
            if self.receiver is not None:
                stats = await self.receiver.stop()
            if self.emulator is not None:
                await self.emulator.stop()
                stats = self.emulator.stats.as_dict()
            for part in (self.webhooks, self.analyzer, *self.novelty, self.exporter):
                if part is not None:
                    await asyncio.get_running_loop().run_in_executor(None, part.stop)
            if self.moto is not None:
                # What a Lambda container would write on its next invocations.
                await asyncio.get_running_loop().run_in_executor(None, self.flush_totals)
        finally:
            if self.moto is not None:
                if (self.config.reset_on_stop if reset is None else reset) and not self.config.moto_process:
                    self._reset_moto()  # a moto process takes its state with it
                self.moto.stop()
                self.moto = None
            self._lambda_env.close()
        return stats

    async def __aenter__(self) -> "LocalStack":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def _reset_moto(self) -> None:
        """moto server's documented reset endpoint: every backend in this process, emptied."""
        request = urllib.request.Request(self.endpoint_url + "/moto-api/reset", method="POST")
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except OSError as exc:
            log.warning("could not reset moto: %s", exc)

    def client(self, service: str):
        """A boto3 client for the local moto server (the handlers build their own from the env)."""
        return boto3.client(
            service, endpoint_url=self.endpoint_url, region_name=self.config.region,
            **{name.lower(): value for name, value in FAKE_CREDENTIALS.items()},
        )

    def index(self):
        """The index's queries (framesink_core.read.query.FrameIndex) on the local table."""
        from framesink_core.read.query import FrameIndex

        return FrameIndex(self.config.table, self.client("dynamodb"))

    @property
    def receiver_url(self) -> str | None:
        """The container receiver's ws URL (with the token), once start_direct() ran."""
        return f"{self.receiver.url}?token={self.token}" if self.receiver is not None else None

    def run(self, coro, timeout: float = 180):
        """Run ``coro`` on the stack's background loop (background_stack) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class MotoThread:
    """moto's server on a thread of this process (its state is this process's)."""

    def __init__(self, port: int = 0):
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)

    def start(self) -> str:
        self.server.start()
        host, port = self.server.get_host_and_port()
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.stop()


def _die_with_parent() -> None:
    """In the moto child, before it runs: on Linux, SIGTERM it when this process dies, even by
    SIGKILL, so a killed `framesink local` leaves no moto behind (prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except OSError:
            pass


class MotoProcess:
    """moto's server in a process of its own, stopped (and its state gone) with the stack."""

    def __init__(self, port: int = 0):
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> str:
        import socket
        import time

        port = self.port
        if not port:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        # Its request log goes to a file, never a pipe nobody drains (a full pipe would stall moto).
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen([sys.executable, "-m", "framesink.local.moto_process", "-H", "127.0.0.1", "-p", str(port)],
                                        stdout=subprocess.DEVNULL, stderr=self.log, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"moto did not start on port {port}: {self.log.read()[-500:].decode(errors='replace').strip()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return f"http://127.0.0.1:{port}"
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto did not answer on port {port} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self.log.close()


@contextlib.contextmanager
def background_stack(config: LocalConfig, timeout: float = 180):
    """A started LocalStack served by an event loop on its own thread, for synchronous code
    (tests, benchmarks): ``stack.run(coro)`` runs a coroutine there. Stopped on exit, and
    what ``stop()`` reported is left in ``stack.final_stats``."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="local-stack", daemon=True)
    thread.start()
    stack = LocalStack(config)
    stack.loop = loop
    try:
        stack.run(stack.start(), timeout)  # a failed start stops itself
        try:
            yield stack
        finally:
            stack.final_stats = stack.run(stack.stop(), timeout)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()


def write_state_file(path: Path, state: dict) -> None:
    """Atomically, readable by the owner only: it holds the connection token.

    The temporary file has a random name and is created exclusively without following a
    symlink (O_EXCL | O_NOFOLLOW, mode 600), so a link planted at a predictable name cannot
    redirect the token; the rename then replaces whatever the final name was, a link
    included, never what it points to."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
