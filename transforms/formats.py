"""Per-format field extraction for the parse stage.

Each extractor turns one story-level sub-record (an already-decoded JSON
object, an XML element, the text of one Reuters SGML element...) into a
:class:`Fields` instance: the format-neutral fields a :class:`schemas.records.Story`
is built from. Extractors raise a :class:`ParseProblem` subclass when the
sub-record holds no story (the class name becomes the dead letter's
``error_type``). How records are split and turned into Stories is in
:mod:`transforms.parse`; the field mappings are documented there.

XML is only ever parsed with defusedxml (see :func:`parse_xml`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import re
import unicodedata
import warnings
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as DET
from dateutil import parser as dateparser

# --------------------------------------------------------------------------- errors


class ParseProblem(ValueError):
  """Base class of the parse stage's own error types."""


class NoTextContent(ParseProblem):
  """The sub-record has neither a headline nor any body text."""


class NotAStory(ParseProblem):
  """The sub-record is not news content (a concept, knowledge or package item...)."""


class StoryTooLarge(ParseProblem):
  """The story's bytes exceed the size cap."""


class RecordTooLarge(ParseProblem):
  """The record (e.g. a gzip member once decompressed) exceeds the size cap."""


class EmptyRecord(ParseProblem):
  """The record has no bytes, or only whitespace."""


class UnsupportedFormat(ParseProblem):
  """The bytes are of no supported format (or not of the hinted one)."""


class JSONShapeError(ParseProblem):
  """Valid JSON of a shape that holds no story (a number, a list of numbers...)."""


class TruncatedRecord(ParseProblem):
  """A record that starts but never ends (e.g. an unterminated ``<REUTERS>`` element)."""


# --------------------------------------------------------------------------- fields


@dataclasses.dataclass
class Fields:
  """Format-neutral story fields, as found in one sub-record."""

  body: str = ""
  headline: str | None = None
  byline: str | None = None
  dateline: str | None = None
  dateline_place: str | None = None
  agency: str | None = None
  source: str | None = None
  guid: str | None = None
  #: The language tag as declared by the input (normalised later).
  language: str | None = None
  published_at: dt.datetime | None = None
  version: int | None = None
  source_subjects: list[str] = dataclasses.field(default_factory=list)
  places: list[str] = dataclasses.field(default_factory=list)
  #: Scope the guid is unique in (provider, feed or format); None: the format name.
  scope: str | None = None
  #: Media items (pictures, video, audio, graphics) count as stories only with a caption/body.
  media_type: str | None = None
  #: Publication status as written (ninjs pubstatus, NewsML-G2 pubStatus, NITF management-status).
  pub_status: str | None = None


# --------------------------------------------------------------------------- text helpers

_WS_RE = re.compile(r"\s+")
# C0/C1 controls other than tab and newline, and non-characters.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffe\uffff]")


def clean_text(text: str | None) -> str:
  """NFC-normalises ``text`` and collapses every run of whitespace to one space."""
  if not text:
    return ""
  text = unicodedata.normalize("NFC", _CONTROL_RE.sub(" ", text))
  return _WS_RE.sub(" ", text).strip()


def clean_opt(text: str | None) -> str | None:
  cleaned = clean_text(text)
  return cleaned or None


def join_paragraphs(paragraphs: Iterable[str]) -> str:
  """Cleans each paragraph, drops empty ones and joins them with a blank line."""
  return "\n\n".join(p for p in (clean_text(p) for p in paragraphs) if p)


def text_paragraphs(text: str) -> list[str]:
  """Splits plain text into paragraphs.

  When the text has blank lines, paragraphs are separated by them (and hard
  line wraps inside a paragraph are joined); otherwise every line is a
  paragraph (the layout of the seed stories).
  """
  text = text.replace("\r\n", "\n").replace("\r", "\n")
  if re.search(r"\n[ \t]*\n", text):
    chunks = re.split(r"\n[ \t]*\n", text)
  else:
    chunks = text.split("\n")
  return [c for c in (clean_text(c) for c in chunks) if c]


def looks_like_html(text: str) -> bool:
  return bool(re.search(r"<(?:p|div|br|body|html|h[1-6]|span|ul|li|section|article)\b[^>]*>", text, re.I))


_BLOCK_TAGS = frozenset(
    "p div h1 h2 h3 h4 h5 h6 li dt dd blockquote pre tr section article header footer br hl1 hl2 hl3 "
    "td th caption figcaption address".split())
_SKIP_TAGS = frozenset("script style head title media media-reference table nitf-table object iframe".split())


