"""Options and wiring shared by the commands.

This module is imported to build the command line (``wirestream --help`` included), so it
imports nothing heavy at module level: Beam, the models and the cloud clients are imported
by the functions that need them.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence

ALL_STAGES = ("ner", "topics")
DEFAULT_MAX_STORY_BYTES = 5 * 1024 * 1024
#: The largest file the reader reads (``transforms.io.DEFAULT_MAX_FILE_BYTES``): no story can be larger.
MAX_STORY_BYTES_LIMIT = 512 * 1024 * 1024
#: The name of every output option, and the names it also answers to.
OUTPUT_OPTIONS = ("--output", "--lake", "--out-dir", "--out")


def parse_stages(value: str) -> tuple[str, ...]:
  """``--stages`` value -> tuple of stage names (``none`` -> empty)."""
  names = [name.strip().lower() for name in value.split(",") if name.strip()]
  if names == ["none"]:
    return ()
  if names == ["all"]:
    return ALL_STAGES
  unknown = [name for name in names if name not in ALL_STAGES]
  if unknown or not names:
    raise argparse.ArgumentTypeError(
        f"unknown stage(s) {', '.join(unknown) or value!r}; choose from {', '.join(ALL_STAGES)}, all or none")
  return tuple(name for name in ALL_STAGES if name in names)


def bounded(kind: Callable[[str], float], low: float, high: float | None = None) -> Callable[[str], float]:
  """An argparse ``type``: ``kind(value)`` within ``[low, high]``, else a clear usage error."""

  def convert(value: str):
    try:
      number = kind(value)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected a{'n integer' if kind is int else ' number'}, "
                                       f"got {value!r}") from None
    if number != number or number < low or (high is not None and number > high):
      span = f"between {low} and {high}" if high is not None else f"at least {low}"
      raise argparse.ArgumentTypeError(f"must be {span}, got {value}")
    return number

  convert.__name__ = kind.__name__
  return convert


def add_output_argument(parser: argparse.ArgumentParser, help_text: str, dest: str = "output", **kwargs) -> None:
  """``--output``, the one name of the output option of every command (older names kept as aliases)."""
  parser.add_argument(*OUTPUT_OPTIONS, dest=dest, metavar="DIR", help=help_text, **kwargs)


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
  """Arguments of the processing stages, common to ``run`` and ``stream``."""
  add_output_argument(parser, "Lake directory (local path or gs://...).", required=True)
  parser.add_argument(
      "--stages", type=parse_stages, default=ALL_STAGES, metavar="ner,topics|all|none",
      help="Enrichment stages to run (default: ner,topics). 'none' parses and stores only.")
  parser.add_argument("--ner-model", default=None, metavar="PATH_OR_HUB_ID",
                      help="Token-classification model (default: the bundled wirestream NER model).")
  parser.add_argument("--topics-model", default=None, metavar="PATH_OR_HUB_ID",
                      help="Sequence-classification topic model (default: the bundled IPTC topic model).")
  parser.add_argument("--topics-taxonomy", default=None, metavar="FILE",
                      help="CSV of code,label documenting the labels of --topics-model.")
  parser.add_argument("--inference-backend", choices=("onnx", "torch"), default=None,
                      help="Inference runtime for the models (default: the fastest available).")
  parser.add_argument("--max-story-bytes", type=bounded(int, 1, MAX_STORY_BYTES_LIMIT),
                      default=DEFAULT_MAX_STORY_BYTES, metavar="BYTES",
                      help=f"Stories larger than this land in errors (default: 5 MiB; "
                           f"at most {MAX_STORY_BYTES_LIMIT}).")
  parser.add_argument("--shards-per-partition", type=bounded(int, 1, 1024), default=1, metavar="N",
                      help="Files per table, date partition and window (default: 1).")
  parser.add_argument("--cluster-ttl-seconds", type=bounded(float, 1), default=7 * 24 * 3600, metavar="SECONDS",
                      help="Story clusters: how long (event time) a story stays joinable by its copies, versions "
                           "and rewrites (default: a week).")


# --------------------------------------------------------------------------- strict options


def closest_option(name: str, candidates: Iterable[str]) -> str | None:
  """The candidate option closest to ``name`` (``_`` and ``-`` count as the same), if any is close."""
  def norm(option: str) -> str:
    return option.lstrip("-").replace("_", "-").lower()

  by_norm: dict[str, str] = {}
  for candidate in candidates:
    by_norm.setdefault(norm(candidate), candidate)
  match = difflib.get_close_matches(norm(name), list(by_norm), n=1, cutoff=0.6)
  return by_norm[match[0]] if match else None


def parser_options(parser: argparse.ArgumentParser) -> list[str]:
  """Every ``--option`` spelling of ``parser``."""
  return [option for action in parser._actions for option in action.option_strings if option.startswith("--")]


def _beam_parser() -> argparse.ArgumentParser:
  """Beam's own parser of pipeline options: every option class Beam knows, as Beam builds it."""
  from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

  parser = _BeamArgumentParser(allow_abbrev=False)
  classes: dict[str, type] = {}
  for cls in PipelineOptions.__subclasses__():
    classes.setdefault(str(cls), cls)
  for cls in classes.values():
    cls._add_argparse_args(parser)  # noqa: SLF001 - how PipelineOptions itself collects them
  return parser


