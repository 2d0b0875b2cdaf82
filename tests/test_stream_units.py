"""Streaming building blocks without Pub/Sub: message -> RawRecord, and DedupStories on a TestStream."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window

from schemas import Story
from transforms.dedup import DedupStories
from transforms.pubsub import MessagesToRawRecords, fallback_message_id, message_to_raw

UTC = dt.timezone.utc
SUB = "projects/wirestream-test/subscriptions/stream"


def _story(story_id: str, version: int = 1, locator: str = "msg:1") -> Story:
  return Story(story_id=story_id, version=version, body=f"Body of {story_id}.", source_format="plain",
               input_uri=SUB, locator=locator, raw_sha256="0" * 64, ingested_at=dt.datetime(2026, 1, 1, tzinfo=UTC))


def _streaming_pipeline() -> TestPipeline:
  options = PipelineOptions(["--runner=BundleBasedDirectRunner"])
  options.view_as(StandardOptions).streaming = True
  return TestPipeline(options=options)


def test_message_becomes_a_raw_record_with_lineage():
  message = PubsubMessage(b"LONDON (Reuters) - Hello.", {"format": "Plain", "source": "wire"}, message_id="42")
  now = dt.datetime(2026, 11, 29, 12, tzinfo=UTC)
  raw = message_to_raw(message, SUB, now=now)
  assert (raw.uri, raw.locator, raw.message_id, raw.format_hint) == (SUB, "msg:42", "42", "plain")
  assert raw.attributes == {"format": "Plain", "source": "wire"}
  assert raw.received_at == now and raw.data == message.data


def test_message_without_id_gets_a_stable_stand_in():
  first = message_to_raw(PubsubMessage(b"data", {"a": "1", "b": "2"}), SUB)
  again = message_to_raw(PubsubMessage(b"data", {"b": "2", "a": "1"}), SUB)
  other = message_to_raw(PubsubMessage(b"data", {"a": "1"}), SUB)
  assert first.message_id == again.message_id == fallback_message_id(b"data", {"a": "1", "b": "2"})
  assert first.message_id.startswith("sha256:") and first.locator == f"msg:{first.message_id}"
  assert other.message_id != first.message_id
  assert first.format_hint is None


def test_records_are_stamped_with_their_arrival_time():
  with TestPipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
    stamps = (
        p
        | beam.Create([PubsubMessage(b"x", {"format": "json"}, message_id="7")])
        | beam.ParDo(MessagesToRawRecords(SUB))
        | beam.Map(lambda raw, ts=beam.DoFn.TimestampParam: abs(float(ts) - raw.received_at.timestamp()) < 1e-3))
    assert_that(stamps, equal_to([True]))


def test_dedup_keeps_first_occurrence_across_windows_and_keeps_windows():
  """A repeat in a later window is dropped; survivors stay in their original fixed windows."""
  stream = (
      TestStream()
      .advance_watermark_to(0)
      .add_elements([window.TimestampedValue(_story("a", locator="msg:1"), 1),
                     window.TimestampedValue(_story("b"), 2),
                     window.TimestampedValue(_story("a", locator="msg:2"), 3)])  # same window repeat
      .advance_watermark_to(12)
      .add_elements([window.TimestampedValue(_story("a", locator="msg:3"), 13),  # later-window repeat
                     window.TimestampedValue(_story("b", version=2), 14),  # a new version is not a repeat
                     window.TimestampedValue(_story("c"), 15)])
      .advance_watermark_to_infinity())
  with _streaming_pipeline() as p:
    unique = (
        p
        | stream
        | beam.WindowInto(window.FixedWindows(10))
        | DedupStories(ttl_seconds=3600))
    placed = (
        unique
        | beam.Map(lambda s, w=beam.DoFn.WindowParam: (s.story_id, s.version, s.locator, int(w.start), int(w.end))))
    assert_that(placed, equal_to([("a", 1, "msg:1", 0, 10), ("b", 1, "msg:1", 0, 10),
                                  ("b", 2, "msg:1", 10, 20), ("c", 1, "msg:1", 10, 20)]))
    # The restored windows group like the originals: a GroupByKey downstream sees two windows.
    counts = (
        unique
        | beam.Map(lambda s: ("all", 1))
        | beam.CombinePerKey(sum)
        | beam.Map(lambda kv, w=beam.DoFn.WindowParam: (int(w.start), kv[1])))
    assert_that(counts, equal_to([(0, 2), (10, 2)]), label="per window")


def test_dedup_forgets_a_key_after_its_ttl():
  stream = (
      TestStream()
      .advance_watermark_to(0)
      .add_elements([window.TimestampedValue(_story("a", locator="msg:1"), 1)])
      .advance_watermark_to(5)
      .add_elements([window.TimestampedValue(_story("a", locator="msg:2"), 6)])  # within the ttl: dropped
      .advance_watermark_to(30)  # the expiry timer (1 + 10) has fired
      .add_elements([window.TimestampedValue(_story("a", locator="msg:3"), 31)])
      .advance_watermark_to_infinity())
  with _streaming_pipeline() as p:
    kept = p | stream | DedupStories(ttl_seconds=10) | beam.Map(lambda s: s.locator)
    assert_that(kept, equal_to(["msg:1", "msg:3"]))


def test_dedup_rejects_merging_windows_and_bad_ttl():
  with pytest.raises(ValueError):
    DedupStories(ttl_seconds=0)
  with pytest.raises(ValueError, match="merging"):
    with TestPipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
      _ = (p | beam.Create([_story("a")]) | beam.WindowInto(window.Sessions(10)) | DedupStories())



def test_missing_emulator_is_a_clear_error(monkeypatch, tmp_path):
  from pipelines import emulator

  monkeypatch.setattr(emulator.shutil, "which", lambda name: None)
  with pytest.raises(emulator.EmulatorUnavailable, match="gcloud: not installed; cloud-pubsub-emulator: not"):
    emulator.PubSubEmulator().start()
