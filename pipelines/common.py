"""Options and wiring shared by the batch and streaming pipelines."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

ALL_STAGES = ("ner", "topics")
DEFAULT_MAX_STORY_BYTES = 5 * 1024 * 1024


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


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
  """Arguments of the processing stages, common to ``run`` and ``stream``."""
  parser.add_argument("--output", required=True, help="Lake directory (local path or gs://...).")
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
  parser.add_argument("--max-story-bytes", type=int, default=DEFAULT_MAX_STORY_BYTES,
                      help="Stories larger than this land in errors (default: 5 MB).")
  parser.add_argument("--shards-per-partition", type=int, default=1,
                      help="Files per table, date partition and window (default: 1).")
  parser.add_argument("--cluster-ttl-seconds", type=float, default=7 * 24 * 3600,
                      help="Story clusters: how long (event time) a story stays joinable by its copies, versions "
                           "and rewrites (default: a week).")


def pipeline_options(beam_args: Sequence[str], **overrides) -> PipelineOptions:
  """Beam options from the pass-through arguments; the DirectRunner unless one is named."""
  args = list(beam_args)
  if not any(arg == "--runner" or arg.startswith("--runner=") for arg in args):
    args.append("--runner=DirectRunner")
  options = PipelineOptions(args, **overrides)
  return options


def resolve_backend(requested: str | None) -> str:
  """``--inference-backend``: ``onnx`` unless torch is asked for or ONNX Runtime is not installed."""
  if requested:
    return requested
  try:
    import onnxruntime  # noqa: F401
  except ImportError:
    return "torch"
  return "onnx"


def apply_stages(stories, args: argparse.Namespace):
  """Applies the enrichment stages named by ``args.stages``.

  With the ONNX backend (the default) and our own models, NER and topics run as one fused stage
  (``Enrich``: one encoder pass, int8); otherwise each stage runs by itself (NER on ONNX Runtime when
  it is our model, topics in torch). Returns ``(stories, [error PCollections])``.
  """
  errors = []
  stages = tuple(args.stages)
  if not stages:
    return stories, errors
  backend = resolve_backend(getattr(args, "inference_backend", None))
  ner_model = getattr(args, "ner_model", None)
  topics_model = getattr(args, "topics_model", None)
  if backend == "onnx" and set(stages) == {"ner", "topics"}:
    from transforms.enrich import Enrich, is_fusable
    if is_fusable(ner_model, topics_model):
      stories, stage_errors = stories | "Enrich" >> Enrich(ner_model, topics_model)
      return stories, [stage_errors]
  if "ner" in stages:
    from transforms.ner import ExtractEntities
    handler = None
    if backend == "onnx":
      from transforms import ner_model as nm
      from transforms.enrich import OnnxNerModelHandler
      if nm.is_casing_model_dir(ner_model or nm.DEFAULT_MODEL_DIR):
        handler = OnnxNerModelHandler(ner_model)
    if handler is not None:
      from transforms.ner import describe_model
      info = describe_model(ner_model)
      stage = ExtractEntities(ner_model, handler=handler, languages=info["languages"],
                              model_name=info["name"])
    else:
      stage = ExtractEntities(ner_model)
    stories, stage_errors = stories | "NER" >> stage
    errors.append(stage_errors)
  if "topics" in stages:
    from transforms.topics import ClassifyTopics
    stories, stage_errors = stories | "Topics" >> ClassifyTopics(
        topics_model, getattr(args, "topics_taxonomy", None))
    errors.append(stage_errors)
  return stories, errors


class LogProgress(beam.DoFn):
  """Prints a progress line (stories done, rate) every few seconds from each worker process."""

  _lock = threading.Lock()
  _count = 0
  _start = 0.0
  _last = 0.0

  def __init__(self, label: str = "stories", every_seconds: float = 5.0):
    self._label = label
    self._every = every_seconds

  def process(self, element):
    cls = type(self)
    with cls._lock:
      now = time.monotonic()
      if cls._start == 0.0:
        cls._start = cls._last = now
      cls._count += 1
      if now - cls._last >= self._every:
        cls._last = now
        rate = cls._count / max(now - cls._start, 1e-9)
        print(f"progress: {cls._count} {self._label} parsed, {rate:.1f}/s", file=sys.stderr, flush=True)
    yield element


def print_metrics(result, stream=None) -> dict[str, int]:
  """Prints the pipeline's Beam metrics counters as a summary; returns them."""
  stream = stream or sys.stdout
  counters: dict[str, int] = {}
  try:
    query = result.metrics().query()
  except Exception:  # noqa: BLE001 - some runners have no metrics
    return counters
  for counter in query.get("counters", []):
    name = f"{counter.key.metric.namespace}.{counter.key.metric.name}"
    value = counter.committed if counter.committed is not None else counter.attempted
    counters[name] = counters.get(name, 0) + int(value or 0)
  if counters:
    print("summary:", file=stream)
    for name in sorted(counters):
      print(f"  {name:40s} {counters[name]:>10d}", file=stream)
  return counters