class _HTMLText(HTMLParser):
  """Collects the text of an HTML fragment, one paragraph per block element."""

  def __init__(self) -> None:
    super().__init__(convert_charrefs=True)
    self.paragraphs: list[str] = []
    self._buf: list[str] = []
    self._skip = 0

  def _flush(self) -> None:
    if self._buf:
      self.paragraphs.append("".join(self._buf))
      self._buf = []

  def handle_starttag(self, tag: str, attrs: Any) -> None:
    if tag in _SKIP_TAGS:
      self._skip += 1
    elif tag in _BLOCK_TAGS:
      self._flush()

  def handle_startendtag(self, tag: str, attrs: Any) -> None:
    if tag in _BLOCK_TAGS:
      self._flush()

  def handle_endtag(self, tag: str) -> None:
    if tag in _SKIP_TAGS:
      self._skip = max(0, self._skip - 1)
    elif tag in _BLOCK_TAGS:
      self._flush()

  def handle_data(self, data: str) -> None:
    if not self._skip:
      self._buf.append(data)


def html_paragraphs(markup: str) -> list[str]:
  """Paragraph texts of an HTML/XHTML fragment (no network, no entity expansion beyond HTML's)."""
  collector = _HTMLText()
  collector.feed(markup)
  collector.close()
  collector._flush()
  return [p for p in (clean_text(p) for p in collector.paragraphs) if p]


# --------------------------------------------------------------------------- XML helpers

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def parse_xml(data: bytes) -> Element:
  """Parses XML safely: entity declarations (billion laughs, external entities) are
  refused, and nothing is ever fetched. A bare ``<!DOCTYPE ... SYSTEM "...">``
  reference without an internal subset is tolerated (NITF files carry one) but
  never loaded."""
  return DET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)


def local(tag: object) -> str:
  """The local name of an element tag ("{ns}name" -> "name"); "" for comments/PIs."""
  if not isinstance(tag, str):
    return ""
  return tag.rsplit("}", 1)[-1]


def children(elem: Element, name: str) -> list[Element]:
  return [c for c in elem if local(c.tag) == name]


def child(elem: Element | None, *path: str) -> Element | None:
  """Follows a path of local names (first match at each step)."""
  node = elem
  for name in path:
    if node is None:
      return None
    node = next((c for c in node if local(c.tag) == name), None)
  return node


def descendants(elem: Element, name: str) -> Iterator[Element]:
  for node in elem.iter():
    if local(node.tag) == name:
      yield node


def itertext(elem: Element | None, skip: frozenset[str] = frozenset()) -> str:
  """All text under ``elem`` (excluding subtrees named in ``skip``), whitespace-collapsed."""
  if elem is None:
    return ""
  parts: list[str] = []

  def walk(node: Element) -> None:
    if node.text and isinstance(node.tag, str):
      parts.append(node.text)
    for c in node:
      if local(c.tag) not in skip and isinstance(c.tag, str):
        walk(c)
      if c.tail:
        parts.append(c.tail)

  walk(elem)
  return clean_text("".join(parts))


def element_paragraphs(elem: Element) -> list[str]:
  """Paragraphs of an XML body (NITF body.content, XHTML body...): one per block
  element (p, hl2, li, h1...), media and tables skipped; loose text is its own paragraph."""
  paragraphs: list[str] = []
  loose: list[str] = []

  def flush() -> None:
    if loose:
      paragraphs.append("".join(loose))
      loose.clear()

  def walk(node: Element) -> None:
    if node.text and node.text.strip():
      loose.append(node.text)
    for c in node:
      name = local(c.tag)
      if not name or name in _SKIP_TAGS or name in ("media-caption", "note", "body.end"):
        pass
      elif name in _BLOCK_TAGS or name in ("block",):
        flush()
        if name == "block":
          walk(c)
          flush()
        else:
          text = itertext(c, skip=frozenset({"media", "table", "nitf-table"}))
          if text:
            paragraphs.append(text)
      else:
        walk(c)
      if c.tail and c.tail.strip():
        loose.append(c.tail)

  walk(elem)
  flush()
  return [p for p in (clean_text(p) for p in paragraphs) if p]


# --------------------------------------------------------------------------- dates, versions


def parse_datetime(value: object) -> dt.datetime | None:
  """Parses a timestamp into an aware UTC datetime (naive times are taken as UTC).

  Accepts ISO 8601 (also the compact NITF form ``20020226T000000-0500``),
  RFC 2822, Reuters-21578's ``26-FEB-1987 15:01:01.79`` and epoch seconds or
  milliseconds. Anything unparseable gives None (the story keeps no time).
  """
  if value is None or isinstance(value, bool):
    return None
  try:
    if isinstance(value, (int, float)):
      seconds = float(value)
      if seconds > 1e11:
        seconds /= 1000.0
      when = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    else:
      text = clean_text(str(value))
      if not text or len(text) > 64:
        return None
      try:
        when = dateparser.isoparse(text)
      except (ValueError, OverflowError):
        with warnings.catch_warnings():
          warnings.simplefilter("ignore", dateparser.UnknownTimezoneWarning)
          when = dateparser.parse(text)
  except (ValueError, OverflowError, OSError, TypeError, dateparser.ParserError):
    return None
  if when.tzinfo is None:
    when = when.replace(tzinfo=dt.timezone.utc)
  try:
    return when.astimezone(dt.timezone.utc)
  except (ValueError, OverflowError):
    return None