def unknown_arguments(extra: Sequence[str], *, beam: bool) -> tuple[list[str], list[str]]:
  """Splits arguments our parser left over into (unknown ones, Beam's candidate option names).

  With ``beam``, an argument Beam recognises as a pipeline option (with its value) is known.
  """
  if not extra:
    return [], []
  if not beam:
    return list(extra), []
  parser = _beam_parser()
  _, unknown = parser.parse_known_args(list(extra))
  return unknown, parser_options(parser)


def unknown_argument_message(unknown: Sequence[str], candidates: Iterable[str]) -> str:
  """``unrecognized option --stagse (did you mean --stages?)``, for the first unknown argument."""
  first = unknown[0]
  if not first.startswith("-"):
    return (f"unexpected argument {first!r} (a glob that matched several files? --input takes them all; "
            f"quote it to let wirestream expand it)")
  name = first.split("=", 1)[0]
  guess = closest_option(name, candidates)
  hint = f" (did you mean {guess}?)" if guess else ""
  return f"unrecognized option {name}{hint}"


# --------------------------------------------------------------------------- Beam wiring


def pipeline_options(beam_args: Sequence[str], **overrides):
  """Beam options from the pass-through arguments; the DirectRunner unless one is named."""
  from apache_beam.options.pipeline_options import PipelineOptions

  args = list(beam_args)
  if not any(arg == "--runner" or arg.startswith("--runner=") for arg in args):
    args.append("--runner=DirectRunner")
  return PipelineOptions(args, **overrides)


def new_pipeline(beam_args: Sequence[str]):
  """A ``beam.Pipeline`` over ``beam_args``: Beam creates the runner and checks the options it needs
  (``--project``, ``--region``... for Dataflow) here, before anything is written. Raises ValueError with
  one line when the ``--runner`` or those options are wrong."""
  import apache_beam as beam
  from apache_beam.options.pipeline_options import StandardOptions
  from apache_beam.runners.runner import create_runner

  options = pipeline_options(beam_args)
  name = options.view_as(StandardOptions).runner
  try:
    runner = create_runner(name)
  except ValueError:
    guess = closest_option(name, StandardOptions.KNOWN_RUNNER_NAMES)
    hint = f" (did you mean {guess}?)" if guess else ""
    raise ValueError(f"unknown --runner {name!r}{hint}: choose one of "
                     f"{', '.join(StandardOptions.KNOWN_RUNNER_NAMES)}, or the full name of a PipelineRunner "
                     f"subclass") from None
  except (ImportError, AttributeError) as error:
    raise ValueError(f"--runner {name!r} cannot be loaded: {type(error).__name__}: {error}") from error
  try:
    return beam.Pipeline(runner=runner, options=options)
  except ValueError as error:  # "Pipeline has validations errors:", then one line each
    raise ValueError(f"--runner {name}: {' '.join(str(error).split())}") from error


