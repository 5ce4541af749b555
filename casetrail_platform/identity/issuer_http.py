"""An OIDC issuer's public face over HTTP: the discovery document and the JWKS, served from a
thread on 127.0.0.1 (the local development issuer and the tests' issuer; nothing else)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from casetrail_platform.addresses import BindError, host_port

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks.json"


class IssuerHttpServer:
    """Serves ``public_keys()`` as the JWKS at ``/jwks.json`` and a discovery document naming
    ``url`` as the issuer. ``stop()`` closes the socket. ``BindError`` when ``port`` is taken,
    as the gRPC servers': a second ``make run`` ends in the runner's one line, not a traceback."""

    def __init__(
        self,
        public_keys: Callable[[], list[dict[str, Any]]],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if host not in {"127.0.0.1", "localhost", "::1"}:
            raise ValueError("a local issuer serves loopback only")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == DISCOVERY_PATH:
                    self._answer(outer.discovery())
                elif path == JWKS_PATH:
                    self._answer({"keys": public_keys()})
                else:
                    self.send_error(404)

            def _answer(self, document: dict[str, Any]) -> None:
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "max-age=60")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # requests are routine; the server logs nothing per request

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as error:
            raise BindError(
                f"could not bind the token issuer to {host_port(host, port)}: {error.strerror}"
            ) from None
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="casetrail-issuer-http", daemon=True
        )
        self._thread.start()

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": self.url + JWKS_PATH,
            "id_token_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
        }

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