def first_datetime(*values: object) -> dt.datetime | None:
  for value in values:
    when = parse_datetime(value)
    if when is not None:
      return when
  return None


def parse_version(value: object) -> int | None:
  """An input's version as a non-negative int32, else None."""
  if isinstance(value, bool) or value is None:
    return None
  try:
    version = int(str(value).strip())
  except (TypeError, ValueError):
    return None
  return version if 0 <= version < 2**31 else None


# --------------------------------------------------------------------------- datelines, bylines

# "WASHINGTON (Reuters) -", "GROSSETO, Italy (AP) --", "Tegucigalpa, Jan 2 (EFE).-", "OSLO (NTB):"
_DATELINE_RE = re.compile(
    r"^(?P<dateline>(?P<place>[^\W\d_][\w.'’&/ -]{0,40}?(?:,[ ]?[\w.'’&/ -]{1,40}?){0,3})"
    r"\s*\((?P<agency>[^\W\d_][\w.&'’ -]{0,30}?)\))\s*(?:\.?-{1,2}|\.?[—–]|:)\s*")
# "By NAME" and its equivalents in the agencies' other languages (de "Von", nb/sv "Av", da "Af", es "Por").
_BYLINE_RE = re.compile(r"^(?:by|von|av|af|por|par|door)\s+(?P<name>[^\W\d_].{0,120})$", re.I)


_PLACE_CONNECTORS = frozenset("am an der den de del della di do da la le les los las im upon on sur".split())


def _placeish(place: str) -> bool:
  """Whether the text before "(Agency)" reads as a place: upper case ("WASHINGTON"),
  a comma-separated place ("GROSSETO, Italy", "Tegucigalpa, Jan 2"), or a short
  capitalised name ("Berlin", "Frankfurt am Main") -- not a clause ("Shares of Apple")."""
  head = place.split(",", 1)[0].strip()
  letters = [c for c in head if c.isalpha()]
  if not letters:
    return False
  if all(c.isupper() for c in letters) or "," in place:
    return True
  words = head.split()
  return len(words) <= 4 and words[0][0].isupper() and all(
      w[0].isupper() or w.lower() in _PLACE_CONNECTORS for w in words)


def parse_dateline(paragraph: str) -> tuple[str, str, str] | None:
  """``(dateline, place, agency)`` from a lead like ``WASHINGTON (Reuters) - ...``, else None.

  The place is the part before the first comma ("GROSSETO, Italy" -> "GROSSETO").
  """
  match = _DATELINE_RE.match(paragraph)
  if not match or not _placeish(match.group("place")):
    return None
  dateline = clean_text(match.group("dateline"))
  place = clean_text(match.group("place").split(",", 1)[0])
  agency = clean_text(match.group("agency"))
  if not place or not agency:
    return None
  return dateline, place, agency


def clean_byline(text: str | None) -> str | None:
  """The author credit without a leading "By "."""
  text = clean_text(text)
  if not text:
    return None
  match = _BYLINE_RE.match(text)
  name = clean_text(match.group("name")) if match else text
  return name.rstrip(",;:/ ") or None


def is_byline(paragraph: str) -> bool:
  return bool(_BYLINE_RE.match(paragraph)) and len(paragraph) <= 120 and not paragraph.endswith(".")


def is_headline(paragraph: str) -> bool:
  """A first paragraph that reads like a headline: short, no dateline, no closing full stop."""
  if len(paragraph) > 200 or len(paragraph.split()) > 30:
    return False
  if parse_dateline(paragraph) or is_byline(paragraph):
    return False
  return not re.search(r"[.,;:\"”’)]$", paragraph)


def fill_dateline(fields: Fields) -> None:
  """Takes dateline/place/agency from the body's lead paragraph when it has one."""
  lead = fields.body.split("\n\n", 1)[0] if fields.body else ""
  parsed = parse_dateline(lead) if lead else None
  if parsed:
    fields.dateline, fields.dateline_place, fields.agency = parsed


# --------------------------------------------------------------------------- plain text


def plain_fields(text: str) -> Fields:
  """Plain-text story: optional headline line, optional ``By NAME`` line, then paragraphs.

  The dateline stays in the body as written; it is also parsed into fields.
  """
  paragraphs = text_paragraphs(text)
  headline = byline = None
  if len(paragraphs) > 1 and is_headline(paragraphs[0]):
    headline = paragraphs.pop(0)
  if len(paragraphs) > 1 and is_byline(paragraphs[0]):
    byline = clean_byline(paragraphs.pop(0))
  fields = Fields(body=join_paragraphs(paragraphs), headline=headline, byline=byline)
  fill_dateline(fields)
  return fields


# --------------------------------------------------------------------------- generic JSON

