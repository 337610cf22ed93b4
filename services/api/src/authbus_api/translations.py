"""The api's message catalogs (SPEC E3): gettext `.po` files under `locales/`, one per
language, compiled in memory when the api starts (no `.mo` is committed or built).

English is the source language (the catalog's own strings). A message missing from a
language falls back to English; `tests/unit/test_translations.py` checks that none is.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from authbus_api.core.locale import SUPPORTED

LOCALES = Path(__file__).parent / "locales"
SOURCE = "en"


class Catalogs:
    """One gettext per supported language."""

    def __init__(self, translations: dict[str, NullTranslations]) -> None:
        self._translations = translations
        self.languages = tuple(translations)

    @classmethod
    def load(cls, folder: Path = LOCALES, languages: tuple[str, ...] = SUPPORTED) -> Catalogs:
        loaded: dict[str, NullTranslations] = {}
        for language in languages:
            if language == SOURCE:
                loaded[language] = NullTranslations()
                continue
            with (folder / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
                catalog = read_po(po, locale=language)
            compiled = BytesIO()
            write_mo(compiled, catalog)
            compiled.seek(0)
            loaded[language] = Translations(compiled)
        return cls(loaded)

    def gettext(self, language: str) -> Callable[[str], str]:
        """The translating function of `language` (English for one not loaded)."""
        return self._translations.get(language, self._translations[SOURCE]).gettext
