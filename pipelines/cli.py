"""The ``wirestream`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pipelines import batch, query


def _schema(args: argparse.Namespace) -> int:
  from schemas.tables import describe
  print(describe())
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="wirestream",
      description="Wire-news ingestion: story files or Pub/Sub -> NER + IPTC topics -> Parquet tables.")
  parser.add_argument("-v", "--verbose", action="store_true", help="Log Beam's INFO messages.")
  commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  batch.register(commands)
  query.register(commands)
  schema = commands.add_parser("schema", help="Print the documentation of every table and column (Markdown).")
  schema.set_defaults(func=_schema)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  if extra and not getattr(args, "accepts_beam_args", False):
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                      format="%(levelname)s %(name)s: %(message)s")
  if not args.verbose:
    # The DirectRunner looks for the Prism runner first and falls back with a warning.
    logging.getLogger("apache_beam.runners.portability").setLevel(logging.ERROR)
  try:
    if getattr(args, "accepts_beam_args", False):
      return int(args.func(args, extra) or 0)
    return int(args.func(args) or 0)
  except KeyboardInterrupt:
    return 130


if __name__ == "__main__":
  sys.exit(main())
