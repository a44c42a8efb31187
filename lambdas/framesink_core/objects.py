"""A frame's S3 write: the conditional put (``If-None-Match: *``), through one of two clients.

- ``BotoObjects``: botocore's PutObject, with S3's CRC32 checksum header (S3 verifies the body
  against it). The Lambda functions use it: one put per invocation, nothing more to import at
  a cold start; in-process moto (the unit tests) answers it.
- ``NativeObjects``: obstore (Rust's object_store): the request is built, signed and sent
  with the GIL released, so a 250 KB put costs the receiver ~0.4-0.6 ms of CPU instead of
  botocore's ~1.2-1.6 ms, and its store threads stop contending with the event loop
  (bench/sidebyside.py). The container receiver and the local stack use it. object_store
  offers no CRC32 header, so the frame's CRC32 travels as user metadata (``crc32``), which is
  what a duplicate is compared by; the body itself is protected by TLS in transit and by
  S3's own default checksum at rest. Credentials come from boto3's chain (environment, ECS
  task role, ...), so both clients act as the same principal.

Both answer ``put_new(key, body, metadata, crc32)``: None when written, ``ObjectExists`` when
S3 answered 412 (the key holds an object), ``WriteRace`` for an error worth retrying by the
caller (409 ConditionalRequestConflict; the native client's timeouts and dropped
connections, which object_store does not retry for a PUT), ``ObjectWriteError`` otherwise.
A retried put that had landed comes back as ``ObjectExists`` carrying this call's
``write-id``: FrameStore tells it apart (storage.py).
"""

from __future__ import annotations

import threading
from datetime import timedelta

from botocore.exceptions import BotoCoreError, ClientError

CHECKSUM_METADATA = "crc32"  # NativeObjects: the CRC32 (S3's ChecksumCRC32 form) as metadata


class ObjectExists(Exception):
    """The key already holds an object (S3 answered 412 to ``If-None-Match: *``)."""


class WriteRace(Exception):
    """Not written, and worth another try (the caller backs off)."""


class ObjectWriteError(Exception):
    """Not written: S3 refused or could not be reached after the client's own retries."""


def describe_client_error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}"[:300]
    return f"{exc.__class__.__name__}: {exc}"[:300]


class BotoObjects:
    def __init__(self, s3, bucket: str):
        self.s3 = s3
        self.bucket = bucket

    def put_new(self, key: str, body: bytes, metadata: dict[str, str], crc32: str) -> None:
        try:
            # Given, botocore sends the checksum as is (no checksum pass of its own).
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="image/png",
                               Metadata=metadata, IfNoneMatch="*", ChecksumCRC32=crc32)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "PreconditionFailed":
                raise ObjectExists(key) from exc
            if code == "ConditionalRequestConflict":  # another conditional write in flight
                raise WriteRace(describe_client_error(exc)) from exc
            raise ObjectWriteError(describe_client_error(exc)) from exc
        except BotoCoreError as exc:  # botocore has retried timeouts and dropped connections
            raise ObjectWriteError(describe_client_error(exc)) from exc


class NativeObjects:
    """``s3`` is the boto3 client the rest of the store uses: its region and endpoint (moto,
    the local stack) are this client's too. The obstore client is built at the first put, so
    missing credentials fail that frame (``ObjectWriteError``, as botocore's would) rather
    than the process."""

    def __init__(self, s3, bucket: str):
        self.bucket = bucket
        self.region = s3.meta.region_name
        self.endpoint_url = s3.meta.endpoint_url
        self._store = None
        self._lock = threading.Lock()

    def _client(self):
        with self._lock:
            if self._store is None:
                self._store = self._build()
            return self._store

    def _build(self):
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
        from obstore.store import S3Store

        try:
            # Frozen credentials from botocore's chain; a refreshed role's are valid for >= 10
            # minutes when handed out, so asking again every 5 is always in time.
            credentials = Boto3CredentialProvider(boto3.Session(), ttl=timedelta(minutes=5))
        except ValueError as exc:  # the chain found none
            raise ObjectWriteError(f"no AWS credentials: {exc}") from exc
        custom = not self.endpoint_url.endswith(".amazonaws.com")
        options = {"connect_timeout": timedelta(seconds=2), "timeout": timedelta(seconds=10)}
        if custom and self.endpoint_url.startswith("http://"):
            options["allow_http"] = True  # moto on loopback; AWS's own endpoints are HTTPS only
        return S3Store(
            self.bucket,
            region=self.region,
            endpoint=self.endpoint_url if custom else None,
            virtual_hosted_style_request=not custom,
            # Like botocore over HTTPS: the body is not SHA-256-hashed for the signature.
            unsigned_payload=True,
            credential_provider=credentials,
            client_options=options,
            # 5xx, connection errors; bounded like BOTO_CONFIG (a frame should not wait long).
            retry_config={"max_retries": 4, "retry_timeout": timedelta(seconds=15),
                          "backoff": {"init_backoff": timedelta(milliseconds=50),
                                      "max_backoff": timedelta(seconds=2), "base": 2}},
        )

    def put_new(self, key: str, body: bytes, metadata: dict[str, str], crc32: str) -> None:
        import obstore
        from obstore.exceptions import (
            AlreadyExistsError,
            GenericError,
            PermissionDeniedError,
            PreconditionError,
            UnauthenticatedError,
        )

        store = self._client()  # ObjectWriteError without credentials
        attributes = {"Content-Type": "image/png", **metadata, CHECKSUM_METADATA: crc32}
        try:
            obstore.put(store, key, body, mode="create", attributes=attributes, use_multipart=False)
        except (AlreadyExistsError, PreconditionError) as exc:
            raise ObjectExists(key) from exc
        except (PermissionDeniedError, UnauthenticatedError) as exc:
            raise ObjectWriteError(_first_line(exc)) from exc
        except GenericError as exc:
            # What object_store does not retry for a PUT: a timeout, a 409 race. Retried by the
            # caller; a put that had landed comes back as ObjectExists with our write-id.
            raise WriteRace(_first_line(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - any other obstore error: the frame is not written
            raise ObjectWriteError(_first_line(exc)) from exc


def _first_line(exc: Exception) -> str:
    """object_store's messages run over several lines (the request, the source chain)."""
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text}"[:300]
