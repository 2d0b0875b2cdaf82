"""The streaming pipeline: Pub/Sub -> parse -> dedup -> enrichment stages -> Parquet lake, per window.

    wirestream stream --subscription projects/P/subscriptions/S --output lake \\
        [--window-seconds 60] [--duration SECONDS] [--stages ner,topics|none] [Beam options]

Steps: ``ReadFromPubSub`` (with attributes) -> ``RawRecord`` stamped with its arrival
time -> ``FixedWindows`` -> ``ParseStories`` -> ``DedupStories`` -> enrichment stages
-> ``WriteTables``, which writes each table's files per window. Parse and stage
failures go to ``errors`` with the message id and attributes; the stream goes on.

Windows are applied right after the read, before parsing and inference, and every
later stage keeps them. A window's files appear once the watermark passes its end:
the latency from publish to file is up to one window plus a second or two.

Stopping (``--duration``, or Ctrl-C): on the DirectRunner the read ends, like a
bounded source: no more pulls, its watermark goes to the end of time, every open
window fires and is written, and the pipeline finishes (state DONE), usually within
a second or two; ``--drain-timeout`` bounds the wait, then it is cancelled. The
DirectRunner acknowledges messages as soon as it pulls them, so cancelling instead
would lose every message of the open windows. Its pulls also return at once,
pausing ``--poll-seconds`` when the subscription is empty (Beam's own pull waits up
to 30 s on an idle subscription, and the DirectRunner has a single worker thread),
so the watermark follows the wall clock and windows close on time when no messages
arrive. On other runners ``--duration`` cancels the job after that many seconds;
drain a Dataflow job (``gcloud dataflow jobs drain``) to stop it without losing
open windows.

Progress lines and the final summary come from counts kept in this process on the
DirectRunner (its streaming mode does not update a step's Beam metrics after the
step's first bundle), from Beam metrics elsewhere.

The DirectRunner streams with ``BundleBasedDirectRunner`` (``--runner=DirectRunner``
means the same here); ``--streaming`` is always set.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import posixpath
import re
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.window import FixedWindows

from pipelines.common import add_pipeline_arguments, apply_stages, pipeline_options, print_metrics
from schemas import TABLES
from transforms.cluster import ClusterStories
from transforms.dedup import DEFAULT_TTL_SECONDS, DedupStories
from transforms.parse import ParseStories
from transforms.pubsub import ReadRawRecordsFromPubSub
from transforms.write import WriteTables, output_is_writable

_LOG = logging.getLogger(__name__)
_SUBSCRIPTION = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")
_DIRECT_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")

METRICS_NAMESPACE = "wirestream.stream"


# --------------------------------------------------------------------------- progress accounting


class Tally:
  """Counts of one stream kept in this process, for its progress lines and summary.

  The DirectRunner runs the pipeline in this process, and in streaming mode it does
  not commit a step's Beam metrics after that step's first bundle, so the stream
  keeps its own counts (the same steps also count in Beam metrics, for other runners).
  """

  def __init__(self) -> None:
    self._lock = threading.Lock()
    self._values: dict[str, float] = {}

  def add(self, name: str, amount: float = 1) -> None:
    with self._lock:
      self._values[name] = self._values.get(name, 0) + amount

  def snapshot(self) -> dict[str, float]:
    with self._lock:
      return dict(self._values)


_TALLIES: dict[str, Tally] = {}


def _tally(tally_id: str | None) -> Tally | None:
  return _TALLIES.get(tally_id) if tally_id else None


class _Count(beam.DoFn):
  """Counts the elements passing by (Beam counter ``wirestream.stream.<name>`` and the tally)."""

  def __init__(self, name: str, tally_id: str | None):
    self._name = name
    self._tally_id = tally_id
    self._counter = Metrics.counter(METRICS_NAMESPACE, name)

  def process(self, element):
    self._counter.inc()
    tally = _tally(self._tally_id)
    if tally is not None:
      tally.add(self._name)
    yield element


class _CountWrittenRows(beam.DoFn):
  """Written file path -> rows written per table (from the Parquet footer)."""

  def __init__(self, tally_id: str | None):
    self._tally_id = tally_id
    self._rows = {table: Metrics.counter(METRICS_NAMESPACE, f"{table}_rows_written") for table in TABLES}

  def process(self, path: str):
    table = posixpath.basename(posixpath.dirname(posixpath.dirname(path)))
    if table in self._rows:
      with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        rows = pq.ParquetFile(handle).metadata.num_rows
      self._rows[table].inc(rows)
      tally = _tally(self._tally_id)
      if tally is not None:
        tally.add(f"{table}_rows_written", rows)
        tally.add("files_written")
    yield path


def build(pipeline: beam.Pipeline, args: argparse.Namespace, tally_id: str | None = None):
  """Adds the streaming pipeline's steps to ``pipeline``; returns the PCollection of written files.

  With ``tally_id`` (a key of ``_TALLIES``), the steps also count into that in-process tally.
  """
  records = (
      pipeline
      | "Read" >> ReadRawRecordsFromPubSub(args.subscription)
      | "CountMessages" >> beam.ParDo(_Count("messages", tally_id)))
  # Windows before parsing and inference: every later stage keeps the element's window.
  windowed = records | "Window" >> beam.WindowInto(FixedWindows(args.window_seconds))
  stories, parse_errors = windowed | "Parse" >> ParseStories(max_story_bytes=args.max_story_bytes)
  stories = (
      stories
      | "CountParsed" >> beam.ParDo(_Count("stories_parsed", tally_id))
      | "Dedup" >> DedupStories(ttl_seconds=args.dedup_ttl_seconds)
      | "CountUnique" >> beam.ParDo(_Count("stories_unique", tally_id))
      | "Cluster" >> ClusterStories(ttl_seconds=args.cluster_ttl_seconds, stateful=True))
  stories, stage_errors = apply_stages(stories, args)
  errors = (parse_errors, *stage_errors) | "AllErrors" >> beam.Flatten()
  stories = stories | "CountStories" >> beam.ParDo(_Count("stories_out", tally_id))
  errors = errors | "CountErrors" >> beam.ParDo(_Count("errors_out", tally_id))
  return (
      (stories, errors)
      | "Write" >> WriteTables(args.output, shards_per_partition=args.shards_per_partition)
      | "CountWritten" >> beam.ParDo(_CountWrittenRows(tally_id)))


# --------------------------------------------------------------------------- DirectRunner read control


class _PromptPullClient:
  """Wraps a SubscriberClient: pulls return at once, larger pull batches, a pause when empty.

  A client-side deadline is no substitute for ``return_immediately``: a pull abandoned by
  its caller may still take messages on the server, which then wait out their ack
  deadline before they are delivered again.
  """

  def __init__(self, client, poll_seconds: float, max_messages: int):
    self._client = client
    self._poll_seconds = poll_seconds
    self._max_messages = max_messages

  def pull(self, *, subscription, max_messages=None, timeout=None, **kwargs):
    kwargs.pop("return_immediately", None)
    response = self._client.pull(
        subscription=subscription, max_messages=max(max_messages or 0, self._max_messages),
        return_immediately=True, timeout=timeout or 30, **kwargs)
    if not response.received_messages:
      time.sleep(self._poll_seconds)
    return response

  def __getattr__(self, name):
    return getattr(self._client, name)


class DirectReadControl:
  """Controls the DirectRunner's Pub/Sub reads in this process: prompt pulls, and a stop switch.

  Beam's DirectRunner reads Pub/Sub in ``_PubSubReadEvaluator`` (private to Beam;
  checked when entered). While the control is active, each pull returns at once and
  an empty one pauses ``poll_seconds``; after ``stop()`` the read ends: no more
  messages are pulled (and so none are acknowledged), and its watermark goes to the
  end of time, so the pipeline writes its open windows and finishes.
  """

  def __init__(self, poll_seconds: float = 0.5, max_messages: int = 100):
    self.poll_seconds = poll_seconds
    self.max_messages = max_messages
    self._stop = threading.Event()
    #: Messages pulled (and acknowledged) so far.
    self.pulled = 0
    self._saved: dict[str, object] = {}

  @staticmethod
  def _evaluator_class():
    from apache_beam.runners.direct import transform_evaluator
    cls = getattr(transform_evaluator, "_PubSubReadEvaluator", None)
    names = ("_read_from_pubsub", "_get_subscriber_client", "finish_bundle")
    if cls is None or not all(hasattr(cls, name) for name in names):
      return None
    return cls

  @classmethod
  def supported(cls) -> bool:
    return cls._evaluator_class() is not None

  def stop(self) -> None:
    """Ends the read: no more pulls; the pipeline then drains and finishes."""
    self._stop.set()

  def __enter__(self) -> DirectReadControl:
    cls = self._evaluator_class()
    if cls is None:
      raise RuntimeError("this Beam version has no DirectRunner Pub/Sub evaluator to control")
    from apache_beam.runners.direct.util import TransformResult

    # Deprecated in the Pub/Sub API, still served by it and by the emulator.
    warnings.filterwarnings("ignore", message="The return_immediately flag is deprecated",
                            category=DeprecationWarning)

    control = self
    original_finish = cls.finish_bundle
    original_read = cls._read_from_pubsub
    original_client = cls.__dict__["_get_subscriber_client"]
    client_getter = original_client.__func__

    def finish_bundle(evaluator):
      if control._stop.is_set():
        # The read is over: no output, no further bundles, no watermark hold. Its watermark
        # goes to the end of time, every open window fires, and the pipeline finishes.
        return TransformResult(evaluator, [], [], None, {None: None})
      return original_finish(evaluator)

    def read(evaluator, timestamp_attribute):
      messages = original_read(evaluator, timestamp_attribute)
      control.pulled += len(messages)
      return messages

    def get_client(klass, transform):
      return _PromptPullClient(client_getter(klass, transform), control.poll_seconds, control.max_messages)

    self._saved = {"finish_bundle": original_finish, "_read_from_pubsub": original_read,
                   "_get_subscriber_client": original_client}
    cls.finish_bundle = finish_bundle
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
  """The pipeline's Beam counters by ``namespace.name``; None when they cannot be read right now."""
  counters: dict[str, int] = {}
  try:
    query = result.metrics().query()
  except Exception:  # noqa: BLE001 - metrics are best effort while the pipeline runs
    return None
  for counter in query.get("counters", []):
    name = f"{counter.key.metric.namespace}.{counter.key.metric.name}"
    value = counter.committed if counter.committed is not None else counter.attempted
    counters[name] = counters.get(name, 0) + int(value or 0)
  return counters


