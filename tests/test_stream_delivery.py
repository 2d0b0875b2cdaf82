"""At-least-once delivery of the stream on the DirectRunner, against the Pub/Sub emulator.

Each test publishes stories, stops the stream while its window is open (a signal, a
second signal, SIGKILL), restarts it on the same subscription, and checks that every
story is in the lake exactly once (by the query views) and that no message is left
unacknowledged. Subscriptions have the shortest ack deadline Pub/Sub allows (10 s) and
the stream holds messages with ``--lease-seconds 10``, so a killed stream's messages
come back within about 10 s.
"""

from __future__ import annotations

import re
import signal
import time

import duckdb
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from pipelines import query
from tests.pubsub_emulator import StreamProcess, pubsub_emulator  # noqa: F401 - fixture
from tests.test_poison import story_object

pytestmark = [pytest.mark.emulator,
              pytest.mark.filterwarnings("ignore:The return_immediately flag:DeprecationWarning")]

STORIES = 30
LEASE = "10"


def _story(run: str, i: int) -> bytes:
  return (f"Delivery {run} story {i}\n\nOSLO (NTB) - Story {i} of run {run} was filed in Oslo on a quiet "
          f"afternoon.\nOfficials said the count reached {i * 7} by noon.\n").encode()


@pytest.fixture
def emulator(pubsub_emulator, monkeypatch):  # noqa: F811
  """The module's emulator, with this process's Pub/Sub clients pointed at it."""
  for key, value in pubsub_emulator.env().items():
    monkeypatch.setenv(key, value)
  return pubsub_emulator


def _channel(emulator, name: str) -> tuple[str, str]:
  topic = emulator.create_topic(f"delivery-{name}")
  return topic, emulator.create_subscription(topic, f"delivery-{name}", ack_deadline_seconds=10)


def _publish(topic: str, run: str, count: int = STORIES) -> set[str]:
  from google.cloud import pubsub_v1
  publisher = pubsub_v1.PublisherClient()
  futures = [publisher.publish(topic, _story(run, i), format="plain") for i in range(count)]
  return {future.result() for future in futures}


def _deliverable(subscription: str) -> int:
  """Messages Pub/Sub would deliver right now (pulled, and handed back at once)."""
  from google.cloud import pubsub_v1
  with pubsub_v1.SubscriberClient() as subscriber:
    response = subscriber.pull(subscription=subscription, max_messages=1000, return_immediately=True)
    ack_ids = [received.ack_id for received in response.received_messages]
    if ack_ids:
      subscriber.modify_ack_deadline(subscription=subscription, ack_ids=ack_ids, ack_deadline_seconds=0)
    return len(ack_ids)


def _summary(stream: StreamProcess) -> dict[str, int]:
  found = re.findall(r"^\s+wirestream\.stream\.(\w+)\s+(\d+)$", stream.output(), re.M)
  return {name: int(value) for name, value in found}


def _stream(emulator, subscription: str, lake, *extra: str, window: str = "600",
            sigint=signal.SIG_DFL) -> StreamProcess:
  stream = StreamProcess(
      ["--subscription", subscription, "--output", str(lake), "--window-seconds", window, "--stages", "none",
       "--lease-seconds", LEASE, "--progress-seconds", "0.5", *extra], emulator.env(), sigint=sigint)
  assert stream.running.wait(90), stream.output()
  return stream


def _lake_rows(lake) -> tuple[int, int, set[str]]:
  """(rows in the events files, rows of the events view, message ids of the view)."""
  if not list(lake.glob("events/*/*.parquet")):
    return 0, 0, set()
  files = duckdb.connect().execute(
      f"SELECT count(*) FROM read_parquet('{lake}/events/*/*.parquet')").fetchone()[0]
  con = query.connect(str(lake))
  ids = {row[0] for row in con.execute("SELECT message_id FROM events").fetchall()}
  return files, con.execute("SELECT count(*) FROM events").fetchone()[0], ids


