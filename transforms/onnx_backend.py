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

A few channels of a BERT layer's inputs run 10-15 times wider than the rest, so one scale per tensor
leaves the others few int8 steps. Before quantising, the inputs of the int8 MatMuls are smoothed (after
SmoothQuant, Xiao et al. 2023): each input channel is divided by the square root of its largest magnitude
on a fixed calibration text (``transforms/data/calibration.txt``, invented wire-style stories), and the
matching weight row multiplied by it, which leaves the fp32 function unchanged and splits a wide channel's
range between the activation and the weight (quantised per output channel). The calibration runs the
exported fp32 graph on one thread, so the same files always give the same int8 graph.

The inputs of each layer's two output projections (the attention context, and the FFN's GELU output) also
vary widely from token to token: one scale for the window leaves most tokens a few int8 steps. These are
quantised with one scale per row (token), ``max(hi / (255 - z), -lo / z)`` from the row's own extremes,
and a zero point ``z`` fixed per input (chosen on the calibration text to minimise the mean step, e.g. low
for GELU outputs, which are rarely below -0.17). A fixed zero point keeps the product one fused ONNX
Runtime kernel (``MatMulIntegerToFloat``) followed by one multiplication by the row scales.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from transforms import spec as sp
from transforms.backends import RowBackend

LOG = logging.getLogger(__name__)

#: Bumped whenever the exported graph or the way it runs changes (part of the cache key).
EXPORT_VERSION = "7-rows"
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
OUTPUT_NAMES = ("ner_logits", "topic_logits")
PRECISIONS = ("int8", "fp32")
#: MatMuls left in fp32 by the int8 quantisation (patterns of node names of the exported graph): the token
#: classifier, whose logits decide the labels directly (a tiny share of the compute). Keeping the first
#: encoder layer in fp32 too (``r"^/layer\.0/"``) raises agreement with fp32 (README, "One enrichment
#: core") but costs about a fifth of the graph's speed.
KEEP_FP32 = (r"^/classifier/MatMul$",)
#: int8 MatMuls whose input is quantised with one scale per row instead of one per window (see the module
#: docstring): each encoder layer's attention output and FFN output projections.
ROW_SCALED = (r"^/layer\.\d+/(attention/)?output/dense/MatMul$",)
#: Text the int8 graph's input ranges are measured on (see the module docstring; part of the cache key).
CALIBRATION_TEXT = Path(__file__).resolve().parent / "data" / "calibration.txt"
#: Name suffix of the smoothing Mul inserted before the MatMuls that read one tensor.
SMOOTH_SUFFIX = "/smooth"
#: A channel is divided by its calibrated range to this power (0: no smoothing; 1: activations all in [-1, 1]).
SMOOTHING = 0.5
GRAPH_FILES = {"fp32": "enrich.fp32.onnx", "int8": "enrich.int8.onnx"}
META_FILE = "meta.json"


def cache_root() -> Path:
  """Where exported graphs are kept (``$WIRESTREAM_CACHE`` or ``~/.cache/wirestream``)."""
  return Path(os.environ.get("WIRESTREAM_CACHE") or Path.home() / ".cache" / "wirestream") / "onnx"


def cache_key(ner: sp.NerSpec | None, topics: sp.TopicSpec | None, share: bool = True) -> str:
  """Hash of the export version and every file the graph is built from."""
  files = [*(ner.files() if ner else [None]), *(topics.files() if topics else [None]), CALIBRATION_TEXT]
  shared = share and sp.shares_encoder(ner, topics)
  return sp.fingerprint(files, salt=f"wirestream-enrich/{EXPORT_VERSION}/shared={shared}")[:24]