def _counts(result, tally: Tally | None) -> dict[str, float]:
  """The stream's counts by short name, from the tally when there is one, else from Beam metrics."""
  if tally is not None:
    return tally.snapshot()
  prefix = f"{METRICS_NAMESPACE}."
  return {name[len(prefix):]: value for name, value in (_counters(result) or {}).items()
          if name.startswith(prefix)}


def _progress(elapsed: float, c: dict[str, float]) -> str:
  g = lambda name: int(c.get(name, 0))  # noqa: E731
  return (f"stream: {elapsed:6.1f}s messages={g('messages')} stories={g('stories_parsed')} "
          f"duplicates={g('stories_parsed') - g('stories_unique')} "
          f"events_written={g('events_rows_written')} errors_written={g('errors_rows_written')} "
          f"files={g('files_written')}")


def _summary(c: dict[str, float], stream=sys.stdout) -> None:
  names = ("messages", "stories_parsed", "stories_unique", "stories_out", "errors_out", "events_rows_written",
           "entities_rows_written", "errors_rows_written", "files_written")
  print("summary:", file=stream)
  for name in names:
    print(f"  {METRICS_NAMESPACE + '.' + name:40s} {int(c.get(name, 0)):>10d}", file=stream)
  print(f"  {METRICS_NAMESPACE + '.duplicates':40s} "
        f"{int(c.get('stories_parsed', 0) - c.get('stories_unique', 0)):>10d}", file=stream)


