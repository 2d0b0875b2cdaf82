"""WriteTables and the DuckDB views over the lake."""

from __future__ import annotations

import datetime as dt
import io
import json
from importlib import metadata

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import window

from pipelines import query
from schemas import SCHEMA_VERSION, DeadLetter, Entity, Story, Topic
from transforms.write import WriteTables, ensure_tables, output_is_writable

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _story(i: int, published: dt.datetime | None = None, **fields) -> Story:
  body = f"Story number {i} from Paris."
  return Story(story_id=f"s{i:03d}", version=1, body=body, source_format="plain", input_uri="mem://x",
               locator=f"line:{i}", raw_sha256="0" * 64, ingested_at=NOW, published_at=published, **fields)


def _run(tmp_path, stories, errors, **kwargs):
  out = str(tmp_path / "lake")
  with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
    s = p | "S" >> beam.Create(stories)
    e = p | "E" >> beam.Create(errors)
    (s, e) | WriteTables(out, **kwargs)
  return out


def _letter() -> DeadLetter:
  return DeadLetter.from_raw(b"\xff\xfe garbage", uri="mem://bad", locator="line:9", stage="parse",
                             error=UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), now=NOW)


def test_tables_are_partitioned_typed_and_queryable(tmp_path):
  day1 = dt.datetime(2017, 7, 13, 9, 30, tzinfo=UTC)
  start = _story(1).body.index("Paris")
  enriched = _story(1, day1, entities=[Entity("Paris", "LOC", start, start + 5, 0.99, 0)], ner_status="applied",
                    topics=[Topic("medtop:11000000", "politics", 0.4), Topic("medtop:16000000", "conflict", 0.8)],
                    topics_status="applied")
  out = _run(tmp_path, [enriched, _story(2, day1), _story(3)], [_letter()])
  files = sorted(p.relative_to(out).as_posix() for p in (tmp_path / "lake").rglob("*.parquet"))
  assert [f.split("/")[:2] for f in files] == [
      ["entities", "date=2017-07-13"], ["errors", "date=2026-11-29"],
      ["events", "date=2017-07-13"], ["events", "date=2026-11-29"]]
  assert not list((tmp_path / "lake").rglob(".tmp-*"))
  meta = pq.read_schema(next((tmp_path / "lake" / "events").rglob("*.parquet"))).metadata
  assert meta[b"schema_version"] == SCHEMA_VERSION.encode()
  assert meta[b"writer"] == f"wirestream {metadata.version('wirestream')}".encode()

  con = query.connect(out)
  assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 3
  top = con.execute("SELECT top_topic_code, entity_count, topics[1].score FROM events WHERE story_id='s001'").fetchone()
  assert top[0] == "medtop:16000000" and top[1] == 1 and top[2] == pytest.approx(0.8)
  ent = con.execute("SELECT e.text, substr(v.body, e.start_char + 1, e.end_char - e.start_char), e.date "
                    "FROM entities e JOIN events v USING (event_id)").fetchone()
  assert ent[0] == ent[1] == "Paris" and str(ent[2]) == "2017-07-13"
  err = con.execute("SELECT stage, error_type, raw_excerpt, raw_size FROM errors").fetchone()
  assert err[:2] == ("parse", "UnicodeDecodeError") and err[2].startswith(b"\xff\xfe") and err[3] == 10


def test_rerun_is_idempotent(tmp_path):
  stories = [_story(i) for i in range(5)]
  _run(tmp_path, stories, [_letter()])
  first = sorted(p.name for p in (tmp_path / "lake").rglob("*.parquet"))
  _run(tmp_path, stories, [_letter()])
  assert sorted(p.name for p in (tmp_path / "lake").rglob("*.parquet")) == first
  con = query.connect(str(tmp_path / "lake"))
  assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 5


def test_duplicate_rows_across_files_count_once(tmp_path):
  _run(tmp_path, [_story(1), _story(2)], [])
  _run(tmp_path, [_story(2), _story(3)], [])  # a different file that repeats s002
  assert len(list((tmp_path / "lake" / "events").rglob("*.parquet"))) == 2
  con = query.connect(str(tmp_path / "lake"))
  assert con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone() == (3, 3)


def test_windowed_file_names_are_globbable(tmp_path):
  out = str(tmp_path / "lake")
  base = NOW.timestamp()
  with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
    s = (p | "S" >> beam.Create([(_story(1), base), (_story(2), base + 90)])
         | "Ts" >> beam.Map(lambda x: window.TimestampedValue(x[0], x[1]))
         | "Win" >> beam.WindowInto(window.FixedWindows(60)))
    e = p | "E" >> beam.Create([]) | "WinE" >> beam.WindowInto(window.FixedWindows(60))
    (s, e) | WriteTables(out)
  names = sorted(p.name for p in (tmp_path / "lake").rglob("*.parquet"))
  assert len(names) == 2
  assert all(n.startswith("part-20261129T12") and "[" not in n and " " not in n for n in names)


def test_empty_lake_views_and_formats(tmp_path, capsys):
  (tmp_path / "lake").mkdir()
  with pytest.raises(query.NoLake):
    query.connect(str(tmp_path / "lake"))
  written = ensure_tables(str(tmp_path / "lake"), "2026-11-29")
  assert len(written) == 3 and ensure_tables(str(tmp_path / "lake"), "2026-11-30") == []
  con = query.connect(str(tmp_path / "lake"))
  for table in ("events", "entities", "errors"):
    assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
  out = io.StringIO()
  query.print_result(con.execute("SELECT 1 AS a, 'x' AS b"), "json", out)
  assert json.loads(out.getvalue()) == {"a": 1, "b": "x"}
  out = io.StringIO()
  query.print_result(con.execute("SELECT 1 AS a, 'x' AS b"), "csv", out)
  assert out.getvalue().splitlines() == ["a,b", "1,x"]


def test_unwritable_output_is_reported(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  assert output_is_writable(str(blocker / "lake")) is not None
  assert output_is_writable(str(tmp_path / "ok")) is None
