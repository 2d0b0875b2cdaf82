"""Dropping repeated story versions: from a stream (``DedupStories``) and within a batch (``OnePerId``).

Pub/Sub delivers at least once, and a feed may publish the same story twice. A story
version is identified by ``(story_id, version)``; ``DedupStories`` lets the first
occurrence through and drops the repeats seen within ``ttl_seconds`` (of event time)
after it, counting them in ``wirestream.dedup.duplicates``.

The seen-keys live in keyed state with an expiry timer, in the global window, so a
repeat is caught even when it arrives in a later window than the first occurrence.
The input's windowing is re-applied to the output: windows assigned from element
timestamps (fixed, sliding, global) come out exactly as they came in.
"""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Duration

from schemas import DeadLetter, Story

METRICS_NAMESPACE = "wirestream.dedup"

#: Default time a story version is remembered: one day of event time.
DEFAULT_TTL_SECONDS = 24 * 3600


def dedup_key(story: Story) -> str:
  """The state key of a story version (a string, so its coder is deterministic)."""
  return f"{story.story_id}\x1f{story.version}"


_SEEN = ReadModifyWriteStateSpec("seen", BooleanCoder())
_EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)
_SEEN_PARAM = beam.DoFn.StateParam(_SEEN)
_EXPIRY_PARAM = beam.DoFn.TimerParam(_EXPIRY)


class _FirstOccurrence(beam.DoFn):
  """Stateful: passes the first element of each key, drops repeats until the key expires."""

  def __init__(self, ttl_seconds: float):
    self._ttl = Duration.of(ttl_seconds)
    self._unique = Metrics.counter(METRICS_NAMESPACE, "unique")
    self._duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicates")

  def process(self, element: tuple[str, Story], timestamp=beam.DoFn.TimestampParam,
              seen=_SEEN_PARAM, expiry=_EXPIRY_PARAM) -> Iterable:
    _, story = element
    if seen.read():
      self._duplicates.inc()
      return
    seen.write(True)
    expiry.set(timestamp + self._ttl)
    self._unique.inc()
    yield TimestampedValue(story, timestamp)

  @on_timer(_EXPIRY)
  def expire(self, seen=_SEEN_PARAM) -> None:
    seen.clear()


class DedupStories(beam.PTransform):
  """PCollection[Story] -> PCollection[Story] with each (story_id, version) once.

  Keeps each element's timestamp and window (see the module docstring); merging
  windows (sessions) are not supported.
  """

  def __init__(self, ttl_seconds: float = DEFAULT_TTL_SECONDS):
    super().__init__()
    if ttl_seconds <= 0:
      raise ValueError("ttl_seconds must be positive")
    self._ttl_seconds = ttl_seconds

  def expand(self, stories):
    windowing = stories.windowing
    if windowing.windowfn.is_merging():
      raise ValueError("DedupStories does not support merging windows (e.g. sessions)")
    keyed = stories | "Key" >> beam.Map(lambda story: (dedup_key(story), story)).with_output_types(
        tuple[str, Story])
    rewindow = not isinstance(windowing.windowfn, GlobalWindows)
    if rewindow:
      keyed = keyed | "AcrossWindows" >> beam.WindowInto(GlobalWindows())
    unique = keyed | "FirstOccurrence" >> beam.ParDo(_FirstOccurrence(self._ttl_seconds))
    if rewindow:
      unique = unique | "RestoreWindows" >> beam.WindowInto(
          windowing.windowfn, trigger=windowing.triggerfn, accumulation_mode=windowing.accumulation_mode,
          timestamp_combiner=windowing.timestamp_combiner, allowed_lateness=windowing.allowed_lateness)
    return unique


def _first(group: tuple[str, Iterable], name: str) -> Story | DeadLetter:
  _, elements = group
  ordered = sorted(elements, key=lambda item: (item.input_uri, item.locator))
  if len(ordered) > 1:
    Metrics.counter(METRICS_NAMESPACE, f"{name}_repeats").inc(len(ordered) - 1)
  return ordered[0]


class OnePerId(beam.PTransform):
  """Batch: PCollection[Story] or PCollection[DeadLetter] -> one element per row id.

  Stories are keyed by ``event_id`` (``story_id:version``), dead letters by ``error_id``. Of the
  elements sharing an id (the same story in two files, a file named twice), the one first in
  (input_uri, locator) order is kept, so a run writes one row per id and reruns keep the same one.
  Counts the dropped repeats in ``wirestream.dedup.<name>_repeats``.
  """

  def __init__(self, name: str):
    super().__init__()
    self._name = name

  def expand(self, elements):
    return (
        elements
        | "KeyById" >> beam.Map(lambda item: (item.error_id if isinstance(item, DeadLetter) else item.event_id,
                                              item))
        | "GroupById" >> beam.GroupByKey()
        | "KeepFirst" >> beam.Map(_first, self._name))
