"""The streaming pipeline: Pub/Sub -> parse -> dedup -> enrichment stages -> Parquet lake, per window.

    wirestream stream --subscription projects/P/subscriptions/S --output lake \\
        [--window-seconds 60] [--duration SECONDS] [--stages ner,topics|none] [Beam options]

Steps: ``ReadFromPubSub`` (with attributes) -> ``RawRecord`` stamped with its arrival
time -> ``FixedWindows`` -> ``ParseStories`` -> ``DedupStories`` -> enrichment stages
-> ``WriteTables``, which writes each table's files per window. Parse and stage
failures go to ``errors`` with the message id and attributes; the stream goes on.

Windows are applied right after the read, before parsing and inference, and every
later stage keeps them. A window's files appear once the watermark passes its end:
latency from publish to file is about one window plus a few seconds.

Stopping (``--duration``, or Ctrl-C): on the DirectRunner the pipeline stops pulling
from the subscription, lets the watermark pass the last open window so every
message already pulled (and acknowledged) is written, then cancels; the drain is
bounded by ``--drain-timeout``. The DirectRunner acknowledges messages as soon as it
pulls them, so cancelling without this drain would lose the open windows. Its pulls
are also bounded to ``--poll-seconds`` (Beam's own pull waits up to 30 s on an idle
subscription, and the DirectRunner has a single worker thread), so the watermark
follows the wall clock and windows close on time when no messages arrive. On other
runners ``--duration`` cancels the job after that many seconds; drain a Dataflow job
(``gcloud dataflow jobs drain``) to stop it without losing open windows.

The DirectRunner streams with ``BundleBasedDirectRunner`` (``--runner=DirectRunner``
means the same here); ``--streaming`` is always set.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.window import FixedWindows

from pipelines.common import add_pipeline_arguments, apply_stages, pipeline_options, print_metrics
from transforms.dedup import DEFAULT_TTL_SECONDS, DedupStories
from transforms.parse import ParseStories
from transforms.pubsub import ReadRawRecordsFromPubSub
from transforms.write import WriteTables, output_is_writable

_LOG = logging.getLogger(__name__)
_SUBSCRIPTION = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")
_DIRECT_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


class _Count(beam.DoFn):
  """Counts the elements passing by in ``stream.<name>``."""

  def __init__(self, name: str):
    self._counter = Metrics.counter("stream", name)

  def process(self, element):
    self._counter.inc()
    yield element


def build(pipeline: beam.Pipeline, args: argparse.Namespace):
  """Adds the streaming pipeline's steps to ``pipeline``; returns the PCollection of written files."""
  records = pipeline | "Read" >> ReadRawRecordsFromPubSub(args.subscription)
  # Windows before parsing and inference: every later stage keeps the element's window.
  windowed = records | "Window" >> beam.WindowInto(FixedWindows(args.window_seconds))
  stories, parse_errors = windowed | "Parse" >> ParseStories(max_story_bytes=args.max_story_bytes)
  stories = (
      stories
      | "CountParsed" >> beam.ParDo(_Count("parsed_stories"))
      | "Dedup" >> DedupStories(ttl_seconds=args.dedup_ttl_seconds))
  stories, stage_errors = apply_stages(stories, args)
  errors = (parse_errors, *stage_errors) | "AllErrors" >> beam.Flatten()
  stories = stories | "CountStories" >> beam.ParDo(_Count("stories_out"))
  errors = errors | "CountErrors" >> beam.ParDo(_Count("errors_out"))
  return (stories, errors) | "Write" >> WriteTables(args.output, shards_per_partition=args.shards_per_partition)


# --------------------------------------------------------------------------- DirectRunner read control


class _BoundedPullClient:
  """Wraps a SubscriberClient: bounded pull wait, larger pull batches."""

  def __init__(self, client, poll_seconds: float, max_messages: int):
    self._client = client
    self._poll_seconds = poll_seconds
    self._max_messages = max_messages

  def pull(self, *, subscription, max_messages=None, timeout=None, **kwargs):
    from google.api_core import exceptions
    from google.cloud import pubsub_v1
    try:
      return self._client.pull(subscription=subscription, max_messages=max(max_messages or 0, self._max_messages),
                               timeout=self._poll_seconds, **kwargs)
    except (exceptions.DeadlineExceeded, exceptions.RetryError):
      return pubsub_v1.types.PullResponse()

  def __getattr__(self, name):
    return getattr(self._client, name)


