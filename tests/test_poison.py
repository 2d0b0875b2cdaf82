"""No poison record: arbitrary records through parse, enrichment and write never stop a run.

Records hold any Unicode (lone surrogates included, as JSON ``\\ud800`` escapes), control
characters, huge and negative numbers and impossible dates. The ledger must balance:
every input record ends as exactly one event or at least one error row, and every row
fits its table's schema. The stream's share (the same records as Pub/Sub messages) is in
``test_stream_delivery``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import apache_beam as beam
import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from pipelines.cli import main
from schemas import TABLES, DeadLetter, RawRecord, Story
from transforms.parse import parse_record
from transforms.write import _KeyRows

REPO = Path(__file__).resolve().parents[1]
UTC = dt.timezone.utc

#: Any code point, lone surrogates and control characters included.
any_text = st.text(st.characters(exclude_categories=()), max_size=60)
# Text that reads like a story most of the time, with a hostile character here and there.
story_text = st.lists(st.one_of(st.sampled_from(["Oslo", "Reuters", "said", "the", "minister", "on", "Monday.",
                                                 "\n\n", " "]), st.characters(exclude_categories=())),
                      max_size=40).map(" ".join)
odd_numbers = st.one_of(st.integers(), st.integers(min_value=2**31 - 2, max_value=2**64),
                        st.integers(max_value=-1), st.floats(allow_nan=True, allow_infinity=True))
odd_dates = st.one_of(
    any_text, odd_numbers,
    st.sampled_from(["2026-02-30T10:00:00Z", "2026-13-01", "0000-01-01T00:00:00Z", "9999-12-31T23:59:60Z",
                     "99999-01-01", "1969-12-31T23:59:59-25:00", "Mon, 32 Foo 2026 99:99:99 +9999",
                     "-62135596801", "253402300800000"]))
json_value = st.one_of(any_text, odd_numbers, st.none(), st.booleans(), st.lists(any_text, max_size=3))
story_object = st.fixed_dictionaries(
    {"headline": st.one_of(story_text, json_value), "body": st.one_of(story_text, json_value)},
    optional={"guid": st.one_of(any_text, odd_numbers), "version": odd_numbers, "published": odd_dates,
              "language": st.one_of(any_text, st.sampled_from(["en", "de", "xx-YY"])),
              "byline": json_value, "dateline": json_value, "source": json_value, "agency": json_value,
              "subjects": st.lists(any_text, max_size=3), "places": json_value})


def _record_bytes(obj: dict, ascii_only: bool) -> bytes:
  # ensure_ascii=True writes lone surrogates as \ud800 escapes: valid JSON, invalid Unicode.
  return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _rows(outs) -> list[tuple[str, dict]]:
  key_rows = _KeyRows(1)
  return [(key[0], row) for out in outs for key, row in key_rows.process(out)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(story_object, st.booleans())
def test_any_json_story_parses_and_writes(obj, ascii_only):
  data = _record_bytes(obj, ascii_only)
  outs = list(parse_record(RawRecord(uri="mem://poison.json", data=data, format_hint="json")))
  assert len(outs) == 1 and isinstance(outs[0], (Story, DeadLetter))
  rows = _rows(outs)
  tables = [table for table, _ in rows]
  assert tables.count("events") + tables.count("errors") == 1, tables
  for table, row in rows:
    pa.Table.from_pylist([row], schema=TABLES[table])  # every row fits its schema


@st.composite
def hostile_stories(draw) -> Story:
  """Story records as a stage might receive them, whatever produced them."""
  return Story(
      story_id=draw(st.text(max_size=8)) or "id", version=draw(odd_numbers.filter(lambda v: isinstance(v, int))),
      body=draw(story_text), source_format="json", input_uri=draw(any_text), locator=draw(any_text),
      raw_sha256="0" * 64, ingested_at=dt.datetime(2026, 1, 1, tzinfo=UTC), headline=draw(any_text),
      language=draw(st.sampled_from([None, "en", "de"])), places=draw(st.lists(any_text, max_size=2)),
      published_at=draw(st.none() | st.datetimes(timezones=st.just(UTC))))


@settings(max_examples=200, deadline=None)
@given(st.lists(hostile_stories(), min_size=1, max_size=4))
def test_any_story_reaching_the_write_is_written_or_an_error_row(stories):
  rows = _rows(stories)
  events = [row for table, row in rows if table == "events"]
  errors = [row for table, row in rows if table == "errors"]
  assert len(events) + len(errors) == len(stories)
  assert all(row["stage"] == "write" for row in errors)
  for table, row in rows:
    pa.Table.from_pylist([row], schema=TABLES[table])


def test_write_error_row_keeps_the_story_as_ascii_json():
  story = Story(story_id="s1", version=1, body="Oslo \ud800 body", source_format="json", input_uri="in/\udcff.json",
                locator="", raw_sha256="0" * 64, ingested_at=dt.datetime(2026, 1, 1, tzinfo=UTC))
  ((table, row),) = _rows([story])
  assert table == "errors" and row["stage"] == "write" and row["error_type"] == "UnicodeEncodeError"
  assert row["input_uri"] == "in/\\udcff.json"
  assert json.loads(row["raw_excerpt"])["body"] == "Oslo \ud800 body"


def _write_inputs(folder: Path, objects: list[dict], ascii_only: bool) -> list[Path]:
  folder.mkdir(parents=True, exist_ok=True)
  paths = []
  for i, obj in enumerate(objects):
    path = folder / f"record-{i:03d}.json"
    path.write_bytes(_record_bytes(obj, ascii_only))
    paths.append(path)
  return paths


def _ledger(lake: Path) -> tuple[list[str], list[str]]:
  """(input_uri of every events row, input_uri of every errors row) in the files."""
  con = duckdb.connect()
  out = []
  for table in ("events", "errors"):
    files = list(lake.glob(f"{table}/*/*.parquet"))
    out.append([r[0] for r in con.execute(
        f"SELECT input_uri FROM read_parquet('{lake}/{table}/*/*.parquet')").fetchall()] if files else [])
  return out[0], out[1]


def test_good_files_and_one_poison_record(tmp_path, capsys):
  """The issue's case: a lone surrogate in a headline. Every good story and one error row, exit 0."""
  inputs = tmp_path / "in"
  good = [REPO / "tests" / "fixtures" / name for name in ("ninjs1.json", "ninjs2.json", "nitf_de.xml")]
  inputs.mkdir()
  for path in good:
    (inputs / path.name).write_bytes(path.read_bytes())
  (inputs / "poison.json").write_bytes(
      b'{"guid": "p1", "headline": "Bad \\ud800 head", "body": "LONDON (Reuters) - Body text."}')
  lake = tmp_path / "lake"
  assert main(["run", "--input", str(inputs), "--output", str(lake), "--stages", "none",
               "--runner=DirectRunner"]) == 0
  events, errors = _ledger(lake)
  assert sorted(Path(uri).name for uri in events) == sorted(path.name for path in good)
  assert [Path(uri).name for uri in errors] == ["poison.json"]
  con = duckdb.connect()
  (stage, kind, message), = con.execute(
      f"SELECT stage, error_type, message FROM read_parquet('{lake}/errors/*/*.parquet')").fetchall()
  assert (stage, kind) == ("parse", "InvalidText") and "U+D800" in message


