"""Page text: what a person reads on a phone."""

from __future__ import annotations

import pytest

from pagerd.notify.texts import SMS_LIMIT, bundle_text, clip, page_text

LINK = "http://127.0.0.1:8080/ack/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdEfGhIj"


def test_page_names_service_message_incident_level_and_link() -> None:
    text = page_text(
        service="Payments API",
        message="5xx over 10%",
        incident_id="01M81DB8T9JJQVYG",
        level=2,
        ack_url=LINK,
        limit=SMS_LIMIT,
    )
    assert text == f"Payments API: 5xx over 10% [#JJQVYG L2] ack: {LINK}"


@pytest.mark.parametrize("length", [100, 500, 1024])
def test_sms_keeps_the_link_whole_and_shortens_the_message(length: int) -> None:
    text = page_text(
        service="Payments API",
        message="x" * length,
        incident_id="01M81DB8T9JJQVYG",
        level=1,
        ack_url=LINK,
        limit=SMS_LIMIT,
    )
    assert len(text) <= SMS_LIMIT
    assert text.endswith(f" [#JJQVYG L1] ack: {LINK}")
    assert text.startswith("Payments API: xxx")
    assert "..." in text


def test_sms_stays_in_the_gsm_alphabet_when_shortened() -> None:
    """A single non-GSM character (like the one-glyph ellipsis) would cap an SMS at 70."""
    text = page_text(
        service="API", message="y" * 300, incident_id="I", level=1, ack_url="", limit=SMS_LIMIT
    )
    assert text.isascii()


def test_email_is_not_shortened() -> None:
    text = page_text(
        service="API", message="z" * 900, incident_id="I", level=1, ack_url=LINK, limit=None
    )
    assert "z" * 900 in text


def test_bundle_counts_and_lists_what_was_held() -> None:
    text = bundle_text(
        [("Search", "slow"), ("Cart", "down"), ("Auth", "5xx")],
        console_url="http://pagerd.example/",
        limit=SMS_LIMIT,
    )
    assert (
        text
        == "pagerd: 3 more incidents: Search: slow; Cart: down; Auth: 5xx http://pagerd.example/"
    )


def test_bundle_of_many_fits_an_sms() -> None:
    items = [(f"Service {i}", "error budget burn") for i in range(40)]
    text = bundle_text(items, console_url="http://pagerd.example/", limit=SMS_LIMIT)
    assert len(text) <= SMS_LIMIT
    assert text.startswith("pagerd: 40 more incidents: Service 0")
    assert text.endswith("... http://pagerd.example/")


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("abcdef", 6, "abcdef"), ("abcdefg", 6, "abc..."), ("abcdef", 2, "ab")],
)
def test_clip(text: str, limit: int, expected: str) -> None:
    assert clip(text, limit) == expected
