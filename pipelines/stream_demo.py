"""The streaming demo: emulator -> publish the seed stories -> stream for a while -> DuckDB summary.

    python -m pipelines.stream_demo [--seeds seeds] [--output lake-stream] [--duration 30]
        [--window-seconds 10] [any ``wirestream stream`` option, e.g. --stages none]

Starts the Pub/Sub emulator on a free loopback port, creates a topic and a
subscription, starts ``wirestream stream`` on it, publishes every seed file as one
message once the stream runs (and one file a second time, to show the dedup), waits
for the stream to stop after ``--duration`` seconds, prints a summary of the lake
with DuckDB, and stops the emulator.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pipelines import query
from pipelines.emulator import EmulatorUnavailable, PubSubEmulator
from pipelines.publish import expand_files, publish_files

REPO = Path(__file__).resolve().parents[1]
SUMMARY = (
    ("events", "SELECT source_format, language, dateline, headline, message_id, ner_status, topics_status "
               "FROM events ORDER BY ingested_at"),
    ("errors", "SELECT stage, error_type, message_id, attributes FROM errors ORDER BY error_time"),
    ("files", "SELECT split_part(filename, '/', -3) AS table_name, split_part(filename, '/', -2) AS partition, "
              "count(DISTINCT filename) AS files, count(*) AS rows "
              "FROM read_parquet('{lake}/*/*/*.parquet', filename = true, union_by_name = true) "
              "GROUP BY ALL ORDER BY ALL"),
)


def _stream_command(args: argparse.Namespace, subscription: str, extra: Sequence[str]) -> list[str]:
  return [sys.executable, "-m", "pipelines.stream", "--subscription", subscription, "--output", args.output,
          "--window-seconds", str(args.window_seconds), "--duration", str(args.duration), *extra]


def run(args: argparse.Namespace, extra: Sequence[str]) -> int:
  files = expand_files([args.seeds])
  if not files:
    print(f"stream-demo: error: no files in {args.seeds}", file=sys.stderr)
    return 2
  if Path(args.output).exists():
    shutil.rmtree(args.output)
  try:
    emulator = PubSubEmulator().start()
  except EmulatorUnavailable as error:
    print(f"stream-demo: error: {error}", file=sys.stderr)
    return 2
  try:
    print(f"stream-demo: Pub/Sub emulator ({emulator.launcher}) on {emulator.host}, pid {emulator.pid}",
          file=sys.stderr, flush=True)
    topic = emulator.create_topic("stories")
    subscription = emulator.create_subscription(topic, "stream")
    stream = subprocess.Popen(_stream_command(args, subscription, extra), cwd=REPO,
                              env={**os.environ, **emulator.env()}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    running = threading.Event()

    def relay() -> None:
      assert stream.stdout is not None
      for line in stream.stdout:
        sys.stderr.write(line)
        sys.stderr.flush()
        if line.startswith("wirestream stream: running"):
          running.set()

    relay_thread = threading.Thread(target=relay, daemon=True)
    relay_thread.start()
    deadline = time.monotonic() + 120
    while not running.wait(0.5) and stream.poll() is None and time.monotonic() < deadline:
      pass
    if not running.is_set():
      if stream.poll() is None:
        stream.kill()
      stream.wait()
      relay_thread.join(5)
      print(f"stream-demo: error: the stream did not start (exit status {stream.returncode})", file=sys.stderr)
      return 1
    with emulator.environment():
      started = time.time()
      ids, problems = publish_files(topic, files + files[:1], stream=sys.stderr)
    print(f"stream-demo: published {len(ids)} message(s) ({len(files)} seed files, the first twice) "
          f"in {time.time() - started:.1f}s", file=sys.stderr, flush=True)
    for problem in problems:
      print(f"stream-demo: error: {problem}", file=sys.stderr)
    status = stream.wait()
    relay_thread.join(5)
  finally:
    emulator.stop()
  if status != 0:
    print(f"stream-demo: error: the stream exited with status {status}", file=sys.stderr)
    return status
  con = query.connect(args.output)
  for title, sql in SUMMARY:
    print(f"\n== {title}")
    query.print_result(con.execute(sql.format(lake=args.output.rstrip("/"))), "table")
  return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m pipelines.stream_demo", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", default=str(REPO / "seeds"), help="Directory of story files to publish.")
  parser.add_argument("--output", default="lake-stream", help="Lake directory (replaced).")
  parser.add_argument("--duration", type=float, default=30.0, help="Seconds the stream reads (default: 30).")
  parser.add_argument("--window-seconds", type=float, default=10.0, help="Window length (default: 10).")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args, extra = build_parser().parse_known_args(argv)
  return run(args, extra)


if __name__ == "__main__":
  sys.exit(main())
