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

Delivery on the DirectRunner: at least once. Beam's DirectRunner acknowledges a message
as soon as it pulls it; here pulled messages are held instead (``transforms.pubsub.Leases``:
their ack deadlines extended every third of ``--lease-seconds``) and acknowledged once every
file of their window is written (``acknowledge_when_written``). A message whose window was
not written (a crash, SIGKILL, a cancel) is delivered again by Pub/Sub, within
``--lease-seconds`` or at once when the stream could hand it back; a repeat lands as the same
row (same ``event_id``), which the query views count once.

Stopping: SIGINT and SIGTERM get the stream's own handlers, whatever disposition the
process inherited (a background job of a non-interactive shell ignores SIGINT). The first
signal, or the end of ``--duration``, ends the read on the DirectRunner like a bounded
source: no more pulls, its watermark goes to the end of time, every open window fires, is
written and acknowledged, and the pipeline finishes (state DONE), usually within a second or
two plus the enrichment of what the windows hold; ``--drain-timeout`` bounds the wait. Exit
status 130 / 143 after a signal, 0 after ``--duration``. A further signal cancels at once;
the messages not written are handed back unacknowledged. Pulls return at once, pausing
``--poll-seconds`` when the subscription is empty (Beam's own pull waits up to 30 s on an
idle subscription, and the DirectRunner has a single worker thread), so the watermark
follows the wall clock and windows close on time when no messages arrive. On other runners
``--duration`` and signals cancel the job; drain a Dataflow job
(``gcloud dataflow jobs drain``) to stop it without losing open windows.

