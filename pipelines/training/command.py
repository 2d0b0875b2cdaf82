"""The one shape of the model-development commands: a subcommand of ``wirestream`` and, on its own, a
``python -m`` entry point, both from the module's ``add_arguments`` and ``_run``."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


def command(name: str, help: str, doc: str | None, add_arguments: Callable[[argparse.ArgumentParser], None],
            run: Callable[[argparse.Namespace], int], prog: str):
  """``(register, main)``: ``register(subparsers)`` adds the command ``name``; ``main(argv)`` runs it alone
  as ``prog``."""
  def register(subparsers) -> None:
    parser = subparsers.add_parser(name, help=help, description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run)

  def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))

  return register, main
