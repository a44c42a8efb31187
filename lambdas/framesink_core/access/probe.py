"""A websocket handshake as Recall's bot makes it, reporting the HTTP status it got.

The canary (framesink_handlers/canary.py, every 5 minutes in AWS) and `framesink doctor`
both ask one question of the public URL: does a handshake without a token get 401, and one
with a live token 101? The websocket libraries answer it only by raising on anything but
101; this module sends the RFC 6455 upgrade request itself and reads the status line, so a
401, a 403, CloudFront's 502/504 (origin unreachable) and a refused TCP connection are each
a plain result. It is written by hand (about 60 lines of socket + ssl) because the Lambda
asset carries no websocket client, and the canary needs nothing more than the status.

Never logs or returns the token: ``Handshake.url`` is the URL without its query string.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

CANARY_URL_ENV = "FRAMESINK_CANARY_URL"  # the URL the canary probes (infra/canary.py sets it)
MAX_RESPONSE_HEAD = 16 * 1024  # a handshake answer is a status line and a few headers


@dataclass(frozen=True)
class Handshake:
    url: str  # without the query string (the token)
    status: int | None  # the HTTP status, None if no answer came
    seconds: float  # from the TCP connect to the answer's head
    error: str = ""  # why there is no status: refused, timeout, TLS, ...

    @property
    def upgraded(self) -> bool:
        return self.status == 101


def with_token(url: str, token: str | None) -> str:
    """``url`` with ``?token=`` set (replacing any query), or without a query for None."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode({"token": token}) if token is not None else ""))


def public(url: str) -> str:
    """The URL as it may be printed: no query string, so no token."""
    return urlunsplit(urlsplit(url)._replace(query=""))


def handshake(url: str, token: str | None = None, *, timeout: float = 10.0,
              headers: dict[str, str] | None = None) -> Handshake:
    """Open ``url`` (ws:// or wss://) with ``token``, read the answer's status, close politely."""
    target = with_token(url, token)
    parts = urlsplit(target)
    shown = public(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        return Handshake(shown, None, 0.0, f"not a ws:// or wss:// URL: {shown!r}")
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    key = base64.b64encode(os.urandom(16)).decode()
    request = "".join(f"{k}: {v}\r\n" for k, v in {
        "Host": host, "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13", "User-Agent": "framesink-probe", **(headers or {})}.items())
    started = time.monotonic()
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout) as raw:
            sock = ssl.create_default_context().wrap_socket(raw, server_hostname=parts.hostname) \
                if parts.scheme == "wss" else raw
            sock.sendall(f"GET {path} HTTP/1.1\r\n{request}\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
                if len(head) > MAX_RESPONSE_HEAD:
                    break
            seconds = time.monotonic() - started
            status = _status(head)
            if status is None:
                return Handshake(shown, None, seconds, "the server closed the connection without an HTTP answer")
            if status == 101:  # a masked close frame (1000): the server sees a clean goodbye
                payload = struct.pack("!H", 1000)
                mask = os.urandom(4)
                sock.sendall(bytes([0x88, 0x80 | len(payload)]) + mask
                             + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            return Handshake(shown, status, seconds)
    except ssl.SSLError as exc:
        return Handshake(shown, None, time.monotonic() - started, f"TLS failed: {exc.reason or exc}")
    except (TimeoutError, socket.timeout):
        return Handshake(shown, None, time.monotonic() - started, f"no answer within {timeout:g} s")
    except OSError as exc:
        return Handshake(shown, None, time.monotonic() - started, exc.strerror or str(exc))


def _status(head: bytes) -> int | None:
    line = head.split(b"\r\n", 1)[0].split()
    if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
        return int(line[1])
    return None