def export(ner: sp.NerSpec | None, topics: sp.TopicSpec | None, out_dir: Path, share: bool = True) -> None:
  """Export the fused fp32 graph and its int8 quantisation into ``out_dir``."""
  import onnx
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
  smoothed = out_dir / "enrich.smoothed.onnx"
  graph = onnx.load(str(fp32))
  feeds = calibration_feeds(ner, topics)
  smooth(graph, input_ranges(graph, feeds))
  onnx.save(graph, str(smoothed))
  zero_points = row_zero_points(graph, feeds)
  quiet = logging.getLogger()
  level = quiet.level
  quiet.setLevel(max(level, logging.ERROR))  # the quantiser logs every tensor, and advice, on the root logger
  try:
    kept = [node.name for node in graph.graph.node if node.op_type == "MatMul" and _kept_in_fp32(node.name)]
    quantize_dynamic(str(smoothed), str(out_dir / GRAPH_FILES["int8"]), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"], per_channel=True, nodes_to_exclude=kept)
  finally:
    quiet.setLevel(level)
    smoothed.unlink()
  int8 = onnx.load(str(out_dir / GRAPH_FILES["int8"]))
  scale_rows(int8, zero_points)
  onnx.save(int8, str(out_dir / GRAPH_FILES["int8"]))


def _kept_in_fp32(name: str) -> bool:
  return any(re.search(pattern, name) for pattern in KEEP_FP32)


def _row_scaled(name: str) -> bool:
  return any(re.search(pattern, name) for pattern in ROW_SCALED)


def _attribute(node, name: str) -> int:
  return next((a.i for a in node.attribute if a.name == name), 0)


def _quantised_inputs(graph) -> dict[str, list]:
  """The MatMuls (and Gemms, which the quantiser turns to MatMuls) int8 quantisation will turn to int8 (a
  weight as second input, not kept in fp32), by the tensor they read."""
  weights = {init.name for init in graph.graph.initializer}
  groups: dict[str, list] = {}
  for node in graph.graph.node:
    if node.op_type in ("MatMul", "Gemm") and node.input[1] in weights and not _kept_in_fp32(node.name) \
        and not _attribute(node, "transA"):
      groups.setdefault(node.input[0], []).append(node)
  return groups


def calibration_feeds(ner: sp.NerSpec | None, topics: sp.TopicSpec | None) -> list[dict[str, np.ndarray]]:
  """The calibration text's paragraphs as the core feeds them to the graph: one row a window."""
  from transforms import core
  from transforms import windows as wd

  part = core.Enricher(None, ner=ner, topics=topics, **core._our_tokenizer(ner, topics, None))
  paragraphs = [p for p in CALIBRATION_TEXT.read_text(encoding="utf-8").split("\n\n") if p.strip()]
  rows = [row for t, text in enumerate(paragraphs) for row in part.plan(t, text, None, None, topics is not None)[1]]
  return [dict(zip(INPUT_NAMES, wd.padded([row], part.pad_id), strict=True)) for row in rows]


def _probe(graph, names: list[str], feeds: list[dict[str, np.ndarray]]):
  """The values of the tensors ``names`` for each of ``feeds`` (``graph`` run on one thread)."""
  import onnx
  import onnxruntime as ort

  probe = onnx.ModelProto()
  probe.CopyFrom(graph)
  probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                            for name in names)
  options = ort.SessionOptions()
  options.intra_op_num_threads = options.inter_op_num_threads = 1
  session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
  wanted = {i.name for i in session.get_inputs()}
  for feed in feeds:
    yield session.run(names, {k: v for k, v in feed.items() if k in wanted})


