"""A folder served over HTTP on 127.0.0.1 that answers only requests carrying credentials: an
``Authorization`` header from an allowed set or an allowed ``?token=``. Like a private mirror."""

from __future__ import annotations

import base64
import functools
import threading
from collections.abc import Iterable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


def basic(user: str, password: str) -> str:
    """The ``Authorization`` header value of HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class AuthMirror:
    """Serves ``root`` on a free loopback port (``url``) until :meth:`close`.

    ``served`` counts the requests answered, ``refused`` lists the paths refused (401 without
    credentials, or the status set in ``failing`` for a path even with them).
    """

    def __init__(self, root: Path, headers: Iterable[str] = (), tokens: Iterable[str] = ()):
        allowed_headers, allowed_tokens = set(headers), set(tokens)
        self.served = 0
        self.refused: list[str] = []
        self.failing: dict[str, int] = {}
        mirror = self

        class Handler(SimpleHTTPRequestHandler):
            def _allowed(self) -> bool:
                url = urlsplit(self.path)
                token = parse_qs(url.query).get("token", [""])[-1]
                ok = self.headers.get("Authorization") in allowed_headers or token in allowed_tokens
                status = mirror.failing.get(url.path) if ok else 401
                if status is None:
                    mirror.served += 1
                    return True
                mirror.refused.append(url.path)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_GET(self):
                if self._allowed():
                    super().do_GET()

            def do_HEAD(self):
                if self._allowed():
                    super().do_HEAD()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
