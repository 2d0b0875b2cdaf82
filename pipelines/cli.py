"""The ``wirestream`` command line.

Each command lives in its own module with a ``register(subparsers)`` function; only the
module of the command being run is imported (none for ``wirestream --help``), and those
modules import Beam and the models only when the command runs, so help answers at once.

Options are strict: an unknown option is an error (exit status 2) that names the closest
known one. The pipeline commands (``run``, ``stream``) also accept every option Beam's own
pipeline options recognise (``--runner``, ``--direct_num_workers``, ``--project``...) and
pass those to Beam.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("pipelines.batch", "Run the batch pipeline over story files."),
    "stream": ("pipelines.stream_options", "Run the streaming pipeline from a Pub/Sub subscription."),
    "publish": ("pipelines.publish", "Publish story files to a Pub/Sub topic, one message per file."),
    "query": ("pipelines.query", "Run SQL over the lake with DuckDB (views events, entities, errors)."),
    "bench": ("pipelines.training.bench", "Time the fast inference path against a transformers baseline."),
    "dataflow-dry-run": ("pipelines.dataflow_dry_run",
                         "Build the Dataflow batch and streaming jobs offline and write their specs."),
}
#: command group -> model -> module
GROUPS: dict[str, tuple[str, dict[str, str]]] = {
    "train": ("Train a model (ner, topics) or average NER runs (ner-average).",
              {"ner": "pipelines.training.train_ner", "ner-average": "pipelines.training.average_ner",
               "topics": "pipelines.training.train_topics"}),
    "eval": ("Evaluate a model or stage (ner, topics, resolve, clusters; topics-reference: a yardstick).",
             {"ner": "pipelines.training.eval_ner", "topics": "pipelines.training.eval_topics",
              "topics-reference": "pipelines.training.reference_topics",
              "resolve": "pipelines.training.eval_resolve", "clusters": "pipelines.training.eval_clusters"}),
}
#: Our own packages: their warnings and log records are always shown.
OWN_PACKAGES = ("pipelines", "transforms", "schemas")


def _schema(args: argparse.Namespace) -> int:
  from schemas.tables import describe
  print(describe())
  return 0


class _Version(argparse.Action):
  """``--version``: the package version and the ids of the default models (as ``events`` records them)."""

  def __init__(self, option_strings, dest, **kwargs):
    super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

  def __call__(self, parser, namespace, values, option_string=None):
    print(version_text())
    parser.exit()


def version_text() -> str:
  from importlib import metadata

  try:
    version = metadata.version("wirestream")
  except metadata.PackageNotFoundError:
    version = "unknown (not installed)"
  lines = [f"wirestream {version}"]
  try:
    from pipelines.common import default_model_ids
    models = default_model_ids()
  except Exception as error:  # noqa: BLE001 - the version is still worth printing
    lines.append(f"default models: unavailable ({type(error).__name__}: {error})")
  else:
    lines += [f"{column}: {value}" for column, value in models.items()]
  return "\n".join(lines)


def _chosen(argv: Sequence[str]) -> tuple[str | None, str | None]:
  words = [word for word in argv if not word.startswith("-")]
  command = words[0] if words else None
  sub = words[1] if len(words) > 1 and command in GROUPS else None
  return command, sub


def _add_verbose(parser: argparse.ArgumentParser, default=False) -> None:
  parser.add_argument("-v", "--verbose", action="store_true", default=default,
                      help="Show INFO logs and the warnings of the libraries (hidden by default).")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
  """The parser; with ``argv``, only the chosen command's module is imported (all of them without)."""
  command, sub = _chosen(argv) if argv is not None else (None, None)
  load_all = argv is None
  parser = argparse.ArgumentParser(
      prog="wirestream",
      description="Wire-news ingestion: story files or Pub/Sub -> NER + IPTC topics -> Parquet tables.")
  _add_verbose(parser)
  parser.add_argument("--version", action=_Version, help="Print the version and the default model ids.")
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
  for command_parser in _command_parsers(parser):
    _add_verbose(command_parser, default=argparse.SUPPRESS)
  return parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
  for action in parser._actions:
    if isinstance(action, argparse._SubParsersAction):
      return dict(action.choices)
  return {}


def _command_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
  """Every parser that runs a command (the leaves below the top-level parser)."""
  leaves = []
  for child in _subparsers(parser).values():
    leaves += _command_parsers(child) if _subparsers(child) else [child]
  return leaves


def _parser_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
  """The parser of the command ``args`` runs."""
  chosen = _subparsers(parser)[args.command]
  model = getattr(args, "model", None)
  return _subparsers(chosen)[model] if model and _subparsers(chosen) else chosen


class _QuietLibraries(logging.Filter):
  """Lets through records of our own packages, and errors of everyone else."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR or record.name.split(".")[0] in OWN_PACKAGES:
      return True
    return record.name == "root" and any(f"{os.sep}{package}{os.sep}" in record.pathname
                                         and "site-packages" not in record.pathname
                                         for package in OWN_PACKAGES)


def configure_output(verbose: bool) -> None:
  """Logging and warnings: ours always; the libraries' only with ``-v`` (their errors always)."""
  logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                      format="%(levelname)s %(name)s: %(message)s")
  if verbose:
    return
  for handler in logging.getLogger().handlers:
    handler.addFilter(_QuietLibraries())
  warnings.filterwarnings("ignore", module=rf"^(?!(?:{'|'.join(OWN_PACKAGES)})\b)")
  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser(argv)
  args, extra = parser.parse_known_args(argv)
  accepts_beam = getattr(args, "accepts_beam_args", False)
  if extra:
    from pipelines.common import parser_options, unknown_argument_message, unknown_arguments

    command_parser = _parser_of(parser, args)
    unknown, beam_options = unknown_arguments(extra, beam=accepts_beam)
    if unknown:
      command_parser.error(unknown_argument_message(unknown, [*parser_options(command_parser), *beam_options]))
  configure_output(args.verbose)
  try:
    if accepts_beam:
      return int(args.func(args, extra) or 0)
    return int(args.func(args) or 0)
  except KeyboardInterrupt:
    return 130


if __name__ == "__main__":
  sys.exit(main())