class DirectReadControl:
  """Controls the DirectRunner's Pub/Sub reads in this process: bounded pulls, and a stop switch.

  Beam's DirectRunner reads Pub/Sub in ``_PubSubReadEvaluator`` (private to Beam;
  checked when entered). While the control is active, each pull waits at most
  ``poll_seconds``; after ``stop()`` no more messages are pulled (and so none are
  acknowledged), while the watermark keeps following the wall clock.
  """

  def __init__(self, poll_seconds: float = 1.0, max_messages: int = 100, idle_sleep: float = 0.2):
    self.poll_seconds = poll_seconds
    self.max_messages = max_messages
    self.idle_sleep = idle_sleep
    self._stop = threading.Event()
    self._stopped = threading.Event()
    self._saved: dict[str, object] = {}

  @staticmethod
  def _evaluator_class():
    from apache_beam.runners.direct import transform_evaluator
    cls = getattr(transform_evaluator, "_PubSubReadEvaluator", None)
    if cls is None or not all(hasattr(cls, name) for name in ("_read_from_pubsub", "_get_subscriber_client")):
      return None
    return cls

  @classmethod
  def supported(cls) -> bool:
    return cls._evaluator_class() is not None

  def stop(self) -> None:
    """Asks the reads to stop; ``wait_stopped`` tells when no pull is in flight any more."""
    self._stop.set()

  def wait_stopped(self, timeout: float) -> bool:
    return self._stopped.wait(timeout)

  def __enter__(self) -> DirectReadControl:
    cls = self._evaluator_class()
    if cls is None:
      raise RuntimeError("this Beam version has no DirectRunner Pub/Sub evaluator to control")
    control = self
    original_read = cls._read_from_pubsub
    original_client = cls.__dict__["_get_subscriber_client"]
    client_getter = original_client.__func__

    def read(evaluator, timestamp_attribute):
      if control._stop.is_set():
        control._stopped.set()
        time.sleep(control.idle_sleep)
        return []
      return original_read(evaluator, timestamp_attribute)

    def get_client(klass, transform):
      return _BoundedPullClient(client_getter(klass, transform), control.poll_seconds, control.max_messages)

    self._saved = {"_read_from_pubsub": original_read, "_get_subscriber_client": original_client}
    cls._read_from_pubsub = read
    cls._get_subscriber_client = classmethod(get_client)
    return self

  def __exit__(self, *exc) -> None:
    cls = self._evaluator_class()
    for name, value in self._saved.items():
      setattr(cls, name, value)
    self._saved = {}


# --------------------------------------------------------------------------- running


def _counters(result) -> dict[str, int] | None:
  """The pipeline's counters by ``namespace.name``; None when they cannot be read right now."""
  counters: dict[str, int] = {}
  try:
    query = result.metrics().query()
  except Exception:  # noqa: BLE001 - the DirectRunner's metrics may change while they are read
    return None
  for counter in query.get("counters", []):
    name = f"{counter.key.metric.namespace}.{counter.key.metric.name}"
    value = counter.committed if counter.committed is not None else counter.attempted
    counters[name] = counters.get(name, 0) + int(value or 0)
  return counters


def _progress(elapsed: float, c: dict[str, int] | None) -> str:
  c = c or {}
  return (f"stream: {elapsed:6.1f}s messages={c.get('pubsub.messages', 0)} "
          f"stories={c.get('stream.parsed_stories', 0)} duplicates={c.get('dedup.duplicates', 0)} "
          f"events_written={c.get('write.events_rows', 0)} errors_written={c.get('write.errors_rows', 0)} "
          f"files={c.get('write.files_written', 0)}")


