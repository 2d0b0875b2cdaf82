"""Parse stage: raw bytes -> :class:`~schemas.records.Story` records (or dead letters).

One :class:`~schemas.records.RawRecord` (a file, or a Pub/Sub message) may hold
many stories. :func:`parse_record` splits it into story-level sub-records and
turns each into exactly one ``Story`` or exactly one ``DeadLetter`` (stage
``parse``), so the ledger balances: every story-level record lands in exactly
one of the ``events`` or ``errors`` tables. A record that cannot even be split
(empty, undecodable, broken or hostile XML, JSON of the wrong shape, a
container with no records in it, a gzip member over the size limit) yields a
single dead letter. :func:`parse_record` never raises.

Formats (detected from the content; ``RawRecord.format_hint`` overrides), with
what one story is and its locator:

* ``plain``: the whole file or message (locator ``""``).
* ``json``: a top-level object (``""``); or each element of a top-level array, or
  of an ``items``/``stories``/``articles``/``data`` array (``record:N``).
* ``jsonl``: each non-blank line of JSON Lines / NDJSON (``line:N``). UTF-8 is decoded line by line:
  a line that does not decode is a dead letter of its own (``UnicodeDecodeError``, its bytes kept).
* ``ninjs``: a JSON object shaped like IPTC ninjs, in any of the JSON containers above.
* ``nitf``: a ``<nitf>`` document (``""``).
* ``newsml``: a NewsML-G2 ``<newsItem>`` (``""``), or each item of a ``<newsMessage>``
  (``item:N``).
* ``reuters-sgml``: each ``<REUTERS>`` element of a Reuters-21578 file, read as latin-1
  (``newid:N``, or ``record:N`` without a NEWID).

Numbers in locators count from 1. Gzip (any of the above, detected by its magic
bytes) is decompressed first and keeps the inner locator. When the raw record
has a locator of its own (``msg:<id>`` for Pub/Sub), it prefixes the inner one
(``msg:42/line:3``).

Plain text: paragraphs are lines (or blank-line separated blocks when the text
has blank lines). An optional first-line headline (short, no closing full stop,
not a dateline) and an optional ``By NAME`` line are taken out of the body. A
lead such as ``WASHINGTON (Reuters) - `` stays in the body as written and is
parsed into ``dateline`` ("WASHINGTON (Reuters)"), ``dateline_place``
("WASHINGTON") and ``agency`` ("Reuters"); the same lead parsing applies to
every format's first paragraph.

Generic JSON field mapping (first non-empty key wins):

* ``guid``: ``guid``, ``id``, ``uri``, ``url``, ``story_id``
* ``headline``: ``headline``, ``title``, ``hed``
* ``body``: ``body``, ``text``, ``content``, ``body_text``, ``story``, ``article`` (a string,
  HTML, or a list of paragraph strings)
* ``published_at``: ``published``, ``published_at``, ``publishedAt``, ``date``, ``pubdate``,
  ``datetime``, ``timestamp``, ``created``, ``firstcreated`` (ISO 8601, RFC 2822 or epoch s/ms)
* ``source``: ``source``, ``provider``, ``feed`` (a string or ``{"name": ...}``); ``agency``: ``agency``
* ``byline``: ``byline``, ``author``, ``authors``, ``by``; ``dateline``: ``dateline``
* ``language``: ``language``, ``lang``, ``locale``; ``version``: ``version``
* ``source_subjects``: ``subjects``, ``topics``, ``tags``, ``keywords``, ``categories``;
  ``places``: ``places``, ``locations``

ninjs (1.x, 2.x, 3.x), NITF, NewsML-G2 and Reuters SGML mappings are documented
on their extractors in :mod:`transforms.formats`. NewsML-G2 concept, knowledge,
package and planning items, and picture/video/audio/graphic items without a
caption, are not stories: each becomes a dead letter (``NotAStory`` or
``NoTextContent``) so that every item is accounted for. Text items with a
headline but no body (flashes, briefs) are stories with an empty body.

Every story gets: ``story_id`` = the first 32 hex digits of sha256 of
``"{scope}|{guid}"`` when the input names a guid/uri (``scope`` is the provider
or source named by the input, else the format family), else of the
case-folded, whitespace-collapsed headline and body; ``version`` from the input
(else 1); lineage (``input_uri``, ``locator``, ``raw_sha256`` of the
sub-record's own bytes); ``ingested_at`` = ``RawRecord.received_at`` or now.
The body is NFC-normalised text without markup, paragraphs joined by a blank
line; entity offsets computed later index into exactly this string. Times are
UTC (naive input times are taken as UTC). ``language`` comes from the input's
metadata when it names one (``language_source="metadata"``, normalised by
:func:`transforms.language.normalize_language`), else from py3langid
(``"detected"``), else None.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import io
import json
import re
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.records import DeadLetter, RawRecord, Story
from transforms import formats as F
from transforms.language import detect_language, normalize_language
from transforms.revision import normalize_pub_status, revision_of

DEFAULT_MAX_STORY_BYTES = 5_000_000
#: A decompressed gzip record may hold at most this many times the story cap.
RECORD_CAP_FACTOR = 20
STAGE = "parse"
METRICS_NAMESPACE = "wirestream.parse"
ERRORS_TAG = "errors"

FORMATS = ("plain", "json", "jsonl", "ninjs", "nitf", "newsml", "reuters-sgml")
_HINTS = {
    "plain": "plain", "text": "plain", "txt": "plain", "text/plain": "plain",
    "json": "json", "application/json": "json", "jsonl": "jsonl", "ndjson": "jsonl",
    "ninjs": "ninjs", "nitf": "nitf", "newsml": "newsml", "newsml-g2": "newsml", "newsmlg2": "newsml",
    "reuters-sgml": "reuters-sgml", "reuters": "reuters-sgml", "sgml": "reuters-sgml", "sgm": "reuters-sgml",
}
_JSON_CONTAINER_KEYS = ("items", "stories", "articles", "data")
_MAX_GZIP_DEPTH = 2


@dataclasses.dataclass
class _Sub:
  """One story-level sub-record, before extraction."""

  locator: str
  raw: bytes
  fmt: str
  extract: Callable[[], F.Fields] | None = None
  error: BaseException | None = None


# --------------------------------------------------------------------------- public API


def parse_record(raw: RawRecord, *, max_story_bytes: int = DEFAULT_MAX_STORY_BYTES,
                 now: dt.datetime | None = None) -> Iterator[Story | DeadLetter]:
  """Yields one Story or one DeadLetter per story-level sub-record of ``raw``; never raises.

  Always yields at least one element.
  """
  now = _utc(now) or dt.datetime.now(dt.timezone.utc)
  if isinstance(raw.data, str):
    data = raw.data.encode("utf-8", "surrogatepass")
  else:
    data = bytes(raw.data or b"")
  try:
    subs = _split(data, _hint(raw.format_hint), max_story_bytes, uri=raw.uri or "")
    if not subs:
      raise F.EmptyRecord("the record holds no story records")
  except Exception as error:  # noqa: BLE001 - every failure becomes a dead letter
    yield _dead(raw, data, raw.locator or "", error, now)
    return
  for sub in subs:
    locator = _join_locator(raw.locator or "", sub.locator)
    try:
      story = _build(sub, raw, locator, max_story_bytes, now)
    except Exception as error:  # noqa: BLE001
      yield _dead(raw, sub.raw, locator, error, now)
    else:
      yield story


@beam.typehints.with_input_types(RawRecord)
class ParseStoriesFn(beam.DoFn):
  """Parses RawRecords; Stories go to the main output, DeadLetters to ``errors``.

  Outputs inherit the input element's timestamp and window (nothing re-windows).
  """

  def __init__(self, max_story_bytes: int = DEFAULT_MAX_STORY_BYTES):
    super().__init__()
    self._max_story_bytes = max_story_bytes
    self._records = Metrics.counter(METRICS_NAMESPACE, "records_read")
    self._bytes = Metrics.counter(METRICS_NAMESPACE, "bytes_read")
    self._stories = Metrics.counter(METRICS_NAMESPACE, "stories_parsed")
    self._errors = Metrics.counter(METRICS_NAMESPACE, "parse_errors")

  def process(self, raw: RawRecord) -> Iterator[Story | beam.pvalue.TaggedOutput]:
    self._records.inc()
    self._bytes.inc(len(raw.data or b""))
    for out in parse_record(raw, max_story_bytes=self._max_story_bytes):
      if isinstance(out, Story):
        self._stories.inc()
        Metrics.counter(METRICS_NAMESPACE, f"stories_{out.source_format}").inc()
        yield out
      else:
        self._errors.inc()
        Metrics.counter(METRICS_NAMESPACE, f"parse_errors_{out.error_type}").inc()
        yield beam.pvalue.TaggedOutput(ERRORS_TAG, out)


class ParseStories(beam.PTransform):
  """PCollection[RawRecord] -> (PCollection[Story], PCollection[DeadLetter]).

  Usage::

    stories, errors = raw_records | ParseStories(max_story_bytes=5_000_000)

  Counters (namespace ``wirestream.parse``): ``records_read``, ``bytes_read``,
  ``stories_parsed``, ``parse_errors``, ``stories_<source_format>`` and
  ``parse_errors_<error_type>``.
  """

  def __init__(self, max_story_bytes: int = DEFAULT_MAX_STORY_BYTES, label: str | None = None):
    super().__init__(label)
    self._max_story_bytes = max_story_bytes

  def expand(self, records):
    results = records | "ParseRecords" >> beam.ParDo(
        ParseStoriesFn(self._max_story_bytes)).with_outputs(ERRORS_TAG, main="stories")
    return results.stories, results[ERRORS_TAG]


# --------------------------------------------------------------------------- helpers


def _utc(when: dt.datetime | None) -> dt.datetime | None:
  if when is None:
    return None
  if when.tzinfo is None:
    return when.replace(tzinfo=dt.timezone.utc)
  return when.astimezone(dt.timezone.utc)


def _hint(hint: str | None) -> str | None:
  if not hint:
    return None
  return _HINTS.get(str(hint).strip().lower())


def _join_locator(outer: str, inner: str) -> str:
  if outer and inner:
    return f"{outer}/{inner}"
  return outer or inner


def _dead(raw: RawRecord, data: bytes, locator: str, error: BaseException, now: dt.datetime) -> DeadLetter:
  return DeadLetter.from_raw(data, uri=raw.uri or "", locator=locator, stage=STAGE, error=error,
                             message_id=raw.message_id, attributes=raw.attributes, now=now)


def _hash32(text: str) -> str:
  return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _normalized(text: str | None) -> str:
  return F.clean_text(text).casefold()


def story_id_for(scope: str, guid: str | None, headline: str | None, body: str) -> str:
  """The deterministic story id: from the scoped guid, else from the normalised content."""
  if guid:
    return _hash32(f"{scope.strip().lower()}|{guid.strip()}")
  return _hash32(f"content|{_normalized(headline)}\n{_normalized(body)}")


def _family(fmt: str) -> str:
  return "json" if fmt in ("json", "jsonl") else fmt


def _build(sub: _Sub, raw: RawRecord, locator: str, max_story_bytes: int, now: dt.datetime) -> Story:
  if sub.error is not None:
    raise sub.error
  if len(sub.raw) > max_story_bytes:
    raise F.StoryTooLarge(f"story of {len(sub.raw)} bytes exceeds the cap of {max_story_bytes} bytes")
  assert sub.extract is not None
  fields = sub.extract()
  body = fields.body or ""
  headline = F.clean_opt(fields.headline)
  if fields.media_type and not body:
    raise F.NoTextContent(f"{fields.media_type} item without a caption or text")
  if not body and not headline:
    raise F.NoTextContent("no headline and no body text")
  if not any(ch.isalpha() for ch in headline or "") and not any(ch.isalpha() for ch in body):
    raise F.NoTextContent("the text has no letters (numbers or punctuation only)")
  language = normalize_language(fields.language)
  language_source: str | None = "metadata" if language else None
  if language is None:
    language, _ = detect_language("\n".join(t for t in (headline, body) if t))
    language_source = "detected" if language else None
  guid = F.clean_opt(fields.guid)
  scope = F.clean_opt(fields.scope) or _family(sub.fmt)
  pub_status = normalize_pub_status(fields.pub_status)
  story = Story(
      story_id=story_id_for(scope, guid, headline, body),
      version=fields.version if fields.version is not None else 1,
      body=body,
      source_format=sub.fmt,
      input_uri=raw.uri or "",
      locator=locator,
      raw_sha256=hashlib.sha256(sub.raw).hexdigest(),
      ingested_at=_utc(raw.received_at) or now,
      headline=headline,
      byline=F.clean_opt(fields.byline),
      dateline=F.clean_opt(fields.dateline),
      dateline_place=F.clean_opt(fields.dateline_place),
      agency=F.clean_opt(fields.agency),
      source=F.clean_opt(fields.source),
      guid=guid,
      language=language,
      language_source=language_source,
      published_at=fields.published_at,
      source_subjects=[s for s in (F.clean_text(x) for x in fields.source_subjects) if s],
      places=[p for p in (F.clean_text(x) for x in fields.places) if p],
      message_id=raw.message_id,
      pub_status=pub_status,
      revision=revision_of(headline, body, pub_status),
  )
  _check_unicode(story)
  return story


class InvalidText(F.ParseProblem):
  """A text field is not valid Unicode (a lone surrogate, e.g. from a JSON ``"\\ud800"`` escape)."""


_TEXT_FIELDS = ("headline", "body", "byline", "dateline", "dateline_place", "agency", "source", "guid",
                "language")


def _check_unicode(story: Story) -> None:
  """Raises InvalidText when a text field of ``story`` cannot be stored as UTF-8."""
  for name in (*_TEXT_FIELDS, "source_subjects", "places"):
    value = getattr(story, name)
    for text in (value if isinstance(value, list) else [value]):
      if text is None:
        continue
      try:
        text.encode("utf-8")
      except UnicodeEncodeError as error:
        raise InvalidText(f"{name} holds a lone surrogate U+{ord(text[error.start]):04X} at character "
                          f"{error.start}: not valid Unicode text") from None


# --------------------------------------------------------------------------- splitting


def _split(data: bytes, hint: str | None, max_story_bytes: int, uri: str, depth: int = 0) -> list[_Sub]:
  if data[:2] == b"\x1f\x8b":
    if depth >= _MAX_GZIP_DEPTH:
      raise F.UnsupportedFormat("gzip nested too deeply")
    inner = _gunzip(data, max_story_bytes * RECORD_CAP_FACTOR)
    inner_uri = uri[:-3] if uri.lower().endswith(".gz") else uri
    return _split(inner, hint, max_story_bytes, inner_uri, depth + 1)
  if not data.strip():
    raise F.EmptyRecord("empty record" if not data else "the record holds only whitespace")
  fmt = hint or _detect(data, uri)
  if fmt == "plain" and hint is None:
    _check_not_media(data)
  if fmt == "reuters-sgml":
    return _split_reuters(data)
  if fmt in ("nitf", "newsml"):
    return _split_xml(data, max_story_bytes)
  if fmt in ("json", "jsonl", "ninjs"):
    return _split_json(data, fmt, uri)
  text = _decode_text(data)
  _check_textual(text)
  if hint is None:
    _check_prose(text)
  return [_Sub("", data, "plain", extract=lambda: F.plain_fields(text))]


def _gunzip(data: bytes, limit: int) -> bytes:
  """Decompresses (possibly multi-member) gzip, refusing output over ``limit`` bytes."""
  out = bytearray()
  rest = data
  while rest:
    decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
    chunk = decomp.decompress(rest, limit + 1 - len(out))
    out += chunk
    if len(out) > limit:
      raise F.RecordTooLarge(f"gzip data decompresses to more than {limit} bytes")
    if not decomp.eof:
      if decomp.unconsumed_tail:
        raise F.RecordTooLarge(f"gzip data decompresses to more than {limit} bytes")
      raise EOFError("truncated gzip data (the stream ends before the end of the member)")
    rest = decomp.unused_data
    if rest and rest[:2] != b"\x1f\x8b":
      if rest.strip(b"\x00"):
        raise zlib.error("trailing garbage after the gzip data")
      break
  return bytes(out)


_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def _detect(data: bytes, uri: str) -> str:
  """Detects the format from the bytes (the URI's extension only breaks a JSON/JSONL tie)."""
  head = data[:4096]
  for bom in _BOMS:
    if head.startswith(bom):
      head = head[len(bom):]
      if bom != _BOMS[0]:
        head = head.decode("utf-16-le" if bom == b"\xff\xfe" else "utf-16-be", "ignore").encode("utf-8")
      break
  head = head.lstrip()
  if re.search(rb"<REUTERS\b", head) or head.startswith(b"<!DOCTYPE lewis"):
    return "reuters-sgml"
  if head.startswith(b"<"):
    root = re.search(rb"<(?:[\w.-]+:)?(nitf|newsMessage|newsItem|packageItem|conceptItem|knowledgeItem)\b",
                     head)
    return "nitf" if root and root.group(1) == b"nitf" else "newsml"
  if head[:1] in (b"{", b"[", b'"') or _JSON_SCALAR_RE.fullmatch(data.strip()[:64]):
    lower = uri.lower()
    return "jsonl" if lower.endswith((".jsonl", ".ndjson")) else "json"
  return "plain"


_JSON_SCALAR_RE = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")


def _decode_text(data: bytes) -> str:
  """Decodes text: UTF-8 (with or without BOM) or BOM-marked UTF-16; strict."""
  if data.startswith(b"\xff\xfe") or data.startswith(b"\xfe\xff"):
    return data.decode("utf-16")
  return data.decode("utf-8-sig")


#: Leading bytes of common non-story files: (magic, what it is).
_MEDIA_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
    (b"%PDF-", "a PDF document"), (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\x00\x00\x00\x18ftyp", "an MP4/MOV video"), (b"\x00\x00\x00\x20ftyp", "an MP4/MOV video"),
    (b"ID3", "an MP3 audio file"), (b"OggS", "an Ogg media file"), (b"\x7fELF", "an executable"),
    (b"BZh", "a bzip2 archive"), (b"\xfd7zXZ\x00", "an xz archive"), (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
)
_CSV_DELIMITERS = (",", "\t", ";", "|")
_MARKDOWN_LINE = re.compile(r"^(?:#{1,6} \S|```|~~~|\|?\s*:?-{3,}:?\s*\||\|.*\|$)")
_SENTENCE_END = tuple('.!?"\'\u201d\u2019)')


def _check_not_media(data: bytes) -> None:
  """Images, PDFs, archives, audio and video are not stories (``NotAStory``)."""
  head = data[:16]
  for magic, what in _MEDIA_MAGIC:
    if head.startswith(magic):
      raise F.NotAStory(f"the file is {what}, not a story")
  if head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"WAVE", b"AVI "):
    raise F.NotAStory(f"the file is a {head[8:12].decode().strip()} file, not a story")
  if data[257:262] == b"ustar":
    raise F.NotAStory("the file is a tar archive, not a story")


def _check_prose(text: str) -> None:
  """Tables (CSV/TSV, see :func:`_table_shape`) and Markdown documents are not wire stories (``NotAStory``).

  Markdown: a heading (``# ...``) as the first line, or two lines among the first 50 that are headings,
  code fences or table rows.
  """
  lines = [line.strip() for line in text.splitlines() if line.strip()][:50]
  marked = [line for line in lines if _MARKDOWN_LINE.match(line)]
  if (lines and lines[0].startswith("#") and lines[0] in marked) or len(marked) >= 2:
    raise F.NotAStory("the text is a Markdown document (headings, code fences or tables), not a story")
  shape = _table_shape(text)
  if shape:
    delimiter, columns = shape
    raise F.NotAStory(f"the text is a table ({'tab' if delimiter == chr(9) else repr(delimiter)}-separated "
                      f"values, {columns} columns), not a story")


_TABLE_ROWS = 20
#: At most this many words in each field of a table that has neither quotes nor a header row.
_CELL_WORDS = 4
#: A column name in a header row: short, starting with a letter, no sentence punctuation.
_COLUMN_NAME = re.compile(r"[^\W\d][\w ()/%#&+-]{0,39}")


def _table_shape(text: str) -> tuple[str, int] | None:
  """``(delimiter, columns)`` when ``text`` reads as delimited values (CSV, TSV...), else None.

  For each delimiter, the first 20 non-blank rows are read with :mod:`csv`, strictly: a quoted field may
  hold delimiters, doubled quotes and line breaks, while prose such as ``"Yes," he said`` breaks the
  quoting and is no table. The first row sets the number of columns: two or more, two of them non-empty.
  A table then shows that it is one, either

  * with a quoted field, or a first row that names the columns (short distinct names) above two rows or
    more; and at least 80% of the rows have as many fields, and fewer than half of the fields after a
    delimiter start with a space (as prose does: ``"Yes", he said``); or
  * as before quoting was read (a numeric table): every row has as many fields, and none ends like a
    sentence or is a dateline.
  """
  for delimiter in _CSV_DELIMITERS:
    buffer = io.StringIO(text, newline="")
    rows: list[list[str]] = []
    try:
      for row in csv.reader(buffer, delimiter=delimiter, strict=True):
        if any(field.strip() for field in row):
          rows.append(row)
          if len(rows) == _TABLE_ROWS:
            break
    except csv.Error:
      continue
    columns = len(rows[0]) if rows else 0
    names = [field for field in rows[0] if field.strip()] if rows else []
    if len(rows) < 2 or columns < 2 or len(names) < 2:
      continue
    consistent = sum(len(row) == columns for row in rows)
    later = [field for row in rows for field in row[1:]]
    spaced = sum(field[:1].isspace() for field in later)  # prose: "Yes", he said.
    quoted = re.search(f'(?:^|{re.escape(delimiter)})"', text[:buffer.tell()], re.M) is not None
    header = len(rows) >= 3 and len({name.casefold() for name in names}) == len(names) and all(
        name == name.strip() and _COLUMN_NAME.fullmatch(name) for name in names)
    if (quoted or header) and consistent >= 0.8 * len(rows) and spaced * 2 < len(later):
      return delimiter, columns
    lines = [delimiter.join(row).strip() for row in rows]
    cells = all(len(field.split()) <= _CELL_WORDS for row in rows for field in row)
    if consistent == len(rows) and cells and not any(
        line.endswith(_SENTENCE_END) or F.parse_dateline(line) for line in lines):
      return delimiter, columns
  return None


def _check_textual(text: str) -> None:
  sample = text[:4096]
  controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\n\r\t\f")
  if controls > max(4, len(sample) // 20):
    raise F.UnsupportedFormat("the record looks like binary data, not text")


# ---- JSON


def _json_sub(obj: object, locator: str, raw: bytes, container_fmt: str, forced: str | None) -> _Sub:
  if not isinstance(obj, dict):
    return _Sub(locator, raw, container_fmt,
                error=F.JSONShapeError(f"expected a JSON object, got {type(obj).__name__}"))
  if forced == "ninjs" or (forced != "json" and F.is_ninjs(obj)):
    return _Sub(locator, raw, "ninjs", extract=lambda: F.ninjs_fields(obj))
  return _Sub(locator, raw, container_fmt, extract=lambda: F.json_fields(obj))


def _split_json(data: bytes, fmt: str, uri: str) -> list[_Sub]:
  forced = "ninjs" if fmt == "ninjs" else None
  if fmt == "jsonl":
    return _split_jsonl(_decode_lines(data), forced)
  try:
    text = _decode_text(data)
  except UnicodeDecodeError as error:
    # Not all of it decodes: JSON Lines fail line by line, a JSON document fails whole.
    try:
      return _json_lines(data, forced)
    except (json.JSONDecodeError, RecursionError):
      raise error from None
  stripped = text.strip()
  if stripped.startswith("["):
    return _split_json_array(text, "record", forced)
  try:
    obj = json.loads(text)
  except json.JSONDecodeError:
    # Several objects on separate lines: JSON Lines (else the first line's error, unless the text is a
    # table that merely starts like JSON: a quoted or numeric first field).
    try:
      return _json_lines(data, forced)
    except json.JSONDecodeError:
      _check_prose(text)
      raise
  if isinstance(obj, dict) and not F.is_ninjs(obj):
    for key in _JSON_CONTAINER_KEYS:
      items = obj.get(key)
      if isinstance(items, list) and items and all(isinstance(i, dict) for i in items) and not any(
          k in obj for k in ("body", "text", "headline", "title")):
        return [_json_sub(item, f"record:{i}", _json_bytes(item), "json", forced)
                for i, item in enumerate(items, 1)]
  if not isinstance(obj, dict):
    raise F.JSONShapeError(f"top-level JSON {type(obj).__name__} holds no story (expected an object or "
                           "an array of objects)")
  return [_json_sub(obj, "", data, "json", forced)]


def _json_bytes(obj: object) -> bytes:
  return json.dumps(obj, ensure_ascii=False, sort_keys=True).encode("utf-8", "surrogatepass")


def _split_json_array(text: str, prefix: str, forced: str | None) -> list[_Sub]:
  """Splits a top-level JSON array, keeping each element's own bytes."""
  decoder = json.JSONDecoder()
  start = text.index("[")
  pos = start + 1
  ws = re.compile(r"\s*")
  subs: list[_Sub] = []
  pos = ws.match(text, pos).end()
  if text.startswith("]", pos):
    if text[pos + 1:].strip():
      raise json.JSONDecodeError("extra data after the array", text, pos + 1)
    raise F.EmptyRecord("the JSON array is empty")
  while True:
    obj, end = decoder.raw_decode(text, pos)
    raw = text[pos:end].encode("utf-8", "surrogatepass")
    subs.append(_json_sub(obj, f"{prefix}:{len(subs) + 1}", raw, "json", forced))
    pos = ws.match(text, end).end()
    if text.startswith(",", pos):
      pos = ws.match(text, pos + 1).end()
      continue
    if text.startswith("]", pos):
      if text[pos + 1:].strip():
        raise json.JSONDecodeError("extra data after the array", text, pos + 1)
      return subs
    raise json.JSONDecodeError("expected ',' or ']'", text, pos)


def _decode_lines(data: bytes) -> list[tuple[bytes, str | UnicodeDecodeError]]:
  """Splits line-oriented text (JSON Lines) at ``\\n``: ``(raw bytes, text or decode error)`` per line.

  UTF-8 (with or without BOM) is decoded line by line, so an undecodable byte fails only its own line,
  whose raw bytes stay as they were (for replay). BOM-marked UTF-16 is one encoding for the whole file:
  it is decoded whole by :func:`_decode_text` (strict: an undecodable file fails whole) and each line's
  raw bytes are its UTF-8 encoding.
  """
  if data.startswith((b"\xff\xfe", b"\xfe\xff")):
    return [(line.encode("utf-8", "surrogatepass"), line) for line in _decode_text(data).split("\n")]
  lines: list[tuple[bytes, str | UnicodeDecodeError]] = []
  for line in data.removeprefix(_BOMS[0]).split(b"\n"):
    try:
      lines.append((line, line.decode("utf-8")))
    except UnicodeDecodeError as error:
      lines.append((line, error))
  return lines


def _json_lines(data: bytes, forced: str | None) -> list[_Sub]:
  """``data`` as JSON Lines, recognised by its first non-blank line that decodes: raises that line's
  ``JSONDecodeError`` when it is not JSON."""
  lines = _decode_lines(data)
  json.loads(next((text for _, text in lines if isinstance(text, str) and text.strip()), ""))
  return _split_jsonl(lines, forced)


def _split_jsonl(lines: list[tuple[bytes, str | UnicodeDecodeError]], forced: str | None) -> list[_Sub]:
  """One sub-record per non-blank line of :func:`_decode_lines`; an undecodable line is a dead letter."""
  subs: list[_Sub] = []
  for number, (raw, line) in enumerate(lines, 1):
    locator = f"line:{number}"
    if isinstance(line, UnicodeDecodeError):
      subs.append(_Sub(locator, raw, "jsonl", error=line))
      continue
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as error:
      subs.append(_Sub(locator, raw, "jsonl", error=error))
      continue
    subs.append(_json_sub(obj, locator, raw, "jsonl", forced))
  return subs


# ---- XML


def _split_xml(data: bytes, max_story_bytes: int) -> list[_Sub]:
  head = data[:4096]
  container = re.search(rb"<(?:[\w.-]+:)?newsMessage\b", head) is not None
  if not container and len(data) > max_story_bytes:
    return [_Sub("", data, "newsml", error=F.StoryTooLarge(
        f"story of {len(data)} bytes exceeds the cap of {max_story_bytes} bytes"))]
  root = F.parse_xml(data)
  name = F.local(root.tag)
  if name == "nitf":
    return [_Sub("", data, "nitf", extract=lambda: F.nitf_fields(root))]
  if name == "newsMessage":
    items = [item for item_set in F.children(root, "itemSet") for item in item_set
             if F.local(item.tag) in F.NEWSML_ITEMS]
    if not items:
      raise F.EmptyRecord("the newsMessage holds no items")
    return [_Sub(f"item:{i}", ET.tostring(item, encoding="utf-8"), "newsml",
                 extract=(lambda item=item: F.newsml_fields(item)))
            for i, item in enumerate(items, 1)]
  if name in F.NEWSML_ITEMS or name in ("contentSet", "contentMeta"):
    return [_Sub("", data, "newsml", extract=lambda: F.newsml_fields(root))]
  raise F.UnsupportedFormat(f"XML root <{name}> is neither NITF nor NewsML-G2")


# ---- Reuters-21578 SGML

_REUTERS_START_RE = re.compile(rb"<REUTERS\b([^>]*)>", re.I)
_REUTERS_END_RE = re.compile(rb"</REUTERS\s*>", re.I)
_ATTR_RE = re.compile(r'([\w.-]+)\s*=\s*"([^"]*)"')


def _split_reuters(data: bytes) -> list[_Sub]:
  starts = list(_REUTERS_START_RE.finditer(data))
  if not starts:
    raise F.UnsupportedFormat("no <REUTERS> elements in the SGML")
  subs: list[_Sub] = []
  for index, match in enumerate(starts, 1):
    limit = starts[index].start() if index < len(starts) else len(data)
    end = _REUTERS_END_RE.search(data, match.end(), limit)
    attrs = dict(_ATTR_RE.findall(match.group(1).decode("latin-1")))
    newid = attrs.get("NEWID", "").strip()
    locator = f"newid:{newid}" if newid.isdigit() else f"record:{index}"
    if end is None:
      raw = data[match.start():limit]
      subs.append(_Sub(locator, raw, "reuters-sgml", error=F.TruncatedRecord(
          "<REUTERS> element without its closing </REUTERS>")))
      continue
    raw = data[match.start():end.end()]
    element = raw.decode("latin-1")
    subs.append(_Sub(locator, raw, "reuters-sgml",
                     extract=(lambda element=element, attrs=attrs: F.reuters_fields(element, attrs))))
  return subs
