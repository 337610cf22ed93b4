"""The message catalogs (SPEC E3): every message of the error catalog and of the settings
pages (their templates' `_("...")` and `web/render.MESSAGES`) is translated in every
language, and no translation is left for a message that is gone."""

from __future__ import annotations

import re

import pytest
from babel.messages.pofile import read_po

from authbus_api.core.errors import CATALOG
from authbus_api.core.locale import SUPPORTED
from authbus_api.translations import LOCALES, SOURCE, Catalogs
from authbus_api.web.render import MESSAGES as PAGE_MESSAGES
from authbus_api.web.render import TEMPLATES

IN_TEMPLATES = {
    message
    for template in TEMPLATES.glob("*.html")
    for message in re.findall(r'_\("((?:[^"\\]|\\.)*)"\)', template.read_text())
}
MESSAGES = (
    {e.message for e in CATALOG.values()}
    | {e.title for e in CATALOG.values()}
    | {"Request id:"}
    | IN_TEMPLATES
    | set(PAGE_MESSAGES)
)


def test_the_templates_messages_are_found() -> None:
    assert {"Sign in", "Revoke this token?", "in %(days)s days"} <= IN_TEMPLATES


@pytest.mark.parametrize("language", [lang for lang in SUPPORTED if lang != SOURCE])
def test_every_message_is_translated_and_nothing_is_stale(language: str) -> None:
    with (LOCALES / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=language)
    translated = {m.id: m.string for m in catalog if m.id}

    assert set(translated) == MESSAGES
    assert all(translated.values())
    gettext = Catalogs.load().gettext(language)
    assert all(gettext(message) == translated[message] for message in MESSAGES)  # "Status"


def test_english_is_the_source_and_an_unknown_language_falls_back_to_it() -> None:
    catalogs = Catalogs.load()

    assert catalogs.gettext("en")("Forbidden") == "Forbidden"
    assert catalogs.gettext("tlh")("Forbidden") == "Forbidden"
    assert catalogs.languages == SUPPORTED
