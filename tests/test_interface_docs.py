"""docs/interface/: the generated pages are current, and every link between pages holds."""

from __future__ import annotations

import re
from pathlib import Path

from pagerd.tools import reference

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_the_generated_pages_are_current() -> None:
    """The configuration reference and openapi.json are what the code makes of them now:
    after a change to the config's or the API's types, run python -m pagerd.tools.reference."""
    for path, text in reference.generated().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is out of date"


def test_every_key_of_the_example_config_is_described() -> None:
    """Each key of the reference says what it does (from the example's comments)."""
    text = reference.CONFIG_REFERENCE.read_text(encoding="utf-8")
    undescribed = [line for line in text.splitlines() if line.endswith("|  |")]
    assert undescribed == [], "describe these keys in config/pagerd.toml"


def test_links_between_the_docs_lead_to_files() -> None:
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