def _restart(emulator, subscription, lake, redelivered: int) -> StreamProcess:
  """Restarts the stream (2 s windows) until it has read ``redelivered`` messages and the views hold
  every story; then a few seconds more (any further delivery would show), and stops it with SIGTERM."""
  again = _stream(emulator, subscription, lake, window="2")
  assert again.wait_for(f"messages={redelivered} ", 60), again.output()
  deadline = time.monotonic() + 30
  while _lake_rows(lake)[1] < STORIES and time.monotonic() < deadline and again.proc.poll() is None:
    time.sleep(0.3)
  time.sleep(3)
  again.proc.send_signal(signal.SIGTERM)
  assert again.wait(60) == 128 + signal.SIGTERM, again.output()
  assert "SIGTERM received, stopping" in again.output()
  if redelivered:
    summary = _summary(again)
    assert summary["messages"] == summary["messages_acked"] == redelivered, again.output()
  else:  # a stream that received nothing says so instead of printing a summary of zeros
    assert "no message arrived on the subscription; nothing was written" in again.output(), again.output()
  return again


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGINT-inherited-ignored"])
def test_a_signal_writes_the_open_window_and_acknowledges_it(emulator, tmp_path, how):
  topic, subscription = _channel(emulator, how.lower())
  published = _publish(topic, how)
  lake = tmp_path / "lake"
  signum = signal.SIGTERM if how == "SIGTERM" else signal.SIGINT
  stream = _stream(emulator, subscription, lake,
                   sigint=signal.SIG_IGN if how.endswith("ignored") else signal.SIG_DFL)
  assert stream.wait_for(f"messages={STORIES} ", 60), stream.output()
  assert _lake_rows(lake)[0] == 0  # the window is open: nothing written yet
  stopping = time.monotonic()
  stream.proc.send_signal(signum)
  assert stream.wait(60) == 128 + signum, stream.output()
  stop_s = time.monotonic() - stopping
  out = stream.output()
  assert f"{signal.Signals(signum).name} received, stopping" in out and "state DONE" in out, out
  assert _summary(stream)["messages_acked"] == STORIES, out
  assert _lake_rows(lake) == (STORIES, STORIES, published)
  assert _deliverable(subscription) == 0
  # A restart finds nothing to do.
  _restart(emulator, subscription, lake, 0)
  assert _lake_rows(lake) == (STORIES, STORIES, published)
  assert _deliverable(subscription) == 0
  print(f"\n{how}: {STORIES}/{STORIES} stories written and acknowledged; stop took {stop_s:.1f}s")


def test_sigkill_loses_nothing(emulator, tmp_path):
  topic, subscription = _channel(emulator, "sigkill")
  published = _publish(topic, "sigkill")
  lake = tmp_path / "lake"
  stream = _stream(emulator, subscription, lake)
  assert stream.wait_for(f"messages={STORIES} ", 60), stream.output()
  stream.proc.kill()
  stream.wait(30)
  assert _lake_rows(lake)[0] == 0
  killed = time.monotonic()
  again = _restart(emulator, subscription, lake, STORIES)
  files, view, ids = _lake_rows(lake)
  assert (view, ids) == (STORIES, published) and files == STORIES, again.output()
  assert _deliverable(subscription) == 0
  print(f"\nSIGKILL: {STORIES}/{STORIES} stories written after the restart, "
        f"{time.monotonic() - killed:.1f}s after the kill")


