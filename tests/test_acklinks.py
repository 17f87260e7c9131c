"""Acknowledge-link tokens: they round-trip, stay short, and refuse every forgery."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pagerd.core.records import WriteBatch
from pagerd.runtime.ids import new_incident_id
from pagerd.store.sqlite import Store
from pagerd.web.acklinks import (
    EXPIRED,
    NOT_VALID,
    SECRET_META_KEY,
    AckLinks,
    InvalidAckToken,
    load_or_create_secret,
)

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
SECRET = bytes(range(32))
PUBLIC_URL = "https://pg.example.com"  # 22 characters
TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_."


def token_of(link: str) -> str:
    prefix = f"{PUBLIC_URL}/ack/"
    assert link.startswith(prefix)
    return link.removeprefix(prefix)


def refusal(links: AckLinks, token: str, now: datetime = T0) -> str:
    with pytest.raises(InvalidAckToken) as caught:
        links.verify(token, now)
    return caught.value.reason


@pytest.fixture
def links() -> AckLinks:
    return AckLinks(SECRET, PUBLIC_URL)


@pytest.fixture
def token(links: AckLinks) -> str:
    incident_id = new_incident_id()
    return token_of(links.link(f"{incident_id}-0-0", incident_id, T0))


def test_a_token_round_trips_to_its_notification_incident_and_expiry(links: AckLinks) -> None:
    incident_id = new_incident_id()
    link = links.link(f"{incident_id}-7-2", incident_id, T0)

    claim = links.verify(token_of(link), T0 + timedelta(hours=23))

    assert claim.incident_id == incident_id
    assert claim.notification_id == f"{incident_id}-7-2"
    assert claim.expires_at == T0 + timedelta(hours=24)


def test_a_link_fits_beside_an_alert_in_an_sms(links: AckLinks) -> None:
    incident_id = new_incident_id()
    # A late step and a high position make the longest ids a policy produces.
    link = links.link(f"{incident_id}-99-19", incident_id, T0)
    assert len(link) < 90, link


def test_a_trailing_slash_on_the_public_url_is_not_doubled() -> None:
    incident_id = new_incident_id()
    link = AckLinks(SECRET, PUBLIC_URL + "/").link(f"{incident_id}-0-0", incident_id, T0)
    assert link.startswith(f"{PUBLIC_URL}/ack/")


def test_every_single_character_change_is_refused_as_not_valid(links: AckLinks, token: str) -> None:
    for index, original in enumerate(token):
        for replacement in {TOKEN_ALPHABET[(TOKEN_ALPHABET.index(original) + 1) % 65], "~"}:
            changed = token[:index] + replacement + token[index + 1 :]
            assert refusal(links, changed) == NOT_VALID, (index, changed)


def test_a_token_signed_with_another_secret_is_not_valid(links: AckLinks) -> None:
    incident_id = new_incident_id()
    other = AckLinks(bytes(reversed(SECRET)), PUBLIC_URL)
    forged = token_of(other.link(f"{incident_id}-0-0", incident_id, T0))
    assert refusal(links, forged) == NOT_VALID


def test_every_truncation_is_not_valid(links: AckLinks, token: str) -> None:
    for length in range(len(token)):
        assert refusal(links, token[:length]) == NOT_VALID, length
    assert refusal(links, token + "A") == NOT_VALID


def test_a_token_expires_after_its_lifetime() -> None:
    links = AckLinks(SECRET, PUBLIC_URL, ttl=timedelta(minutes=10))
    incident_id = new_incident_id()
    token = token_of(links.link(f"{incident_id}-0-0", incident_id, T0))

    links.verify(token, T0 + timedelta(minutes=10) - timedelta(seconds=1))
    assert refusal(links, token, T0 + timedelta(minutes=10)) == EXPIRED
    assert refusal(links, token, T0 + timedelta(days=400)) == EXPIRED


def test_a_forged_token_says_not_valid_even_when_its_expiry_has_passed(
    links: AckLinks, token: str
) -> None:
    nid, _, signature = token.split(".")
    assert refusal(links, f"{nid}.1.{signature}") == NOT_VALID


def test_a_link_must_name_the_incident_of_its_notification(links: AckLinks) -> None:
    with pytest.raises(ValueError, match="does not name incident"):
        links.link("AAAA-0-0", "BBBB", T0)
    with pytest.raises(ValueError, match="not URL-safe"):
        links.link("AAAA/x-0-0", "AAAA/x", T0)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        AckLinks(b"short", PUBLIC_URL)


async def test_the_secret_is_made_once_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "pagerd.db"
    incident_id = new_incident_id()
    store = await Store.open(path)
    try:
        secret = await load_or_create_secret(store)
        assert len(secret) == 32
        assert await load_or_create_secret(store) == secret
        link = AckLinks(secret, PUBLIC_URL).link(f"{incident_id}-0-0", incident_id, T0)
    finally:
        await store.close()

    reopened = await Store.open(path)
    try:
        assert await load_or_create_secret(reopened) == secret
        claim = AckLinks(secret, PUBLIC_URL).verify(token_of(link), T0)
        assert claim.incident_id == incident_id
    finally:
        await reopened.close()


async def test_a_damaged_stored_secret_is_an_error_not_a_new_secret(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "pagerd.db")
    try:
        await store.write(WriteBatch(meta=((SECRET_META_KEY, "not hex"),)))
        with pytest.raises(ValueError, match="delete that row"):
            await load_or_create_secret(store)
        assert await store.get_meta(SECRET_META_KEY) == "not hex"
    finally:
        await store.close()
