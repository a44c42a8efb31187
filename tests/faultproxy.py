"""An HTTP proxy in front of a moto server that fails chosen requests for real: the faults
the receiver's obstore client (framesink_core/ingest/native_objects.py) meets on the wire, where botocore
hooks cannot reach. ``plan(n, path)`` (n = 1-based count of the PUTs, path = the request's)
names the fault for that attempt, or None to pass it on; the kinds are what S3 and a network
do:

- ``slowdown``: answered 503 SlowDown without reaching moto (a refused attempt);
- ``lost``: forwarded, so the write lands, then the connection is dropped before the answer;
- ``drop``: the connection is dropped without forwarding (an outage).
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")


class FaultProxy:
    def __init__(self, upstream: str, plan, methods: tuple[str, ...] = ("PUT",)):
        target = urlsplit(upstream)
        self.counts = {"attempts": 0, "failed": 0}  # and one count per kind that fired
        self.failed_paths: set[str] = set()
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self) -> tuple[int, list[tuple[str, str]], bytes]:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body,
                                 headers={k: v for k, v in self.headers.items() if k.lower() != "connection"})
                    response = conn.getresponse()
                    return response.status, response.getheaders(), response.read()
                finally:
                    conn.close()

            def _handle(self):
                kind = None
                if self.command in methods:
                    with lock:
                        proxy.counts["attempts"] += 1
                        kind = plan(proxy.counts["attempts"], self.path)
                        if kind:
                            proxy.failed_paths.add(self.path)
                            proxy.counts["failed"] += 1
                            proxy.counts[kind] = proxy.counts.get(kind, 0) + 1
                if kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if kind == "slowdown":
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    self._reply(503, [("Content-Type", "application/xml")], SLOWDOWN)
                    return
                status, headers, body = self._forward()
                if kind == "lost":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self._reply(status, headers, body)

            def _reply(self, status, headers, body):
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_PUT = do_GET = do_HEAD = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def route_native_puts(store, proxy: FaultProxy) -> None:
    """Point a FrameStore's obstore client at ``proxy`` (it is built at its first put)."""
    store.objects.endpoint_url = proxy.url
    store.objects._store = None  # noqa: SLF001 - rebuilt at the next put, through the proxy


class OutageProxy:
    """A TCP forwarder to ``upstream`` (host:port of a URL) that can be taken down: ``down()``
    closes its listening socket and every open connection, so a client's next connect is
    refused (ECONNREFUSED) as with a service unreachable; ``up()`` listens on the same port
    again. Everything S3 and DynamoDB clients send passes through untouched."""

    def __init__(self, upstream: str):
        import socket

        target = urlsplit(upstream)
        self._target = (target.hostname, target.port)
        self._socket = socket
        self._conns: set = set()
        self._lock = threading.Lock()
        self._listener = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self.up()

    def up(self) -> None:
        sock = self._socket.socket()
        sock.setsockopt(self._socket.SOL_SOCKET, self._socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            try:
                conn.shutdown(self._socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    stop = down

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by down()
                return
            try:
                server = self._socket.create_connection(self._target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # went down meanwhile
                    client.close()
                    server.close()
                    return
                self._conns.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(self._socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._conns.discard(source)
                self._conns.discard(sink)
