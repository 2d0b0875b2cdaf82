"""ONNX Runtime backend for the enrichment models: export, int8 quantisation, cached sessions.

The NER model (a ``BertForTokenClassification`` with the casing channel) and the topic head are exported
together as ONE graph::

    input_ids, token_type_ids, attention_mask  [batch, length] int64
        -> ner_logits [batch, length, labels], topic_logits [batch, topics]

When the topic head reads the hidden states of the NER model's own encoder (its ``encoder`` names the
NER model directory), the encoder runs once: layers ``1..feature_layer`` feed both the rest of the NER
encoder and the topic head. A topic head over another encoder (e.g. the plain base package) gets that
encoder's layers inside the same graph (token types 0), so a batch still takes one ``session.run``.

The graph is exported with torch on first use, its MatMul weights are quantised to int8 per output
channel (dynamic quantisation: activations are quantised on the fly, one scale per tensor, so int8
results depend very slightly on what else is in the batch), and both files are cached under
``$WIRESTREAM_CACHE`` (default ``~/.cache/wirestream``) in a directory named by a hash of every weight
and config file involved, so a changed model is re-exported and concurrent workers never clash. Once
cached, inference needs only ``onnxruntime``, ``tokenizers`` and ``numpy``: torch is not imported.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from transforms import assets

LOG = logging.getLogger(__name__)

#: Bumped whenever the exported graph changes (part of the cache key).
EXPORT_VERSION = "3"
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
OUTPUT_NAMES = ("ner_logits", "topic_logits")
PRECISIONS = ("int8", "fp32")
#: MatMuls left in fp32 by the int8 quantisation (node names of the exported graph): the token classifier,
#: whose logits decide the labels directly (a tiny share of the compute).
KEEP_FP32 = ("/classifier/MatMul",)
GRAPH_FILES = {"fp32": "enrich.fp32.onnx", "int8": "enrich.int8.onnx"}
META_FILE = "meta.json"


def cache_root() -> Path:
  """Where exported graphs are kept (``$WIRESTREAM_CACHE`` or ``~/.cache/wirestream``)."""
  return Path(os.environ.get("WIRESTREAM_CACHE") or Path.home() / ".cache" / "wirestream") / "onnx"


def _hash_files(digest, paths: list[Path]) -> None:
  for path in paths:
    digest.update(path.name.encode())
    with open(path, "rb") as handle:
      for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)


def resolve_topic_encoder(topic_dir: Path, topic_config: dict[str, Any]) -> str | Path:
  """``"base"`` or the directory of the casing model the topic head reads."""
  spec = topic_config.get("encoder", "base")
  if spec == "base":
    return "base"
  path = Path(spec)
  return path if path.is_absolute() else (topic_dir / path).resolve()


def shares_encoder(ner_dir: Path, topic_dir: Path | None) -> bool:
  """True when the topic head reads the NER model's own encoder (one encoder pass for both)."""
  if topic_dir is None:
    return False
  config = json.loads((Path(topic_dir) / "topic_head.json").read_text())
  encoder = resolve_topic_encoder(Path(topic_dir), config)
  if encoder == "base":
    return False
  same_dir = Path(encoder).resolve() == Path(ner_dir).resolve()
  if same_dir:
    return True
  a, b = Path(encoder) / "model.safetensors", Path(ner_dir) / "model.safetensors"
  return a.is_file() and b.is_file() and _file_sha(a) == _file_sha(b)


def _file_sha(path: Path) -> str:
  digest = hashlib.sha256()
  _hash_files(digest, [path])
  return digest.hexdigest()


def cache_key(ner_dir: Path, topic_dir: Path | None, share: bool = True) -> str:
  """Hash of the export code version and every file the graph is built from."""
  from transforms import ner_model as nm

  digest = hashlib.sha256(f"wirestream-enrich/{EXPORT_VERSION}".encode())
  _hash_files(digest, [Path(ner_dir) / nm.CONFIG_FILE, Path(ner_dir) / nm.WEIGHTS_FILE])
  if topic_dir is not None:
    topic_dir = Path(topic_dir)
    _hash_files(digest, [topic_dir / "topic_head.json", topic_dir / "topic_head.safetensors"])
    config = json.loads((topic_dir / "topic_head.json").read_text())
    encoder = resolve_topic_encoder(topic_dir, config)
    if encoder != "base":
      _hash_files(digest, [Path(encoder) / nm.CONFIG_FILE, Path(encoder) / nm.WEIGHTS_FILE])
    digest.update(f"shared={share and shares_encoder(ner_dir, topic_dir)}".encode())
  # The base package's word embeddings are checked against the NER config's hash at export time;
  # its identity (package version) is part of the key through that config.
  return digest.hexdigest()[:24]