class _Waiter(threading.Thread):
  """Waits for the pipeline to finish on its own (a failure, or a bounded runner)."""

  def __init__(self, result):
    super().__init__(name="wirestream-stream-wait", daemon=True)
    self.result = result
    self.error: BaseException | None = None
    # Not is_alive(): on Python 3.11 a join() interrupted by Ctrl-C can leave it wrongly False.
    self.done = threading.Event()

  def run(self) -> None:
    try:
      self.result.wait_until_finish()
    except BaseException as error:  # noqa: BLE001 - reported by the main thread
      self.error = error
    finally:
      self.done.set()


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
  tally_id = None
  if control is not None:
    tally_id = uuid.uuid4().hex
    _TALLIES[tally_id] = Tally()
  build(pipeline, args, tally_id)
  try:
    with _maybe(control):
      return _run_pipeline(pipeline, args, control, _tally(tally_id))
  finally:
    _TALLIES.pop(tally_id, None)


def _run_pipeline(pipeline: beam.Pipeline, args: argparse.Namespace, control: DirectReadControl | None,
                  tally: Tally | None) -> int:
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
    while not waiter.done.is_set():
      now = time.monotonic()
      if args.duration is not None and now - start >= args.duration:
        break
      if now >= next_progress:
        print(_progress(now - start, _counts(result, tally)), file=sys.stderr, flush=True)
        next_progress = now + args.progress_seconds
      waiter.done.wait(min(0.5, max(0.05, next_progress - now)))
  except KeyboardInterrupt:
    interrupted = True
    print(f"{prog}: interrupted, stopping", file=sys.stderr, flush=True)
  if waiter.done.is_set():
    return _finish(result, waiter, start, tally)
  status = _stop(result, waiter, args, control, tally, start)
  if interrupted and status == 0:
    status = 130
  return status


