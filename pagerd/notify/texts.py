"""What a page says: pure text composition, one function per kind of message."""

from __future__ import annotations

SMS_LIMIT = 160
SHORT_ID_CHARS = 6
# "..." and not "…": one character outside the GSM 7-bit alphabet turns an SMS into
# UCS-2, whose limit is 70 characters, not 160.
ELLIPSIS = "..."


def short_id(incident_id: str) -> str:
    """The incident id as people read it in a page."""
    return incident_id[-SHORT_ID_CHARS:]


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked when cut."""
    if len(text) <= limit:
        return text
    if limit <= len(ELLIPSIS):
        return text[: max(limit, 0)]
    return text[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


def page_text(
    *, service: str, message: str, incident_id: str, level: int, ack_url: str, limit: int | None
) -> str:
    """``Service: message [#ABC123 L2] ack: URL``; within ``limit`` the link is kept
    whole and the message (then the service name) is shortened."""
    tail = f" [#{short_id(incident_id)} L{level}]" + (f" ack: {ack_url}" if ack_url else "")
    head = f"{service}: {message}"
    if limit is None or len(head) + len(tail) <= limit:
        return head + tail
    return clip(head, limit - len(tail)) + tail


def bundle_text(items: list[tuple[str, str]], *, console_url: str, limit: int | None) -> str:
    """One message for pages held during a bundle window: ``(service, message)`` each."""
    listed = "; ".join(f"{service}: {message}" for service, message in items)
    noun = "incident" if len(items) == 1 else "incidents"
    tail = f" {console_url}" if console_url else ""
    text = f"pagerd: {len(items)} more {noun}: {listed}"
    if limit is None:
        return text + tail
    return clip(text, limit - len(tail)) + tail