def drained(c: dict[str, int] | None) -> bool:
  """True when everything read so far has been written (from the pipeline's counters)."""
  if c is None:
    return False
  g = c.get
  return (g("wirestream.parse.records_read", 0) >= g("pubsub.messages", 0)
          and g("dedup.unique", 0) + g("dedup.duplicates", 0) >= g("stream.parsed_stories", 0)
          and g("stream.stories_out", 0) >= g("dedup.unique", 0)
          and g("write.events_rows", 0) >= g("stream.stories_out", 0)
          and g("write.errors_rows", 0) >= g("stream.errors_out", 0))


class _Waiter(threading.Thread):
  """Waits for the pipeline to finish on its own (a failure, or a bounded runner)."""

  def __init__(self, result):
    super().__init__(name="wirestream-stream-wait", daemon=True)
    self.result = result
    self.error: BaseException | None = None

  def run(self) -> None:
    try:
      self.result.wait_until_finish()
    except BaseException as error:  # noqa: BLE001 - reported by the main thread
      self.error = error


def _stream_options(beam_args: Sequence[str]):
  args = []
  for arg in beam_args:
    if arg in ("--runner=DirectRunner", "--runner=SwitchingDirectRunner"):
      arg = "--runner=BundleBasedDirectRunner"
    args.append(arg)
  for i, arg in enumerate(args[:-1]):
    if arg == "--runner" and args[i + 1] in ("DirectRunner", "SwitchingDirectRunner"):
      args[i + 1] = "BundleBasedDirectRunner"
  if not any(arg == "--runner" or arg.startswith("--runner=") for arg in args):
    args.append("--runner=BundleBasedDirectRunner")
  options = pipeline_options(args)
  options.view_as(StandardOptions).streaming = True
  return options


def _is_direct(options) -> bool:
  runner = options.view_as(StandardOptions).runner or ""
  return runner.rsplit(".", 1)[-1] in _DIRECT_RUNNERS


@contextlib.contextmanager
def _maybe(control: DirectReadControl | None) -> Iterator[None]:
  if control is None:
    yield
  else:
    with control:
      yield


def run(args: argparse.Namespace, beam_args: Sequence[str]) -> int:
  prog = "wirestream stream"
  if not _SUBSCRIPTION.match(args.subscription):
    print(f"{prog}: error: --subscription must look like projects/PROJECT/subscriptions/NAME", file=sys.stderr)
    return 2
  if args.window_seconds <= 0 or (args.duration is not None and args.duration <= 0):
    print(f"{prog}: error: --window-seconds and --duration must be positive", file=sys.stderr)
    return 2
  problem = output_is_writable(args.output)
  if problem:
    print(f"{prog}: error: {problem}", file=sys.stderr)
    return 2
  options = _stream_options(beam_args)
  control = None
  if _is_direct(options):
    if DirectReadControl.supported():
      control = DirectReadControl(poll_seconds=args.poll_seconds)
    else:
      _LOG.warning("cannot control the DirectRunner's Pub/Sub reads; stopping will lose open windows")
  pipeline = beam.Pipeline(options=options)
  build(pipeline, args)
  with _maybe(control):
    return _run_pipeline(pipeline, args, control)


def _run_pipeline(pipeline: beam.Pipeline, args: argparse.Namespace, control: DirectReadControl | None) -> int:
  prog = "wirestream stream"
  print(f"{prog}: {args.subscription} -> {args.output} (windows of {args.window_seconds:g}s, "
        f"stages: {','.join(args.stages) or 'none'}, "
        f"{f'for {args.duration:g}s' if args.duration else 'until interrupted'})", file=sys.stderr, flush=True)
  result = pipeline.run()
  start = time.monotonic()
  waiter = _Waiter(result)
  waiter.start()
  print(f"{prog}: running", file=sys.stderr, flush=True)
  interrupted = False
  try:
    next_progress = start + args.progress_seconds
    while waiter.is_alive():
      now = time.monotonic()
      if args.duration is not None and now - start >= args.duration:
        break
      if now >= next_progress:
        print(_progress(now - start, _counters(result)), file=sys.stderr, flush=True)
        next_progress = now + args.progress_seconds
      waiter.join(min(0.5, max(0.05, next_progress - now)))
  except KeyboardInterrupt:
    interrupted = True
    print(f"{prog}: interrupted, stopping", file=sys.stderr, flush=True)
  if not waiter.is_alive():
    return _finish(result, waiter, start)
  status = _stop(result, waiter, args, control, start)
  if interrupted and status == 0:
    status = 130
  return status


