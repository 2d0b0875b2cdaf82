"""The data contract: schemas, row converters and the generated documentation."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa

from schemas import TABLES, DeadLetter, Entity, Story, Topic, entity_rows, error_row, event_row
from schemas.tables import describe

REPO = Path(__file__).resolve().parents[1]
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def test_every_column_is_documented_and_versioned():
  for name, schema in TABLES.items():
    assert schema.metadata[b"table"] == name.encode()
    assert schema.metadata[b"schema_version"]
    for field in schema:
      assert (field.metadata or {}).get(b"doc"), f"{name}.{field.name} has no doc"


def test_generated_doc_is_current():
  assert (REPO / "docs" / "tables.md").read_text() == describe() + "\n", "run `make schema-doc`"


def test_rows_conform_to_the_schemas():
  story = Story(story_id="a" * 32, version=2, body="Paris is nice.", source_format="plain", input_uri="f",
                locator="line:1", raw_sha256="0" * 64, ingested_at=NOW,
                entities=[Entity("Paris", "LOC", 0, 5, 0.9, 0)], ner_status="applied",
                topics=[Topic("medtop:10000000", "lifestyle and leisure", 0.7)], topics_status="applied")
  assert story.partition_date == "2026-01-02" and story.event_id == "a" * 32 + ":2"
  letter = DeadLetter.from_raw(b"x" * 70_000, uri="f", locator="line:2", stage="parse", error="ParseError: bad",
                               attributes={"format": "json"}, now=NOW)
  assert letter.raw_truncated and len(letter.raw_excerpt) == 65_536 and letter.raw_size == 70_000
  assert (letter.error_type, letter.message) == ("ParseError", "bad")
  events = pa.Table.from_pylist([event_row(story)], schema=TABLES["events"])
  assert events.column("entity_counts").to_pylist() == [[("LOC", 1)]]
  assert events.column("top_topic_code").to_pylist() == ["medtop:10000000"]
  assert pa.Table.from_pylist(list(entity_rows(story)), schema=TABLES["entities"]).num_rows == 1
  assert pa.Table.from_pylist([error_row(letter)], schema=TABLES["errors"]).num_rows == 1
