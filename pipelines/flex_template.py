"""Entry point of the Dataflow Flex Template (``deploy/main.py`` calls :func:`main`).

The template launcher runs the entry file with every template parameter as ``--name=value`` plus the
Dataflow pipeline options (project, region, staging and temp locations, sdk_container_image...). One
template serves both pipelines: the ``pipeline`` parameter names the ``wirestream`` command (``run`` or
``stream``). Template parameter names use underscores (``max_story_bytes``), the CLI spells its options
with hyphens (``--max-story-bytes``); options of the chosen command are respelt, everything else goes to
Beam unchanged.

    python deploy/main.py --pipeline=run --input=gs://b/stories/* --output=gs://b/lake --runner=DataflowRunner
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

#: Values of the ``pipeline`` template parameter: the CLI commands a template may launch.
PIPELINES = ("run", "stream")
PIPELINE_PARAMETER = "pipeline"


def command_parsers() -> dict[str, argparse.ArgumentParser]:
  """The argparse parsers of the ``run`` and ``stream`` commands, as the CLI registers them."""
  from pipelines import batch, stream

  parser = argparse.ArgumentParser(prog="wirestream")
  commands = parser.add_subparsers(dest="command", required=True)
  batch.register(commands)
  stream.register(commands)
  return {name: commands.choices[name] for name in PIPELINES}


def command_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
  """Template parameter name (the option's ``dest``) -> argparse action, for every ``--option`` but help."""
  return {action.dest: action for action in parser._actions
          if action.option_strings and not isinstance(action, argparse._HelpAction)}


def to_cli_argv(argv: Sequence[str]) -> list[str]:
  """Template launcher arguments -> ``wirestream`` CLI arguments (command first, options respelt)."""
  pipeline = None
  rest: list[str] = []
  args = list(argv)
  while args:
    arg = args.pop(0)
    name, has_value, value = arg.partition("=")
    if name == f"--{PIPELINE_PARAMETER}":
      pipeline = value if has_value else (args.pop(0) if args else "")
    else:
      rest.append(arg)
  if pipeline not in PIPELINES:
    raise SystemExit(f"the template needs --{PIPELINE_PARAMETER}={'|'.join(PIPELINES)} (got {pipeline!r})")
  spellings = {}
  flags = set()
  for dest, action in command_options(command_parsers()[pipeline]).items():
    long = next((option for option in action.option_strings if option.startswith("--")), None)
    if long:
      spellings[f"--{dest}"] = long
      if isinstance(action, argparse._StoreTrueAction):
        flags.add(long)
  converted = []
  for arg in rest:
    name, has_value, value = arg.partition("=")
    name = spellings.get(name, name)
    if name in flags and has_value:  # a template passes flags as name=true|false
      if value.strip().lower() == "true":
        converted.append(name)
      continue
    converted.append(f"{name}={value}" if has_value else name)
  if not any(arg == "--runner" or arg.startswith("--runner=") for arg in converted):
    converted.append("--runner=DataflowRunner")
  return [pipeline, *converted]


def main(argv: Sequence[str] | None = None) -> int:
  from pipelines.cli import main as cli_main

  return cli_main(to_cli_argv(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
  sys.exit(main())
