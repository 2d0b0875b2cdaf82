"""The enrichment core and stage: determinism, backends, the ONNX export cache, the Beam stage, bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.records import STATUS_APPLIED, STATUS_FAILED, STATUS_SKIPPED_EMPTY, STATUS_SKIPPED_LANGUAGE
from tests.conftest import make_story

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from transforms import core, enrich  # noqa: E402
from transforms import onnx_backend as ob  # noqa: E402
from transforms import spec as sp  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO / "seeds"
REUTERS = REPO.parent / "shared" / "data" / "reuters21578" / "reut2-013.sgm"
TEXTS = [
    "WASHINGTON (Reuters) - Rex Tillerson met Jim Mattis at the Pentagon on Tuesday.\n\n"
    "Yang Jiechi, China\u2019s top diplomat, said Beijing would work with Washington.",
    "Arsenal beat Chelsea 3-1 to go top of the Premier League. The manager praised his defence.",
    "Shares of Acme Corp rose 5 pct in New York after the company said profits doubled. " * 12,
    "Caf\u00e9 owners in Z\u00fcrich were not consulted about the new rules.",
]
HEADLINES = [None, "Arsenal go top", "Acme shares up", None]

pytestmark = pytest.mark.slow


def _exact(results):
  """Everything a story gets, to compare exactly."""
  return [([(e.start_char, e.end_char, e.label, e.score) for e in r.entities or []],
           [(t.code, t.score) for t in r.topics or []],
           None if r.topic_scores is None else r.topic_scores.tolist()) for r in results]


def _run_in_batches(model, texts, headlines, sizes, **kwargs):
  out, i = [], 0
  for size in sizes:
    out += model(texts[i:i + size], headlines[i:i + size], **kwargs)
    i += size
  return out


@pytest.fixture(scope="module")
def onnx_int8(tiny_models):
  return core.load(*map(str, tiny_models), threads=2)


# --- Determinism ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_a_story_gets_the_same_results_whatever_it_is_batched_with(tiny_models, backend):
  texts = TEXTS + [f"Story {i} from Paris, said Anna Schmidt of Siemens AG. " * (i + 1) for i in range(10)]
  headlines = HEADLINES + [f"Headline {i}" for i in range(10)]
  model = core.load(*map(str, tiny_models), backend=backend, threads=2)
  alone = [model([t], [h])[0] for t, h in zip(texts, headlines, strict=True)]
  together = model(texts, headlines)
  order = list(reversed(range(len(texts))))
  reversed_small = _run_in_batches(model, [texts[i] for i in order], [headlines[i] for i in order],
                                   [3, 5, 6], batch_tokens=300, max_padding=40)
  reversed_small = [reversed_small[order.index(i)] for i in range(len(texts))]
  assert _exact(alone) == _exact(together) == _exact(reversed_small)
  if backend == "onnx":  # torch's own kernels sum in another order on another number of threads
    one_thread = core.load(*map(str, tiny_models), backend=backend, threads=1)
    assert _exact(one_thread(texts, headlines)) == _exact(together)


@pytest.mark.skipif(not REUTERS.is_file(), reason="Reuters-21578 not in ../shared/data")
def test_the_default_models_give_the_same_results_in_any_batch_order():
  from pipelines.training import bench

  model = core.load(threads=2)
  stories, _ = bench.load_stories(str(REUTERS), 40, lambda s: bool((s.body or "").strip()))
  forward = bench.run_core(model, stories)
  backward = _run_in_batches(model, [s.body for s in stories[::-1]], [s.headline for s in stories[::-1]],
                             [7, 13, 20])[::-1]
  assert _exact(forward) == _exact(backward)


# --- Backends -----------------------------------------------------------------------------------------------


def test_onnx_fp32_matches_torch_and_int8_agrees(tiny_models, onnx_int8):
  from pipelines.training.bench import agreement

  torch_model = core.load(*map(str, tiny_models), backend="torch", threads=1)
  fp32 = core.load(*map(str, tiny_models), precision="fp32", threads=1)
  want = torch_model(TEXTS, HEADLINES)
  for a, b in zip(fp32(TEXTS, HEADLINES), want, strict=True):
    assert [(e.start_char, e.end_char, e.label) for e in a.entities] == \
        [(e.start_char, e.end_char, e.label) for e in b.entities]
    assert a.topic_scores == pytest.approx(b.topic_scores, abs=1e-4)
  # int8 rounds: on this random network it may move a mention whose labels are near a tie, no more.
  agreed = agreement(onnx_int8(TEXTS, HEADLINES), want)
  assert agreed["top_topic_agreement"] == 1.0 and agreed["mention_agreement"] >= 0.9, agreed


def test_two_encoder_graph_gives_the_same_results(tiny_models):
  one = core.load(*map(str, tiny_models), precision="fp32", threads=1)
  two = core.load(*map(str, tiny_models), precision="fp32", threads=1, share=False)
  for a, b in zip(one(TEXTS), two(TEXTS), strict=True):
    assert a.entities == b.entities or [e.text for e in a.entities] == [e.text for e in b.entities]
    assert a.topic_scores == pytest.approx(b.topic_scores, abs=1e-5)


def test_topics_alone_run_on_onnx_without_the_ner_layers(tiny_models):
  both = core.load(*map(str, tiny_models), precision="fp32", threads=1)
  topics = core.load(None, str(tiny_models[1]), stages=("topics",), precision="fp32", threads=1)
  assert [type(p.backend) for p in topics.parts] == [ob.OnnxBackend] and topics.ner is None
  for a, b in zip(topics(TEXTS, HEADLINES), both(TEXTS, HEADLINES), strict=True):
    assert a.entities is None and a.topic_scores == pytest.approx(b.topic_scores, abs=1e-5)


def test_export_is_cached_and_keyed_by_the_weights_and_models(tiny_models, monkeypatch):
  ner, topics = sp.read_ner(tiny_models[0]), sp.read_topics(tiny_models[1])
  first = ob.ensure_exported(ner, topics)
  assert {ob.GRAPH_FILES["int8"], ob.GRAPH_FILES["fp32"], ob.META_FILE} <= {p.name for p in first.iterdir()}
  monkeypatch.setattr(ob, "export", lambda *a, **k: pytest.fail("exported twice"))
  assert ob.ensure_exported(ner, topics) == first
  keys = {ob.cache_key(ner, topics), ob.cache_key(ner, None), ob.cache_key(None, topics),
          ob.cache_key(ner, topics, share=False)}
  assert len(keys) == 4
  monkeypatch.setattr(ob, "EXPORT_VERSION", "other")
  assert ob.cache_key(ner, topics) not in keys


def test_int8_graph_reads_smoothed_inputs_and_keeps_the_classifier_in_fp32(tiny_models, onnx_int8):
  import onnx

  graph = onnx.load(str(onnx_int8.parts[0].backend.graph)).graph
  ops = {node.name: node.op_type for node in graph.node}
  assert ops["/classifier/MatMul"] == "MatMul"
  assert ops["/layer.0/intermediate/dense/MatMul_quant"] == "MatMulInteger"
  smoothed = {node.output[0] for node in graph.node if node.name.endswith(ob.SMOOTH_SUFFIX)}
  quantised = [node for node in graph.node if node.op_type == "DynamicQuantizeLinear"]
  assert quantised and all(node.input[0] in smoothed for node in quantised)
  # Each layer's two output projections read their input quantised a row at a time.
  for layer in range(2):
    for projection in (f"/layer.{layer}/attention/output/dense", f"/layer.{layer}/output/dense"):
      assert ops[f"{projection}/MatMul/rows/MatMul"] == "MatMulIntegerToFloat"
      assert ops[f"{projection}/smooth/output/rows/Quantize"] == "QuantizeLinear"
  assert not any(ob._row_scaled(node.name.removesuffix("_quant")) for node in graph.node
                 if node.op_type == "MatMulInteger")


def _matmul_graph(weight, bias):
  import onnx
  from onnx import TensorProto, helper, numpy_helper

  graph = helper.make_graph(
      [helper.make_node("MatMul", ["x", "w"], ["product"], name="/layer.0/output/dense/MatMul"),
       helper.make_node("Add", ["product", "b"], ["y"], name="/layer.0/output/dense/Add")],
      "projection", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, weight.shape[0]])],
      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
      [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
  return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_row_scales_quantise_each_token_on_its_own_range(tmp_path):
  import numpy as np
  import onnx
  import onnxruntime as ort
  from onnxruntime.quantization import QuantType, quantize_dynamic

  rng = np.random.default_rng(3)
  weight = rng.normal(0, 0.1, (64, 48)).astype(np.float32)
  bias = rng.normal(0, 0.1, 48).astype(np.float32)
  onnx.save(_matmul_graph(weight, bias), str(tmp_path / "fp32.onnx"))
  quantize_dynamic(str(tmp_path / "fp32.onnx"), str(tmp_path / "int8.onnx"), weight_type=QuantType.QInt8,
                   per_channel=True)
  window = onnx.load(str(tmp_path / "int8.onnx"))
  feeds = [{"x": np.maximum(rng.normal(0, 1, (1, 9, 64)), -0.2).astype(np.float32)} for _ in range(4)]
  points = ob.row_zero_points(_matmul_graph(weight, bias), feeds)
  assert list(points) == ["x"] and 1 <= points["x"] < 64  # inputs rarely below -0.2: a low zero point
  rows = onnx.ModelProto()
  rows.CopyFrom(window)
  ob.scale_rows(rows, points)
  assert {n.op_type for n in rows.graph.node} >= {"QuantizeLinear", "MatMulIntegerToFloat"}
  assert "DynamicQuantizeLinear" not in {n.op_type for n in rows.graph.node}

  def run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

  x = np.maximum(rng.normal(0, 1, (2, 7, 64)), -0.2).astype(np.float32)
  x[0, 3] *= 40.0  # one token forty times wider than the rest
  want = x @ weight + bias
  by_window, by_row = run(window, x), run(rows, x)
  assert by_row.shape == want.shape
  others = np.ones(x.shape[:2], bool)
  others[0, 3] = False
  row_error = np.abs(by_row - want)[others].max()
  assert row_error < 0.05 and row_error < np.abs(by_window - want)[others].max() / 5
  # A token's result is its own: the same alone as beside a wide one.
  np.testing.assert_array_equal(run(rows, x[1:2, 2:3]), by_row[1:2, 2:3])
  np.testing.assert_array_equal(run(rows, x[0:1, 0:3]), by_row[0:1, 0:3])


def test_smoothing_is_calibrated_deterministically_and_keeps_the_fp32_function(tiny_models, tmp_path):
  import numpy as np
  import onnx
  import onnxruntime as ort

  ner, topics = sp.read_ner(tiny_models[0]), sp.read_topics(tiny_models[1])
  fp32 = onnx.load(str(ob.ensure_exported(ner, topics) / ob.GRAPH_FILES["fp32"]))
  feeds = ob.calibration_feeds(ner, topics)
  ranges = ob.input_ranges(fp32, feeds)
  again = ob.input_ranges(fp32, feeds)
  assert ranges.keys() == again.keys() and all(np.array_equal(ranges[k], again[k]) for k in ranges)
  assert max(float(r.max()) for r in ranges.values()) > 1.0
  smoothed = onnx.ModelProto()
  smoothed.CopyFrom(fp32)
  ob.smooth(smoothed, ranges)
  assert sum(node.name.endswith(ob.SMOOTH_SUFFIX) for node in smoothed.graph.node) == len(ranges)
  feed = max(feeds, key=lambda f: f["input_ids"].shape[1])
  want, got = (ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
               for g in (fp32, smoothed))
  for a, b in zip(got, want, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_cached_graph_runs_without_torch(tiny_models, onnx_int8):
  code = ("import sys; sys.modules['torch'] = None\n"
          "from transforms import core\n"
          f"m = core.load({str(tiny_models[0])!r}, {str(tiny_models[1])!r}, threads=1)\n"
          "r = m(['Rex Tillerson met Jim Mattis in Washington.'])[0]\n"
          "assert r.topics and r.entities is not None\n"
          "print('ok', len(r.topics))\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ})
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith("ok")


def test_windows_hold_sentence_cores_and_fit_the_window(tiny_models, onnx_int8):
  part = onnx_int8.parts[0]
  shapes = []
  real = part.backend.run

  def run(ids, types, mask):
    shapes.append(ids.shape)
    return real(ids, types, mask)

  part.backend.run = run
  try:
    onnx_int8([TEXTS[2]])
  finally:
    part.backend.run = real
  assert shapes and all(width <= part.max_window for _, width in shapes)


# --- The Beam stage -----------------------------------------------------------------------------------------


def _run_stage(stories, **kwargs):
  with test_pipeline.TestPipeline() as p:
    out, errors = p | beam.Create(stories) | enrich.Enrich(**kwargs)
    rows = out | beam.Map(lambda s: (s.story_id, s.ner_status, s.topics_status, s.ner_model, s.topics_model,
                                     len(s.entities or []), bool(s.topics)))
    letters = errors | beam.Map(lambda e: (e.story_id, e.stage))
    return rows, letters, p


def test_stage_routes_each_stage_by_language_and_emptiness(tiny_models, onnx_int8):
  ner_dir, topic_dir = map(str, tiny_models)
  stories = [make_story("en", TEXTS[0]), make_story("de", TEXTS[3], language="de"),
             make_story("fr", TEXTS[3], language="fr"), make_story("empty", "  ")]
  mentions = len(onnx_int8([TEXTS[0]])[0].entities)
  with test_pipeline.TestPipeline() as p:
    out, errors = p | beam.Create(stories) | enrich.Enrich(ner_dir, topic_dir, threads=1)
    rows = out | beam.Map(lambda s: (s.story_id, s.ner_status, s.topics_status, len(s.entities or []),
                                     bool(s.topics), s.topics_model))
    assert_that(rows, equal_to([
        ("en", STATUS_APPLIED, STATUS_APPLIED, mentions, True, "tiny-topics"),
        ("de", STATUS_SKIPPED_LANGUAGE, STATUS_APPLIED, 0, True, "tiny-topics"),
        ("fr", STATUS_SKIPPED_LANGUAGE, STATUS_SKIPPED_LANGUAGE, 0, False, "tiny-topics"),
        ("empty", STATUS_SKIPPED_EMPTY, STATUS_SKIPPED_EMPTY, 0, False, "tiny-topics")]), label="stories")
    assert_that(errors, equal_to([]), label="errors")


@pytest.mark.parametrize("stages", [("ner",), ("topics",)])
def test_stage_runs_only_the_stages_asked_for(tiny_models, onnx_int8, stages):
  ner_dir, topic_dir = map(str, tiny_models)
  with test_pipeline.TestPipeline() as p:
    out, _ = p | beam.Create([make_story("en", TEXTS[0])]) | enrich.Enrich(ner_dir, topic_dir, stages=stages,
                                                                           threads=1)
    rows = out | beam.Map(lambda s: (s.ner_status, s.topics_status, s.entities is not None, s.topics is not None))
    ner, topics = "ner" in stages, "topics" in stages
    assert_that(rows, equal_to([(STATUS_APPLIED if ner else None, STATUS_APPLIED if topics else None, ner,
                                 topics)]))


def test_listeners_hear_every_story_as_the_stage_reads_it(tiny_models, monkeypatch):
  """Stories read by the models and stories routed around them are told to the listeners (the progress
  line's enriched count), and a listener removed hears no more."""
  ner_dir, topic_dir = map(str, tiny_models)
  heard = []
  monkeypatch.setattr(enrich, "_LISTENERS", [])
  enrich.add_listener(heard.append)
  stories = [make_story("a", TEXTS[0]), make_story("b", TEXTS[1], headline=HEADLINES[1]), make_story("empty", "")]
  with test_pipeline.TestPipeline() as p:
    out, _ = p | beam.Create(stories) | enrich.Enrich(ner_dir, topic_dir, threads=1)
    assert_that(out | beam.Map(lambda story: story.story_id), equal_to(["a", "b", "empty"]))
  assert sum(heard) == 3
  enrich.remove_listener(heard.append)
  enrich.EnrichModelHandler(ner_dir, topic_dir, threads=1).run_inference(
      [make_story("c", TEXTS[1])], enrich.EnrichModelHandler(ner_dir, topic_dir, threads=1).load_model())
  assert sum(heard) == 3


class _Broken(enrich.EnrichModelHandler):
  def run_inference(self, batch, model, inference_args=None):
    raise RuntimeError("model exploded")


def test_stage_failures_mark_every_stage_that_was_to_read_the_story(tiny_models):
  ner_dir, topic_dir = map(str, tiny_models)
  stories = [make_story("a", TEXTS[0]), make_story("de", TEXTS[3], language="de")]
  with test_pipeline.TestPipeline() as p:
    out, errors = p | beam.Create(stories) | enrich.Enrich(
        ner_dir, topic_dir, handler=_Broken(ner_dir, topic_dir, threads=1))
    rows = out | beam.Map(lambda s: (s.story_id, s.ner_status, s.topics_status))
    assert_that(rows, equal_to([("a", STATUS_FAILED, STATUS_FAILED),
                                ("de", STATUS_SKIPPED_LANGUAGE, STATUS_FAILED)]), label="stories")
    letters = errors | beam.Map(lambda e: (e.story_id, e.stage, "model exploded" in e.message))
    assert_that(letters, equal_to([("a", "ner", True), ("a", "topics", True), ("de", "topics", True)]),
                label="errors")


def test_handlers_keep_their_models_across_dofn_instances(tiny_models, monkeypatch):
  ner_dir, topic_dir = map(str, tiny_models)
  loads = []
  real = core.load

  def counting(*args, **kwargs):
    loads.append(args)
    return real(*args, **kwargs)

  monkeypatch.setattr(core, "load", counting)
  handler = enrich.EnrichModelHandler(ner_dir, topic_dir, threads=1)
  assert handler.load_model() is enrich.EnrichModelHandler(ner_dir, topic_dir, threads=1).load_model()
  assert handler.load_model() is not enrich.EnrichModelHandler(ner_dir, topic_dir, threads=1,
                                                               precision="fp32").load_model()
  assert len(loads) <= 2


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_apply_stages_is_one_enrich_step_on_the_backend_asked_for(tiny_models, backend):
  import argparse

  from pipelines.common import apply_stages

  ner_dir, topic_dir = map(str, tiny_models)
  args = argparse.Namespace(stages=("ner", "topics"), ner_model=ner_dir, topics_model=topic_dir,
                            inference_backend=backend)
  p = beam.Pipeline()
  out, errors = apply_stages(p | beam.Create([make_story("a", TEXTS[0])]), args)
  assert len(errors) == 2  # Enrich, then the resolve stage after NER
  labels = {t.full_label for t in p.transforms_stack[0].parts}
  assert {"Enrich", "Resolve"} <= labels


# --- Bench --------------------------------------------------------------------------------------------------


def test_bench_smoke_on_the_seeds(tiny_models, capsys):
  from pipelines.training import bench

  ner_dir, topic_dir = map(str, tiny_models)
  assert bench.main(["--input", str(SEEDS), "--limit", "3", "--threads", "1", "--ner-model", ner_dir,
                     "--topics-model", topic_dir]) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result["stories"] == 3 and result["tokens"] > 0
  assert 0 <= result["mention_agreement"] <= 1 and 0 <= result["top_topic_agreement"] <= 1
  assert result["speedup"] > 0 and result["peak_rss_mb"] > 0


def test_bench_rejects_an_input_without_stories(tiny_models, tmp_path, capsys):
  from pipelines.training import bench

  (tmp_path / "empty.txt").write_text("")
  assert bench.main(["--input", str(tmp_path), "--ner-model", str(tiny_models[0]),
                     "--topics-model", str(tiny_models[1])]) == 2
  assert "error" in capsys.readouterr().err