Progress lines and the final summary come from counts kept in this process on the
DirectRunner (its streaming mode does not update a step's Beam metrics after the
step's first bundle), from Beam metrics elsewhere.

The DirectRunner streams with ``BundleBasedDirectRunner`` (``--runner=DirectRunner``
means the same here); ``--streaming`` is always set.
"""

from __future__ import annotations

import argparse
import logging
import posixpath
import signal
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Sequence

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms.window import FixedWindows

from pipelines.common import (
  apply_stages,
  metric_counters,
  model_problem,
  pipeline_options,
  prepare_models,
  print_metrics,
  pubsub_path_problem,
  pubsub_problem,
)
from pipelines.stream_options import register  # noqa: F401 - the command's options, kept light for --help
from schemas import TABLES
from transforms.cluster_stage import ClusterStories
from transforms.dedup import DedupStories
from transforms.parse import ParseStories
from transforms.pubsub import Leases, ReadRawRecordsFromPubSub
from transforms.write import WriteTables, ensure_tables, output_is_writable

_LOG = logging.getLogger(__name__)
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


#: In-process state of the streams running in this process, by run id: their tallies, and
#: the leases of the messages they pulled (DirectRunner).
_TALLIES: dict[str, Tally] = {}
_LEASES: dict[str, Leases] = {}


def _tally(run_id: str | None) -> Tally | None:
  return _TALLIES.get(run_id) if run_id else None


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


def build(pipeline: beam.Pipeline, args: argparse.Namespace, run_id: str | None = None):
  """Adds the streaming pipeline's steps to ``pipeline``; returns the PCollection of written files.

  With ``run_id``, the steps also count into the in-process tally ``_TALLIES[run_id]``, and the
  messages of each window are acknowledged through ``_LEASES[run_id]`` (when there is one) once
  every file of the window is written.
  """
  records = (
      pipeline
      | "Read" >> ReadRawRecordsFromPubSub(args.subscription)
      | "CountMessages" >> beam.ParDo(_Count("messages", run_id)))
  # Windows before parsing and inference: every later stage keeps the element's window.
  windowed = records | "Window" >> beam.WindowInto(FixedWindows(args.window_seconds))
  stories, parse_errors = windowed | "Parse" >> ParseStories(max_story_bytes=args.max_story_bytes)
  stories = (
      stories
      | "CountParsed" >> beam.ParDo(_Count("stories_parsed", run_id))
      | "Dedup" >> DedupStories(ttl_seconds=args.dedup_ttl_seconds)
      | "CountUnique" >> beam.ParDo(_Count("stories_unique", run_id))
      | "Cluster" >> ClusterStories(ttl_seconds=args.cluster_ttl_seconds, stateful=True))
  stories, stage_errors = apply_stages(stories, args)
  errors = (parse_errors, *stage_errors) | "AllErrors" >> beam.Flatten()
  stories = stories | "CountStories" >> beam.ParDo(_Count("stories_out", run_id))
  errors = errors | "CountErrors" >> beam.ParDo(_Count("errors_out", run_id))
  written = (
      (stories, errors)
      | "Write" >> WriteTables(args.output, shards_per_partition=args.shards_per_partition)
      | "CountWritten" >> beam.ParDo(_CountWrittenRows(run_id)))
  if run_id is not None and run_id in _LEASES:
    acknowledge_when_written(windowed, written, run_id)
  return written


def acknowledge_when_written(windowed_records, written, run_id: str) -> None:
  """Acknowledges the messages of each window once all files of that window are written.

  Every story, error row and dropped repeat of a message stays in the message's window, and
  the watermark of the written files passes a window's end only once every file of that
  window (and of the windows before it) is committed: a ``CoGroupByKey`` of the window's
  message ids with its written files fires exactly then.
  """
  message_ids = windowed_records | "MessageIds" >> beam.Map(lambda record: ("window", record.message_id))
  files = written | "FileMarks" >> beam.Map(lambda path: ("window", ""))
  _ = (
      {"messages": message_ids, "files": files}
      | "AfterWrite" >> beam.CoGroupByKey()
      | "Acknowledge" >> beam.ParDo(_AckWritten(run_id)))


# --------------------------------------------------------------------------- DirectRunner read control


class _PromptPullClient:
  """Wraps a SubscriberClient: pulls return at once, larger pull batches, a pause when empty.

  With ``leases``, every pulled message is held by them, and the wrapped client's own
  ``acknowledge`` does nothing: the messages are acknowledged once their rows are written.

  A client-side deadline is no substitute for ``return_immediately``: a pull abandoned by
  its caller may still take messages on the server, which then wait out their ack
  deadline before they are delivered again.
  """

  def __init__(self, client, poll_seconds: float, max_messages: int, leases: Leases | None = None):
    self._client = client
    self._poll_seconds = poll_seconds
    self._max_messages = max_messages
    self._leases = leases

  def pull(self, *, subscription, max_messages=None, timeout=None, **kwargs):
    kwargs.pop("return_immediately", None)
    response = self._client.pull(
        subscription=subscription, max_messages=max(max_messages or 0, self._max_messages),
        return_immediately=True, timeout=timeout or 30, **kwargs)
    if self._leases is not None and response.received_messages:
      self._leases.hold(response.received_messages)
    if not response.received_messages:
      time.sleep(self._poll_seconds)
    return response

  def acknowledge(self, *args, **kwargs):
    if self._leases is None:
      return self._client.acknowledge(*args, **kwargs)
    return None  # held by the leases until written

  def __getattr__(self, name):
    return getattr(self._client, name)


class DirectReadControl:
  """Controls the DirectRunner's Pub/Sub reads in this process: prompt pulls, held acks, a stop switch.

  Beam's DirectRunner reads Pub/Sub in ``_PubSubReadEvaluator`` (private to Beam;
  checked when entered, and pinned by a test of this Beam version): it pulls through the
  client its ``_get_subscriber_client`` returns and acknowledges every pulled message at
  once through the same client. While the control is active, that client is wrapped:
  each pull returns at once and an empty one pauses ``poll_seconds``; with ``leases``,
  the pulled messages are held by them instead of acknowledged (the pipeline acknowledges
  them once written); after ``stop()`` the read ends: no more messages are pulled, and its
  watermark goes to the end of time, so the pipeline writes its open windows and finishes.
  """

  def __init__(self, poll_seconds: float = 0.5, max_messages: int = 100, leases: Leases | None = None):
    self.poll_seconds = poll_seconds
    self.max_messages = max_messages
    self.leases = leases
    self._stop = threading.Event()
    #: Messages pulled so far.
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
      return _PromptPullClient(client_getter(klass, transform), control.poll_seconds, control.max_messages,
                               control.leases)

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


class _AckWritten(beam.DoFn):
  """(key, {"messages": ids, "files": ...}) of a window whose files are all written -> acknowledges the ids."""

  def __init__(self, run_id: str):
    self._run_id = run_id

  def process(self, element):
    _, groups = element
    leases = _LEASES.get(self._run_id)
    if leases is None:
      return
    try:
      acked = leases.ack(message_id for message_id in groups["messages"] if message_id)
    except Exception as error:  # noqa: BLE001 - not acknowledged: delivered again, written again as the same rows
      _LOG.warning("could not acknowledge the messages of a written window: %s", error)
      return
    tally = _tally(self._run_id)
    if tally is not None:
      tally.add("messages_acked", acked)


# --------------------------------------------------------------------------- running


def _counts(result, tally: Tally | None) -> dict[str, float]:
  """The stream's counts by short name, from the tally when there is one, else from Beam metrics."""
  if tally is not None:
    return tally.snapshot()
  prefix = f"{METRICS_NAMESPACE}."
  return {name[len(prefix):]: value for name, value in metric_counters(result).items()
          if name.startswith(prefix)}


