"""Language tags: normalise what the input declares, detect what it does not.

Detection uses py3langid (a numpy port of langid.py whose model ships inside
its wheel, so no download is needed). Codes are ISO 639-1 where one exists.
Norwegian is reported as ``no`` by the detector, so declared Bokmål tags
(``nb``, ``nb-NO``, ``nob``) are normalised to ``no`` as well; Nynorsk stays
``nn``. This module imports nothing from the rest of the project.
"""

from __future__ import annotations

import re
import threading

#: Detections below this confidence (a normalised probability) are not trusted.
MIN_CONFIDENCE = 0.30
#: Characters of text the detector looks at (the lead is representative).
DETECT_CHARS = 2000

#: Declared tags that differ from the codes the detector emits.
_ALIASES = {
    "nb": "no", "nob": "no", "nor": "no", "nno": "nn",
    "eng": "en", "ger": "de", "deu": "de", "swe": "sv", "spa": "es", "fra": "fr", "fre": "fr",
    "dan": "da", "fin": "fi", "ita": "it", "por": "pt", "nld": "nl", "dut": "nl",
    "zho": "zh", "chi": "zh", "jpn": "ja", "rus": "ru", "ara": "ar",
    "iw": "he", "in": "id", "ji": "yi",
}
_TAG_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")

_lock = threading.Lock()
_identifier = None


def normalize_language(tag: object) -> str | None:
  """Returns the primary language subtag of ``tag`` in lower case, or None.

  ``"en-US"`` -> ``"en"``, ``"nb-NO"`` -> ``"no"``, ``"deu"`` -> ``"de"``.
  Anything that is not a well-formed language tag (``"und"``, ``""``,
  ``"english"``...) gives None, so the caller falls back to detection.
  """
  if not isinstance(tag, str):
    return None
  tag = tag.strip()
  if not _TAG_RE.match(tag):
    return None
  primary = re.split(r"[-_]", tag, maxsplit=1)[0].lower()
  if primary in ("und", "mul", "zxx", "mis", "xx"):
    return None
  return _ALIASES.get(primary, primary)


def _get_identifier():
  global _identifier
  if _identifier is None:
    with _lock:
      if _identifier is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
        _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
  return _identifier


def detect_language(text: str, min_confidence: float = MIN_CONFIDENCE) -> tuple[str | None, float]:
  """Detects the language of ``text``: ``(code, confidence)``.

  The code is None when the text has no letters or the detector's confidence
  is below ``min_confidence``. Upper-case text (wire headlines) is lowered
  first, since the model was trained on mixed case.
  """
  sample = text[:DETECT_CHARS]
  if not any(ch.isalpha() for ch in sample):
    return None, 0.0
  letters = [ch for ch in sample if ch.isalpha()]
  upper = sum(1 for ch in letters if ch.isupper())
  if upper > 0.6 * len(letters):
    sample = sample.lower()
  code, confidence = _get_identifier().classify(sample)
  if code in ("und", "zxx") or confidence < min_confidence:
    return None, float(confidence)
  return normalize_language(code) or code, float(confidence)
