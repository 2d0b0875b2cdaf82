"""Fast inference path: ONNX export/cache, fused NER + topics vs the torch stages, the Enrich stage, bench."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.records import (
  STATUS_APPLIED,
  STATUS_FAILED,
  STATUS_SKIPPED_EMPTY,
  STATUS_SKIPPED_LANGUAGE,
  Story,
)

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from transforms import enrich  # noqa: E402
from transforms import ner as ner_stage  # noqa: E402
from transforms import ner_model as nm  # noqa: E402
from transforms import onnx_backend as ob  # noqa: E402
from transforms import topics_model as tm  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO / "seeds"
DEFAULT_MODELS_READY = enrich.is_fusable(None, None)
#: The NER stage's windows (the fast path's default windows have less context).
STAGE_WINDOWS = {"context": None}

TEXTS = [
    "WASHINGTON (Reuters) - Rex Tillerson met Jim Mattis at the Pentagon on Tuesday.\n\n"
    "Yang Jiechi, China\u2019s top diplomat, said Beijing would work with Washington.",
    "Arsenal beat Chelsea 3-1 to go top of the Premier League. The manager praised his defence.",
    "Shares of Acme Corp rose 5 pct in New York after the company said profits doubled. " * 12,
    "Caf\u00e9 owners in Z\u00fcrich were not consulted about the new rules.",
]


def _story(story_id: str, body: str, language: str | None = "en", headline: str | None = None) -> Story:
  return Story(story_id=story_id, version=1, body=body, source_format="plain", input_uri="mem://" + story_id,
               locator="", raw_sha256="0" * 64, ingested_at=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
               headline=headline, language=language)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
  """A 2-layer casing NER model and a 2-layer topic head reading its layer-1 output (shared encoder)."""
  root = tmp_path_factory.mktemp("models")
  torch.manual_seed(7)
  model = nm.build_casing_model()
  model.bert.encoder.layer = model.bert.encoder.layer[:2]
  model.config.num_hidden_layers = 2
  with torch.no_grad():
    model.classifier.weight.mul_(20.0)  # confident labels: int8 noise should not decide them
    for row in range(nm.NUM_CASING_CLASSES):
      model.bert.embeddings.token_type_embeddings.weight[row].add_(0.5 * torch.randn(384))
  ner_dir = nm.save_casing_model(model, root / "ner", dtype="float32")
  head = tm.TopicHead(hidden=384, heads=12, intermediate=256, n_labels=len(tm.IPTC_ROOTS), layers=2)
  with torch.no_grad():
    head.classifier.weight.mul_(10.0)
  config = {"encoder": "../ner", "feature_layer": 1, "labels": [list(x) for x in tm.IPTC_ROOTS],
            "head": {"hidden": 384, "heads": 12, "intermediate": 256, "n_labels": len(tm.IPTC_ROOTS),
                     "layers": 2},
            "languages": ["en", "de"], "threshold": 0.5, "max_length": 128, "stride": 32,
            "casing_token_types": True, "name": "tiny-topics"}
  tm.save_head(head, root / "topics", config)
  return ner_dir, root / "topics"


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path_factory, monkeypatch):
  monkeypatch.setenv("WIRESTREAM_CACHE", str(tmp_path_factory.getbasetemp() / "onnx-cache"))


def _keys(entities):
  return [(e.start_char, e.end_char, e.label) for e in entities]


# --- Export and cache ---------------------------------------------------------------------------------------


def test_export_is_cached_and_keyed_by_the_weights(tiny_models, monkeypatch):
  ner_dir, topic_dir = tiny_models
  first = ob.ensure_exported(ner_dir, topic_dir)
  assert {ob.GRAPH_FILES["int8"], ob.GRAPH_FILES["fp32"], ob.META_FILE} <= {p.name for p in first.iterdir()}
  assert json.loads((first / ob.META_FILE).read_text())["shared_encoder"] is True
  monkeypatch.setattr(ob, "export", lambda *a, **k: pytest.fail("exported twice"))
  assert ob.ensure_exported(ner_dir, topic_dir) == first
  # Another head (other weights) is another graph.
  assert ob.cache_key(ner_dir, topic_dir) != ob.cache_key(ner_dir, None)
  assert ob.cache_key(ner_dir, topic_dir, share=False) != ob.cache_key(ner_dir, topic_dir)


def test_cached_graph_runs_without_torch(tiny_models):
  ner_dir, topic_dir = tiny_models
  ob.ensure_exported(ner_dir, topic_dir)
  code = (
      "import sys; sys.modules['torch'] = None\n"
      "from transforms import enrich\n"
      f"e = enrich.load_enricher({str(ner_dir)!r}, {str(topic_dir)!r}, threads=1)\n"
      "r = enrich.enrich_texts(e, ['Rex Tillerson met Jim Mattis in Washington.'])[0]\n"
      "assert r.topics and r.entities is not None\n"
      "print('ok', len(r.topics))\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ})
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith("ok")


# --- Same results as the torch stages -----------------------------------------------------------------------


def test_fused_fp32_graph_matches_the_torch_stages(tiny_models):
  ner_dir, topic_dir = tiny_models
  fused = enrich.load_enricher(str(ner_dir), str(topic_dir), precision="fp32", threads=1)
  assert fused.shared_encoder
  results = enrich.enrich_texts(fused, TEXTS, **STAGE_WINDOWS)
  reference = ner_stage.load_ner_model(str(ner_dir), threads=1)
  expected = ner_stage.annotate(reference, TEXTS)
  for result, entities in zip(results, expected, strict=True):
    assert _keys(result.entities) == _keys(entities)
    assert [e.score for e in result.entities] == pytest.approx([e.score for e in entities], abs=1e-4)
  classifier = tm.HeadTopicClassifier(topic_dir)
  # Texts of one window: the torch topic stage reads exactly the fused path's window.
  short = [t for t in TEXTS if len(fused.ner.tokenizer.encode(t, add_special_tokens=False).ids) < 120]
  scores = classifier.scores(short)
  for text, row in zip(short, scores, strict=True):
    got = enrich.enrich_texts(fused, [text])[0].topics
    want = classifier.topics(row)
    assert [t.code for t in got] == [code for code, _, _ in want]
    assert [t.score for t in got] == pytest.approx([s for _, _, s in want], abs=1e-4)


def test_two_encoder_graph_gives_the_same_results(tiny_models):
  ner_dir, topic_dir = tiny_models
  one = enrich.load_enricher(str(ner_dir), str(topic_dir), precision="fp32", threads=1)
  two = enrich.load_enricher(str(ner_dir), str(topic_dir), precision="fp32", threads=1, share=False)
  assert not two.shared_encoder
  for a, b in zip(enrich.enrich_texts(one, TEXTS), enrich.enrich_texts(two, TEXTS), strict=True):
    assert _keys(a.entities) == _keys(b.entities)
    assert [t.score for t in a.topics] == pytest.approx([t.score for t in b.topics], abs=1e-5)


def test_bucketing_does_not_change_results(tiny_models):
  ner_dir, topic_dir = tiny_models
  fused = enrich.load_enricher(str(ner_dir), str(topic_dir), precision="fp32", threads=1)
  a = enrich.enrich_texts(fused, TEXTS, batch_tokens=512)
  b = enrich.enrich_texts(fused, TEXTS, sort_windows=False)
  c = enrich.enrich_texts(fused, TEXTS, max_padding=64)
  for x, y, z in zip(a, b, c, strict=True):
    assert _keys(x.entities) == _keys(y.entities) == _keys(z.entities)
    assert [t.score for t in x.topics] == pytest.approx([t.score for t in y.topics], abs=1e-5)
    assert [t.score for t in x.topics] == pytest.approx([t.score for t in z.topics], abs=1e-5)


def test_concurrent_runs_give_the_same_results(tiny_models, monkeypatch):
  ner_dir, topic_dir = tiny_models
  one = enrich.load_enricher(str(ner_dir), str(topic_dir), precision="fp32", threads=2, runs=1)
  two = enrich.load_enricher(str(ner_dir), str(topic_dir), precision="fp32", threads=2, runs=2)
  assert (one.session.runs, two.session.runs) == (1, 2)
  callers = []
  real = two.session.run

  def run(*arrays):
    callers.append(threading.current_thread().name)
    return real(*arrays)

  two.session.run = run
  texts = TEXTS + [f"Story {i} from Paris. " * (i + 1) for i in range(12)]
  a = enrich.enrich_texts(one, texts)
  b = enrich.enrich_texts(two, texts)
  for x, y in zip(a, b, strict=True):
    assert _keys(x.entities) == _keys(y.entities)
    assert [t.score for t in x.topics] == pytest.approx([t.score for t in y.topics], abs=1e-5)
  assert len(callers) > 1 and all(name.startswith("wirestream-onnx") for name in callers)
  monkeypatch.setenv("WIRESTREAM_ONNX_RUNS", "3")
  assert ob.default_runs(8) == 3
  monkeypatch.delenv("WIRESTREAM_ONNX_RUNS")
  assert ob.default_runs(4) == 4


@pytest.mark.parametrize("max_padding", [0, 3])
def test_batches_hold_windows_of_nearly_one_length(tiny_models, max_padding):
  ner_dir, topic_dir = tiny_models
  fused = enrich.load_enricher(str(ner_dir), str(topic_dir), precision="fp32", threads=1)
  widths = []
  real = fused.session.run

  def run(ids, types, mask):
    lengths = mask.sum(1)
    widths.append((int(lengths.min()), int(lengths.max()), ids.shape[1]))
    return real(ids, types, mask)

  fused.session.run = run
  texts = TEXTS + [f"Story {i} from Paris. " * (i + 1) for i in range(12)]
  results = enrich.enrich_texts(fused, texts, headlines=["A headline"] * len(texts), max_padding=max_padding)
  assert len(results) == len(texts) and all(r.topics for r in results)
  assert len(widths) > 1
  for shortest, longest, width in widths:
    assert longest == width and longest - shortest <= max_padding


@pytest.mark.parametrize("context", [0, 8])
def test_fast_windows_hold_sentence_cores_with_little_context(tiny_models, context):
  ner_dir, topic_dir = tiny_models
  fused = enrich.load_enricher(str(ner_dir), str(topic_dir), precision="fp32", threads=1)
  text = " ".join(f"Sentence number {i} names Ann Lee of Acme Corp in Paris." for i in range(60))
  prepared = ner_stage.prepare(fused.ner, text, overlap=context)
  windows = enrich.fast_windows(prepared, context)
  enc = prepared.encoded
  assert len(windows) > 5
  cores = [k for w in windows for k in range(w.core_start, w.core_end)]
  assert cores == list(range(len(enc.ids)))  # every piece in one core, in order
  for w in windows:
    assert w.end - w.start <= fused.ner.max_pieces
    assert 0 <= w.core_start - w.start <= context and 0 <= w.end - w.core_end <= context
    # Cores start with a sentence.
    assert w.core_start == 0 or enc.sentence[w.core_start] != enc.sentence[w.core_start - 1]
    assert enc.word_start[w.start]
  run = sum(w.end - w.start for w in windows)
  assert run <= len(enc.ids) * (1 + 2 * context / 40)
  result = enrich.enrich_texts(fused, [text], context=context)[0]
  for e in result.entities:
    assert text[e.start_char:e.end_char] == e.text


def _agreement(fast, reference):
  both = diff = 0
  for x, y in zip(fast, reference, strict=True):
    a, b = set(_keys(x)), set(_keys(y))
    both += len(a & b)
    diff += len(a ^ b)
  return both / max(1, both + diff)


def test_int8_agrees_with_torch_on_most_mentions(tiny_models):
  ner_dir, topic_dir = tiny_models
  fast = enrich.load_enricher(str(ner_dir), str(topic_dir), threads=1)
  results = enrich.enrich_texts(fast, TEXTS, **STAGE_WINDOWS)
  expected = ner_stage.annotate(ner_stage.load_ner_model(str(ner_dir), threads=1), TEXTS)
  assert _agreement([r.entities for r in results], expected) >= 0.9
  fp32 = enrich.enrich_texts(enrich.load_enricher(str(ner_dir), str(topic_dir), precision="fp32", threads=1),
                             TEXTS, **STAGE_WINDOWS)
  for a, b in zip(results, fp32, strict=True):
    assert a.topics[0].code == b.topics[0].code
    assert a.topics[0].score == pytest.approx(b.topics[0].score, abs=0.05)


@pytest.mark.skipif(not DEFAULT_MODELS_READY, reason="bundled NER/topic models not built")
def test_default_models_on_onnx_agree_with_torch_on_the_seeds():
  from pipelines import bench

  stories = [s for s in bench.load_stories(str(SEEDS))[0] if s.body.strip() and (s.language or "en") == "en"]
  bodies = [s.body for s in stories]
  expected = ner_stage.annotate(ner_stage.load_ner_model(None, threads=2), bodies)
  fp32 = enrich.load_enricher(precision="fp32", threads=2)
  assert [_keys(r.entities) for r in enrich.enrich_texts(fp32, bodies, **STAGE_WINDOWS)] == \
      [_keys(e) for e in expected]
  # int8 flips a few borderline pieces (mostly inside odd tokens such as "U.S.-China").
  int8 = enrich.load_enricher(threads=2)
  assert _agreement([r.entities for r in enrich.enrich_texts(int8, bodies, **STAGE_WINDOWS)], expected) >= 0.9
  results = bench.run_fast(int8, stories)  # the fast path as the pipeline runs it
  seed = [s.input_uri.endswith("000_2caeb3c1602a667c.txt") for s in stories].index(True)
  people = {e.text for e in results[seed].entities if e.label == "PER"}
  assert {"Rex Tillerson", "Jim Mattis", "Yang Jiechi"} <= people
  assert results[seed].topics[0].code in ("medtop:11000000", "medtop:16000000")  # politics or conflict first


# --- The Beam stage -----------------------------------------------------------------------------------------


def test_enrich_stage_routes_each_stage_by_language(tiny_models):
  ner_dir, topic_dir = tiny_models
  # fp32: int8 activations are quantised per batch, so int8 results depend (slightly) on batch composition.
  fused = enrich.load_enricher(str(ner_dir), str(topic_dir), precision="fp32", threads=1)
  expected = enrich.enrich_texts(fused, [TEXTS[0]])[0]
  stories = [_story("en", TEXTS[0]), _story("de", "Angela Merkel besuchte Berlin.", language="de"),
             _story("fr", "Emmanuel Macron est à Paris.", language="fr"), _story("empty", "  "),
             _story("headline", TEXTS[1], headline="Arsenal go top")]
  with test_pipeline.TestPipeline(runner="DirectRunner") as p:
    out, errors = p | beam.Create(stories) | enrich.Enrich(str(ner_dir), str(topic_dir), precision="fp32",
                                                           threads=1)
    summary = out | beam.Map(lambda s: (
        s.story_id, s.ner_status, s.topics_status, None if s.entities is None else len(s.entities),
        None if s.topics is None else s.topics[0].code, s.topics_model))
    assert_that(summary, equal_to([
        ("en", STATUS_APPLIED, STATUS_APPLIED, len(expected.entities), expected.topics[0].code,
         "tiny-topics"),
        ("de", STATUS_SKIPPED_LANGUAGE, STATUS_APPLIED, None,
         fused_topic(fused, "Angela Merkel besuchte Berlin."), "tiny-topics"),
        ("fr", STATUS_SKIPPED_LANGUAGE, STATUS_SKIPPED_LANGUAGE, None, None, "tiny-topics"),
        ("empty", STATUS_SKIPPED_EMPTY, STATUS_SKIPPED_EMPTY, None, None, "tiny-topics"),
        ("headline", STATUS_APPLIED, STATUS_APPLIED, len(enrich.enrich_texts(fused, [TEXTS[1]])[0].entities),
         enrich.enrich_texts(fused, [TEXTS[1]], ["Arsenal go top"])[0].topics[0].code, "tiny-topics"),
    ]), label="stories")
    assert_that(errors, equal_to([]), label="errors")


def fused_topic(fused, text):
  return enrich.enrich_texts(fused, [text])[0].topics[0].code


class _Broken(enrich.EnrichModelHandler):
  def run_inference(self, batch, model, inference_args=None):
    if any("EXPLODE" in s.body for s in batch):
      raise RuntimeError("boom")
    return super().run_inference(batch, model, inference_args)


def test_enrich_stage_failures_mark_both_stages(tiny_models):
  ner_dir, topic_dir = tiny_models
  handler = _Broken(str(ner_dir), str(topic_dir), threads=1, max_batch_chars=10)
  stories = [_story("ok", "Ann Lee spoke in Paris."), _story("boom", "EXPLODE now"),
             _story("de", "EXPLODE jetzt", language="de")]
  with test_pipeline.TestPipeline(runner="DirectRunner") as p:
    out, errors = p | beam.Create(stories) | enrich.Enrich(str(ner_dir), str(topic_dir), handler=handler)
    assert_that(out | beam.Map(lambda s: (s.story_id, s.ner_status, s.topics_status)), equal_to([
        ("ok", STATUS_APPLIED, STATUS_APPLIED), ("boom", STATUS_FAILED, STATUS_FAILED),
        ("de", STATUS_SKIPPED_LANGUAGE, STATUS_FAILED)]), label="stories")
    assert_that(errors | beam.Map(lambda d: (d.stage, d.story_id)), equal_to([
        ("ner", "boom"), ("topics", "boom"), ("topics", "de")]), label="errors")


def test_only_our_models_are_fusable(tiny_models, tmp_path):
  ner_dir, topic_dir = tiny_models
  assert enrich.is_fusable(str(ner_dir), str(topic_dir))
  assert not enrich.is_fusable(str(tmp_path), str(topic_dir))
  assert not enrich.is_fusable(str(ner_dir), str(tmp_path))


# --- bench --------------------------------------------------------------------------------------------------


def test_bench_smoke_on_the_seeds(tiny_models, capsys):
  from pipelines import bench

  ner_dir, topic_dir = tiny_models
  code = bench.main(["--input", str(SEEDS), "--limit", "2", "--threads", "1", "--ner-model", str(ner_dir),
                     "--topics-model", str(topic_dir), "--repeat", "2"])
  assert code == 0
  captured = capsys.readouterr()
  result = json.loads(captured.out.strip().splitlines()[-1])
  assert "turn 2: fast path" in captured.err and len(result["speedup_per_turn"]) == 2
  for key in ("tokens_per_s", "stories_per_s", "baseline_tokens_per_s", "speedup", "encoder_tokens_per_s",
              "peak_rss_mb"):
    assert result[key] > 0
  assert result["stories"] == 2 and result["shared_encoder"] is True
  assert np.isclose(result["speedup"], result["baseline_seconds"] / result["seconds"], rtol=0.02)


def test_bench_rejects_an_input_without_stories(tiny_models, tmp_path, capsys):
  from pipelines import bench

  ner_dir, topic_dir = tiny_models
  (tmp_path / "a.txt").write_text("   ")
  code = bench.main(["--input", str(tmp_path), "--ner-model", str(ner_dir), "--topics-model", str(topic_dir),
                     "--threads", "1"])
  assert code == 2
  assert "error" in capsys.readouterr().err


def test_onnx_ner_stage_handler_matches_torch(tiny_models):
  ner_dir, _ = tiny_models
  model = enrich.load_onnx_ner(str(ner_dir), precision="fp32", threads=1)
  reference = ner_stage.load_ner_model(str(ner_dir), threads=1)
  for got, want in zip(ner_stage.annotate(model, TEXTS), ner_stage.annotate(reference, TEXTS), strict=True):
    assert _keys(got) == _keys(want)
  handler = enrich.OnnxNerModelHandler(str(ner_dir), precision="fp32", threads=1)
  stories = [_story("a", TEXTS[0])]
  results = list(handler.run_inference(stories, handler.load_model()))
  assert _keys(results[0].inference) == _keys(ner_stage.annotate(reference, [TEXTS[0]])[0])


def test_handlers_keep_their_models_across_dofn_instances(tiny_models, monkeypatch):
  """A torn-down DoFn frees RunInference's weakly held model; the next instance must not load it again."""
  from transforms import model_cache

  ner_dir, topic_dir = tiny_models
  model_cache.clear()
  loads = []
  real = enrich.load_enricher
  monkeypatch.setattr(enrich, "load_enricher", lambda *a, **k: loads.append(1) or real(*a, **k))
  stories = [_story("a", TEXTS[0]), _story("b", TEXTS[1])]
  for _ in range(2):  # two pipelines in one process: two sets of DoFn instances
    with test_pipeline.TestPipeline(runner="DirectRunner") as p:
      out, _ = p | beam.Create(stories) | enrich.Enrich(str(ner_dir), str(topic_dir), threads=1)
      out = out | beam.Map(lambda s: (s.story_id, s.ner_status, s.topics_status))
      assert_that(out, equal_to([("a", STATUS_APPLIED, STATUS_APPLIED), ("b", STATUS_APPLIED, STATUS_APPLIED)]))
  assert len(loads) == 1
  handler = enrich.EnrichModelHandler(str(ner_dir), str(topic_dir), threads=1)
  assert handler.load_model() is handler.load_model()
  other = enrich.EnrichModelHandler(str(ner_dir), str(topic_dir), threads=1, precision="fp32")
  assert other.load_model() is not handler.load_model()
  ner = enrich.OnnxNerModelHandler(str(ner_dir), precision="fp32", threads=1)
  assert ner.load_model() is ner.load_model()
  assert ner_stage.NerModelHandler(str(ner_dir), threads=1).load_model() is not ner.load_model()
  model_cache.clear()


