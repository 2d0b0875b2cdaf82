"""``wirestream publish``: story files -> Pub/Sub messages, one message per file.

    wirestream publish --topic projects/P/topics/T FILE_OR_DIR... [--format X] [--attribute KEY=VALUE]

The file's bytes are the message data, as they are (gzip files too: the parser detects
compression from content). Attributes: ``format`` (from ``--format``, else from an
unambiguous file extension; otherwise the stream detects the format from content),
``filename`` and any ``--attribute``. Works against real Pub/Sub and against the
emulator (``PUBSUB_EMULATOR_HOST``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipelines.common import pubsub_path_problem, pubsub_problem

PROG = "wirestream publish"
FORMATS = ("plain", "json", "jsonl", "ninjs", "nitf", "newsml", "reuters-sgml")
#: Pub/Sub's limit on one message's data.
MAX_MESSAGE_BYTES = 10_000_000
_EXTENSIONS = {".txt": "plain", ".jsonl": "jsonl", ".ndjson": "jsonl", ".sgm": "reuters-sgml",
               ".sgml": "reuters-sgml", ".nitf": "nitf"}


def format_from_name(path: str) -> str | None:
  """The format an unambiguous extension names (``.gz`` looked through), else None."""
  name = path.lower()
  if name.endswith(".gz"):
    name = name[:-3]
  return _EXTENSIONS.get(os.path.splitext(name)[1])


def expand_files(inputs: Iterable[str]) -> list[Path]:
  """Files named, and the non-hidden files directly inside directories named."""
  files: list[Path] = []
  for item in inputs:
    path = Path(item)
    if path.is_dir():
      files.extend(sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")))
    elif path.is_file():
      files.append(path)
    else:
      raise FileNotFoundError(f"no such file or directory: {item}")
  return files


def publish_files(topic: str, files: Sequence[Path], *, fmt: str | None = None,
                  attributes: dict[str, str] | None = None, publisher=None,
                  stream=sys.stdout) -> tuple[list[str], list[str]]:
  """Publishes each file as one message; returns (message ids, problems)."""
  from google.cloud import pubsub_v1

  from transforms.pubsub import FORMAT_ATTRIBUTE
  publisher = publisher or pubsub_v1.PublisherClient()
  pending = []
  problems = []
  for path in files:
    data = path.read_bytes()
    if len(data) > MAX_MESSAGE_BYTES:
      problems.append(f"{path}: {len(data)} bytes exceeds Pub/Sub's {MAX_MESSAGE_BYTES}-byte message limit")
      continue
    attrs = {"filename": path.name, **(attributes or {})}
    story_format = fmt or format_from_name(path.name)
    if story_format:
      attrs[FORMAT_ATTRIBUTE] = story_format
    pending.append((path, publisher.publish(topic, data, **attrs)))
  ids = []
  for path, future in pending:
    try:
      message_id = future.result(timeout=120)
    except Exception as error:  # noqa: BLE001 - report every failed file, go on with the others
      problems.append(f"{path}: {type(error).__name__}: {error}")
      continue
    ids.append(message_id)
    print(f"{message_id}\t{path}", file=stream)
  return ids, problems


def _attribute(value: str) -> tuple[str, str]:
  key, sep, val = value.partition("=")
  if not sep or not key:
    raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
  return key, val


def run(args: argparse.Namespace) -> int:
  problem = pubsub_path_problem("topic", args.topic)
  if problem:
    print(f"{PROG}: error: {problem}", file=sys.stderr)
    return 2
  try:
    files = expand_files(args.files)
  except FileNotFoundError as error:
    print(f"{PROG}: error: {error}", file=sys.stderr)
    return 2
  if not files:
    print(f"{PROG}: error: no files to publish", file=sys.stderr)
    return 2
  problem = pubsub_problem("topic", args.topic)
  if problem:
    print(f"{PROG}: error: {problem}", file=sys.stderr)
    return 2
  start = time.monotonic()
  ids, problems = publish_files(args.topic, files, fmt=args.format, attributes=dict(args.attribute or ()))
  for problem in problems:
    print(f"{PROG}: error: {problem}", file=sys.stderr)
  target = f" (emulator {os.environ['PUBSUB_EMULATOR_HOST']})" if os.environ.get("PUBSUB_EMULATOR_HOST") else ""
  print(f"{PROG}: {len(ids)} message(s) to {args.topic}{target} in {time.monotonic() - start:.1f}s, "
        f"{len(problems)} failed", file=sys.stderr)
  return 1 if problems else 0


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "publish", help="Publish story files to a Pub/Sub topic, one message per file.",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--topic", required=True, help="projects/PROJECT/topics/TOPIC")
  parser.add_argument("--format", choices=FORMATS, default=None,
                      help="Story format of every file (default: from the extension, else detected by the stream).")
  parser.add_argument("--attribute", action="append", type=_attribute, metavar="KEY=VALUE",
                      help="Extra message attribute; repeatable.")
  parser.add_argument("files", nargs="+", metavar="FILE", help="Story files, or directories of them.")
  parser.set_defaults(func=run)
