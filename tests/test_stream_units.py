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


# --------------------------------------------------------------------------- at-least-once on the DirectRunner


class _FakeSubscriber:
  """A SubscriberClient stand-in that records its calls."""

  def __init__(self, messages=()):
    from google.cloud.pubsub_v1 import types
    self.calls: list[tuple[str, tuple[str, ...], int | None]] = []
    self._response = types.PullResponse(received_messages=[
        types.ReceivedMessage(ack_id=f"ack-{message_id}", message=types.PubsubMessage(
            data=b"story", message_id=message_id, publish_time=dt.datetime(2026, 1, 1, tzinfo=UTC)))
        for message_id in messages])

  def pull(self, *, subscription, max_messages, timeout=None, return_immediately=False, **kwargs):
    self.calls.append(("pull", (), max_messages))
    return self._response

  def acknowledge(self, *, subscription, ack_ids, **kwargs):
    self.calls.append(("acknowledge", tuple(ack_ids), None))

  def modify_ack_deadline(self, *, subscription, ack_ids, ack_deadline_seconds, **kwargs):
    self.calls.append(("modify", tuple(ack_ids), ack_deadline_seconds))


def _read_once(evaluator_class, client):
  """Runs the evaluator's read of one bundle with ``client`` as Beam's subscriber client."""
  evaluator = object.__new__(evaluator_class)
  evaluator._applied_ptransform = object()
  evaluator._sub_name = SUB
  return evaluator_class._read_from_pubsub(evaluator, None)


def test_beam_direct_runner_pubsub_read_is_what_the_stream_adapts(monkeypatch):
  """Pins the Beam behaviour ``DirectReadControl`` adapts: an upgrade that changes it fails here.

  ``_PubSubReadEvaluator._read_from_pubsub`` pulls through ``_get_subscriber_client`` and
  acknowledges every pulled message at once through the same client; ``finish_bundle`` reads.
  """
  import apache_beam
  from apache_beam.runners.direct import transform_evaluator

  from pipelines.stream import DirectReadControl

  assert DirectReadControl.supported(), f"Beam {apache_beam.__version__}: no Pub/Sub evaluator to adapt"
  cls = transform_evaluator._PubSubReadEvaluator
  fake = _FakeSubscriber(["m1", "m2"])
  monkeypatch.setattr(cls, "_get_subscriber_client", classmethod(lambda klass, transform: fake))
  messages = _read_once(cls, fake)
  assert [message.message_id for _, message in messages] == ["m1", "m2"]
  assert [call[0] for call in fake.calls] == ["pull", "acknowledge"]  # Beam acks as it pulls
  assert fake.calls[1][1] == ("ack-m1", "ack-m2")


def test_read_control_holds_pulled_messages_until_written(monkeypatch):
  from apache_beam.runners.direct import transform_evaluator

  from pipelines.stream import DirectReadControl
  from transforms.pubsub import Leases

  cls = transform_evaluator._PubSubReadEvaluator
  fake = _FakeSubscriber(["m1", "m2"])
  monkeypatch.setattr(cls, "_get_subscriber_client", classmethod(lambda klass, transform: fake))
  leases = Leases(fake, SUB, lease_seconds=30)
  original_read = cls.__dict__["_read_from_pubsub"]
  with DirectReadControl(poll_seconds=0, max_messages=50, leases=leases) as control:
    messages = _read_once(cls, fake)
  assert len(messages) == 2 and control.pulled == 2 and leases.held == 2
  # Pulled in larger batches at once; no acknowledgement, the deadlines set to the lease instead.
  assert fake.calls == [("pull", (), 50), ("modify", ("ack-m1", "ack-m2"), 30)]
  assert cls.__dict__["_read_from_pubsub"] is original_read  # Beam's own again after the block
  assert leases.ack(["m2", "unknown"]) == 1 and leases.held == 1
  assert fake.calls[-1] == ("acknowledge", ("ack-m2",), None)
  assert leases.release() == 1 and leases.held == 0
  assert fake.calls[-1] == ("modify", ("ack-m1",), 0)  # handed back for redelivery at once


def test_leases_extend_held_deadlines_until_released():
  import time

  from transforms.pubsub import Leases

  fake = _FakeSubscriber()
  leases = Leases(fake, SUB, lease_seconds=10)
  leases._lease = 0.3  # a third of it between extensions
  leases.start()
  leases.hold(_FakeSubscriber(["m1"])._response.received_messages)
  time.sleep(0.5)
  leases.release()
  extensions = [call for call in fake.calls if call == ("modify", ("ack-m1",), 0.3)]
  assert len(extensions) >= 3, fake.calls  # at hold, then every 0.1 s
  assert fake.calls[-1] == ("modify", ("ack-m1",), 0)
  with pytest.raises(ValueError):
    Leases(fake, SUB, lease_seconds=5)


def test_acknowledgements_wait_for_the_window_files(tmp_path):
  """The stream's ack branch fires for a window only once that window's files exist (Beam's watermark)."""
  from pipelines import stream
  from schemas import RawRecord
  from transforms.write import WriteTables

  acked: list[tuple[str, bool]] = []
  windows = {"a": "19700101T000000Z-19700101T000010Z", "b": "19700101T000000Z-19700101T000010Z",
             "c": "19700101T000010Z-19700101T000020Z"}

  class _Probe:
    def ack(self, ids):
      ids = list(ids)
      files = " ".join(p.name for p in (tmp_path / "lake").rglob("*.parquet"))
      acked.extend((message_id, f"part-{windows[message_id]}-" in files) for message_id in ids)
      return len(ids)

  run_id = "units-ack-probe"
  stream._LEASES[run_id] = _Probe()
  try:
    def raw(message_id, ts):
      return window.TimestampedValue(RawRecord(uri=SUB, data=f"Story {message_id}. Oslo said so.".encode(),
                                               locator=f"msg:{message_id}", message_id=message_id), ts)
    events = (TestStream().advance_watermark_to(0).add_elements([raw("a", 1), raw("b", 2)])
              .advance_watermark_to(15).add_elements([raw("c", 16)]).advance_watermark_to_infinity())
    with _streaming_pipeline() as p:
      records = p | events | beam.WindowInto(window.FixedWindows(10))
      from transforms.parse import ParseStories
      stories, errors = records | ParseStories()
      written = (stories, errors) | WriteTables(str(tmp_path / "lake"))
      stream.acknowledge_when_written(records, written, run_id)
  finally:
    stream._LEASES.pop(run_id, None)
  assert sorted(acked) == [("a", True), ("b", True), ("c", True)]