def _progress(elapsed: float, c: dict[str, float]) -> str:
  g = lambda name: int(c.get(name, 0))  # noqa: E731
  return (f"stream: {elapsed:6.1f}s messages={g('messages')} stories={g('stories_parsed')} "
          f"duplicates={g('stories_parsed') - g('stories_unique')} "
          f"events_written={g('events_rows_written')} errors_written={g('errors_rows_written')} "
          f"files={g('files_written')} acked={g('messages_acked')}")


def _summary(c: dict[str, float], stream=sys.stdout) -> None:
  names = ("messages", "messages_acked", "stories_parsed", "stories_unique", "stories_out", "errors_out", "events_rows_written",
           "entities_rows_written", "errors_rows_written", "files_written")
  print("summary:", file=stream)
  for name in names:
    print(f"  {METRICS_NAMESPACE + '.' + name:40s} {int(c.get(name, 0)):>10d}", file=stream)
  print(f"  {METRICS_NAMESPACE + '.duplicates':40s} "
        f"{int(c.get('stories_parsed', 0) - c.get('stories_unique', 0)):>10d}", file=stream)


class _Waiter(threading.Thread):
  """Waits for the pipeline to finish on its own (a failure, a bounded runner, or a drained read)."""

  def __init__(self, result, wake: threading.Event):
    super().__init__(name="wirestream-stream-wait", daemon=True)
    self.result = result
    self.error: BaseException | None = None
    self.done = threading.Event()
    self._wake = wake

  def run(self) -> None:
    try:
      self.result.wait_until_finish()
    except BaseException as error:  # noqa: BLE001 - reported by the main thread
      self.error = error
    finally:
      self.done.set()
      self._wake.set()


