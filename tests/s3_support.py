"""An S3-compatible server for the tests, and a proxy in front of it that can be slow,
refuse PUTs or be down.

The server is moto's (`moto.server.ThreadedMotoServer`), which speaks the S3 REST API
over HTTP on a loopback port: no S3-compatible server of Debian fits a test run on two
cores (Ceph's radosgw needs a monitor and OSDs; MinIO and Garage are not packaged), see
docs/operations.md, "Images in an object store".
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class MotoS3:
    """moto's S3 server on a free loopback port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.port = port

    def stop(self) -> None:
        self.server.stop()


class FaultyProxy:
    """A forwarding HTTP proxy to the S3 server. `mode` is "pass", "slow" (every PUT
    waits `delay` seconds before it is forwarded), "refuse" (every PUT answered 403
    AccessDenied) or "error" (every PUT answered 503); `stop()` takes it down (the
    connection is refused). It counts the body bytes of the GETs it forwarded."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mode = "pass"
        self.delay = 0.0
        self.get_bytes = 0
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Range)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                # One request per connection: stopping the proxy must leave no open
                # connection that would still reach the store.
                self.close_connection = True
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.requests.append((self.command, self.path, self.headers.get("Range", "")))
                if self.command == "PUT" and proxy.mode == "slow":
                    time.sleep(proxy.delay)
                if self.command == "PUT" and proxy.mode in {"refuse", "error"}:
                    code, status = ("AccessDenied", 403) if proxy.mode == "refuse" else ("SlowDown", 503)
                    payload = (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f"<Message>refused by the test</Message></Error>"
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                if self.command == "GET":
                    with proxy._lock:
                        proxy.get_bytes += len(data)
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _forward

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        # stop() waits for the loop's next turn: 0.05 s, not socketserver's 0.5 s.
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @contextmanager
    def counting(self) -> Iterator[None]:
        with self._lock:
            self.get_bytes = 0
            self.requests.clear()
        yield


def use_object_store(settings: Any, endpoint: str, bucket: str, **overrides: Any) -> None:
    """Point the settings at a bucket of the server at `endpoint` and create it."""
    from cloudpacs import storage

    settings.STORAGE_BACKEND = "s3"
    settings.S3_ENDPOINT_URL = endpoint
    settings.S3_BUCKET = bucket
    settings.S3_PREFIX = overrides.get("prefix", "")
    settings.S3_REGION = "us-east-1"
    settings.S3_ACCESS_KEY_ID = "testing"
    settings.S3_SECRET_ACCESS_KEY = "testing"
    settings.S3_ADDRESSING_STYLE = "path"
    settings.S3_TIMEOUT = overrides.get("timeout", 10.0)
    settings.S3_MAX_ATTEMPTS = overrides.get("max_attempts", 2)
    settings.S3_CA_BUNDLE = None
    storage.s3_store().ensure_bucket()