def input_ranges(graph, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Largest magnitude of every channel of every int8 MatMul input over ``feeds`` (fp32 graph, one
  thread)."""
  names = list(_quantised_inputs(graph))
  ranges = {name: np.zeros(0, np.float32) for name in names}
  for values in _probe(graph, names, feeds):
    for name, value in zip(names, values, strict=True):
      channel_max = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
      ranges[name] = np.maximum(ranges[name], channel_max) if ranges[name].size else channel_max
  return ranges


def row_zero_points(graph, feeds: list[dict[str, np.ndarray]]) -> dict[str, int]:
  """The zero point of each row-scaled input (see :data:`ROW_SCALED`): the one that gives the calibration
  rows the smallest mean step ``max(hi / (255 - z), -lo / z)``."""
  names = [tensor for tensor, matmuls in _quantised_inputs(graph).items()
           if all(_row_scaled(m.name) for m in matmuls)]
  lows: dict[str, list] = {name: [] for name in names}
  highs: dict[str, list] = {name: [] for name in names}
  for values in _probe(graph, names, feeds):
    for name, value in zip(names, values, strict=True):
      rows = value.reshape(-1, value.shape[-1])
      lows[name].append(np.minimum(rows.min(axis=1), 0.0))
      highs[name].append(np.maximum(rows.max(axis=1), 0.0))
  z = np.arange(1, 255, dtype=np.float64)[:, None]
  points = {}
  for name in names:
    lo, hi = np.concatenate(lows[name]), np.concatenate(highs[name])
    step = np.maximum(hi[None] / (255 - z), -lo[None] / z).mean(axis=1)
    points[name] = int(z[int(np.argmin(step)), 0])
  return points


def scale_rows(model, zero_points: dict[str, int]) -> None:
  """Quantise each input in ``zero_points`` of a dynamically quantised graph with one scale per row (in
  place): its ``DynamicQuantizeLinear`` becomes the row's extremes, ``s = max(hi / (255 - z), -lo / z)``
  and a ``QuantizeLinear`` along the rows; each ``MatMulInteger -> Cast -> Mul(scales)`` reading it
  becomes ``MatMulIntegerToFloat`` (the weights' scales) times ``s``, reshaped back to the input's rows."""
  from onnx import helper, numpy_helper

  graph = model.graph
  weights = {init.name: init for init in graph.initializer}
  made_by = {out: node for node in graph.node for out in node.output}
  read_by: dict[str, list] = {}
  for node in graph.node:
    for name in node.input:
      read_by.setdefault(name, []).append(node)

  def only_reader(tensor: str, op_type: str):
    readers = read_by.get(tensor, [])
    if len(readers) != 1 or readers[0].op_type != op_type:
      raise ValueError(f"unexpected quantised graph around {tensor!r}: {[n.op_type for n in readers]}")
    return readers[0]

  constant = {"rows/one": np.array(1.0, np.float32), "rows/eps": np.array(1e-12, np.float32),
              "rows/axis1": np.array([1], np.int64), "rows/start": np.array([0], np.int64),
              "rows/stop": np.array([-1], np.int64)}
  replaced: dict[str, list] = {}
  dropped: set[str] = set()
  for node in graph.node:
    if node.op_type != "DynamicQuantizeLinear" or node.input[0] not in zero_points:
      continue
    x, quantised, x_scale, _ = (*node.input, *node.output)
    z = zero_points[x]
    p = node.name.removesuffix("_QuantizeLinear") + "/rows"
    matmuls = [n for n in read_by[quantised] if n.op_type == "MatMulInteger"]
    width = numpy_helper.to_array(weights[matmuls[0].input[1]]).shape[0]
    constant.update({p + "/2d": np.array([-1, width], np.int64), p + "/z": np.array(z, np.uint8),
                     p + "/hi": np.array(1.0 / (255 - z), np.float32), p + "/lo": np.array(-1.0 / z, np.float32)})
    replaced[node.name] = [
        helper.make_node("Reshape", [x, p + "/2d"], [p + "/x"], name=p + "/Reshape"),
        helper.make_node("ReduceMax", [p + "/x"], [p + "/max"], name=p + "/ReduceMax", axes=[1], keepdims=0),
        helper.make_node("ReduceMin", [p + "/x"], [p + "/min"], name=p + "/ReduceMin", axes=[1], keepdims=0),
        helper.make_node("Mul", [p + "/max", p + "/hi"], [p + "/max_step"], name=p + "/MaxStep"),
        helper.make_node("Mul", [p + "/min", p + "/lo"], [p + "/min_step"], name=p + "/MinStep"),
        helper.make_node("Max", [p + "/max_step", p + "/min_step", "rows/eps"], [p + "/scale"], name=p + "/Scale"),
        helper.make_node("Shape", [p + "/scale"], [p + "/count"], name=p + "/Count"),
        helper.make_node("Expand", [p + "/z", p + "/count"], [p + "/zero_point"], name=p + "/ZeroPoint"),
        helper.make_node("QuantizeLinear", [p + "/x", p + "/scale", p + "/zero_point"], [p + "/quantised"],
                         name=p + "/Quantize", axis=0),
        helper.make_node("Unsqueeze", [p + "/scale", "rows/axis1"], [p + "/column"], name=p + "/Column"),
        helper.make_node("Shape", [x], [p + "/shape"], name=p + "/Shape"),
        helper.make_node("Slice", [p + "/shape", "rows/start", "rows/stop"], [p + "/lead"], name=p + "/Lead"),
    ]
    dropped.add(node.name)
    for matmul in matmuls:
      cast = only_reader(matmul.output[0], "Cast")
      mul = only_reader(cast.output[0], "Mul")
      scales = made_by[next(name for name in mul.input if name != cast.output[0])]
      if scales.op_type != "Mul" or x_scale not in scales.input:
        raise ValueError(f"unexpected quantised graph around {matmul.name!r}")
      weight_scale = next(name for name in scales.input if name != x_scale)
      m = matmul.name.removesuffix("_quant") + "/rows"
      outputs = numpy_helper.to_array(weights[matmul.input[1]]).shape[1]
      constant[m + "/width"] = np.array([outputs], np.int64)
      replaced[matmul.name] = [
          helper.make_node("MatMulIntegerToFloat", [p + "/quantised", matmul.input[1], "rows/one", weight_scale,
                                                    p + "/z", matmul.input[3]], [m + "/product"],
                           name=m + "/MatMul", domain="com.microsoft"),
          helper.make_node("Mul", [m + "/product", p + "/column"], [m + "/scaled"], name=m + "/Scale"),
          helper.make_node("Concat", [p + "/lead", m + "/width"], [m + "/shape"], name=m + "/Shape", axis=0),
          helper.make_node("Reshape", [m + "/scaled", m + "/shape"], [mul.output[0]], name=m + "/Reshape"),
      ]
      dropped.update((matmul.name, cast.name, mul.name, scales.name))
  if not replaced:
    return
  nodes = [new for node in graph.node
           for new in (replaced.get(node.name) or ([] if node.name in dropped else [node]))]
  del graph.node[:]
  graph.node.extend(nodes)
  graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constant.items())
  if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def smooth(graph, ranges: dict[str, np.ndarray], strength: float = SMOOTHING, floor: float = 1e-2) -> None:
  """Divide each int8 MatMul input channel by ``s = range ** strength`` and multiply its weight row by ``s``
  (in place): ``x @ W == (x / s) @ (s[:, None] * W)``. One Mul a tensor, shared by the MatMuls that read
  it; a range counts as at least ``floor``."""
  from onnx import helper, numpy_helper

  weights = {init.name: init for init in graph.graph.initializer}
  nodes = list(graph.graph.node)
  uses: dict[str, int] = {}
  for node in nodes:
    for name in node.input:
      uses[name] = uses.get(name, 0) + 1
  for tensor, matmuls in _quantised_inputs(graph).items():
    if any(uses[m.input[1]] > 1 for m in matmuls):
      continue  # a weight read elsewhere too cannot take this input's scales
    scale = (np.maximum(ranges[tensor], floor) ** strength).astype(np.float32)
    name = matmuls[0].name.rsplit("/", 1)[0] + SMOOTH_SUFFIX
    graph.graph.initializer.append(numpy_helper.from_array(1.0 / scale, name + "/scale"))
    mul = helper.make_node("Mul", [tensor, name + "/scale"], [name + "/output"], name=name)
    graph.graph.node.insert(min(nodes.index(m) for m in matmuls), mul)
    nodes = list(graph.graph.node)
    for matmul in matmuls:
      matmul.input[0] = mul.output[0]
      weight = weights[matmul.input[1]]
      rows = scale[None, :] if _attribute(matmul, "transB") else scale[:, None]  # a Gemm's B may be [out, in]
      weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * rows, weight.name))


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
