"""Language tags and detection."""

from __future__ import annotations

import pytest

from transforms.language import detect_language, normalize_language


@pytest.mark.parametrize("tag, code", [
    ("en", "en"), ("en-US", "en"), ("EN_gb", "en"), ("nb", "no"), ("nb-NO", "no"), ("no", "no"),
    ("nn-NO", "nn"), ("deu", "de"), ("sv-SE", "sv"), ("es-419", "es"), ("zh-Hant-TW", "zh"),
    ("und", None), ("", None), ("english", None), (None, None), (42, None), ("x", None),
])
def test_normalize_language(tag, code):
  assert normalize_language(tag) == code


@pytest.mark.parametrize("text, code", [
    ("The central bank left interest rates unchanged on Thursday, citing slowing inflation.", "en"),
    ("Die Bundesregierung hat am Mittwoch ein neues Gesetz zur Energiewende beschlossen.", "de"),
    ("Regjeringen la fram statsbudsjettet mandag, og finansministeren varslet kutt i utgiftene.", "no"),
    ("Regeringen presenterade på måndagen en ny budget med sänkta skatter för pensionärer.", "sv"),
    ("El Gobierno aprobó el martes un nuevo plan para reducir el consumo de energía en invierno.", "es"),
    ("BANK OF ENGLAND HOLDS RATES, SEES INFLATION FALLING", "en"),
])
def test_detect_language(text, code):
  detected, confidence = detect_language(text)
  assert detected == code
  assert 0.0 < confidence <= 1.0


def test_detect_language_abstains_without_letters():
  assert detect_language("12,5 / 13,0 -- 44") == (None, 0.0)
  assert detect_language("") == (None, 0.0)
