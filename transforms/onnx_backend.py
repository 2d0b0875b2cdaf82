"""ONNX Runtime backend: the fused module exported once, quantised to int8, cached; each window run alone.

The graph (see :mod:`transforms.fused`) is exported with torch on first use, its weight MatMuls are
quantised to int8 per output channel, and both files are cached under ``$WIRESTREAM_CACHE`` (default
``~/.cache/wirestream``) in a directory named by a hash of the export version and every weight and config
file involved, so a changed model is re-exported and concurrent workers never clash. Once cached,
inference needs only ``onnxruntime``, ``tokenizers`` and ``numpy``: torch is not imported.

Activations are quantised on the fly with one scale per input tensor (dynamic quantisation). So that a
window's result does not depend on what else is in its batch, every row runs as its own tensor, without
padding, on one thread (:class:`transforms.backends.RowBackend`): its scales are its own, and the same
story gives the same entities and topic scores in any batch, run, runner, thread count or batch size.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from transforms import spec as sp
from transforms.backends import RowBackend

LOG = logging.getLogger(__name__)

#: Bumped whenever the exported graph or the way it runs changes (part of the cache key).
EXPORT_VERSION = "4-rows"
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
OUTPUT_NAMES = ("ner_logits", "topic_logits")
PRECISIONS = ("int8", "fp32")
#: MatMuls left in fp32 by the int8 quantisation (node names of the exported graph): the token classifier,
#: whose logits decide the labels directly (a tiny share of the compute).
KEEP_FP32 = ("/ner/classifier/MatMul", "/classifier/MatMul")
GRAPH_FILES = {"fp32": "enrich.fp32.onnx", "int8": "enrich.int8.onnx"}
META_FILE = "meta.json"


def cache_root() -> Path:
  """Where exported graphs are kept (``$WIRESTREAM_CACHE`` or ``~/.cache/wirestream``)."""
  return Path(os.environ.get("WIRESTREAM_CACHE") or Path.home() / ".cache" / "wirestream") / "onnx"


def cache_key(ner: sp.NerSpec | None, topics: sp.TopicSpec | None, share: bool = True) -> str:
  """Hash of the export version and every file the graph is built from."""
  files = [*(ner.files() if ner else [None]), *(topics.files() if topics else [None])]
  shared = share and sp.shares_encoder(ner, topics)
  return sp.fingerprint(files, salt=f"wirestream-enrich/{EXPORT_VERSION}/shared={shared}")[:24]


def export(ner: sp.NerSpec | None, topics: sp.TopicSpec | None, out_dir: Path, share: bool = True) -> None:
  """Export the fused fp32 graph and its int8 quantisation into ``out_dir``."""
  import torch
  from onnxruntime.quantization import QuantType, quantize_dynamic

  from transforms.fused import Fused

  module = Fused(ner, topics, share)
  ids = torch.randint(1000, 2000, (2, 16), dtype=torch.long)
  types = torch.ones_like(ids)
  fp32 = out_dir / GRAPH_FILES["fp32"]
  axes = {name: {0: "batch", 1: "length"} for name in INPUT_NAMES}
  axes.update({"ner_logits": {0: "batch", 1: "length"}, "topic_logits": {0: "batch"}})
  with torch.inference_mode(), warnings.catch_warnings():
    warnings.simplefilter("ignore")  # tracer and deprecation notes of the TorchScript exporter
    torch.onnx.export(module, (ids, types, torch.ones_like(ids)), str(fp32), input_names=list(INPUT_NAMES),
                      output_names=list(OUTPUT_NAMES), dynamic_axes=axes, opset_version=17,
                      do_constant_folding=True, dynamo=False)
  quiet = logging.getLogger()
  level = quiet.level
  quiet.setLevel(max(level, logging.WARNING))  # the quantiser logs every tensor at INFO on the root logger
  try:
    quantize_dynamic(str(fp32), str(out_dir / GRAPH_FILES["int8"]), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"], per_channel=True, nodes_to_exclude=list(KEEP_FP32))
  finally:
    quiet.setLevel(level)


def ensure_exported(ner: sp.NerSpec | None, topics: sp.TopicSpec | None, share: bool = True) -> Path:
  """The cache directory holding the graphs for these models, exporting them first if needed."""
  key = cache_key(ner, topics, share)
  target = cache_root() / key
  if (target / META_FILE).is_file():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  with open(target.parent / f".{key}.lock", "w") as lock:
    # One process exports; the others (e.g. the worker processes of one machine) wait and reuse it.
    try:
      import fcntl

      fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
    except ImportError:  # not POSIX: concurrent exports still end well (atomic rename below)
      pass
    if not (target / META_FILE).is_file():
      work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
      try:
        LOG.info("exporting ONNX graphs to %s", target)
        export(ner, topics, work, share)
        meta = {"key": key, "version": EXPORT_VERSION, "ner": ner and ner.ref, "topics": topics and topics.ref}
        (work / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        try:
          work.rename(target)
        except OSError:
          if not (target / META_FILE).is_file():
            raise
      finally:
        shutil.rmtree(work, ignore_errors=True)
  return target


class OnnxBackend(RowBackend):
  """The exported graph on ONNX Runtime (thread-safe; one per process is enough), one row per core at a
  time, each on one intra-op thread (one window rarely keeps several threads busy)."""

  def __init__(self, graph: Path, threads: int | None = None):
    import onnxruntime as ort

    super().__init__(threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    self.graph = Path(graph)
    self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    self.input_names = [i.name for i in self.session.get_inputs()]

  def forward_row(self, input_ids, token_type_ids, attention_mask):
    feeds = dict(zip(INPUT_NAMES, (input_ids, token_type_ids, attention_mask), strict=True))
    return self.session.run(list(OUTPUT_NAMES), {k: feeds[k] for k in self.input_names})


def load(ner: sp.NerSpec | None, topics: sp.TopicSpec | None, *, precision: str = "int8",
         threads: int | None = None, share: bool = True) -> OnnxBackend:
  """Export (once, cached) and open the fused graph at ``precision`` (``int8`` or ``fp32``)."""
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
  return OnnxBackend(ensure_exported(ner, topics, share) / GRAPH_FILES[precision], threads)


def main(argv: list[str] | None = None) -> int:
  """``python -m transforms.onnx_backend [--ner-model DIR] [--topics-model DIR]``: export into the cache
  ahead of time (e.g. while building a worker image, with ``WIRESTREAM_CACHE`` set), print its path."""
  import argparse

  parser = argparse.ArgumentParser(prog="python -m transforms.onnx_backend", description=main.__doc__)
  parser.add_argument("--ner-model", default=None)
  parser.add_argument("--topics-model", default=None)
  args = parser.parse_args(argv)
  print(ensure_exported(sp.read_ner(args.ner_model), sp.read_topics(args.topics_model)))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
