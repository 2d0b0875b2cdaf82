"""ParseStories as a Beam PTransform (DirectRunner)."""

from __future__ import annotations

import datetime as dt
import pickle
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window

from schemas.records import RawRecord
from transforms.parse import METRICS_NAMESPACE, ParseStories, ParseStoriesFn

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
RECEIVED = dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc)


def records() -> list[RawRecord]:
  names = ["multi.jsonl", "reuters_sample.sgm", "nitf_de.xml"]
  out = [RawRecord(uri=str(FIXTURES / n), data=(FIXTURES / n).read_bytes(), received_at=RECEIVED) for n in names]
  out.append(RawRecord(uri="mem://empty", data=b"", received_at=RECEIVED))
  return out


def test_dofn_pickles():
  fn = pickle.loads(pickle.dumps(ParseStoriesFn(1234)))
  assert fn._max_story_bytes == 1234


def test_parse_stories_splits_outputs_and_counts():
  options = PipelineOptions(["--runner=DirectRunner"])
  pipeline = beam.Pipeline(options=options)
  raw = pipeline | beam.Create(records())
  stories, errors = raw | ParseStories(max_story_bytes=1_000_000)
  assert_that(stories | "StoryKeys" >> beam.Map(lambda s: (s.source_format, s.locator)), equal_to([
      ("jsonl", "line:1"), ("jsonl", "line:2"), ("jsonl", "line:4"),
      ("reuters-sgml", "newid:901"), ("reuters-sgml", "newid:902"), ("nitf", "")]), label="stories")
  assert_that(errors | "ErrorKeys" >> beam.Map(lambda d: (d.error_type, d.locator, d.stage)), equal_to([
      ("JSONDecodeError", "line:5", "parse"), ("NoTextContent", "newid:903", "parse"),
      ("EmptyRecord", "", "parse")]), label="errors")
  result = pipeline.run()
  result.wait_until_finish()
  counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]
              if c.key.metric.namespace == METRICS_NAMESPACE}
  assert counters["records_read"] == 4
  assert counters["stories_parsed"] == 6
  assert counters["parse_errors"] == 3
  assert counters["stories_jsonl"] == 3
  assert counters["parse_errors_EmptyRecord"] == 1


def test_parse_stories_keeps_windows_and_timestamps():
  pipeline = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))
  raw = (pipeline | beam.Create([(r, 1_000 + i * 100) for i, r in enumerate(records())])
         | beam.MapTuple(lambda r, ts: window.TimestampedValue(r, ts))
         | beam.WindowInto(window.FixedWindows(60)))
  stories, errors = raw | ParseStories()

  def with_window(element, w=beam.DoFn.WindowParam, ts=beam.DoFn.TimestampParam):
    yield (element.locator, int(w.start), int(ts))

  assert_that(stories | "SW" >> beam.ParDo(with_window), equal_to([
      ("line:1", 960, 1000), ("line:2", 960, 1000), ("line:4", 960, 1000),
      ("newid:901", 1080, 1100), ("newid:902", 1080, 1100), ("", 1200, 1200)]), label="story windows")
  assert_that(errors | "EW" >> beam.ParDo(with_window), equal_to([
      ("line:5", 960, 1000), ("newid:903", 1080, 1100), ("", 1260, 1300)]), label="error windows")
  pipeline.run().wait_until_finish()