_JSON_KEYS = {
    "guid": ("guid", "id", "uri", "url", "story_id"),
    "headline": ("headline", "title", "hed"),
    "body": ("body", "text", "content", "body_text", "story", "article"),
    "published": ("published", "published_at", "publishedAt", "date", "pubdate", "datetime", "timestamp",
                  "created", "firstcreated"),
    "source": ("source", "provider", "feed"),
    "agency": ("agency",),
    "byline": ("byline", "author", "authors", "by"),
    "dateline": ("dateline",),
    "language": ("language", "lang", "locale"),
    "version": ("version",),
    "subjects": ("subjects", "topics", "tags", "keywords", "categories"),
    "places": ("places", "locations"),
}


def _pick(obj: dict, keys: Iterable[str]) -> Any:
  for key in keys:
    value = obj.get(key)
    if value not in (None, "", [], {}):
      return value
  return None


def _name_of(value: Any) -> str | None:
  """A display string from a str/number or a dict with name/literal/code/value."""
  if isinstance(value, str):
    return clean_opt(value)
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return str(value)
  if isinstance(value, dict):
    for key in ("name", "literal", "code", "qcode", "value", "uri"):
      found = _name_of(value.get(key))
      if found:
        return found
  return None


def _names(value: Any, limit: int = 200) -> list[str]:
  if value is None:
    return []
  items = value if isinstance(value, list) else [value]
  out: list[str] = []
  for item in items[:limit]:
    name = _name_of(item)
    if name and name not in out:
      out.append(name)
  return out


def _body_from_value(value: Any) -> str:
  if isinstance(value, list):
    return join_paragraphs(p for v in value for p in (_body_from_value(v).split("\n\n")))
  if isinstance(value, dict):
    value = value.get("value") or value.get("text") or ""
  if not isinstance(value, str):
    return ""
  if looks_like_html(value):
    return join_paragraphs(html_paragraphs(value))
  return join_paragraphs(text_paragraphs(value))


def json_fields(obj: dict) -> Fields:
  """Generic JSON story (see the field mapping in :mod:`transforms.parse`)."""
  k = _JSON_KEYS
  byline_value = _pick(obj, k["byline"])
  fields = Fields(
      body=_body_from_value(_pick(obj, k["body"])),
      headline=clean_opt(_name_of(_pick(obj, k["headline"]))),
      byline=clean_byline(", ".join(_names(byline_value))) if byline_value else None,
      source=_name_of(_pick(obj, k["source"])),
      agency=_name_of(_pick(obj, k["agency"])),
      guid=_name_of(_pick(obj, k["guid"])),
      language=_name_of(_pick(obj, k["language"])),
      published_at=parse_datetime(_pick(obj, k["published"])),
      version=parse_version(_pick(obj, k["version"])),
      source_subjects=_names(_pick(obj, k["subjects"])),
      places=_names(_pick(obj, k["places"])),
  )
  fields.scope = fields.source
  dateline = _name_of(_pick(obj, k["dateline"]))
  fill_dateline(fields)
  if dateline:
    fields.dateline = dateline
    if not fields.dateline_place:
      parsed = parse_dateline(dateline + " -")
      fields.dateline_place = parsed[1] if parsed else clean_text(dateline.split(",", 1)[0])
  return fields


# --------------------------------------------------------------------------- ninjs

#: Keys that only ninjs uses (any one of them marks an object as ninjs).
NINJS_MARKERS = frozenset({
    "headlines", "bodies", "body_text", "body_xhtml", "body_html5", "versioncreated", "versionCreated",
    "firstcreated", "firstCreated", "descriptions", "description_text", "pubstatus", "pubStatus",
})
_MEDIA_TYPES = frozenset({"picture", "video", "audio", "graphic"})
_CAPTION_ROLES = (None, "", "text", "caption", "summary", "lead", "abstract", "description")


def is_ninjs(obj: dict) -> bool:
  standard = obj.get("standard")
  if isinstance(standard, dict) and "ninjs" in str(standard.get("name", "")).lower():
    return True
  if "ninjs" in str(obj.get("$schema", "")).lower():
    return True
  return any(key in obj for key in NINJS_MARKERS)


def ninjs_version(obj: dict) -> int:
  """The major ninjs version: declared (``standard.version``, ``$schema``), else by shape."""
  standard = obj.get("standard")
  declared = None
  if isinstance(standard, dict) and standard.get("version") is not None:
    declared = str(standard.get("version"))
  elif isinstance(obj.get("$schema"), str):
    match = re.search(r"ninjs-schema_(\d+)", obj["$schema"])
    declared = match.group(1) if match else None
  if declared:
    match = re.match(r"\s*(\d+)", declared)
    if match and match.group(1) in ("1", "2", "3"):
      return int(match.group(1))
  if any(key in obj for key in ("versionCreated", "firstCreated", "contentCreated", "copyrightHolder",
                                "infoSources", "title")):
    return 3
  if any(key in obj for key in ("headlines", "bodies", "descriptions", "subjects", "by")):
    return 2
  return 1