def _stop(result, waiter: _Waiter, args: argparse.Namespace, control: DirectReadControl | None,
          tally: Tally | None, start: float) -> int:
  prog = "wirestream stream"
  if control is not None:
    control.stop()
    print(f"{prog}: stopped reading after {time.monotonic() - start:.1f}s; writing the open windows",
          file=sys.stderr, flush=True)
    try:
      waiter.done.wait(args.drain_timeout)
    except KeyboardInterrupt:
      print(f"{prog}: interrupted again: cancelling without writing the open windows",
            file=sys.stderr, flush=True)
    if waiter.done.is_set():
      return _finish(result, waiter, start, tally)
    print(f"{prog}: warning: the open windows were not written within --drain-timeout "
          f"{args.drain_timeout:g}s; cancelling", file=sys.stderr, flush=True)
  result.cancel()
  print(f"{prog}: cancelled after {time.monotonic() - start:.1f}s", file=sys.stderr, flush=True)
  _report(result, tally)
  return 1 if control is not None else 0


def _report(result, tally: Tally | None) -> None:
  if tally is not None:
    _summary(tally.snapshot())
  else:
    print_metrics(result)


def _finish(result, waiter: _Waiter, start: float, tally: Tally | None) -> int:
  prog = "wirestream stream"
  if waiter.error is not None:
    print(f"{prog}: error: the pipeline failed after {time.monotonic() - start:.1f}s: "
          f"{type(waiter.error).__name__}: {waiter.error}", file=sys.stderr, flush=True)
    _report(result, tally)
    return 1
  print(f"{prog}: finished after {time.monotonic() - start:.1f}s, state {result.state}",
        file=sys.stderr, flush=True)
  _report(result, tally)
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
  parser.add_argument("--poll-seconds", type=float, default=0.5,
                      help="DirectRunner: pause after a pull that found no messages (default: 0.5).")
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
  # Run the imported module, not ``__main__``: the DoFns must find the module's tallies.
  from pipelines import stream as _module
  sys.exit(_module.main())
