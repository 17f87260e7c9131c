"""The webhook channel's connections, held to the egress rule (``pagerd.core.egress``).

Every address the webhook session connects to is checked as its socket is made,
after name resolution, so a name that resolves inward later (DNS rebinding) cannot
slip through: the connection fails with ``AddressNotAllowedError``. A URL whose host
an ``allow_hosts`` host-name entry names goes through the open session instead.
The SMS URL and the SMTP host are the operator's and not restricted.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable
from types import TracebackType
from typing import Any

import aiohttp

from pagerd.core.egress import ADDRESS_NOT_ALLOWED, EgressRule, url_host
from pagerd.telemetry import metrics


class AddressNotAllowedError(PermissionError):
    """A webhook connection to an address the egress rule refuses (never the address:
    the text reaches the timeline, which a token holder reads)."""

    def __init__(self) -> None:
        super().__init__(errno.EACCES, ADDRESS_NOT_ALLOWED)


def checked_socket(
    rule: EgressRule,
    addr_info: tuple[Any, ...],
    on_refused: Callable[[], None] = metrics.WEBHOOK_ADDRESSES_REFUSED.inc,
) -> socket.socket:
    """The socket for one address a webhook connects to; refused (and ``on_refused``
    called: the daemon's metric, or a sender process's tally for it) if the rule says so."""
    family, kind, proto, _, sockaddr = addr_info
    if not rule.address_allowed(ipaddress.ip_address(sockaddr[0])):
        on_refused()
        raise AddressNotAllowedError
    return socket.socket(family=family, type=kind, proto=proto)


class WebhookEgress:
    """The webhook channel's HTTP sessions: one that checks every address it connects
    to, and the open one for a URL whose host an ``allow_hosts`` entry names.

    An async context manager: it owns the checked session and closes it.
    """

    def __init__(
        self,
        rule: EgressRule,
        open_session: aiohttp.ClientSession,
        *,
        on_refused: Callable[[], None] = metrics.WEBHOOK_ADDRESSES_REFUSED.inc,
        **options: Any,
    ) -> None:
        self.rule = rule
        self._on_refused = on_refused
        self._open = open_session
        self._options = options  # for the checked session, as the open one was made
        self._checked: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> WebhookEgress:
        rule, on_refused = self.rule, self._on_refused
        connector = aiohttp.TCPConnector(
            socket_factory=lambda info: checked_socket(rule, info, on_refused)
        )
        self._checked = aiohttp.ClientSession(connector=connector, **self._options)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._checked is not None:
            await self._checked.close()
            self._checked = None

    def session_for(self, url: str) -> aiohttp.ClientSession:
        """The session that may send to ``url``."""
        assert self._checked is not None, "used outside its async with"
        return self._open if self.rule.host_allowed(url_host(url)) else self._checked