def _ninjs_text(entries: Any, content_type_key: str, roles: tuple = ()) -> str:
  """Body text from a ninjs 2.x/3.x ``bodies``/``descriptions`` list.

  Preference: plain text, then (X)HTML, then NITF. With ``roles``, only
  entries with one of those roles are considered.
  """
  if not isinstance(entries, list):
    return ""
  plain, markup, nitf = [], [], []
  for entry in entries:
    if not isinstance(entry, dict) or not isinstance(entry.get("value"), str):
      continue
    role = entry.get("role")
    if roles and role not in roles:
      continue
    ctype = str(entry.get(content_type_key) or entry.get("contenttype") or entry.get("contentType") or "").lower()
    value = entry["value"]
    if "nitf" in ctype or role == "nitf":
      nitf.append(value)
    elif "html" in ctype or role in ("xhtml", "html", "html5") or (not ctype and looks_like_html(value)):
      markup.append(value)
    else:
      plain.append(value)
  for value in plain:
    body = join_paragraphs(text_paragraphs(value))
    if body:
      return body
  for value in markup:
    body = join_paragraphs(html_paragraphs(value))
    if body:
      return body
  for value in nitf:
    body = nitf_fields(parse_xml(value.encode("utf-8"))).body
    if body:
      return body
  return ""


_MEDTOP_URI_RE = re.compile(r"newscodes/mediatopic/(\d{8})")


def _subject_codes(value: Any) -> list[str]:
  """ninjs subjects as codes: ``medtop:NNNNNNNN`` for IPTC Media Topic URIs, else the name."""
  out: list[str] = []
  for item in (value if isinstance(value, list) else [value] if value else [])[:200]:
    code = None
    if isinstance(item, dict):
      match = _MEDTOP_URI_RE.search(str(item.get("uri") or ""))
      if match:
        code = f"medtop:{match.group(1)}"
      elif isinstance(item.get("code"), str) and isinstance(item.get("scheme"), str):
        code = item["code"]
    code = code or _name_of(item)
    if code and code not in out:
      out.append(code)
  return out


def _ninjs_headline(obj: dict) -> str | None:
  headlines = obj.get("headlines")
  if isinstance(headlines, list):
    entries = [h for h in headlines if isinstance(h, dict) and isinstance(h.get("value"), str)]
    main = [h for h in entries if h.get("role") in ("main", None)]
    for entry in main + entries:
      text = clean_opt(entry["value"])
      if text:
        return text
  for key in ("headline", "title"):
    if isinstance(obj.get(key), str) and clean_opt(obj[key]):
      return clean_opt(obj[key])
  return None


def ninjs_fields(obj: dict) -> Fields:
  """ninjs 1.x, 2.x or 3.x, branching on the declared version (else on shape).

  * 1.x: ``headline``, ``body_text``/``body_xhtml``/``body_html5``, ``description_text``,
    ``byline``, ``versioncreated``/``firstcreated``, ``subject[]``, ``place[]``, ``located``.
  * 2.x: ``headlines[]``, ``bodies[]``/``descriptions[]`` (``contenttype``), ``by``,
    ``versioncreated``/``firstcreated``/``contentcreated``, ``subjects[]``, ``places[]``,
    ``copyrightholder``.
  * 3.x: as 2.x with camelCase names (``versionCreated``, ``contentType``,
    ``copyrightHolder``, ``infoSources[]``) and a ``title``.
  """
  version = ninjs_version(obj)
  kind = str(obj.get("type") or "").lower()
  fields = Fields(guid=_name_of(obj.get("uri") or obj.get("guid")), language=_name_of(obj.get("language")),
                  version=parse_version(obj.get("version")), headline=_ninjs_headline(obj),
                  dateline_place=clean_opt(obj.get("located")) if isinstance(obj.get("located"), str) else None,
                  media_type=kind if kind in _MEDIA_TYPES else None,
                  pub_status=_name_of(obj.get("pubstatus") or obj.get("pubStatus")))
  if version == 1:
    body = ""
    for key, is_markup in (("body_text", False), ("body_xhtml", True), ("body_html5", True)):
      value = obj.get(key)
      if isinstance(value, str):
        body = join_paragraphs(html_paragraphs(value) if is_markup else text_paragraphs(value))
        if body:
          break
    if not body and isinstance(obj.get("description_text"), str):
      body = join_paragraphs(text_paragraphs(obj["description_text"]))
    fields.body = body
    fields.byline = clean_byline(obj.get("byline")) if isinstance(obj.get("byline"), str) else None
    fields.published_at = first_datetime(obj.get("versioncreated"), obj.get("firstcreated"))
    fields.source_subjects = _subject_codes(obj.get("subject"))
    fields.places = _names(obj.get("place"))
    fields.source = _name_of(obj.get("copyrightholder"))
  else:
    camel = version >= 3
    ctype_key = "contentType" if camel else "contenttype"
    body = _ninjs_text(obj.get("bodies"), ctype_key)
    if not body:
      body = _ninjs_text(obj.get("descriptions"), ctype_key, roles=_CAPTION_ROLES)
    fields.body = body
    fields.byline = clean_byline(obj.get("by")) if isinstance(obj.get("by"), str) else None
    names = ("versionCreated", "firstCreated", "contentCreated") if camel else (
        "versioncreated", "firstcreated", "contentcreated")
    fields.published_at = first_datetime(*(obj.get(n) for n in names),
                                         *(obj.get(n.lower()) for n in names))
    fields.source_subjects = _subject_codes(obj.get("subjects"))
    fields.places = _names(obj.get("places"))
    holder = obj.get("copyrightHolder") if camel else obj.get("copyrightholder")
    fields.source = _name_of(holder or obj.get("copyrightholder") or obj.get("copyrightHolder"))
    sources = obj.get("infoSources") or obj.get("infosources")
    if not fields.source and isinstance(sources, list) and sources:
      fields.source = _name_of(sources[0])
  fields.scope = fields.source
  if fields.dateline_place and fields.dateline_place not in fields.places:
    fields.places.append(fields.dateline_place)
  located = fields.dateline_place
  fill_dateline(fields)
  if not fields.dateline and located:
    fields.dateline = located
    fields.dateline_place = clean_opt(located.split(",", 1)[0])
  return fields


