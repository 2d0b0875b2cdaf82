"""Arrow schemas of the output tables: the data contract.

Each table is hive-partitioned by ``date=YYYY-MM-DD`` (the story's publication
date in UTC, else its ingest date; for errors, the error date). The partition
column is not stored inside the files. Every field carries its documentation in
the field metadata (``doc``), and every file carries the table name,
``SCHEMA_VERSION`` and the version of wirestream that wrote it (``writer``) in its
schema metadata. ``wirestream schema`` prints them.

Versioning: add nullable columns freely (minor bump); renaming, retyping or
removing a column is a major bump. Files of an older minor version read under the
current schema (``union_by_name``): their missing columns are null.

History: 1.1 adds the resolve stage's columns (events: ``countries``,
``resolve_status``, ``story_entities``; entities: ``entity_key``, ``canonical`` and
the place columns) and ``entities.ingested_at``, and the story clusters' columns
(events: ``cluster_id``, ``pub_status``, ``revision``). 1.2 adds headline mentions: ``entities.field``
says which text of the story (``body`` or ``headline``) a mention's offsets index into, and
``story_entities`` items get ``first_field``; in older files both are null, meaning ``body``. 1.3 adds
``events.cluster_links``, the clusters a story bridges (null in older files: none).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import pyarrow as pa

from schemas.records import FIELD_HEADLINE, DeadLetter, Entity, Story

SCHEMA_VERSION = "1.3"


def _package_version() -> str:
  try:
    return metadata.version("wirestream")
  except metadata.PackageNotFoundError:  # the source tree on sys.path without an install
    return "0+unknown"


#: The installed wirestream's version (pyproject.toml's), recorded in every file it writes.
PACKAGE_VERSION = _package_version()


def _table_metadata(table: str) -> dict[str, str]:
  return {"table": table, "schema_version": SCHEMA_VERSION, "writer": f"wirestream {PACKAGE_VERSION}"}


def _f(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
  return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


_TS = pa.timestamp("us", tz="UTC")

TOPIC_TYPE = pa.struct([
    _f("code", pa.string(), "IPTC Media Topic qcode, e.g. medtop:11000000.", False),
    _f("label", pa.string(), "English label of the topic.", False),
    _f("score", pa.float32(), "Calibrated probability that the topic applies (0..1).", False),
])

STORY_ENTITY_TYPE = pa.struct([
    _f("entity_key", pa.string(), "Entity key (see entities.entity_key).", False),
    _f("canonical", pa.string(), "Canonical name of the entity.", False),
    _f("label", pa.string(), "Entity type of its first mention (PER, ORG, LOC, MISC).", False),
    _f("mentions", pa.int32(), "Mentions of the entity in the story (headline and body).", False),
    _f("first_char", pa.int32(), "Offset of its first mention in the text first_field names.", False),
    _f("first_field", pa.string(),
       "Text of its first mention: headline or body (schema 1.2; null in older files: body)."),
])

EVENTS = pa.schema([
    _f("event_id", pa.string(), "story_id:version; unique per row.", False),
    _f("story_id", pa.string(),
       "Deterministic story id: a hash of the source-scoped guid/uri, else of the "
       "normalized headline and body.", False),
    _f("version", pa.int32(), "Story version from the input, else 1.", False),
    _f("source_format", pa.string(),
       "Input format: plain, json, jsonl, ninjs, nitf, newsml, reuters-sgml.", False),
    _f("source", pa.string(), "Provider or feed named by the input's metadata."),
    _f("agency", pa.string(), "News agency that filed the story (e.g. Reuters), from metadata or dateline."),
    _f("guid", pa.string(), "The input's own identifier of the story, if any."),
    _f("headline", pa.string(), "Headline or title."),
    _f("byline", pa.string(), "Byline (author credit)."),
    _f("dateline", pa.string(), "Dateline as written, e.g. 'WASHINGTON (Reuters)'."),
    _f("dateline_place", pa.string(), "Place of the dateline, e.g. 'WASHINGTON'."),
    _f("language", pa.string(), "ISO 639-1 language code."),
    _f("language_source", pa.string(), "'metadata' when the input named the language, 'detected' otherwise."),
    _f("published_at", _TS, "Publication time in UTC (null when the input has none)."),
    _f("ingested_at", _TS, "Time the pipeline ingested the record (UTC).", False),
    _f("body", pa.string(),
       "Story text; paragraphs separated by blank lines. Offsets of the entities whose field is body index "
       "into it.", False),
    _f("body_chars", pa.int32(), "Length of body in characters.", False),
    _f("source_subjects", pa.list_(pa.string()), "Subject codes/tags carried by the input (e.g. Reuters TOPICS)."),
    _f("places", pa.list_(pa.string()), "Places named by the input's metadata (e.g. Reuters PLACES)."),
    _f("input_uri", pa.string(), "Lineage: the file or subscription the record came from.", False),
    _f("locator", pa.string(), "Lineage: the record's place in the input (e.g. 'line:3', 'record:12', 'msg:ID').", False),
    _f("raw_sha256", pa.string(), "Lineage: sha256 of the raw record bytes.", False),
    _f("message_id", pa.string(), "Pub/Sub message id (streaming only)."),
    _f("cluster_id", pa.string(),
       "Story cluster: the story_id of the first story of its copies, versions and rewrites "
       "(null in files written before clustering existed). The stream writes the id it chose on arrival; the "
       "views show clusters that a later story bridged (cluster_links) merged."),
    _f("cluster_links", pa.list_(pa.string()),
       "Other story clusters (their cluster_id) begun within a day of its own that this story nearly copies a "
       "story of: it bridges them, they are one story. The stream, which never rewrites a row, records them here and the views "
       "merge them; empty in batch, which merges them before writing."),
    _f("pub_status", pa.string(), "Publication status from the input: usable, withheld, canceled, embargoed."),
    _f("revision", pa.string(),
       "Kind of filing: update, correction, refile, repeat, kill or withdrawal (from headline marks such "
       "as 'UPDATE 1-', 'CORRECTED-', 'RPT-', a '(Corrects ...)' line, or the publication status)."),
    _f("ner_status", pa.string(),
       "applied, skipped_language, skipped_empty (neither body nor headline) or failed; null when the NER "
       "stage did not run."),
    _f("ner_model", pa.string(), "Name of the NER model that produced the entities."),
    _f("entity_count", pa.int32(), "Number of entity mentions, headline and body (null when NER did not apply)."),
    _f("entity_counts", pa.map_(pa.string(), pa.int32()),
       "Mentions per entity label (PER, ORG, LOC, MISC), headline and body."),
    _f("topics_status", pa.string(),
       "applied, skipped_language, skipped_empty (neither body nor headline) or failed; null when the topic "
       "stage did not run."),
    _f("topics_model", pa.string(), "Name of the topic model."),
    _f("topics", pa.list_(TOPIC_TYPE), "Topics that apply (score >= threshold), highest score first."),
    _f("top_topic_code", pa.string(), "qcode of the highest-scoring topic."),
    _f("top_topic_label", pa.string(), "Label of the highest-scoring topic."),
    _f("top_topic_score", pa.float32(), "Score of the highest-scoring topic."),
    _f("resolve_status", pa.string(),
       "applied or failed; null when the resolve stage did not run (it runs on stories whose NER applied)."),
    _f("countries", pa.list_(pa.string()),
       "ISO 3166-1 alpha-2 codes of the countries the story is about, most salient first (dateline, headline, "
       "lead, mentions), from the story's text only (compare with places, the source's own tags)."),
    _f("story_entities", pa.list_(STORY_ENTITY_TYPE),
       "The story's distinct entities (one per entity_key), in order of first mention (headline, then "
       "body); the query view story_entities has one row per item."),
], metadata=_table_metadata("events"))

ENTITIES = pa.schema([
    _f("mention_id", pa.string(),
       "story_id:version:start_char:end_char for a body mention, story_id:version:headline:start_char:end_char "
       "for a headline mention; unique per row.", False),
    _f("event_id", pa.string(), "The events row this mention belongs to.", False),
    _f("story_id", pa.string(), "Story id (see events.story_id).", False),
    _f("version", pa.int32(), "Story version.", False),
    _f("start_char", pa.int32(), "Start offset (code points) into events.body, or events.headline when field "
       "is headline.", False),
    _f("end_char", pa.int32(), "End offset (exclusive); body[start_char:end_char] == text (headline[...] for a "
       "headline mention).", False),
    _f("text", pa.string(), "The mention as it appears in the story.", False),
    _f("label", pa.string(), "Entity type: PER, ORG, LOC or MISC (or the model's own labels).", False),
    _f("score", pa.float32(), "Mean token probability of the predicted label.", False),
    _f("sentence_index", pa.int32(),
       "0-based index of the sentence of the body holding the mention (0 for a headline mention).", False),
    _f("field", pa.string(),
       "The text of the story the mention is in, which start_char and end_char index into: body or headline "
       "(schema 1.2; null in older files: body)."),
    _f("model", pa.string(), "NER model name."),
    _f("published_at", _TS, "Publication time of the story (UTC)."),
    _f("ingested_at", _TS,
       "ingested_at of the events row this mention belongs to: the entities view keeps a mention only "
       "while that row is the event's current one (schema 1.1)."),
    _f("entity_key", pa.string(),
       "The entity's key, the same in every story and run: geo:<geonameid> (a geocoded place), "
       "loc:<name>, org:<name>, per:<name> or misc:<name> (see transforms/resolve.py)."),
    _f("canonical", pa.string(),
       "The entity's name: the fullest form in the story ('Tillerson' -> 'Rex Tillerson'), the maintained "
       "name of a known organisation, the GeoNames name of a place."),
    _f("geonameid", pa.int64(), "GeoNames id of the place of a LOC mention (null when not geocoded)."),
    _f("country_code", pa.string(), "ISO 3166-1 alpha-2 code of the place's country."),
    _f("latitude", pa.float64(), "Latitude of the place (a country: of its capital)."),
    _f("longitude", pa.float64(), "Longitude of the place."),
    _f("feature", pa.string(), "Kind of place: country, admin_region, city or continent."),
    _f("geo_status", pa.string(),
       "LOC mentions: resolved, or why not geocoded: not_in_gazetteer, ambiguous, organisation."),
], metadata=_table_metadata("entities"))

ERRORS = pa.schema([
    _f("error_id", pa.string(), "Deterministic id of the dead letter (input, locator, stage, raw hash).", False),
    _f("input_uri", pa.string(), "File or subscription the record came from.", False),
    _f("locator", pa.string(), "Place of the record in the input.", False),
    _f("stage", pa.string(), "Stage that rejected it: read, parse, ner, topics, write...", False),
    _f("error_type", pa.string(), "Error class, e.g. UnicodeDecodeError, XMLSyntaxError, OversizeStory.", False),
    _f("message", pa.string(), "Human-readable reason.", False),
    _f("raw_excerpt", pa.binary(), "The raw bytes (first 64 KiB) for inspection and replay.", False),
    _f("raw_truncated", pa.bool_(), "True when raw_excerpt holds only the start of the raw bytes.", False),
    _f("raw_sha256", pa.string(), "sha256 of the whole raw record.", False),
    _f("raw_size", pa.int64(), "Size of the whole raw record in bytes.", False),
    _f("error_time", _TS, "When the error happened (UTC).", False),
    _f("message_id", pa.string(), "Pub/Sub message id (streaming only)."),
    _f("attributes", pa.map_(pa.string(), pa.string()), "Pub/Sub message attributes (streaming only)."),
    _f("story_id", pa.string(), "Story id, when the error happened after parsing."),
], metadata=_table_metadata("errors"))

TABLES: dict[str, pa.Schema] = {"events": EVENTS, "entities": ENTITIES, "errors": ERRORS}


def _utc(value: dt.datetime | None) -> dt.datetime | None:
  if value is None:
    return None
  if value.tzinfo is None:
    return value.replace(tzinfo=dt.timezone.utc)
  return value.astimezone(dt.timezone.utc)


def event_row(story: Story) -> dict[str, Any]:
  """The ``events`` row of a story."""
  entity_counts = None
  entity_count = None
  if story.entities is not None:
    counts: dict[str, int] = {}
    for entity in story.entities:
      counts[entity.label] = counts.get(entity.label, 0) + 1
    entity_counts = sorted(counts.items())
    entity_count = len(story.entities)
  topics = None
  top = None
  if story.topics is not None:
    ordered = sorted(story.topics, key=lambda t: (-t.score, t.code))
    topics = [{"code": t.code, "label": t.label, "score": float(t.score)} for t in ordered]
    top = ordered[0] if ordered else None
  return {
      "event_id": story.event_id,
      "story_id": story.story_id,
      "version": story.version,
      "source_format": story.source_format,
      "source": story.source,
      "agency": story.agency,
      "guid": story.guid,
      "headline": story.headline,
      "byline": story.byline,
      "dateline": story.dateline,
      "dateline_place": story.dateline_place,
      "language": story.language,
      "language_source": story.language_source,
      "published_at": _utc(story.published_at),
      "ingested_at": _utc(story.ingested_at),
      "body": story.body,
      "body_chars": len(story.body),
      "source_subjects": list(story.source_subjects),
      "places": list(story.places),
      "input_uri": story.input_uri,
      "locator": story.locator,
      "raw_sha256": story.raw_sha256,
      "message_id": story.message_id,
      "cluster_id": story.cluster_id,
      "cluster_links": list(story.cluster_links),
      "pub_status": story.pub_status,
      "revision": story.revision,
      "ner_status": story.ner_status,
      "ner_model": story.ner_model,
      "entity_count": entity_count,
      "entity_counts": entity_counts,
      "topics_status": story.topics_status,
      "topics_model": story.topics_model,
      "topics": topics,
      "top_topic_code": top.code if top else None,
      "top_topic_label": top.label if top else None,
      "top_topic_score": float(top.score) if top else None,
      "resolve_status": story.resolve_status,
      "countries": list(story.countries) if story.countries is not None else None,
      "story_entities": story_entities(story),
  }


def story_entities(story: Story) -> list[dict[str, Any]] | None:
  """The distinct entities of a resolved story, in order of first mention, headline then body (None when
  unresolved)."""
  if story.resolve_status is None or story.entities is None:
    return None
  out: dict[str, dict[str, Any]] = {}
  for entity in sorted(story.entities, key=lambda e: (e.field != FIELD_HEADLINE, e.start_char)):
    if not entity.entity_key:
      continue
    row = out.get(entity.entity_key)
    if row is None:
      out[entity.entity_key] = {"entity_key": entity.entity_key, "canonical": entity.canonical or entity.text,
                                "label": entity.label, "mentions": 1, "first_char": entity.start_char,
                                "first_field": entity.field}
    else:
      row["mentions"] += 1
  return list(out.values())


def mention_id(story: Story, entity: Entity) -> str:
  """The mention's id: ``event_id:start:end``, with ``headline:`` before the offsets of a headline mention."""
  where = "headline:" if entity.field == FIELD_HEADLINE else ""
  return f"{story.event_id}:{where}{entity.start_char}:{entity.end_char}"


