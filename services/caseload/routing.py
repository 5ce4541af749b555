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

What is forwarded is a request of this router's own making: the owner's address with the
caller's path and query, and of the caller's headers only ``FORWARDED_HEADERS`` (Faust's sent
them all, and built the address from the caller's ``Host``: a ``Host`` of ``a:b`` or ``a@b`` was
a bare 500). The views refuse any request but a GET or HEAD without a body before it is routed
(``require_a_plain_read``).

The all-worker views ask every process owning partitions of the tables for its part the same
way (``ask``, ``owners``; ``gathering``), through pools of connections of their own
(``pool``): a request never waits for a connection behind requests of another kind.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from faust.app.router import Router
from faust.exceptions import SameNode
from yarl import URL

from services.caseload.access import Refused

log = logging.getLogger(__name__)

CONNECT_SECONDS = 5.0
"""To connect to the owner and shake hands: a pod gone leaves an address nothing answers."""
FORWARD_SECONDS = 120.0
"""The whole forwarded view: longer than the owner's longest answer, a list of 1,000 cases
recorded in audit in 10 calls of at most ``recording.CALL_SECONDS`` (10 s) each."""
FORWARDED_HEADERS = ("Authorization", "Accept")
"""The caller's headers the owner is sent: the token its view verifies and records the read
with, and what the caller accepts (the views read no other). Never the caller's framing: no
body is forwarded, so a ``Content-Length`` or ``Transfer-Encoding`` made the owner take the next
request on the pooled connection, another caller's bearer token and all, as the rest of this
one (a 400 echoing and logging that token, or a 10 s stall); nor ``Host``, ``Connection``,
``Expect`` or any other header meant for this hop only."""
FORWARDED_MARK = "X-Caseload-Forwarded"
"""Set on every forwarded request: its receiver answers it if it owns the worker, else 503
``OWNER_UNAVAILABLE``, never forwarding it again. During a rebalance two processes may each
take the other for the owner: one view went back and forth ~200 times. A caller sending the
mark gains nothing: the view still verifies its token and records the read, or is refused (an
all-worker view so marked is a part, answered only to the process that asked for it:
``gathering``)."""
READ_METHODS = frozenset({"GET", "HEAD"})


def require_a_plain_read(request: Any) -> None:
    """``Refused`` unless ``request`` is a GET or HEAD without a body: the views read nothing
    else, and what the router forwards is nothing else (``FORWARDED_HEADERS``)."""
    if request.method not in READ_METHODS:
        raise Refused(405, "the caseload views answer GET and HEAD only", "METHOD_NOT_ALLOWED")
    if request.body_exists:
        raise Refused(
            400,
            "the caseload views take no body: send no Content-Length or Transfer-Encoding",
            "BODY_NOT_ALLOWED",
        )


@dataclass(frozen=True)
class Reply:
    """What another process of the group answered: its status, content type and body."""

    status: int
    content_type: str
    text: str