# --------------------------------------------------------------------------- NITF


def nitf_fields(root: Element) -> Fields:
  """NITF 3.x: head/title, docdata (doc-id -> guid and source, date.issue, du-key
  -> version, evloc -> places), tobject.subject refnums -> source_subjects
  (``subj:`` for IPTC codes), pubdata, body.head (hedline/hl1, byline without
  byttl, distributor, dateline), body.content paragraphs (p, hl2, li...; media
  and tables skipped; the abstract when there is no body). published_at is
  pubdata@date.publication, else date.issue, else date.release. Language:
  @baselang, else xml:lang."""
  head = child(root, "head")
  docdata = child(head, "docdata")
  body = child(root, "body")
  body_head = child(body, "body.head")
  content = child(body, "body.content")
  fields = Fields()
  fields.body = join_paragraphs(element_paragraphs(content)) if content is not None else ""
  if not fields.body and body_head is not None:
    fields.body = join_paragraphs(element_paragraphs(child(body_head, "abstract") or Element("x")))
  fields.headline = clean_opt(itertext(child(body_head, "hedline", "hl1"))) or clean_opt(
      itertext(child(head, "title")))
  byline = child(body_head, "byline")
  if byline is not None:
    fields.byline = clean_byline(itertext(byline, skip=frozenset({"byttl"}))) or clean_opt(
        itertext(byline))
  distributor = clean_opt(itertext(child(body_head, "distributor")))
  doc_id = child(docdata, "doc-id")
  if doc_id is not None:
    fields.guid = clean_opt(doc_id.get("id-string"))
    fields.source = clean_opt(doc_id.get("regsrc"))
  fields.source = fields.source or distributor
  fields.scope = fields.source
  pubdata = child(head, "pubdata")
  fields.published_at = first_datetime(
      pubdata.get("date.publication") if pubdata is not None else None,
      child(docdata, "date.issue").get("norm") if child(docdata, "date.issue") is not None else None,
      child(docdata, "date.release").get("norm") if child(docdata, "date.release") is not None else None)
  if docdata is not None:
    fields.pub_status = clean_opt(docdata.get("management-status"))
  du_key = child(docdata, "du-key")
  if du_key is not None:
    fields.version = parse_version(du_key.get("version"))
  fields.language = root.get("baselang") or root.get(XML_LANG) or (
      body.get(XML_LANG) if body is not None else None)
  if not fields.language and content is not None:
    fields.language = next((p.get(XML_LANG) for p in content.iter() if p.get(XML_LANG)), None)
  tobject = child(head, "tobject")
  if tobject is not None:
    for subj in children(tobject, "tobject.subject"):
      code = clean_opt(subj.get("tobject.subject.refnum"))
      if code and re.fullmatch(r"\d{8}", code) and subj.get("tobject.subject.ipr", "IPTC").upper() == "IPTC":
        code = f"subj:{code}"
      if code and code not in fields.source_subjects:
        fields.source_subjects.append(code)
  if docdata is not None:
    for evloc in children(docdata, "evloc"):
      for attr in ("city", "county-dist", "state-prov", "iso-cc"):
        value = clean_opt(evloc.get(attr))
        if value and value not in fields.places:
          fields.places.append(value)
  dateline = child(body_head, "dateline")
  if dateline is not None:
    location = child(dateline, "location")
    written = itertext(dateline, skip=frozenset({"story.date"}))
    if written:
      fields.dateline = written
      fields.dateline_place = clean_opt(itertext(child(location, "city"))) or clean_opt(
          written.split(",", 1)[0])
  fill_dateline(fields)
  if not fields.agency and distributor:
    fields.agency = distributor
  return fields


# --------------------------------------------------------------------------- NewsML-G2

NEWSML_ITEMS = frozenset({"newsItem", "packageItem", "conceptItem", "knowledgeItem", "planningItem",
                          "catalogItem"})