def _stop(result, waiter: _Waiter, args: argparse.Namespace, control: DirectReadControl | None,
          start: float) -> int:
  prog = "wirestream stream"
  complete = True
  if control is not None:
    control.stop()
    control.wait_stopped(args.poll_seconds + 30)
    print(f"{prog}: stopped reading after {time.monotonic() - start:.1f}s; flushing open windows",
          file=sys.stderr, flush=True)
    # Records pulled before the stop are stamped with their arrival time: none belongs to a window
    # that ends before the one open now has closed.
    window_end = math.ceil(time.time() / args.window_seconds) * args.window_seconds
    deadline = time.monotonic() + args.drain_timeout
    previous = None
    complete = False
    while time.monotonic() < deadline and waiter.is_alive():
      counters = _counters(result)
      idle = counters is not None and not counters.get("pubsub.messages")
      if (idle or time.time() >= window_end) and drained(counters) and counters == previous:
        complete = True
        break
      previous = counters
      time.sleep(1.0)
    if not complete and waiter.is_alive():
      print(f"{prog}: warning: not everything read was written within --drain-timeout "
            f"{args.drain_timeout:g}s", file=sys.stderr, flush=True)
  if not waiter.is_alive():
    return _finish(result, waiter, start)
  result.cancel()
  print(f"{prog}: stopped after {time.monotonic() - start:.1f}s", file=sys.stderr, flush=True)
  print(_progress(time.monotonic() - start, _counters(result)), file=sys.stderr, flush=True)
  print_metrics(result)
  return 0 if complete else 1


def _finish(result, waiter: _Waiter, start: float) -> int:
  prog = "wirestream stream"
  if waiter.error is not None:
    print(f"{prog}: error: the pipeline failed after {time.monotonic() - start:.1f}s: "
          f"{type(waiter.error).__name__}: {waiter.error}", file=sys.stderr, flush=True)
    print_metrics(result)
    return 1
  print(f"{prog}: the pipeline ended after {time.monotonic() - start:.1f}s, state {result.state}",
        file=sys.stderr, flush=True)
  print_metrics(result)
  return 0


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "stream", help="Run the streaming pipeline from a Pub/Sub subscription.",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--subscription", required=True, help="projects/PROJECT/subscriptions/NAME")
  parser.add_argument("--window-seconds", type=float, default=60.0,
                      help="Length of the fixed windows files are written per (default: 60).")
  parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                      help="Stop reading after this many seconds, write what was read, and exit "
                           "(default: run until interrupted).")
  parser.add_argument("--drain-timeout", type=float, default=None, metavar="SECONDS",
                      help="Longest wait for the open windows to be written when stopping "
                           "(default: the window length plus 120 s).")
  parser.add_argument("--dedup-ttl-seconds", type=float, default=DEFAULT_TTL_SECONDS,
                      help="How long a (story_id, version) is remembered to drop repeats (default: one day).")
  parser.add_argument("--poll-seconds", type=float, default=1.0,
                      help="DirectRunner: longest wait of one pull on an idle subscription (default: 1).")
  parser.add_argument("--progress-seconds", type=float, default=5.0,
                      help="Seconds between progress lines (default: 5).")
  add_pipeline_arguments(parser)
  parser.set_defaults(func=_run_with_defaults, accepts_beam_args=True)


def _run_with_defaults(args: argparse.Namespace, beam_args: Sequence[str]) -> int:
  if args.drain_timeout is None:
    args.drain_timeout = args.window_seconds + 120.0
  return run(args, beam_args)


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m pipelines.stream ...``: the ``stream`` command on its own."""
  parser = argparse.ArgumentParser(prog="wirestream")
  parser.add_argument("-v", "--verbose", action="store_true", help="Log Beam's INFO messages.")
  commands = parser.add_subparsers(dest="command", required=True)
  register(commands)
  args, extra = parser.parse_known_args(["stream", *(sys.argv[1:] if argv is None else argv)])
  logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                      format="%(levelname)s %(name)s: %(message)s")
  return int(args.func(args, extra) or 0)


if __name__ == "__main__":
  sys.exit(main())