def model_problem(args: argparse.Namespace) -> str | None:
  """Why the models (of the stages ``args`` runs) or the taxonomy it names cannot be used, else None.

  Reads the specs only (no weights), so a wrong ``--ner-model``, ``--topics-model`` or ``--topics-taxonomy``
  stops the command before anything is written.
  """
  taxonomy = getattr(args, "topics_taxonomy", None)
  if taxonomy and not os.path.isfile(taxonomy):
    return f"--topics-taxonomy {taxonomy!r}: no such file"
  stages = tuple(getattr(args, "stages", ()))
  if not stages:
    return None
  from transforms import spec as sp

  readers = {"ner": ("--ner-model", lambda: sp.read_ner(getattr(args, "ner_model", None))),
             "topics": ("--topics-model", lambda: sp.read_topics(getattr(args, "topics_model", None), taxonomy))}
  specs = []
  for stage in stages:
    option, read = readers[stage]
    try:
      specs.append(read())
    except OSError as error:
      return " ".join(str(error).split())
    except (ValueError, KeyError, TypeError) as error:
      return f"{option}: not a usable model ({type(error).__name__}: {' '.join(str(error).split())})"
  missing = [str(path) for spec in specs for path in spec.files() if not path.is_file()]
  if missing:
    return f"model file(s) missing: {', '.join(missing)}"
  return None


def resolve_backend(requested: str | None) -> str:
  """``--inference-backend``: ``onnx`` unless torch is asked for or ONNX Runtime is not installed."""
  if requested:
    return requested
  try:
    import onnxruntime  # noqa: F401
  except ImportError:
    return "torch"
  return "onnx"


def _our_onnx_models(args: argparse.Namespace):
  """(ner, topics) specs of our own models that the stages run on ONNX Runtime, or None."""
  stages = tuple(getattr(args, "stages", ()))
  if not stages or resolve_backend(getattr(args, "inference_backend", None)) != "onnx":
    return None
  from transforms import spec as sp

  ner = sp.read_ner(getattr(args, "ner_model", None)) if "ner" in stages else None
  topics = (sp.read_topics(getattr(args, "topics_model", None), getattr(args, "topics_taxonomy", None))
            if "topics" in stages else None)
  ner = ner if ner is not None and ner.casing else None
  topics = topics if topics is not None and topics.is_head else None
  return (ner, topics) if ner or topics else None


def prepare_models(args: argparse.Namespace, prog: str, stream=None) -> None:
  """Exports our models' ONNX graph before the pipeline starts, saying so, when it is not cached yet.

  The export happens once per model version (10-30 s); the workers then open the cached graph.
  """
  models = _our_onnx_models(args)
  if models is None:
    return
  from transforms import onnx_backend as ob

  target = ob.cache_root() / ob.cache_key(*models)
  if (target / ob.META_FILE).is_file():
    return
  stream = stream or sys.stderr
  print(f"{prog}: first use of these models: exporting them to ONNX once (10-30 s), cached in "
        f"{ob.cache_root()}", file=stream, flush=True)
  ob.ensure_exported(*models)


def default_model_ids() -> dict[str, str]:
  """The ``ner_model`` and ``topics_model`` values the default stages record in ``events``."""
  from transforms import spec as sp

  return {"ner_model": sp.read_ner(None).name, "topics_model": sp.read_topics(None).name}