def _qcode_name(elem: Element | None) -> str | None:
  if elem is None:
    return None
  name = clean_opt(itertext(child(elem, "name")))
  if name:
    return name
  qcode = elem.get("qcode") or elem.get("literal") or ""
  if qcode:
    return qcode.split(":", 1)[-1] or None
  uri = elem.get("uri") or ""
  match = re.match(r"https?://([^/]+)", uri)
  return match.group(1) if match else (uri or None)


def _inline_body(content_set: Element | None) -> str:
  """Body text from a contentSet: inlineXML (NITF or XHTML) or inlineData (text)."""
  if content_set is None:
    return ""
  for part in content_set:
    name = local(part.tag)
    ctype = (part.get("contenttype") or "").lower()
    if name == "inlineXML":
      for doc in part:
        doc_name = local(doc.tag)
        if doc_name == "nitf":
          body = nitf_fields(doc).body
        elif doc_name in ("html", "body", "div", "article", "section", "p") or "html" in ctype:
          body = join_paragraphs(element_paragraphs(doc))
        else:
          body = ""
        if body:
          return body
    elif name == "inlineData":
      text = part.text or ""
      if "html" in ctype:
        body = join_paragraphs(html_paragraphs(text))
      elif ctype.startswith("text/") or not ctype:
        body = join_paragraphs(text_paragraphs(text))
      else:
        body = ""
      if body:
        return body
  return ""


def _inline_nitf(content_set: Element | None) -> Element | None:
  if content_set is None:
    return None
  for part in children(content_set, "inlineXML"):
    for doc in part:
      if local(doc.tag) == "nitf":
        return doc
  return None


def newsml_fields(item: Element) -> Fields:
  """One NewsML-G2 newsItem (or a contentSet/contentMeta fragment).

  guid/version attributes; itemMeta (itemClass, provider, versionCreated,
  firstCreated); contentMeta (headline, by/creator, dateline, located,
  language, subject, infoSource, description); contentSet (inlineXML NITF or
  XHTML, inlineData text). Picture/video/audio/graphic items need a caption
  (description) to count as a story. published_at is versionCreated, else
  firstCreated, contentModified, contentCreated. A text item without body
  text falls back to its description(s).
  """
  name = local(item.tag)
  if name in NEWSML_ITEMS and name != "newsItem":
    raise NotAStory(f"{name} carries no story text (NewsML-G2 {name}s are not news stories)")
  if name == "contentMeta":
    meta, item_meta, content_set = item, None, None
  elif name == "contentSet":
    meta, item_meta, content_set = None, None, item
  else:
    meta, item_meta, content_set = child(item, "contentMeta"), child(item, "itemMeta"), child(item, "contentSet")
  item_class = (child(item_meta, "itemClass").get("qcode") or "") if child(item_meta, "itemClass") is not None else ""
  kind = item_class.split(":", 1)[-1].lower()
  fields = Fields(guid=clean_opt(item.get("guid")), version=parse_version(item.get("version")),
                  media_type=kind if kind in _MEDIA_TYPES else None)
  if kind in ("composite",) and not _inline_body(content_set):
    raise NoTextContent(f"newsItem of class {item_class} has no text content")
  fields.body = _inline_body(content_set)
  nitf = _inline_nitf(content_set)
  nitf_meta = nitf_fields(nitf) if nitf is not None else None
  if meta is not None:
    fields.headline = clean_opt(itertext(child(meta, "headline")))
    descriptions = children(meta, "description")
    if not fields.body and descriptions:
      fields.body = join_paragraphs(itertext(d) for d in descriptions)
    language = child(meta, "language")
    fields.language = language.get("tag") if language is not None else None
    by = child(meta, "by")
    creator = child(meta, "creator")
    fields.byline = clean_byline(itertext(by)) if by is not None else None
    if not fields.byline and nitf_meta is not None:
      fields.byline = nitf_meta.byline
    if not fields.byline and creator is not None:
      fields.byline = clean_opt(itertext(child(creator, "name")))
    dateline = clean_opt(itertext(child(meta, "dateline")))
    located = child(meta, "located")
    place = _qcode_name(located)
    if place:
      fields.places.append(place)
    if dateline:
      fields.dateline = dateline
      parsed = parse_dateline(dateline + " -")
      fields.dateline_place = parsed[1] if parsed else (place or clean_text(dateline.split(",", 1)[0]))
      if parsed:
        fields.agency = parsed[2]
    elif place:
      fields.dateline_place = place
    for subj in children(meta, "subject"):
      code = subj.get("qcode") or subj.get("uri")
      if code and code not in fields.source_subjects:
        fields.source_subjects.append(code)
    info_source = child(meta, "infoSource")
    if info_source is not None and not fields.agency:
      fields.agency = clean_opt(itertext(child(info_source, "name")))
    fields.published_at = first_datetime(
        itertext(child(item_meta, "versionCreated")), itertext(child(item_meta, "firstCreated")),
        itertext(child(meta, "contentModified")), itertext(child(meta, "contentCreated")))
  if item_meta is not None:
    status = child(item_meta, "pubStatus")
    fields.pub_status = clean_opt(status.get("qcode") or status.get("uri")) if status is not None else None
    provider = child(item_meta, "provider")
    fields.source = _qcode_name(provider)
    if fields.published_at is None:
      fields.published_at = first_datetime(itertext(child(item_meta, "versionCreated")),
                                           itertext(child(item_meta, "firstCreated")))
  if nitf_meta is not None:
    fields.headline = fields.headline or nitf_meta.headline
    fields.language = fields.language or nitf_meta.language
    if not fields.dateline:
      fields.dateline, fields.dateline_place = nitf_meta.dateline, nitf_meta.dateline_place
  fields.language = fields.language or item.get(XML_LANG)
  fields.scope = fields.source
  lead_dateline = fields.dateline
  fill_dateline(fields)
  if lead_dateline and fields.dateline != lead_dateline and fields.dateline_place is None:
    fields.dateline = lead_dateline
  return fields