def entity_rows(story: Story) -> Iterable[dict[str, Any]]:
  """The ``entities`` rows of a story (none when NER did not run or apply)."""
  for entity in story.entities or ():
    place = entity.place
    yield {
        "mention_id": mention_id(story, entity),
        "event_id": story.event_id,
        "story_id": story.story_id,
        "version": story.version,
        "start_char": entity.start_char,
        "end_char": entity.end_char,
        "text": entity.text,
        "label": entity.label,
        "score": float(entity.score),
        "sentence_index": entity.sentence_index,
        "field": entity.field,
        "model": story.ner_model,
        "published_at": _utc(story.published_at),
        "ingested_at": _utc(story.ingested_at),
        "entity_key": entity.entity_key,
        "canonical": entity.canonical,
        "geonameid": place.geonameid if place else None,
        "country_code": place.country_code if place else None,
        "latitude": place.latitude if place else None,
        "longitude": place.longitude if place else None,
        "feature": place.feature if place else None,
        "geo_status": entity.geo_status,
    }


def error_row(letter: DeadLetter) -> dict[str, Any]:
  """The ``errors`` row of a dead letter."""
  return {
      "error_id": letter.error_id,
      "input_uri": letter.input_uri,
      "locator": letter.locator,
      "stage": letter.stage,
      "error_type": letter.error_type,
      "message": letter.message,
      "raw_excerpt": letter.raw_excerpt,
      "raw_truncated": letter.raw_truncated,
      "raw_sha256": letter.raw_sha256,
      "raw_size": letter.raw_size,
      "error_time": _utc(letter.error_time),
      "message_id": letter.message_id,
      "attributes": sorted(letter.attributes.items()) if letter.attributes else None,
      "story_id": letter.story_id,
  }


#: Column that identifies a row of each table (used for file naming and dedup).
ROW_ID = {"events": "event_id", "entities": "mention_id", "errors": "error_id"}


def describe() -> str:
  """A Markdown document of every table and column, generated from the schemas."""
  lines = [f"# wirestream tables (schema version {SCHEMA_VERSION})", ""]
  for name, schema in TABLES.items():
    lines += [f"## {name}", "", "| column | type | nullable | description |", "|---|---|---|---|"]
    for field in schema:
      doc = (field.metadata or {}).get(b"doc", b"").decode()
      lines.append(f"| {field.name} | {field.type} | {'yes' if field.nullable else 'no'} | {doc} |")
    lines.append("")
  return "\n".join(lines)
