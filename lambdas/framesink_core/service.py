"""Wiring: build the core's objects from Settings. Every adapter starts here.

Lambda handlers build one Service per warm container (module scope); the container
receiver and the local emulator build one per process.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from framesink_core.access.connections import ConnectionRegistry
from framesink_core.ingest.ingestor import Ingestor
from framesink_core.ingest.storage import FrameStore, clients
from framesink_core.shared.settings import Settings

if TYPE_CHECKING:  # imported where used: $default never authenticates (cold start)
    from framesink_core.access.auth import Authenticator, TokenStore


class Service:
    def __init__(self, settings: Settings | None = None, *, s3=None, dynamodb=None, secrets=None,
                 batch_index_writes: bool = False, native_s3: bool = False):
        self.settings = settings or Settings.from_env()
        # The container receiver batches index items (index_batch.py); a Lambda puts one.
        self.batch_index_writes = batch_index_writes
        # The container receiver writes frames with obstore, off the GIL (objects.py); a
        # Lambda with botocore (no extra import at a cold start), as in-process moto needs.
        self.native_s3 = native_s3
        if s3 is None or dynamodb is None:
            s3_default, ddb_default = clients()
            s3, dynamodb = s3 or s3_default, dynamodb or ddb_default
        self.s3 = s3
        self.dynamodb = dynamodb
        self._secrets_client = secrets

    @cached_property
    def store(self) -> FrameStore:
        writer = None
        if self.batch_index_writes:
            from framesink_core.ingest.index_batch import BatchingIndexWriter

            writer = BatchingIndexWriter(self.settings.table, self.dynamodb)
        objects = None
        if self.native_s3:
            from framesink_core.ingest.native_objects import NativeObjects

            objects = NativeObjects(self.s3, self.settings.bucket)
        # Participant totals: the receiver flushes every few seconds from its timer. A Lambda
        # has no timer and no hook after an invocation, and its instance may never be invoked
        # again, so it writes them with every frame (one UpdateItem more per frame): they are
        # exact as soon as the frame is stored (totals.py).
        interval = self.settings.totals_flush_seconds if self.batch_index_writes else 0.0
        # Audio: the receiver joins a stream's chunks into 5 s objects; a Lambda writes each
        # chunk as it comes (audio.py).
        audio = None
        if self.batch_index_writes:
            from framesink_core.ingest.audio import BufferedAudio

            audio = BufferedAudio(self.s3, self.settings.bucket, outlet=self.outlet)
        return FrameStore(self.settings.bucket, self.settings.table, self.s3, self.dynamodb,
                          frame_expiry_days=self.settings.frame_expiry_days, index_writer=writer,
                          totals_interval=interval, objects=objects, outlet=self.outlet, audio=audio)

    @cached_property
    def outlet(self):
        """Frame events on the stack's bus (outlet.py): batched in the receiver, one per
        frame in a Lambda; none without a bus."""
        from framesink_core.ingest.outlet import BatchingOutlet, DirectOutlet, Outlet

        if not self.settings.event_bus:
            return Outlet()
        import boto3

        from framesink_core.shared.items import BOTO_CONFIG

        events = boto3.client("events", config=BOTO_CONFIG, region_name=self.s3.meta.region_name,
                              endpoint_url=self._endpoint_url)
        kind = BatchingOutlet if self.batch_index_writes else DirectOutlet
        return kind(events, self.settings.event_bus)

    @cached_property
    def index(self):
        """Read-only queries over the index (query API, CLI)."""
        from framesink_core.read.query import FrameIndex

        return FrameIndex(self.settings.table, self.dynamodb)

    @cached_property
    def presigner(self):
        """An S3 client that presigns with SigV4 (the query API's frame URLs)."""
        from framesink_core.read.query import presign_client

        return presign_client(self.s3.meta.region_name, self._endpoint_url)

    @property
    def _endpoint_url(self) -> str | None:
        # Only a custom endpoint (moto, the local stack) is passed on; AWS's own is derived.
        url = self.s3.meta.endpoint_url
        return None if url.endswith(".amazonaws.com") else url

    @cached_property
    def deleted(self):
        """recording id -> deleted? (a tombstone), cached per process (tombstones.py)."""
        from framesink_core.ingest.tombstones import DeletedRecordings

        return DeletedRecordings(self.dynamodb, self.settings.table)

    @cached_property
    def ingestor(self) -> Ingestor:
        ingestor = Ingestor(self.store, self.settings.max_frame_bytes, self.settings.max_frame_pixels)
        # Late frames of a deleted recording are refused, and its totals not written back.
        ingestor.deleted = self.store.totals.deleted = self.deleted
        return ingestor

    @cached_property
    def tokens(self) -> TokenStore:
        from framesink_core.access.auth import TokenStore

        return TokenStore(self.settings.table, self.dynamodb)

    @cached_property
    def once(self):
        """Once-only markers (signed handshakes, webhook deliveries)."""
        from framesink_core.access.auth import OnceStore

        return OnceStore(self.settings.table, self.dynamodb)

    @cached_property
    def connections(self) -> ConnectionRegistry:
        return ConnectionRegistry(self.settings.table, self.dynamodb, self.settings.connection_ttl_seconds)

    @cached_property
    def _secrets(self):
        # Powertools parameters: cached for max_age seconds, so a warm Lambda reads Secrets
        # Manager once per interval, and a rotated token is picked up without a redeploy.
        from aws_lambda_powertools.utilities.parameters import SecretsProvider

        return SecretsProvider(boto3_client=self._secrets_client) if self._secrets_client else SecretsProvider()

    def secret(self, secret_id: str) -> str | None:
        if not secret_id:
            return None
        value = self._secrets.get(secret_id, max_age=self.settings.secret_max_age_seconds)
        return value.strip() if isinstance(value, str) else None

    @cached_property
    def recall(self):
        """Recall's REST API client (create-bot). The API key is read per call, cached by
        Powertools, so a key put into Secrets Manager after deploy is picked up."""
        from framesink_core.meeting.recall import (
            RecallClient,
            base_url_for,  # only create-bot needs urllib3 & co.
        )

        base_url = self.settings.recall_base_url or base_url_for(self.settings.recall_region)
        return RecallClient(lambda: self.secret(self.settings.recall_api_key_secret_id), base_url,
                            deadline_seconds=self.settings.recall_deadline_seconds)

    @cached_property
    def meetings(self):
        """Recall's bot status webhooks (meetings.py), exports queued on the export queue."""
        from framesink_core.meeting.meetings import Meetings

        settings = self.settings
        return Meetings(
            settings.table, self.dynamodb,
            secrets=lambda: [self.secret(settings.webhook_secret_id), self.secret(settings.verification_secret_id)],
            once=self.once, queue_export=self.queue_export if settings.export_queue_url else None,
            tolerance_seconds=settings.signature_tolerance_seconds, quiet_seconds=settings.export_quiet_seconds,
            expiry_days=settings.frame_expiry_days,
        )

    @cached_property
    def sqs(self):
        import boto3

        from framesink_core.shared.items import BOTO_CONFIG

        return boto3.client("sqs", config=BOTO_CONFIG, region_name=self.s3.meta.region_name,
                            endpoint_url=self._endpoint_url)

    def queue_export(self, recording_id: str, trigger: str, delay_seconds: int = 0) -> None:
        self.send_export({"kind": "recording", "recording_id": recording_id, "trigger": trigger}, delay_seconds)

    def send_export(self, message: dict, delay_seconds: int = 0) -> None:
        import json

        self.sqs.send_message(QueueUrl=self.settings.export_queue_url, MessageBody=json.dumps(message),
                              DelaySeconds=max(0, min(900, int(delay_seconds))))

    @cached_property
    def exports(self):
        """The export job (export.py): MP4s and contact sheets under exports/."""
        from framesink_core.read.export import ExportJobs

        return ExportJobs(self.s3, self.settings.bucket, self.store, self.send_export,
                          quiet_seconds=self.settings.export_quiet_seconds)

    @cached_property
    def authenticator(self) -> Authenticator:
        from framesink_core.access.auth import Authenticator

        return Authenticator(
            static_token=lambda: self.secret(self.settings.token_secret_id),
            tokens=self.tokens,
            verification_secret=lambda: self.secret(self.settings.verification_secret_id),
            tolerance_seconds=self.settings.signature_tolerance_seconds,
            once=self.once,
        )