# --------------------------------------------------------------------------- Reuters-21578 SGML

_SGML_TAG_RE = {name: re.compile(rf"<{name}\b[^>]*>(.*?)</{name}>", re.S | re.I)
                for name in ("DATE", "TOPICS", "PLACES", "TITLE", "DATELINE", "BODY", "TEXT")}
_SGML_D_RE = re.compile(r"<D>(.*?)</D>", re.S | re.I)
_SGML_ANY_TAG_RE = re.compile(r"<[^>]{0,200}>")
_REUTERS_DATE_RE = re.compile(r"\d{1,2}-[A-Za-z]{3}-\d{4}\s+\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?")
_REUTER_SIGNOFF_RE = re.compile(r"(?:^|\s)REUTE?R$", re.I)
_REUTERS_PARA_RE = re.compile(r"\n(?=[ \t]+\S)|\n[ \t]*\n")


def sgml_unescape(text: str) -> str:
  """Resolves SGML character references (``&lt;``, ``&#3;``...) and drops control characters."""
  return _CONTROL_RE.sub("", html.unescape(text).replace("\r", ""))


def reuters_paragraphs(text: str) -> list[str]:
  """Reuters-21578 bodies are hard-wrapped; an indented line starts a new paragraph."""
  text = sgml_unescape(text).rstrip()
  tail = _REUTER_SIGNOFF_RE.search(text[-40:])
  if tail:
    text = text[: len(text) - 40 + tail.start()] if len(text) > 40 else text[: tail.start()]
  chunks = _REUTERS_PARA_RE.split(text)
  return [c for c in (clean_text(c) for c in chunks) if c]


def reuters_fields(element: str, attrs: dict[str, str]) -> Fields:
  """One ``<REUTERS>`` element (latin-1 text): NEWID -> guid, DATE -> published_at,
  TOPICS -> source_subjects, PLACES -> places, TITLE -> headline, DATELINE ->
  dateline/dateline_place, BODY -> body (hard wraps joined, indented lines start
  paragraphs, the closing "Reuter" and control characters dropped). UNPROC
  texts become the body as they are; BRIEFs (a TITLE only) are headline-only
  stories. Source and agency are Reuters; the language is English."""

  def tag(name: str, source: str = element) -> str | None:
    match = _SGML_TAG_RE[name].search(source)
    return match.group(1) if match else None

  text = tag("TEXT") or ""
  # Reuters-21578 is an English-language collection (its README says so): the format declares "en".
  fields = Fields(guid=attrs.get("NEWID") or None, source="Reuters", agency="Reuters", scope="reuters-21578",
                  language="en")
  title, dateline, body = tag("TITLE", text), tag("DATELINE", text), tag("BODY", text)
  fields.headline = clean_opt(sgml_unescape(title)) if title else None
  if body is not None:
    fields.body = join_paragraphs(reuters_paragraphs(body))
  elif attrs.get("TYPE", "").upper() == "UNPROC" or (title is None and dateline is None):
    fields.body = join_paragraphs(reuters_paragraphs(_SGML_ANY_TAG_RE.sub(" ", text)))
  if dateline:
    written = clean_text(sgml_unescape(dateline)).rstrip(" -").strip()
    if written:
      fields.dateline = written
      fields.dateline_place = clean_opt(written.split(",", 1)[0])
  date = tag("DATE")
  if date:
    stamp = _REUTERS_DATE_RE.search(date)
    fields.published_at = None
    if stamp:
      try:
        fields.published_at = dt.datetime.strptime(" ".join(stamp.group(0).split()), "%d-%b-%Y %H:%M:%S.%f").replace(
            tzinfo=dt.timezone.utc)
      except ValueError:
        pass
    if fields.published_at is None:
      fields.published_at = parse_datetime(stamp.group(0) if stamp else sgml_unescape(date))
  fields.source_subjects = [clean_text(sgml_unescape(d)) for d in _SGML_D_RE.findall(tag("TOPICS") or "")]
  fields.places = [clean_text(sgml_unescape(d)) for d in _SGML_D_RE.findall(tag("PLACES") or "")]
  return fields