def apply_stages(stories, args: argparse.Namespace):
  """Applies the enrichment stages named by ``args.stages`` as one ``Enrich`` step (one encoder pass for
  our models, on the backend ``--inference-backend`` names), then the resolve stage after NER (entity keys,
  canonical names, geocoded places, the story's countries: ``transforms.resolve``).
  Returns ``(stories, [error PCollections])``."""
  stages = tuple(args.stages)
  if not stages:
    return stories, []
  from transforms.enrich import Enrich

  stories, errors = stories | "Enrich" >> Enrich(
      getattr(args, "ner_model", None), getattr(args, "topics_model", None), stages=stages,
      taxonomy=getattr(args, "topics_taxonomy", None),
      backend=resolve_backend(getattr(args, "inference_backend", None)))
  errors = [errors]
  if "ner" in stages:
    from transforms.resolve import ResolveEntities

    stories, resolve_errors = stories | "Resolve" >> ResolveEntities()
    errors.append(resolve_errors)
  return stories, errors


def metric_counters(result) -> dict[str, int]:
  """The pipeline's Beam metrics counters by ``namespace.name`` (empty when the runner has none)."""
  counters: dict[str, int] = {}
  try:
    query = result.metrics().query()
  except Exception:  # noqa: BLE001 - some runners have no metrics
    return counters
  for counter in query.get("counters", []):
    name = f"{counter.key.metric.namespace}.{counter.key.metric.name}"
    value = counter.committed if counter.committed is not None else counter.attempted
    counters[name] = counters.get(name, 0) + int(value or 0)
  return counters


def print_metrics(result, stream=None) -> dict[str, int]:
  """Prints the pipeline's Beam metrics counters as a summary; returns them."""
  stream = stream or sys.stdout
  counters = metric_counters(result)
  if counters:
    print("summary:", file=stream)
    for name in sorted(counters):
      print(f"  {name:40s} {counters[name]:>10d}", file=stream)
  return counters


# --------------------------------------------------------------------------- Pub/Sub operator errors

#: The shape ``deploy/metadata.json`` checks too.
_PUBSUB_PATH = {kind: re.compile(rf"^projects/[^/\s]+/{kind}s/[^/\s]+$") for kind in ("topic", "subscription")}


def pubsub_path_problem(kind: str, path: str) -> str | None:
  """Why ``path`` is not a full Pub/Sub ``topic`` or ``subscription`` name, else None."""
  if _PUBSUB_PATH[kind].match(path):
    return None
  return f"--{kind} {path!r} is not a full {kind} name: it must look like projects/PROJECT/{kind}s/NAME"


def pubsub_problem(kind: str, path: str, timeout: float = 10.0) -> str | None:
  """Checks that the Pub/Sub ``topic`` or ``subscription`` exists and can be reached; else says why.

  One line each for what an operator gets wrong: no credentials, a name that does not exist, no
  permission, an emulator (``PUBSUB_EMULATOR_HOST``) that does not answer.
  """
  import os

  from google.api_core import exceptions as gexc
  from google.api_core.retry import Retry

  retry = Retry(timeout=timeout)
  emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
  try:
    from google.auth import exceptions as auth_exceptions
    from google.cloud import pubsub_v1
    if kind == "topic":
      pubsub_v1.PublisherClient().get_topic(request={"topic": path}, retry=retry, timeout=timeout)
    else:
      with pubsub_v1.SubscriberClient() as client:
        client.get_subscription(request={"subscription": path}, retry=retry, timeout=timeout)
  except auth_exceptions.DefaultCredentialsError:
    return ("no Google Cloud credentials: run `gcloud auth application-default login`, set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key, or set PUBSUB_EMULATOR_HOST for the emulator")
  except gexc.NotFound:
    return f"{kind} {path} does not exist{f' on the emulator at {emulator}' if emulator else ''}: create it first"
  except gexc.PermissionDenied as error:
    return f"no permission to use {kind} {path}: {error.message}"
  except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError) as error:
    where = f"the Pub/Sub emulator at {emulator} (PUBSUB_EMULATOR_HOST)" if emulator else "Pub/Sub"
    return f"cannot reach {where}: {type(error).__name__}; is it running?"
  except gexc.GoogleAPICallError as error:
    return f"Pub/Sub refused {kind} {path}: {type(error).__name__}: {error.message}"
  return None