# --- Export (needs torch) -----------------------------------------------------------------------------------


def _build_module(ner_dir: Path, topic_dir: Path | None, share: bool = True):
  """The torch module that becomes the graph (see the module docstring)."""
  import torch

  from transforms import ner_model as nm

  ner = nm.load_casing_model(ner_dir)
  head = None
  topic_bert = None
  feature_layer = None
  shared = False
  topic_casing = False
  if topic_dir is not None:
    from transforms import topics_model as tm

    head, config = tm.load_head(Path(topic_dir))
    feature_layer = int(config["feature_layer"])
    shared = share and shares_encoder(ner_dir, topic_dir)
    if not shared:
      encoder = resolve_topic_encoder(Path(topic_dir), config)
      topic_casing = encoder != "base"
      if encoder == "base":
        from transformers import BertModel

        topic_bert = BertModel.from_pretrained(str(tm.base_model_dir()))
      else:
        topic_bert = nm.load_casing_model(encoder).bert
      topic_bert.eval()
  for model in (ner, topic_bert):
    if model is not None:
      model.config._attn_implementation = "eager"

  def run_layers(bert, ids, types, bias, upto: int | None = None, tap: int | None = None):
    hidden = bert.embeddings(input_ids=ids, token_type_ids=types)
    tapped = hidden if tap == 0 else None
    layers = bert.encoder.layer if upto is None else bert.encoder.layer[:upto]
    for i, block in enumerate(layers):
      out = block(hidden, attention_mask=bias)
      hidden = out[0] if isinstance(out, tuple) else out
      if tap is not None and i + 1 == tap:
        tapped = hidden
    return hidden, tapped

  class Fused(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.ner = ner
      self.head = head
      self.topic_bert = topic_bert

    def forward(self, input_ids, token_type_ids, attention_mask):
      bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
      hidden, tapped = run_layers(self.ner.bert, input_ids, token_type_ids, bias,
                                  tap=feature_layer if shared else None)
      ner_logits = self.ner.classifier(hidden)
      if self.head is None:
        return ner_logits, torch.zeros(input_ids.shape[0], 0)
      if not shared:
        types = token_type_ids if topic_casing else torch.zeros_like(token_type_ids)
        tapped, _ = run_layers(self.topic_bert, input_ids, types, bias, upto=feature_layer)
      return ner_logits, self.head(tapped, attention_mask)

  module = Fused()
  module.eval()
  return module


def export(ner_dir: Path, topic_dir: Path | None, out_dir: Path, share: bool = True) -> None:
  """Export the fused fp32 graph and its int8 quantisation into ``out_dir``."""
  import torch
  from onnxruntime.quantization import QuantType, quantize_dynamic

  module = _build_module(ner_dir, topic_dir, share)
  ids = torch.randint(1000, 2000, (2, 16), dtype=torch.long)
  types = torch.ones_like(ids)
  mask = torch.ones_like(ids)
  fp32 = out_dir / GRAPH_FILES["fp32"]
  axes = {name: {0: "batch", 1: "length"} for name in INPUT_NAMES}
  axes.update({"ner_logits": {0: "batch", 1: "length"}, "topic_logits": {0: "batch"}})
  with torch.inference_mode(), warnings.catch_warnings():
    warnings.simplefilter("ignore")  # tracer and deprecation notes of the TorchScript exporter
    torch.onnx.export(module, (ids, types, mask), str(fp32), input_names=list(INPUT_NAMES),
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


def ensure_exported(ner_dir: str | Path, topic_dir: str | Path | None, share: bool = True) -> Path:
  """The cache directory holding the graphs for these models, exporting them first if needed."""
  ner_dir = Path(ner_dir)
  topic_dir = Path(topic_dir) if topic_dir is not None else None
  key = cache_key(ner_dir, topic_dir, share)
  target = cache_root() / key
  if (target / META_FILE).is_file():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  with open(target.parent / f".{key}.lock", "w") as lock:
    # One process exports; the others (e.g. the worker processes of one machine) wait and reuse it.
    _lock(lock)
    if not (target / META_FILE).is_file():
      _export_into(ner_dir, topic_dir, share, key, target)
  return target


def _lock(handle) -> None:
  try:
    import fcntl
  except ImportError:  # not POSIX: concurrent exports still end well (atomic rename below)
    return
  fcntl.flock(handle.fileno(), fcntl.LOCK_EX)


def _export_into(ner_dir: Path, topic_dir: Path | None, share: bool, key: str, target: Path) -> None:
  work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
  try:
    LOG.info("exporting ONNX graphs to %s", target)
    export(ner_dir, topic_dir, work, share)
    meta = {"key": key, "version": EXPORT_VERSION, "ner": str(ner_dir), "topics": str(topic_dir),
            "shared_encoder": bool(topic_dir and share and shares_encoder(ner_dir, topic_dir))}
    (work / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    try:
      work.rename(target)
    except OSError:
      if not (target / META_FILE).is_file():
        raise
  finally:
    if work.exists():
      shutil.rmtree(work, ignore_errors=True)


# --- Sessions (onnxruntime only) ----------------------------------------------------------------------------


def default_threads() -> int:
  """Threads for one session: ``$OMP_NUM_THREADS`` when set, else the cores this process may use."""
  env = os.environ.get("OMP_NUM_THREADS", "")
  if env.isdigit() and int(env) > 0:
    return int(env)
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:
    return max(1, os.cpu_count() or 1)


class EnrichSession:
  """An ONNX Runtime session over the fused graph (thread-safe; one per process is enough).

  ``threads`` cores are used as ``runs`` concurrent runs of ``threads // runs`` intra-op threads each
  (:meth:`run_batches`). Batches of one window length are small, and one run rarely keeps several
  intra-op threads busy; separate runs on one thread each do not wait for each other.
  """

  def __init__(self, graph: Path, threads: int | None = None, runs: int | None = None):
    import onnxruntime as ort

    threads = threads or default_threads()
    self.runs = max(1, min(threads, runs if runs is not None else default_runs(threads)))
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads // self.runs)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    self.graph = Path(graph)
    self.threads = threads
    self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    self.input_names = [i.name for i in self.session.get_inputs()]
    self._pool = None
    self._pool_lock = threading.Lock()

  def run(self, input_ids: np.ndarray, token_types: np.ndarray, attention_mask: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """NER logits [batch, length, labels] and topic logits [batch, topics] (calibrated, pre-sigmoid)."""
    feeds = dict(zip(INPUT_NAMES, (input_ids, token_types, attention_mask), strict=True))
    ner_logits, topic_logits = self.session.run(list(OUTPUT_NAMES), {k: feeds[k] for k in self.input_names})
    return ner_logits, topic_logits

  def run_batches(self, batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """:meth:`run` on each ``(input_ids, token_types, attention_mask)``, up to ``runs`` at a time; results
    in order."""
    if self.runs == 1:
      return (self.run(*batch) for batch in batches)
    with self._pool_lock:
      if self._pool is None:
        self._pool = concurrent.futures.ThreadPoolExecutor(self.runs, thread_name_prefix="wirestream-onnx")
    return self._pool.map(lambda batch: self.run(*batch), batches)


def default_runs(threads: int) -> int:
  """Concurrent runs for ``threads`` cores: ``$WIRESTREAM_ONNX_RUNS`` when set, else one per core."""
  env = os.environ.get("WIRESTREAM_ONNX_RUNS", "")
  if env.isdigit() and int(env) > 0:
    return int(env)
  return threads


def open_session(ner_dir: str | Path, topic_dir: str | Path | None, *, precision: str = "int8",
                 threads: int | None = None, share: bool = True, runs: int | None = None) -> EnrichSession:
  """Export (once, cached) and open the fused graph at ``precision`` (``int8`` or ``fp32``)."""
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
  directory = ensure_exported(ner_dir, topic_dir, share)
  return EnrichSession(directory / GRAPH_FILES[precision], threads, runs)


def softmax(logits: np.ndarray) -> np.ndarray:
  shifted = logits - logits.max(-1, keepdims=True)
  np.exp(shifted, out=shifted)
  shifted /= shifted.sum(-1, keepdims=True)
  return shifted


def main(argv: list[str] | None = None) -> int:
  """``python -m transforms.onnx_backend [--ner-model DIR] [--topics-model DIR]``: export into the cache
  ahead of time (e.g. while building a worker image, with ``WIRESTREAM_CACHE`` set), print its path."""
  import argparse

  from transforms import ner_model as nm

  parser = argparse.ArgumentParser(prog="python -m transforms.onnx_backend", description=main.__doc__)
  parser.add_argument("--ner-model", default=str(nm.DEFAULT_MODEL_DIR))
  parser.add_argument("--topics-model",
                      default=str(assets.TOPICS_DIR))
  args = parser.parse_args(argv)
  print(ensure_exported(args.ner_model, args.topics_model))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
