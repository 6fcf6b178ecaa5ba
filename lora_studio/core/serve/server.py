"""The HTTP side of `lora-studio serve`: stdlib `http.server`, one thread per request.

Routes map to `ServeApi` methods; every answer is JSON. Errors are `{"error": <HTTP reason>,
"detail": <what to change>}`: 400 malformed JSON, 401 missing / wrong token, 404 unknown path
or LoRA, 405 wrong method, 413 body too large, 422 a value the API cannot use (a StudioError's
message passed through), 500 an unexpected error (a short message; the traceback goes to the
server's log, never to the client).

Listening address: loopback only unless a token is given (`check_host`). With a token, every
request needs `Authorization: Bearer <token>` (compared in constant time).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
import sys
import time
import traceback
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lora_studio.core.errors import StudioError
from lora_studio.core.serve.api import ApiError, ServeApi

MAX_BODY = 16 * 1024 * 1024
_TRUE = {"1", "true", "yes", "on"}

# (method, path) -> handler(api, body or None, query) -> JSON-able
ROUTES: dict[tuple[str, str], Callable[[ServeApi, Any, dict], Any]] = {
    ("POST", "/sdapi/v1/txt2img"): lambda api, body, q: api.txt2img(body),
    ("GET", "/sdapi/v1/loras"): lambda api, body, q: api.loras(),
    ("POST", "/sdapi/v1/refresh-loras"): lambda api, body, q: api.refresh_loras(),
    ("GET", "/sdapi/v1/sd-models"): lambda api, body, q: api.sd_models(),
    ("GET", "/sdapi/v1/samplers"): lambda api, body, q: api.samplers(),
    ("GET", "/sdapi/v1/schedulers"): lambda api, body, q: api.schedulers(),
    ("GET", "/sdapi/v1/options"): lambda api, body, q: api.options(),
    ("GET", "/sdapi/v1/progress"): lambda api, body, q: api.progress_report(
        q.get("skip_current_image", [""])[-1].lower() in _TRUE),
    ("POST", "/sdapi/v1/interrupt"): lambda api, body, q: api.interrupt(),
}
_WITH_BODY = {("POST", "/sdapi/v1/txt2img")}


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_host(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token (a StudioError saying so)."""
    if not is_loopback(host) and not token:
        raise StudioError(
            f"Listening on {host} would let other machines use this server, and no --token "
            "was given.",
            "Pass --token SECRET (clients send `Authorization: Bearer SECRET`), or listen on "
            "127.0.0.1 (the default).")


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: ServeApi, host: str, port: int, token: str | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        check_host(host, token)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.api = api
        self.token = token or None
        self.log = log
        super().__init__((host.strip("[]"), port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    server_version = "lora-studio"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._answer("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        started = time.perf_counter()
        status, payload = self._route(method)
        self._send(status, payload)
        if self.server.log is not None:
            self.server.log(f"{method} {self.path} {status} "
                            f"{time.perf_counter() - started:.3f}s")

    def _route(self, method: str) -> tuple[int, Any]:
        url = urlsplit(self.path)
        try:
            if not self._authorized():
                raise ApiError(401, "Send `Authorization: Bearer <token>` with the server's "
                               "--token.")
            handler = ROUTES.get((method, url.path))
            if handler is None:
                if any(path == url.path for _, path in ROUTES):
                    raise ApiError(405, f"{method} is not allowed on {url.path}.")
                raise ApiError(404, f"No endpoint {url.path}.")
            body = self._body() if (method, url.path) in _WITH_BODY else self._skip_body()
            return 200, handler(self.server.api, body, parse_qs(url.query))
        except ApiError as exc:
            return exc.status, _error(exc.status, exc.detail)
        except StudioError as exc:
            return 422, _error(422, exc.user_message())
        except Exception as exc:  # noqa: BLE001 - a bug: short answer, traceback in the log
            traceback.print_exc(file=sys.stderr)
            return 500, _error(500, f"Unexpected {type(exc).__name__}: {exc}")

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("utf-8"), token.encode("utf-8"))

    def _length(self) -> int:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number.") from None
        if length > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, f"The body is over {MAX_BODY // 1024 // 1024} MiB.")
        return max(length, 0)

    def _skip_body(self) -> None:
        length = self._length()
        if length:
            self.rfile.read(length)

    def _body(self) -> Any:
        raw = self.rfile.read(self._length())
        if not raw.strip():
            raise ApiError(422, "The request needs a JSON object body.")
        try:
            return json.loads(raw)
        except ValueError as exc:  # UnicodeDecodeError too
            raise ApiError(400, f"The body is not valid JSON: {exc}.") from None

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; the job (if any) has finished anyway

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # `_answer` logs one line per request when the server has a log


def _error(status: int, detail: str) -> dict[str, str]:
    return {"error": HTTPStatus(status).phrase, "detail": detail}
