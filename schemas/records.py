"""Typed records passed between pipeline stages.

Every stage consumes and produces these dataclasses; nothing between stages is
an untyped dict. They are plain, picklable Python objects, so they cross
process boundaries on Dataflow and in the multi-process DirectRunner.

This module imports nothing from the rest of the project.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

#: Status values for an enrichment stage on one story.
STATUS_APPLIED = "applied"
STATUS_SKIPPED_LANGUAGE = "skipped_language"
STATUS_SKIPPED_EMPTY = "skipped_empty"
STATUS_FAILED = "failed"

#: The text a mention is in (``Entity.field``): the story's body, or its headline.
FIELD_BODY = "body"
FIELD_HEADLINE = "headline"

#: Bound on the raw bytes kept in a dead letter (enough to replay most stories).
RAW_EXCERPT_LIMIT = 64 * 1024


def sha256_hex(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


@dataclasses.dataclass
class RawRecord:
  """One unparsed record: the bytes of a file, or of one Pub/Sub message."""

  uri: str
  data: bytes
  #: Where in ``uri`` the bytes come from ("" for a whole file; "msg:<id>" for Pub/Sub).
  locator: str = ""
  #: Format hint ("plain", "json", "jsonl", "ninjs", "nitf", "newsml", "reuters-sgml"),
  #: e.g. from a Pub/Sub attribute; None means detect from content.
  format_hint: str | None = None
  message_id: str | None = None
  attributes: dict[str, str] = dataclasses.field(default_factory=dict)
  #: Time the record entered the pipeline (UTC).
  received_at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class GeoPlace:
  """A gazetteer place a mention was resolved to (GeoNames)."""

  geonameid: int
  name: str
  #: ISO 3166-1 alpha-2 code (None for a continent).
  country_code: str | None
  latitude: float | None
  longitude: float | None
  #: "country", "admin_region", "city" or "continent".
  feature: str


@dataclasses.dataclass
class Entity:
  """One entity mention. ``<field>[start_char:end_char] == text`` always holds, where ``field`` names the
  story's text the mention is in: its ``body`` (the default) or its ``headline``."""

  text: str
  label: str
  start_char: int
  end_char: int
  score: float
  sentence_index: int
  #: "body" or "headline": the text ``start_char`` and ``end_char`` index into.
  field: str = FIELD_BODY
  # Filled by the resolve stage.
  #: The entity's key, the same in every story (see ``transforms/resolve.py``).
  entity_key: str | None = None
  #: The entity's name: the fullest form in the story, or the gazetteer's/maintained list's name.
  canonical: str | None = None
  #: The place of a LOC mention (None when not geocoded).
  place: GeoPlace | None = None
  #: LOC mentions: "resolved", or why not: "not_in_gazetteer", "ambiguous".
  geo_status: str | None = None


@dataclasses.dataclass
class Topic:
  """One topic assignment: an IPTC Media Topic qcode, its label, a calibrated score."""

  code: str
  label: str
  score: float


@dataclasses.dataclass
class Story:
  """The canonical story record every stage passes on (one story version)."""

  story_id: str
  version: int
  body: str
  source_format: str
  input_uri: str
  locator: str
  raw_sha256: str
  ingested_at: dt.datetime
  headline: str | None = None
  byline: str | None = None
  #: The dateline as written, e.g. "WASHINGTON (Reuters)".
  dateline: str | None = None
  #: The place of the dateline, e.g. "WASHINGTON".
  dateline_place: str | None = None
  #: The agency that filed the story, e.g. "Reuters".
  agency: str | None = None
  #: The provider/feed the story came from (from metadata), e.g. "AP", "NTB".
  source: str | None = None
  guid: str | None = None
  language: str | None = None
  #: "metadata" or "detected" (None when unknown).
  language_source: str | None = None
  published_at: dt.datetime | None = None
  #: Subject/topic codes carried by the input (Reuters TOPICS, ninjs subjects...).
  source_subjects: list[str] = dataclasses.field(default_factory=list)
  #: Places named by the input's metadata (Reuters PLACES, NITF locations...).
  places: list[str] = dataclasses.field(default_factory=list)
  message_id: str | None = None
  #: Publication status from the input: usable, withheld, canceled or embargoed (None when not given).
  pub_status: str | None = None
  #: Kind of filing: update, correction, refile, repeat, kill or withdrawal (None for a plain story).
  revision: str | None = None
  #: Story cluster (copies, versions and rewrites of one story share it); set by the clustering stage.
  cluster_id: str | None = None
  #: The other clusters (their ids) this story nearly copies a story of, begun within a day of the one it joined:
  #: it bridges them, and the lake's views merge them; set by the clustering stage.
  cluster_links: list[str] = dataclasses.field(default_factory=list)
  # Filled by enrichment stages.
  entities: list[Entity] | None = None
  ner_status: str | None = None
  ner_model: str | None = None
  topics: list[Topic] | None = None
  topics_status: str | None = None
  topics_model: str | None = None
  #: Filled by the resolve stage: ISO 3166-1 alpha-2 codes of the countries the story is about, most
  #: salient first (from the story's text only, never from ``places``).
  countries: list[str] | None = None
  resolve_status: str | None = None

  def text_of(self, entity: Entity) -> str:
    """The text ``entity``'s offsets index into: the headline or the body."""
    return (self.headline or "") if entity.field == FIELD_HEADLINE else self.body

  @property
  def key(self) -> tuple[str, int]:
    return (self.story_id, self.version)

  @property
  def event_id(self) -> str:
    return f"{self.story_id}:{self.version}"

  @property
  def partition_date(self) -> str:
    """``YYYY-MM-DD`` of the publication time in UTC, else of the ingest time."""
    when = self.published_at or self.ingested_at
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d")


@dataclasses.dataclass
class DeadLetter:
  """A record that could not be processed, with enough of the input to replay it."""

  input_uri: str
  locator: str
  stage: str
  error_type: str
  message: str
  raw_excerpt: bytes
  raw_sha256: str
  raw_size: int
  error_time: dt.datetime
  raw_truncated: bool = False
  message_id: str | None = None
  attributes: dict[str, str] = dataclasses.field(default_factory=dict)
  story_id: str | None = None

  @property
  def error_id(self) -> str:
    key = f"{self.input_uri}\x1f{self.locator}\x1f{self.stage}\x1f{self.raw_sha256}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]

  @property
  def partition_date(self) -> str:
    return self.error_time.astimezone(dt.timezone.utc).strftime("%Y-%m-%d")

  @classmethod
  def from_raw(
      cls,
      raw: bytes,
      *,
      uri: str,
      locator: str,
      stage: str,
      error: BaseException | str,
      message_id: str | None = None,
      attributes: dict[str, str] | None = None,
      story_id: str | None = None,
      now: dt.datetime | None = None,
  ) -> DeadLetter:
    if isinstance(error, BaseException):
      error_type = type(error).__name__
      message = str(error) or error_type
    else:
      error_type, _, message = error.partition(":")
      message = message.strip() or error_type
    return cls(
        input_uri=uri,
        locator=locator,
        stage=stage,
        error_type=error_type,
        message=message[:4000],
        raw_excerpt=raw[:RAW_EXCERPT_LIMIT],
        raw_truncated=len(raw) > RAW_EXCERPT_LIMIT,
        raw_sha256=sha256_hex(raw),
        raw_size=len(raw),
        error_time=now or dt.datetime.now(dt.timezone.utc),
        message_id=message_id,
        attributes=dict(attributes or {}),
        story_id=story_id,
    )
