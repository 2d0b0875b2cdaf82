"""Shared fixtures. Markers (``pyproject.toml``): ``slow`` marks tests that export models, train or run whole
pipelines (deselect with ``-m 'not slow'``), ``emulator`` those that need the Pub/Sub emulator."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from schemas.records import Story

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_story(story_id: str, body: str, language: str | None = "en", headline: str | None = None) -> Story:
  return Story(story_id=story_id, version=1, body=body, source_format="plain", input_uri="mem://" + story_id,
               locator="", raw_sha256="0" * 64, ingested_at=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
               headline=headline, language=language)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
  """A 2-layer casing NER model and a 2-layer topic head reading its layer-1 output (shared encoder)."""
  torch = pytest.importorskip("torch")
  from transforms import ner_model as nm
  from transforms import topics_model as tm

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


@pytest.fixture(autouse=True, scope="session")
def onnx_cache(tmp_path_factory):
  """Exported graphs go to the session's temporary directory, never the user's cache."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("WIRESTREAM_CACHE", str(tmp_path_factory.getbasetemp() / "onnx-cache"))
    yield