def test_a_second_signal_cancels_without_acknowledging(emulator, tmp_path):
  topic, subscription = _channel(emulator, "twice")
  published = _publish(topic, "twice")
  lake = tmp_path / "lake"
  stream = _stream(emulator, subscription, lake)
  assert stream.wait_for(f"messages={STORIES} ", 60), stream.output()
  stopping = time.monotonic()
  stream.proc.send_signal(signal.SIGTERM)
  stream.proc.send_signal(signal.SIGINT)  # both pending: the process sees them in either order
  status = stream.wait(30)
  cancel_s = time.monotonic() - stopping
  out = stream.output()
  again_name = re.search(r"(SIG\w+) received again: cancelling", out)
  assert again_name and status == 128 + signal.Signals[again_name.group(1)], out
  assert "handed back to Pub/Sub" in out, out
  # What was not written was not acknowledged: it comes back at once (handed back), and a
  # restart writes every story once.
  written = _lake_rows(lake)[2]
  acked = _summary(stream).get("messages_acked", 0)
  again = _restart(emulator, subscription, lake, STORIES - acked)
  files, view, ids = _lake_rows(lake)
  assert (view, ids) == (STORIES, published), again.output()
  assert files == len(written) + STORIES - acked
  assert _deliverable(subscription) == 0
  print(f"\nsecond signal: cancelled in {cancel_s:.1f}s, {len(written)} written before; "
        f"{STORIES}/{STORIES} after the restart")


def _enrichment_available() -> bool:
  from transforms import ner_model, topics_model
  return all(path.is_dir() and any(path.iterdir())
             for path in (ner_model.DEFAULT_MODEL_DIR, topics_model.DEFAULT_MODEL_DIR))


@pytest.mark.skipif(not _enrichment_available(), reason="the enrichment models are not built")
def test_sigterm_with_the_enrichment_stages_writes_enriched_stories_quickly(emulator, tmp_path):
  topic, subscription = _channel(emulator, "stages")
  published = _publish(topic, "stages")
  lake = tmp_path / "lake"
  stream = _stream(emulator, subscription, lake, "--stages", "ner,topics")
  assert stream.wait_for(f"messages={STORIES} ", 90), stream.output()
  time.sleep(1)
  stopping = time.monotonic()
  stream.proc.send_signal(signal.SIGTERM)
  assert stream.wait(90) == 128 + signal.SIGTERM, stream.output()
  stop_s = time.monotonic() - stopping
  assert _summary(stream)["messages_acked"] == STORIES, stream.output()
  con = query.connect(str(lake))
  rows = con.execute("SELECT message_id, ner_status, topics_status FROM events").fetchall()
  assert {row[0] for row in rows} == published
  assert {(row[1], row[2]) for row in rows} == {("applied", "applied")}
  assert _deliverable(subscription) == 0
  # The models are loaded once: stopping writes the open window without loading them again.
  assert stop_s < 20, f"stop took {stop_s:.1f}s:\n{stream.output()}"
  print(f"\nSIGTERM with ner,topics: {STORIES}/{STORIES} enriched and acknowledged; stop took {stop_s:.1f}s")


_POISON = {"headline": "Bad \ud800 head", "body": "LONDON (Reuters) - A lone surrogate in the headline."}


@settings(max_examples=1, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(st.lists(story_object, min_size=3, max_size=10), st.booleans())
@example([_POISON, {"headline": "Fine", "body": "OSLO (NTB) - A good story."}], True)
def test_no_message_stops_the_stream(emulator, tmp_path_factory, objects, ascii_only):
  """Arbitrary records as messages: each one ends as an event or error rows, all acknowledged."""
  import json

  from google.cloud import pubsub_v1

  topic, subscription = _channel(emulator, f"fuzz-{time.monotonic_ns()}")
  publisher = pubsub_v1.PublisherClient()
  futures = []
  for i, obj in enumerate(objects):
    data = json.dumps({**obj, "guid": f"fuzz-{i}"}, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    futures.append(publisher.publish(topic, data, format="json"))
  published = {future.result() for future in futures}
  lake = tmp_path_factory.mktemp("fuzz") / "lake"
  stream = _stream(emulator, subscription, lake, "--duration", "6", window="2")
  assert stream.wait(90) == 0, stream.output()
  assert _summary(stream)["messages_acked"] == len(published), stream.output()
  con = query.connect(str(lake))
  events = {row[0] for row in con.execute("SELECT message_id FROM events").fetchall()}
  errors = {row[0] for row in con.execute("SELECT message_id FROM errors").fetchall()}
  assert events | errors == published and not events & errors, stream.output()
  assert _deliverable(subscription) == 0
