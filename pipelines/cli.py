"""The ``wirestream`` command line.

Each command lives in its own module with a ``register(subparsers)`` function; only the
module of the command being run is imported, so ``wirestream query`` does not pay for
loading the inference stack.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("pipelines.batch", "Run the batch pipeline over story files."),
    "stream": ("pipelines.stream", "Run the streaming pipeline from a Pub/Sub subscription."),
    "publish": ("pipelines.publish", "Publish story files to a Pub/Sub topic, one message per file."),
    "query": ("pipelines.query", "Run SQL over the lake with DuckDB (views events, entities, errors)."),
    "bench": ("pipelines.bench", "Time the fast inference path against a transformers baseline."),
    "dataflow-dry-run": ("pipelines.dataflow_dry_run",
                         "Build the Dataflow batch and streaming jobs offline and write their specs."),
}
#: command group -> model -> module
GROUPS: dict[str, tuple[str, dict[str, str]]] = {
    "train": ("Train a model (ner, topics).", {"ner": "pipelines.train_ner", "topics": "pipelines.train_topics"}),
    "eval": ("Evaluate a model (ner, topics) or the story clustering (clusters).",
             {"ner": "pipelines.eval_ner", "topics": "pipelines.eval_topics", "clusters": "pipelines.eval_clusters"}),
}


def _schema(args: argparse.Namespace) -> int:
  from schemas.tables import describe
  print(describe())
  return 0


def _chosen(argv: Sequence[str]) -> tuple[str | None, str | None]:
  words = [word for word in argv if not word.startswith("-")]
  command = words[0] if words else None
  sub = words[1] if len(words) > 1 and command in GROUPS else None
  return command, sub


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
  """The parser; with ``argv``, only the chosen command's module is imported (all of them without)."""
  command, sub = _chosen(argv) if argv is not None else (None, None)
  load_all = argv is None or command not in (*COMMANDS, *GROUPS)
  parser = argparse.ArgumentParser(
      prog="wirestream",
      description="Wire-news ingestion: story files or Pub/Sub -> NER + IPTC topics -> Parquet tables.")
  parser.add_argument("-v", "--verbose", action="store_true", help="Log Beam's INFO messages.")
  commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  for name, (module, help_text) in COMMANDS.items():
    if load_all or name == command:
      importlib.import_module(module).register(commands)
    else:
      commands.add_parser(name, help=help_text)
  for group, (help_text, members) in GROUPS.items():
    group_parser = commands.add_parser(group, help=help_text)
    models = group_parser.add_subparsers(dest="model", metavar="MODEL", required=True)
    for model, module in members.items():
      if load_all or (group == command and (sub is None or sub == model)):
        importlib.import_module(module).register(models)
      else:
        models.add_parser(model)
  schema = commands.add_parser("schema", help="Print the documentation of every table and column (Markdown).")
  schema.set_defaults(func=_schema)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser(argv)
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
