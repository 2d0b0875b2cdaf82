"""The options of ``wirestream stream`` (kept apart from the pipeline, so help answers without Beam)."""

from __future__ import annotations

import argparse
import ast
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from pipelines.common import add_pipeline_arguments, bounded

#: Default time a story version is remembered (``transforms.dedup.DEFAULT_TTL_SECONDS``): one day.
DEFAULT_DEDUP_TTL_SECONDS = 24 * 3600


def _stream_doc() -> str | None:
  """The docstring of :mod:`pipelines.stream`, read without importing it (and Beam)."""
  spec = importlib.util.find_spec("pipelines.stream")
  if spec is None or not spec.origin:
    return None
  return ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8")))


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "stream", help="Run the streaming pipeline from a Pub/Sub subscription.",
      description=_stream_doc(), formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--subscription", required=True, help="projects/PROJECT/subscriptions/NAME")
  parser.add_argument("--window-seconds", type=float, default=60.0,
                      help="Length of the fixed windows files are written per (default: 60).")
  parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                      help="Stop reading after this many seconds, write what was read, and exit "
                           "(default: run until interrupted).")
  parser.add_argument("--drain-timeout", type=bounded(float, 0), default=None, metavar="SECONDS",
                      help="Longest wait for the open windows to be written when stopping "
                           "(default: the window length plus 120 s).")
  parser.add_argument("--dedup-ttl-seconds", type=bounded(float, 0.001), default=DEFAULT_DEDUP_TTL_SECONDS,
                      help="How long a (story_id, version) is remembered to drop repeats (default: one day).")
  parser.add_argument("--poll-seconds", type=bounded(float, 0), default=0.5,
                      help="DirectRunner: pause after a pull that found no messages (default: 0.5).")
  parser.add_argument("--lease-seconds", type=bounded(float, 10, 600), default=60.0,
                      help="DirectRunner: ack deadline a pulled message is held for, and extended, until its "
                           "window is written; after a crash Pub/Sub delivers it again within this long "
                           "(10..600, default: 60).")
  parser.add_argument("--progress-seconds", type=bounded(float, 0.001), default=5.0,
                      help="Seconds between progress lines (default: 5).")
  add_pipeline_arguments(parser)
  parser.set_defaults(func=run_with_defaults, accepts_beam_args=True)


def run_with_defaults(args: argparse.Namespace, beam_args: Sequence[str]) -> int:
  from pipelines import stream

  if args.drain_timeout is None:
    args.drain_timeout = args.window_seconds + 120.0
  return stream.run(args, beam_args)