class OwnerRouter(Router):
    """Faust's router (``build_app``'s ``Router``), forwarding with the deployment's TLS."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        settings = app.settings
        self.tls_name: str | None = settings.web_tls_name
        """The name the owner's certificate must carry; ``None``: its address's host."""
        self.scheme = "http" if settings.web_tls is None else "https"
        """The owner's views are served as this process's are: one deployment, one setting."""
        self.ssl_context = ssl.create_default_context(
            cadata=None if settings.audit_tls is None else settings.audit_tls.server_ca.decode()
        )
        web_tls = settings.web_tls
        if web_tls is not None and web_tls.client_ca is not None and web_tls.files is not None:
            # Views that ask for a client certificate (CASETRAIL_TLS_CLIENT_CA) get their own.
            certificate, key, _ = web_tls.files
            self.ssl_context.load_cert_chain(certificate, key)
        self._pools: dict[str, aiohttp.ClientSession] = {}

    async def route_req(self, table_name: str, key: Any, web: Any, request: Any) -> Any:
        """The owner's answer (its status and body), or ``SameNode`` when this process owns
        ``key``; ``Refused`` 503 when the owner is unknown, cannot be reached, or the request
        was forwarded here already (``FORWARDED_MARK``)."""
        try:
            owner = self.key_store(table_name, key)
        except KeyError:  # no assignment yet (a rebalance)
            raise owner_unavailable() from None
        if self.is_this_process(owner):
            raise SameNode()
        if FORWARDED_MARK in request.headers:
            # The sender took this process for the owner, which takes another one: a
            # rebalance seen at different moments. Its tables do not hold the worker, so an
            # answer from here would be an empty view shown as if it were all.
            log.warning("caseload: a forwarded view's owner is another process (a rebalance)")
            raise owner_unavailable()
        reply = await self.ask(
            owner, request.rel_url, forwarded_headers(request.headers), method=request.method
        )
        return web.text(reply.text, content_type=reply.content_type, status=reply.status)

    async def ask(
        self,
        process: URL,
        view: URL,
        headers: Mapping[str, str],
        *,
        method: str = "GET",
        seconds: float = FORWARD_SECONDS,
        client: aiohttp.ClientSession | None = None,
    ) -> Reply:
        """``view`` (a path and query) asked of the group's ``process`` at its address, over
        the deployment's TLS, with ``headers`` and ``FORWARDED_MARK``, through ``client`` (a
        ``pool``; ``None``: Faust's, the forwarded per-worker views'); ``Refused`` 503
        ``OWNER_UNAVAILABLE`` when no answer comes within ``seconds``."""
        http = self.app.http_client if client is None else client
        try:
            async with http.request(
                method=method,
                url=self._owners(process, view),
                headers={**headers, FORWARDED_MARK: "1"},
                ssl=self.ssl_context,
                server_hostname=self.tls_name,
                timeout=aiohttp.ClientTimeout(total=seconds, connect=CONNECT_SECONDS),
            ) as response:
                return Reply(response.status, response.content_type, await response.text())
        except (aiohttp.ClientError, TimeoutError) as error:
            # The error names the address and the TLS failure, never the request's headers.
            log.warning("caseload: another process of the group could not be asked: %s", error)
            raise owner_unavailable() from None
        except Exception as error:  # whatever else fails, the caller gets the 503 too
            # By its type only: its words might repeat the caller's path or headers.
            log.warning(
                "caseload: another process of the group could not be asked: %s",
                type(error).__name__,
            )
            raise owner_unavailable() from None

    def pool(self, name: str, connections_per_process: int) -> aiohttp.ClientSession:
        """The client of the pool ``name``, opened on first use (in the web server's loop),
        with connections of its own, ``connections_per_process`` to each process at most.
        aiohttp counts the wait for a free connection in the connect timeout: in a shared
        pool, a request behind others it waits for was refused 503 after ``CONNECT_SECONDS``
        however near its answer was (``gathering``)."""
        client = self._pools.get(name)
        if client is None or client.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=connections_per_process)
            client = self._pools[name] = aiohttp.ClientSession(connector=connector)
        return client

    async def close(self) -> None:
        """Close the pools' connections (Faust closes its own client)."""
        for client in self._pools.values():
            await client.close()
        self._pools.clear()

    def owners(self, table_name: str) -> dict[URL, frozenset[int]]:
        """Every process of the group, by its address, with the partitions of ``table_name``
        it holds in the assignment this process was last given (none: not one yet)."""
        return {
            URL(process): frozenset(p for partitions in topics.values() for p in partitions)
            for process, topics in self.table_metadata(table_name).items()
        }

    def is_this_process(self, process: URL) -> bool:
        return self.same_process(process, str(self.app.conf.canonical_url))

    def same_process(self, process: URL, address: str) -> bool:
        """Whether ``address`` (as a request states it) is that of ``process``."""
        try:
            return self._urlident(process) == self._urlident(URL(address))
        except ValueError:  # not an address, nor a port
            return False

    def _owners(self, owner: URL, view: URL) -> URL:
        """The owner's address (from the assignment, never the caller's ``Host``) with the
        view's path and query as the caller sent them (``%2F`` stays ``%2F``)."""
        host, port = self._urlident(owner)
        origin = URL.build(scheme=self.scheme, host=host, port=port)  # brackets an IPv6 host
        return URL.build(
            scheme=origin.scheme,
            authority=origin.raw_authority,
            path=view.raw_path,
            query_string=view.raw_query_string,
            encoded=True,
        )


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Of the caller's ``headers``, those another process is sent (``FORWARDED_HEADERS``)."""
    return {name: headers[name] for name in FORWARDED_HEADERS if name in headers}


def owner_unavailable() -> Refused:
    """503 ``OWNER_UNAVAILABLE``: the view cannot be had from the process holding its tables."""
    return Refused(
        503,
        "a process holding the caseload tables asked for cannot be reached, or holds other"
        " partitions now (a rebalance): ask again in a moment",
        "OWNER_UNAVAILABLE",
    )