class _StopSignals:
  """SIGINT and SIGTERM handled by the stream itself, whatever disposition the process inherited.

  A process started in the background by a non-interactive shell inherits SIGINT ignored,
  and Python then raises no ``KeyboardInterrupt``; SIGTERM (supervisors, ``docker stop``,
  Kubernetes) kills a Python process at once by default. Each signal is recorded and wakes
  the main loop, which stops reading at the first and cancels at the second. The previous
  handlers come back on exit. Outside the main thread nothing is installed.
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self, wake: threading.Event):
    self.received: list[int] = []
    self._wake = wake
    self._saved: dict[int, object] = {}

  def _handle(self, signum, frame) -> None:
    self.received.append(signum)
    self._wake.set()

  def __enter__(self) -> _StopSignals:
    if threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._saved[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._saved.items():
      signal.signal(signum, handler)
    self._saved = {}


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


def run(args: argparse.Namespace, beam_args: Sequence[str]) -> int:
  prog = "wirestream stream"
  problem = pubsub_path_problem("subscription", args.subscription)
  if problem:
    print(f"{prog}: error: {problem}", file=sys.stderr)
    return 2
  if args.window_seconds <= 0 or (args.duration is not None and args.duration <= 0):
    print(f"{prog}: error: --window-seconds and --duration must be positive", file=sys.stderr)
    return 2
  # The models before the output, whose check creates the lake's folder.
  problem = model_problem(args) or output_is_writable(args.output) or pubsub_problem("subscription", args.subscription)
  if problem:
    print(f"{prog}: error: {problem}", file=sys.stderr)
    return 2
  prepare_models(args, prog)
  ensure_tables(args.output, time.strftime("%Y-%m-%d", time.gmtime()))
  options = _stream_options(beam_args)
  run_id = uuid.uuid4().hex
  control = None
  client = None
  if _is_direct(options):
    if DirectReadControl.supported():
      from google.cloud import pubsub_v1
      client = pubsub_v1.SubscriberClient()
      _LEASES[run_id] = Leases(client, args.subscription, args.lease_seconds)
      control = DirectReadControl(poll_seconds=args.poll_seconds, leases=_LEASES[run_id])
    else:
      _LOG.warning("cannot control the DirectRunner's Pub/Sub reads: messages are acknowledged when pulled, "
                   "and stopping loses the open windows")
  _TALLIES[run_id] = Tally()
  pipeline = beam.Pipeline(options=options)
  build(pipeline, args, run_id if control is not None else None)
  leases = _LEASES.get(run_id)
  try:
    if control is None:
      return _run_pipeline(pipeline, args, None, None)
    leases.start()
    with control:
      return _run_pipeline(pipeline, args, control, _TALLIES[run_id])
  finally:
    if leases is not None:
      returned = leases.release()
      if returned:
        print(f"{prog}: {returned} message(s) not written were handed back to Pub/Sub for redelivery",
              file=sys.stderr, flush=True)
    if client is not None:
      client.close()
    _TALLIES.pop(run_id, None)
    _LEASES.pop(run_id, None)


def _run_pipeline(pipeline: beam.Pipeline, args: argparse.Namespace, control: DirectReadControl | None,
                  tally: Tally | None) -> int:
  prog = "wirestream stream"
  print(f"{prog}: {args.subscription} -> {args.output} (windows of {args.window_seconds:g}s, "
        f"stages: {','.join(args.stages) or 'none'}, "
        f"{f'for {args.duration:g}s' if args.duration else 'until stopped'})", file=sys.stderr, flush=True)
  wake = threading.Event()
  with _StopSignals(wake) as signals:
    result = pipeline.run()
    start = time.monotonic()
    waiter = _Waiter(result, wake)
    waiter.start()
    print(f"{prog}: running", file=sys.stderr, flush=True)
    next_progress = start + args.progress_seconds
    while not waiter.done.is_set() and not signals.received:
      now = time.monotonic()
      if args.duration is not None and now - start >= args.duration:
        break
      if now >= next_progress:
        print(_progress(now - start, _counts(result, tally)), file=sys.stderr, flush=True)
        next_progress = now + args.progress_seconds
      wake.wait(min(0.5, max(0.05, next_progress - now)))
      wake.clear()
    if waiter.done.is_set():
      return _finish(result, waiter, start, tally)
    first = signals.received[0] if signals.received else None
    if first is not None:
      print(f"{prog}: {signal.Signals(first).name} received, stopping", file=sys.stderr, flush=True)
    status = _stop(result, waiter, args, control, tally, start, signals, wake)
  if first is not None and status == 0:
    status = 128 + first
  return status


def _stop(result, waiter: _Waiter, args: argparse.Namespace, control: DirectReadControl | None,
          tally: Tally | None, start: float, signals: _StopSignals, wake: threading.Event) -> int:
  prog = "wirestream stream"
  if control is not None:
    control.stop()
    print(f"{prog}: stopped reading after {time.monotonic() - start:.1f}s; writing the open windows",
          file=sys.stderr, flush=True)
    # The first signal stopped the read (or --duration did): any further signal cancels.
    allowed = 1 if signals.received else 0
    deadline = time.monotonic() + args.drain_timeout
    while not waiter.done.is_set() and len(signals.received) <= allowed and time.monotonic() < deadline:
      wake.wait(min(0.5, max(0.01, deadline - time.monotonic())))
      wake.clear()
    if waiter.done.is_set():
      return _finish(result, waiter, start, tally)
    if time.monotonic() >= deadline:
      print(f"{prog}: warning: the open windows were not written within --drain-timeout "
            f"{args.drain_timeout:g}s; cancelling", file=sys.stderr, flush=True)
      status = 1
    else:
      again = signals.received[-1]
      print(f"{prog}: {signal.Signals(again).name} received again: cancelling without writing the open "
            "windows (their messages are not acknowledged)", file=sys.stderr, flush=True)
      status = 128 + again
  else:
    status = 0
  result.cancel()
  print(f"{prog}: cancelled after {time.monotonic() - start:.1f}s", file=sys.stderr, flush=True)
  _report(result, tally)
  return status


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
  if tally is not None and not tally.snapshot().get("messages"):
    print(f"{prog}: no message arrived on the subscription; nothing was written", file=sys.stderr, flush=True)
    return 0
  _report(result, tally)
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m pipelines.stream ...``: the ``stream`` command on its own."""
  from pipelines.cli import main as cli_main

  return cli_main(["stream", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
  # Run the imported module, not ``__main__``: the DoFns must find the module's tallies.
  from pipelines import stream as _module
  sys.exit(_module.main())