@pytest.mark.parametrize("backend, stages, expected", [
    (None, ("ner", "topics"), {"Enrich"}),
    ("onnx", ("ner", "topics"), {"Enrich"}),
    ("torch", ("ner", "topics"), {"NER", "Topics"}),
    ("onnx", ("ner",), {"NER"}),
])
def test_apply_stages_fuses_our_models_on_onnx(tiny_models, backend, stages, expected):
  import argparse

  from pipelines.common import apply_stages

  ner_dir, topic_dir = tiny_models
  args = argparse.Namespace(stages=stages, inference_backend=backend, ner_model=str(ner_dir),
                            topics_model=str(topic_dir), topics_taxonomy=None)
  p = beam.Pipeline(runner="DirectRunner")
  stories, errors = apply_stages(p | beam.Create([_story("a", TEXTS[0])]), args)
  labels = {t.full_label for t in p.transforms_stack[0].parts}
  assert expected <= labels and not ({"Enrich", "NER", "Topics"} - expected) & labels
  assert len(errors) == len(expected) + 1  # the resolve stage follows NER
  if backend == "onnx" and stages == ("ner",):
    ner = next(t for t in p.transforms_stack[0].parts if t.full_label == "NER")
    assert isinstance(ner.transform._handler, enrich.OnnxNerModelHandler)
