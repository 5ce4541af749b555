"""A per-worker view asked of a process that does not own the worker's partition is forwarded
to the one that does (Faust's routing), over the views' own HTTPS when they serve it.

Faust's router forwarded with its default aiohttp client, which trusts the system's CAs only
and checks the owner's certificate against the address it dials: a pod's IP (the canonical URL,
``--web-host``), which no certificate names. So under HTTPS every routed view failed, a bare
500. Here the owner's certificate is checked against the deployment's CA (``CASETRAIL_TLS_CA``,
as caseload's calls to audit) and against the name the views' certificate carries
(``CASETRAIL_CASELOAD_TLS_NAME``: the chart sets the caseload Service's), while the connection
still goes to the owner's address. An owner that cannot be reached is ``Refused`` 503
``OWNER_UNAVAILABLE``, answered as every refusal of the views.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import aiohttp
from faust.app.router import Router
from faust.exceptions import SameNode

from services.caseload.access import Refused

log = logging.getLogger(__name__)

CONNECT_SECONDS = 5.0
"""To connect to the owner and shake hands: a pod gone leaves an address nothing answers."""
FORWARD_SECONDS = 120.0
"""The whole forwarded view: longer than the owner's longest answer, a list of 1,000 cases
recorded in audit in 10 calls of at most ``recording.CALL_SECONDS`` (10 s) each."""


class OwnerRouter(Router):
    """Faust's router (``build_app``'s ``Router``), forwarding with the deployment's TLS."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        settings = app.settings
        self.tls_name: str | None = settings.web_tls_name
        """The name the owner's certificate must carry; ``None``: its address's host."""
        self.ssl_context = ssl.create_default_context(
            cadata=None if settings.audit_tls is None else settings.audit_tls.server_ca.decode()
        )
        web_tls = settings.web_tls
        if web_tls is not None and web_tls.client_ca is not None and web_tls.files is not None:
            # Views that ask for a client certificate (CASETRAIL_TLS_CLIENT_CA) get their own.
            certificate, key, _ = web_tls.files
            self.ssl_context.load_cert_chain(certificate, key)

    async def route_req(self, table_name: str, key: Any, web: Any, request: Any) -> Any:
        """The owner's answer (its status and body), or ``SameNode`` when this process owns
        ``key``; ``Refused`` 503 when the owner is unknown or cannot be reached."""
        try:
            owner = self.key_store(table_name, key)
        except KeyError:  # no assignment yet (a rebalance)
            raise _unavailable() from None
        if self._urlident(owner) == self._urlident(self.app.conf.canonical_url):
            raise SameNode()
        host, port = self._urlident(owner)
        try:
            async with self.app.http_client.request(
                method=request.method,
                url=request.url.with_host(host).with_port(port),
                headers=request.headers,
                ssl=self.ssl_context,
                server_hostname=self.tls_name,
                timeout=aiohttp.ClientTimeout(total=FORWARD_SECONDS, connect=CONNECT_SECONDS),
            ) as response:
                return web.text(
                    await response.text(),
                    content_type=response.content_type,
                    status=response.status,
                )
        except (aiohttp.ClientError, TimeoutError) as error:
            # The error names the address and the TLS failure, never the request's headers.
            log.warning("caseload: a view could not be forwarded to its owner: %s", error)
            raise _unavailable() from None


def _unavailable() -> Refused:
    return Refused(
        503,
        "the process holding this worker's tables cannot be reached: ask again in a moment",
        "OWNER_UNAVAILABLE",
    )
