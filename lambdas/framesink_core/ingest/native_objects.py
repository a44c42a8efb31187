"""The container receiver's S3 frame put through obstore (Rust's object_store): see objects.py.

Only the receiver image and the dev environment install obstore (container/requirements.txt);
the Lambda asset does not, and nothing there imports this module.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from framesink_core.shared.objects import CHECKSUM_METADATA, ObjectExists, ObjectWriteError, WriteRace


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

    # No checksum header through object_store: a CRC32 would only be metadata, so the frame's
    # fingerprint (png.py, from the chunk walk) stands in for it and no second pass is made.
    wants_crc32 = False

    def put_new(self, key: str, body: bytes, metadata: dict[str, str], crc32: str | None) -> None:
        import obstore
        from obstore.exceptions import (
            AlreadyExistsError,
            GenericError,
            PermissionDeniedError,
            PreconditionError,
            UnauthenticatedError,
        )

        store = self._client()  # ObjectWriteError without credentials
        attributes = {"Content-Type": "image/png", **metadata, **({CHECKSUM_METADATA: crc32} if crc32 else {})}
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
