"""The streaming pipeline end to end against the Pub/Sub emulator.

Publishes stories (a duplicate, garbage bytes, broken JSON, an oversize story, a gzip
file, a JSON Lines batch), runs ``pipelines.stream`` in a subprocess with
``--duration``, and checks the ledger in the Parquet files with DuckDB.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import signal
import statistics
import time
from pathlib import Path

import duckdb
import pytest

from pipelines import query
from pipelines.publish import publish_files
from tests.pubsub_emulator import StreamProcess, pubsub_channel, pubsub_emulator  # noqa: F401 - fixtures
from tests.test_cluster import STEEL

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "seeds" / "000_2caeb3c1602a667c.txt"
WINDOW_SECONDS = 3
MAX_STORY_BYTES = 20_000
FILE_NAME = re.compile(r"^part-\d{8}T\d{6}Z-\d{8}T\d{6}Z-\d{3}-[0-9a-f]{20}(-\d{4})?\.parquet$")

pytestmark = pytest.mark.emulator


def _plain(i: int) -> bytes:
  return (f"Live story {i}\n\nOSLO (NTB) - Story number {i} of the live batch was filed on a quiet "
          f"afternoon.\nOfficials in Oslo said the count reached {i * 7} by noon.\n").encode()


def test_stream_ledger_dedup_errors_and_latency(pubsub_channel, tmp_path):  # noqa: F811
  from google.cloud import pubsub_v1

  channel = pubsub_channel
  publisher = pubsub_v1.PublisherClient()
  src = tmp_path / "src"
  src.mkdir()
  (src / "story.json").write_text(json.dumps({
      "guid": "urn:test:json-1", "version": 2, "headline": "Harbour reopens",
      "body": "BERGEN (NTB) - The harbour reopened on Tuesday after repairs.\n\nShips queued outside.",
      "language": "en", "published": "2026-11-28T09:00:00Z"}))
  (src / "batch.jsonl").write_text(
      json.dumps({"guid": "urn:test:line-1", "headline": "First line", "body": "Rain fell in Paris."}) + "\n"
      + json.dumps({"guid": "urn:test:line-2", "headline": "Second line", "body": "Snow fell in Oslo."}) + "\n")
  (src / "story.txt.gz").write_bytes(gzip.compress(b"ROME (Reuters) - Italy's parliament met on Monday.\n"))
  # Two stories that share too little to be one, and a third, filed last, that contains both: it bridges them.
  (src / "bridge.jsonl").write_text("".join(
      json.dumps({"guid": f"urn:test:bridge-{name}", "headline": headline, "body": "\n\n".join(paragraphs),
                  "language": "en", "published": f"2026-11-28T10:{minute}:00Z"}) + "\n"
      for name, headline, paragraphs, minute in (
          ("a", "Northfield to close Hamilton plant", STEEL[:4], "00"),
          ("b", "Hamilton mayor laments steel closure", STEEL[2:], "10"),
          ("c", "NORTHFIELD STEEL PLANT CLOSURE", STEEL, "20"))))
  (src / "huge.txt").write_bytes(b"LONDON (Reuters) - " + b"Markets moved again. " * 2000)

  # Backlog, published before the pipeline starts.
  ids, problems = publish_files(channel.topic, [SEED, SEED, src / "story.json", src / "batch.jsonl",
                                                src / "story.txt.gz", src / "huge.txt", src / "bridge.jsonl"],
                                publisher=publisher)
  assert not problems
  seed_id, seed_repeat_id, json_id, jsonl_id, gz_id, huge_id, bridge_id = ids
  garbage = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8\xff\xe0 not a story \xc3\x28\xa0\xa1"
  garbage_id = publisher.publish(channel.topic, garbage, source="fuzzer", kind="garbage").result()
  broken_id = publisher.publish(channel.topic, b'{"headline": "Broken", "body": "no end', format="json").result()

  lake = tmp_path / "lake"
  stream = StreamProcess(
      ["--subscription", channel.subscription, "--output", str(lake), "--window-seconds", str(WINDOW_SECONDS),
       "--duration", "16", "--stages", "none", "--max-story-bytes", str(MAX_STORY_BYTES),
       "--progress-seconds", "1"],
      channel.emulator.env())
  started = time.monotonic()
  assert stream.running.wait(90), "the stream did not start:\n" + stream.output()

  # Live messages, published while the pipeline runs: their latency is measured.
  published_at: dict[str, float] = {}
  for i in range(4):
    message_id = publisher.publish(channel.topic, _plain(i), format="plain").result()
    published_at[message_id] = time.time()
    time.sleep(0.7)
  late_repeat_id = publisher.publish(channel.topic, SEED.read_bytes(), format="plain").result()
  published_at[late_repeat_id] = time.time()

  assert stream.wait(120) == 0, stream.output()
  elapsed = time.monotonic() - started
  out = stream.output()
  assert "stopped reading after" in out and "state DONE" in out and "summary:" in out
  assert re.search(r"^stream: .*messages=\d+", out, re.M), out

  summary = dict(re.findall(r"^\s+wirestream\.stream\.(\w+)\s+(\d+)$", out, re.M))
  assert int(summary["messages"]) == 9 + len(published_at)
  assert int(summary["duplicates"]) == 2 and int(summary["errors_rows_written"]) == 3
  assert int(summary["events_rows_written"]) == int(summary["stories_out"]) == int(summary["stories_unique"])

  # File names: plain UTC window bounds + shard + hash, easy to glob.
  files = sorted(p for p in lake.rglob("*.parquet") if not p.name.startswith("part-schema-"))
  assert files, out
  for path in files:
    assert FILE_NAME.match(path.name), path.name
    assert path.parent.name.startswith("date=") and path.parent.parent.parent == lake
  assert not list(lake.rglob(".tmp-*"))

  con = duckdb.connect()
  glob = f"{lake}/%s/*/*.parquet"
  con.execute(f"CREATE VIEW ev AS SELECT *, filename AS file FROM read_parquet('{glob % 'events'}', "
              "hive_partitioning=true, filename=true)")
  con.execute(f"CREATE VIEW er AS SELECT * FROM read_parquet('{glob % 'errors'}', hive_partitioning=true)")

  # Duplicates collapsed: one row per event in the files themselves, the seed story once.
  total, distinct = con.execute("SELECT count(*), count(DISTINCT event_id) FROM ev").fetchone()
  assert total == distinct
  seed_rows = con.execute("SELECT message_id FROM ev WHERE dateline = 'WASHINGTON (Reuters)'").fetchall()
  assert len(seed_rows) == 1 and seed_rows[0][0] in (seed_id, seed_repeat_id, late_repeat_id)

  # The ledger: every published message is in events or errors, or repeats a story that is.
  events = dict(con.execute("SELECT message_id, count(*) FROM ev GROUP BY 1").fetchall())
  errors = {row[0]: row[1:] for row in con.execute(
      "SELECT message_id, stage, error_type, locator, input_uri, attributes FROM er").fetchall()}
  repeats = {seed_id, seed_repeat_id, late_repeat_id} - {seed_rows[0][0]}
  published = {seed_id, seed_repeat_id, json_id, jsonl_id, gz_id, huge_id, bridge_id, garbage_id, broken_id,
               *published_at}
  assert set(events) | set(errors) | repeats == published
  assert not (set(events) & repeats) and not (set(errors) & repeats)
  assert events[jsonl_id] == 2 and events[bridge_id] == 3
  assert sorted(r[0] for r in con.execute("SELECT locator FROM ev WHERE message_id = ?", [jsonl_id]).fetchall()) \
      == [f"msg:{jsonl_id}/line:1", f"msg:{jsonl_id}/line:2"]
  assert con.execute("SELECT source_format, version FROM ev WHERE message_id = ?", [json_id]).fetchone() \
      == ("json", 2)
  assert con.execute("SELECT dateline_place FROM ev WHERE message_id = ?", [gz_id]).fetchone() == ("ROME",)
  assert all(events[m] == 1 for m in published_at if m != late_repeat_id)

  # Bad messages: in errors with their message id and attributes; the stream went on.
  stage, error_type, locator, input_uri, attributes = errors[garbage_id]
  assert (stage, locator, input_uri) == ("parse", f"msg:{garbage_id}", channel.subscription)
  assert dict(attributes) == {"source": "fuzzer", "kind": "garbage"}
  assert errors[broken_id][0] == "parse" and dict(errors[broken_id][4]) == {"format": "json"}
  assert errors[huge_id][1] == "StoryTooLarge"
  assert dict(errors[huge_id][4])["filename"] == "huge.txt"
  excerpt = con.execute("SELECT raw_excerpt FROM er WHERE message_id = ?", [garbage_id]).fetchone()[0]
  assert excerpt == garbage

  # The query views agree.
  view = query.connect(str(lake))
  assert view.execute("SELECT count(*) FROM events").fetchone()[0] == total
  assert view.execute("SELECT count(*) FROM errors").fetchone()[0] == len(errors) == 3

  # The story that bridges two clusters: its row records the other cluster, and the views show one.
  written = {row[0]: row[1:] for row in con.execute(
      "SELECT headline, story_id, cluster_id, cluster_links FROM ev WHERE message_id = ?", [bridge_id]).fetchall()}
  a, b, c = (written[h] for h in ("Northfield to close Hamilton plant", "Hamilton mayor laments steel closure",
                                  "NORTHFIELD STEEL PLANT CLOSURE"))
  assert (a[1], b[1], c[1], c[2]) == (a[0], b[0], a[0], [b[0]])
  assert view.execute("SELECT DISTINCT cluster_id FROM events WHERE message_id = ?", [bridge_id]).fetchall() \
      == [(a[0],)]
  assert view.execute("SELECT size, story_ids FROM stories WHERE cluster_id = ?", [a[0]]).fetchone() == (3, 3)

  # End-to-end latency: publish -> the events file holding the message is in place.
  latencies = []
  for message_id, when in published_at.items():
    if message_id == late_repeat_id:
      continue
    (file,) = con.execute("SELECT file FROM ev WHERE message_id = ?", [message_id]).fetchone()
    latencies.append(os.stat(file).st_mtime - when)
  print(f"\nstream test: {elapsed:.1f}s wall; publish->file latency with {WINDOW_SECONDS}s windows: "
        f"min {min(latencies):.2f}s, median {statistics.median(latencies):.2f}s, max {max(latencies):.2f}s")
  assert max(latencies) < WINDOW_SECONDS + 10, latencies


def test_publish_command_sends_files_as_they_are(pubsub_channel, tmp_path, capsys):  # noqa: F811
  from google.cloud import pubsub_v1

  from pipelines import publish

  (tmp_path / "a.jsonl").write_text('{"headline": "H", "body": "B."}\n')
  (tmp_path / "b.txt.gz").write_bytes(gzip.compress(b"PARIS (AFP) - Gzip as is.\n"))
  (tmp_path / "c.xml").write_bytes(b"<nitf><body/></nitf>")
  (tmp_path / ".hidden").write_text("skip me")
  args = argparse.Namespace(topic=pubsub_channel.topic, files=[str(tmp_path)], format=None,
                            attribute=[("feed", "test")])
  assert publish.run(args) == 0
  printed = capsys.readouterr()
  assert "3 message(s)" in printed.err and "emulator" in printed.err
  with pubsub_v1.SubscriberClient() as subscriber:
    received = {}
    deadline = time.monotonic() + 30
    while len(received) < 3 and time.monotonic() < deadline:
      response = subscriber.pull(subscription=pubsub_channel.subscription, max_messages=10, timeout=5)
      for rm in response.received_messages:
        received[rm.message.attributes["filename"]] = (rm.message.data, dict(rm.message.attributes))
  assert received["a.jsonl"][1] == {"filename": "a.jsonl", "format": "jsonl", "feed": "test"}
  assert received["b.txt.gz"] == ((tmp_path / "b.txt.gz").read_bytes(),
                                  {"filename": "b.txt.gz", "format": "plain", "feed": "test"})
  assert "format" not in received["c.xml"][1]  # ambiguous extension: the stream detects the format
  assert publish.run(argparse.Namespace(topic=pubsub_channel.topic, files=[str(tmp_path / "nope")],
                                        format=None, attribute=None)) == 2


def test_stream_rejects_bad_arguments(tmp_path, capsys):
  from pipelines import stream

  assert stream.main(["--subscription", "stream", "--output", str(tmp_path / "lake")]) == 2
  assert "projects/PROJECT/subscriptions/NAME" in capsys.readouterr().err
  assert stream.main(["--subscription", "projects/p/subscriptions/s", "--output", str(tmp_path / "lake"),
                      "--window-seconds", "0"]) == 2


def test_interrupt_flushes_the_open_window(pubsub_channel, tmp_path):  # noqa: F811
  """Ctrl-C without --duration: reading stops, the open window is written, exit status 130."""
  from google.cloud import pubsub_v1

  lake = tmp_path / "lake"
  stream = StreamProcess(
      ["--subscription", pubsub_channel.subscription, "--output", str(lake), "--window-seconds", "3600",
       "--stages", "none"], pubsub_channel.emulator.env())
  assert stream.running.wait(90), stream.output()
  message_id = pubsub_v1.PublisherClient().publish(pubsub_channel.topic, _plain(99)).result()
  deadline = time.monotonic() + 30
  while not any("messages=1" in line for line in stream.lines) and time.monotonic() < deadline:
    time.sleep(0.2)
  stream.proc.send_signal(signal.SIGINT)
  assert stream.wait(60) == 130, stream.output()
  assert "SIGINT received, stopping" in stream.output()
  con = query.connect(str(lake))
  assert con.execute("SELECT message_id FROM events").fetchall() == [(message_id,)]

  # A restarted stream has no memory of what it wrote: a repeat in another window lands in the
  # files again (in the same window it would rewrite the same file), and the events view still
  # counts the story once.
  again = StreamProcess(
      ["--subscription", pubsub_channel.subscription, "--output", str(lake), "--window-seconds", "1800",
       "--duration", "6", "--stages", "none"], pubsub_channel.emulator.env())
  assert again.running.wait(90), again.output()
  repeat_id = pubsub_v1.PublisherClient().publish(pubsub_channel.topic, _plain(99)).result()
  assert again.wait(60) == 0, again.output()
  files = duckdb.connect().execute(
      f"SELECT message_id FROM read_parquet('{lake}/events/*/*.parquet') ORDER BY message_id").fetchall()
  assert sorted(files) == sorted([(message_id,), (repeat_id,)])
  con = query.connect(str(lake))
  assert con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone() == (1, 1)


def _event_rows(con, lake: Path) -> int:
  if not list(lake.glob("events/*/*.parquet")):
    return 0
  return con.execute(f"SELECT count(*) FROM read_parquet('{lake}/events/*/*.parquet')").fetchone()[0]


def _stages_with_models() -> list[str]:
  """The enrichment stages whose default model is built."""
  from transforms import ner_model, topics_model
  dirs = {"ner": ner_model.DEFAULT_MODEL_DIR, "topics": topics_model.DEFAULT_MODEL_DIR}
  return [stage for stage, path in dirs.items() if path.is_dir() and any(path.iterdir())]


@pytest.mark.slow
def test_stream_with_the_enrichment_stages(pubsub_channel, tmp_path):  # noqa: F811
  """NER and topics (those with a built model) inside the windows; latency once the models are loaded."""
  stages = _stages_with_models()
  if not stages:
    pytest.skip("no enrichment model is built (transforms/assets/ner, transforms/assets/topics)")
  from google.cloud import pubsub_v1

  publisher = pubsub_v1.PublisherClient()
  warm_id = publisher.publish(pubsub_channel.topic, SEED.read_bytes(), format="plain").result()
  lake = tmp_path / "lake"
  stream = StreamProcess(
      ["--subscription", pubsub_channel.subscription, "--output", str(lake), "--window-seconds",
       str(WINDOW_SECONDS), "--duration", "40", "--progress-seconds", "1", "--stages", ",".join(stages)],
      pubsub_channel.emulator.env())
  assert stream.running.wait(90), stream.output()
  deadline = time.monotonic() + 35
  while not list((lake / "events").rglob("part-2*.parquet")) and time.monotonic() < deadline:
    time.sleep(0.2)
  assert list((lake / "events").rglob("part-2*.parquet")), "the first window was not written:\n" + stream.output()
  published_at = {}
  for i in range(3):
    published_at[publisher.publish(pubsub_channel.topic, _plain(i), format="plain").result()] = time.time()
    time.sleep(0.5)
  con = duckdb.connect()
  deadline = time.monotonic() + 30
  while _event_rows(con, lake) < 4 and time.monotonic() < deadline:
    time.sleep(0.2)
  stopping = time.monotonic()
  stream.proc.send_signal(signal.SIGINT)  # done: no need to wait for --duration
  assert stream.wait(60) == 130, stream.output()
  stop_s = time.monotonic() - stopping
  rows = con.execute(
      f"SELECT message_id, ner_status, topics_status, filename FROM read_parquet('{lake}/events/*/*.parquet', "
      "filename=true)").fetchall()
  assert {r[0] for r in rows} == {warm_id, *published_at}
  assert all(bool(r[1]) == ("ner" in stages) and bool(r[2]) == ("topics" in stages) for r in rows), rows
  if "ner" in stages:
    assert con.execute(f"SELECT count(*) FROM read_parquet('{lake}/entities/*/*.parquet')").fetchone()[0] > 0
  latencies = [os.stat(r[3]).st_mtime - published_at[r[0]] for r in rows if r[0] in published_at]
  print(f"\nstream test with stages {','.join(stages)}: publish->file latency with {WINDOW_SECONDS}s windows: "
        f"min {min(latencies):.2f}s, max {max(latencies):.2f}s; stop took {stop_s:.1f}s")
  assert max(latencies) < WINDOW_SECONDS + 15, latencies


def test_standalone_emulator_launcher_works_without_gcloud(monkeypatch):
  """The fallback used where gcloud has no pubsub-emulator component (Java 17 + the emulator's launcher)."""
  import shutil

  from pipelines import emulator

  if emulator._standalone_launcher() is None or not shutil.which("java"):
    pytest.skip("no standalone emulator launcher or no Java here (gcloud provides the emulator)")
  real_which = shutil.which
  monkeypatch.setattr(emulator.shutil, "which", lambda name: None if name == "gcloud" else real_which(name))
  with emulator.PubSubEmulator() as standalone:
    assert standalone.launcher == "cloud-pubsub-emulator"
    topic = standalone.create_topic("fallback")
    assert standalone.create_subscription(topic, "fallback-sub").endswith("/subscriptions/fallback-sub")
    pid = standalone.pid
  with pytest.raises(ProcessLookupError):
    os.killpg(pid, 0)  # the whole process group is gone