@settings(max_examples=3, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
@given(st.lists(story_object, min_size=2, max_size=6), st.booleans())
def test_batch_run_over_arbitrary_records_balances_the_ledger(tmp_path_factory, objects, ascii_only):
  tmp = tmp_path_factory.mktemp("poison")
  paths = _write_inputs(tmp / "in", objects, ascii_only)
  lake = tmp / "lake"
  assert main(["run", "--input", str(tmp / "in"), "--output", str(lake), "--stages", "none",
               "--runner=DirectRunner"]) == 0
  events, errors = _ledger(lake)
  assert sorted(set(events) | set(errors)) == sorted(str(path) for path in paths)
  assert len(events) + len(set(errors)) == len(paths) and not set(events) & set(errors)


def _enrichment_available() -> bool:
  from transforms import ner_model, topics_model
  return all(path.is_dir() and any(path.iterdir())
             for path in (ner_model.DEFAULT_MODEL_DIR, topics_model.DEFAULT_MODEL_DIR))


def _plain_story(story_id: str, headline: str | None, body: str) -> Story:
  return Story(story_id=story_id, version=1, body=body, source_format="json", input_uri="mem://s", locator="",
               raw_sha256="0" * 64, ingested_at=dt.datetime(2026, 1, 1, tzinfo=UTC), headline=headline,
               language="en")


@pytest.mark.skipif(not _enrichment_available(), reason="the enrichment models are not built")
@settings(max_examples=2, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(st.lists(hostile_stories(), min_size=3, max_size=8))
@example([_plain_story("s0", "Head \ud800", "OSLO (NTB) - Jonas Store said \ud800 on Monday."),
          _plain_story("s1", "Fine", "LONDON (Reuters) - Boris Johnson spoke in London."),
          _plain_story("s2", None, "\udcff\x00\x01 Paris")])
def test_enrichment_and_write_take_any_story(stories):
  import argparse

  from apache_beam.testing.util import assert_that

  from pipelines.common import apply_stages

  args = argparse.Namespace(stages=("ner", "topics"), ner_model=None, topics_model=None, topics_taxonomy=None,
                            inference_backend=None)
  with beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(["--runner=DirectRunner"])) as p:
    enriched, errors = apply_stages(p | beam.Create(stories), args)
    keyed = ((enriched, *errors) | beam.Flatten() | beam.ParDo(_KeyRows(1))
             | beam.Map(lambda kv: (kv[0][0], kv[1])))

    def check(rows):
      for table, row in rows:
        pa.Table.from_pylist([row], schema=TABLES[table])
      # Every story comes out of the stages exactly once: as its events row, or as a write error row
      # (the stages' own error rows come on top).
      events = [row for table, row in rows if table == "events"]
      unwritable = [row for table, row in rows if table == "errors" and row["stage"] == "write"]
      assert len(events) + len(unwritable) == len(stories), rows

    assert_that(keyed, check)
