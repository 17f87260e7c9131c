"""Masking of phone numbers and email addresses, by field and by value inside any text.

Pure functions, shared by the log processor (``pagerd.telemetry.logs``) and the
senders, which record a provider's reply (an SMTP ``550 5.1.1 <someone@...>``) in
the timeline, ``last_error`` and the MQTT events.
"""

from __future__ import annotations

import re

# A fixed-width mask: the number of hidden characters would itself leak information.
MASK = "*****"

_EMAIL = r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*"
# With a leading +, a number may be written in groups ("+1 555-000-1111"); without one,
# only a bare run of 7 to 15 digits counts, so that ports, counts and dates stay legible.
_INTERNATIONAL = r"\+\d(?:[ -]?\d){5,14}"
_BARE = r"\d{7,15}"
# Not inside a longer token: an id, a version, a time, a path, a decimal number.
_BEFORE = r"(?<![\w.+:/-])"
_AFTER = r"(?!\w|[.:/-]\w)"
_PERSONAL = re.compile(f"{_EMAIL}|{_BEFORE}(?:{_INTERNATIONAL}|{_BARE}){_AFTER}")


def mask_value(value: str) -> str:
    """Partly mask a phone number or email address so logs identify without disclosing."""
    local, at, domain = value.rpartition("@")
    if at and local:
        return f"{local[0]}{MASK}@{domain}"
    if len(value) > 7:
        return f"{value[:4]}{MASK}{value[-3:]}"
    # Too short to show both ends without showing nearly all of it.
    return MASK


def mask_text(text: str) -> str:
    """``text`` with every email address and phone number in it partly masked."""
    return _PERSONAL.sub(_mask_match, text)


def _mask_match(match: re.Match[str]) -> str:
    return mask_value(match.group())
