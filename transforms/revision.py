"""What kind of filing a story version is: an update, a correction, a repeat, a kill.

Wire desks mark a re-filed story in its headline (``UPDATE 2-``, ``CORRECTED-``,
``REFILE-``, ``RPT-``, ``WRAPUP 1-``, ``KILL-``, ``WITHDRAWN-``; several may be
stacked, e.g. ``RPT-UPDATE 1-``) and corrections often in a first line such as
``(Corrects spelling of name in paragraph 3)``. The input's publication status
(ninjs ``pubstatus``, NewsML-G2 ``pubStatus``, NITF ``management-status``) says
whether a version is usable, withheld or canceled (a kill).

:func:`strip_headline_prefixes` gives the headline without these marks (what the
story clustering compares); :func:`revision_of` names the filing.
"""

from __future__ import annotations

import re

#: Headline mark -> revision kind. Longest marks first where one is a prefix of another.
_MARKS = (
    ("CORRECTED", "correction"), ("CORRECTION", "correction"), ("REFILE", "refile"), ("REPEAT", "repeat"),
    ("RPT", "repeat"), ("UPDATE", "update"), ("WRAPUP", "update"), ("WRITETHRU", "update"),
    ("KILL", "kill"), ("WITHDRAWN", "withdrawal"), ("WITHDRAWAL", "withdrawal"),
)
_PREFIX_RE = re.compile(
    r"^\s*(" + "|".join(mark for mark, _ in _MARKS) + r")(?:\s*\d{1,3})?\s*[-:\u2013\u2014]\s*", re.I)
_KIND = {mark: kind for mark, kind in _MARKS}
_CORRECTS_LINE_RE = re.compile(r"^\s*\(\s*(corrects|correcting|adds|updates|recasts|repeats|refiles)\b", re.I)
_LINE_KIND = {"corrects": "correction", "correcting": "correction", "adds": "update", "updates": "update",
              "recasts": "update", "repeats": "repeat", "refiles": "refile"}

#: Revision kinds from the strongest to the weakest (a kill outranks a correction, ...).
_RANK = ("kill", "withdrawal", "correction", "refile", "repeat", "update")

#: Publication status values (lower case, ``stat:`` scheme dropped, British spelling folded).
PUB_STATUSES = ("usable", "withheld", "canceled", "embargoed")


def normalize_pub_status(value: object) -> str | None:
  """``stat:canceled`` / ``Cancelled`` / ``usable`` -> ``canceled`` / ``canceled`` / ``usable``; else None."""
  if not isinstance(value, str):
    return None
  text = value.strip().lower().rsplit(":", 1)[-1].replace("cancelled", "canceled")
  return text if text in PUB_STATUSES else None


def strip_headline_prefixes(headline: str | None) -> tuple[str, list[str]]:
  """The headline without its filing marks, and the revision kinds of the marks removed (in order)."""
  text = headline or ""
  kinds: list[str] = []
  while True:
    match = _PREFIX_RE.match(text)
    if not match:
      return text.strip(), kinds
    kinds.append(_KIND[match.group(1).upper()])
    text = text[match.end():]


def revision_of(headline: str | None, body: str | None, pub_status: str | None = None) -> str | None:
  """The filing's kind: kill, withdrawal, correction, refile, repeat or update; None for a plain story.

  A canceled publication status is a kill and a withheld one a withdrawal, whatever the headline says.
  """
  kinds = set(strip_headline_prefixes(headline)[1])
  if pub_status == "canceled":
    kinds.add("kill")
  elif pub_status == "withheld":
    kinds.add("withdrawal")
  first_line = (body or "").lstrip().split("\n", 1)[0]
  match = _CORRECTS_LINE_RE.match(first_line)
  if match:
    kinds.add(_LINE_KIND[match.group(1).lower()])
  return next((kind for kind in _RANK if kind in kinds), None)
