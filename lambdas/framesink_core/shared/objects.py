"""A frame's S3 write: the conditional put (``If-None-Match: *``), through one of two clients.

- ``BotoObjects``: botocore's PutObject, with S3's CRC32 checksum header (S3 verifies the body
  against it). The Lambda functions use it: one put per invocation, nothing more to import at
  a cold start; in-process moto (the unit tests) answers it.
- ``NativeObjects`` (native_objects.py; obstore is in the container image, not in the
  Lambda asset): Rust's object_store builds, signs and sends the request with the GIL
  released, so a 250 KB put costs ~0.4-0.6 ms of CPU instead of botocore's ~1.2-1.6 (measured
  alone against moto), and the receiver's store threads stop contending with its event loop
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

from botocore.exceptions import BotoCoreError, ClientError

CHECKSUM_METADATA = "crc32"  # NativeObjects: the CRC32 (S3's ChecksumCRC32 form) as metadata
FINGERPRINT_METADATA = "png-chunks"  # png.PngInfo.fingerprint: the frame's identity without a CRC32 pass


class ObjectExists(Exception):
    """The key already holds an object (S3 answered 412 to ``If-None-Match: *``)."""


class WriteRace(Exception):
    """Not written, and worth another try (the caller backs off)."""


class ObjectWriteError(Exception):
    """Not written: S3 refused or could not be reached after the client's own retries."""


def error_code(exc: Exception) -> str:
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""


def object_missing(exc: Exception) -> bool:
    """S3's answer for an object that is not there: HeadObject says 404, GetObject NoSuchKey."""
    return error_code(exc) in ("404", "NoSuchKey", "NotFound")


def describe_client_error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}"[:300]
    return f"{exc.__class__.__name__}: {exc}"[:300]


class BotoObjects:
    # S3 verifies the body against the CRC32 sent with it: worth its pass over the bytes.
    wants_crc32 = True

    def __init__(self, s3, bucket: str):
        self.s3 = s3
        self.bucket = bucket

    def put_new(self, key: str, body: bytes, metadata: dict[str, str], crc32: str | None) -> None:
        try:
            # Given, botocore sends the checksum as is (no checksum pass of its own).
            checksum = {"ChecksumCRC32": crc32} if crc32 else {}
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="image/png",
                               Metadata=metadata, IfNoneMatch="*", **checksum)
        except ClientError as exc:
            code = error_code(exc)
            if code == "PreconditionFailed":
                raise ObjectExists(key) from exc
            if code == "ConditionalRequestConflict":  # another conditional write in flight
                raise WriteRace(describe_client_error(exc)) from exc
            raise ObjectWriteError(describe_client_error(exc)) from exc
        except BotoCoreError as exc:  # botocore has retried timeouts and dropped connections
            raise ObjectWriteError(describe_client_error(exc)) from exc
