"""The batch pipeline: story files -> parse -> one row per id -> enrichment stages -> Parquet lake.

    wirestream run --input seeds/* --output lake [--stages ner,topics|none] [Beam options]

Options are strict: an option that neither wirestream nor Beam knows is an error. Beam's own
pipeline options (``--runner``, ``--direct_num_workers``, ``--project``...) pass through to Beam.

Stopped by SIGTERM or SIGINT, the run exits at once (status 143 / 130) after deleting the
temporary files it was writing: every ``*.parquet`` file in the lake is complete, and a
rerun over the same input completes the job (it rewrites the same files).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence

from pipelines.common import add_pipeline_arguments, bounded

PROG = "wirestream run"


def build(pipeline, args: argparse.Namespace, *, run_id: str | None = None, files: int = 0, size: int = 0):
  """Adds the batch pipeline's steps to ``pipeline``; returns the PCollection of written files.

  With ``run_id`` (a progress registered in :mod:`pipelines.progress`), the steps count into it.
  """
  import apache_beam as beam

  from pipelines.common import apply_stages
  from pipelines.progress import CountErrors, Tick
  from transforms.cluster_stage import ClusterStories
  from transforms.dedup import OnePerId
  from transforms.io import ReadRawRecords
  from transforms.parse import ParseStories
  from transforms.write import WriteTables

  def tick(pcoll, what: str):
    if not run_id:
      return pcoll
    settings = (files, size, bool(args.stages), getattr(args, "progress_seconds", 5.0))
    return pcoll | f"Count{what.title()}" >> beam.ParDo(Tick(run_id, what, *settings))

  records, read_errors = pipeline | "Read" >> ReadRawRecords(args.input)
  records = tick(records, "files")
  stories, parse_errors = records | "Parse" >> ParseStories(max_story_bytes=args.max_story_bytes)
  stories = tick(stories, "stories") | "OneStoryPerId" >> OnePerId("stories")
  stories = stories | "Cluster" >> ClusterStories(ttl_seconds=args.cluster_ttl_seconds)
  stories, stage_errors = apply_stages(stories, args)  # enriched stories count as the stage reads them
  errors = ((read_errors, parse_errors, *stage_errors)
            | "AllErrors" >> beam.Flatten()
            | "OneErrorPerId" >> OnePerId("errors")
            | "CountErrorTypes" >> beam.ParDo(CountErrors()))
  errors = tick(errors, "errors")
  return (stories, errors) | "Write" >> WriteTables(args.output, shards_per_partition=args.shards_per_partition)


def _subfolders(pattern: str) -> list[str]:
  """The subfolders of ``pattern`` when it is a local directory: not read (a directory means its files)."""
  if "://" in pattern or not os.path.isdir(pattern):
    return []
  return [entry.path for entry in os.scandir(pattern) if entry.is_dir() and not entry.name.startswith(".")]


def _not_read(skipped: Sequence[str], glob: str) -> str:
  shown = ", ".join(sorted(skipped)[:3]) + (", ..." if len(skipped) > 3 else "")
  return (f"{len(skipped)} subfolder(s) not read ({shown}); a directory means the files directly in it: "
          f"add {glob} to read every level")


def _subfolder_note(patterns: Sequence[str]) -> str | None:
  """Names the subfolders of input directories that are not read (a directory means its files)."""
  skipped = [path for pattern in patterns for path in _subfolders(pattern)]
  if not skipped:
    return None
  return f"{PROG}: note: " + _not_read(skipped, "'<dir>/**'")


def _match(patterns: Sequence[str]) -> dict[str, dict[str, int]]:
  """``match_input_files``, pattern by pattern; a directory that matches nothing names its subfolders."""
  from transforms.io import match_input_files

  matched: dict[str, dict[str, int]] = {}
  for pattern in patterns:
    try:
      matched.update(match_input_files([pattern]))
    except ValueError as error:
      skipped = _subfolders(pattern)
      if not skipped:
        raise
      raise ValueError(f"{error}; {_not_read(skipped, repr(os.path.join(pattern, '**')))}") from error
  return matched


def run(args: argparse.Namespace, beam_args: Sequence[str]) -> int:
  import pipelines.progress as progress
  from pipelines.common import metric_counters, model_problem, new_pipeline, prepare_models
  from transforms.write import ensure_tables, output_is_writable

  # Every value is checked before the output, whose check creates the lake's folder.
  try:
    matched = _match(args.input)
    pipeline = new_pipeline(beam_args)
  except ValueError as error:
    print(f"{PROG}: error: {error}", file=sys.stderr)
    return 2
  problem = model_problem(args) or output_is_writable(args.output)
  if problem:
    print(f"{PROG}: error: {problem}", file=sys.stderr)
    return 2
  sizes = {path: size for found in matched.values() for path, size in found.items()}
  paths, size = sorted(sizes), sum(sizes.values())
  print(f"{PROG}: {len(paths)} input file(s), {progress.human_bytes(size)} -> {args.output} "
        f"(stages: {','.join(args.stages) or 'none'})", file=sys.stderr, flush=True)
  note = _subfolder_note(args.input)
  if note:
    print(note, file=sys.stderr, flush=True)
  start = time.monotonic()
  # From here on SIGTERM and SIGINT stop the run at once, also while models load or tables are prepared.
  with _exit_on_signals():
    prepare_models(args, PROG)
    ensure_tables(args.output, dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"))
    run_id = uuid.uuid4().hex
    progress.register(run_id, progress.Progress(
        len(paths), size, bool(args.stages), args.progress_seconds,
        printer=lambda line: print(line, file=sys.stderr, flush=True)))
    try:
      build(pipeline, args, run_id=run_id, files=len(paths), size=size)
      result = pipeline.run()
      result.wait_until_finish()
    finally:
      progress.unregister(run_id)
  counters = metric_counters(result)
  for line in progress.summary(counters, time.monotonic() - start, args.output, PROG):
    print(line, file=sys.stderr)
  errors = sum(value for name, value in counters.items() if name.startswith(f"{progress.METRICS_NAMESPACE}.errors:"))
  if errors and args.fail_on_errors:
    print(f"{PROG}: failing (--fail-on-errors): {errors} record(s) landed in errors", file=sys.stderr)
    return 1
  return 0


def _stop_now(signum, frame) -> None:
  from transforms.write import remove_unfinished_files

  removed = remove_unfinished_files()
  print(f"{PROG}: {signal.Signals(signum).name} received: stopped; {removed} unfinished file(s) "
        "removed, rerun to complete the job", file=sys.stderr, flush=True)
  sys.stdout.flush()
  # At once: the runner's threads would otherwise go on with the job.
  os._exit(128 + signum)


class _exit_on_signals:  # noqa: N801 - used as a context manager
  """SIGTERM and SIGINT (whatever disposition was inherited) stop the run at once; see the module doc."""

  def __enter__(self):
    self._saved = {}
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT, signal.SIGTERM):
        self._saved[signum] = signal.signal(signum, _stop_now)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._saved.items():
      signal.signal(signum, handler)


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "run", help="Run the batch pipeline over story files.",
      description="Parse story files, run the enrichment stages and write the Parquet lake. Beam's own "
                  "pipeline options (e.g. --runner, --direct_num_workers) pass through to Beam; any other "
                  "unknown option is an error.")
  parser.add_argument("--input", action="extend", nargs="+", required=True, metavar="PATH",
                      help="Input files, directories or globs (local or gs://); an unquoted glob works. "
                           "A directory means the files directly in it (not its subfolders; use 'DIR/**').")
  add_pipeline_arguments(parser)
  parser.add_argument("--fail-on-errors", action="store_true",
                      help="Exit with status 1 when any record landed in errors (for scripts and CI).")
  parser.add_argument("--progress-seconds", type=bounded(float, 0.001), default=5.0, metavar="SECONDS",
                      help="Seconds between progress lines (default: 5).")
  parser.set_defaults(func=run, accepts_beam_args=True)
