"""The per-process model cache beneath RunInference's shared handle."""

from __future__ import annotations

import pytest

from transforms import model_cache


@pytest.fixture(autouse=True)
def empty_cache():
  model_cache.clear()
  yield
  model_cache.clear()


class Model:
  pass


def test_a_model_is_loaded_once_a_key():
  calls = []

  def loader():
    calls.append(1)
    return Model()

  first = model_cache.load_once(("a",), loader)
  assert model_cache.load_once(("a",), loader) is first
  assert model_cache.load_once(("b",), loader) is not first
  assert len(calls) == 2


def test_least_recently_used_models_are_dropped():
  models = {key: model_cache.load_once((key,), Model) for key in range(model_cache.MAX_MODELS)}
  model_cache.load_once((0,), Model)  # 0 is now the most recent; 1 the least
  model_cache.load_once(("new",), Model)
  assert model_cache.load_once((0,), Model) is models[0]
  assert model_cache.load_once((1,), Model) is not models[1]


def test_a_failed_load_is_not_cached():
  def broken():
    raise OSError("disk gone")

  with pytest.raises(OSError):
    model_cache.load_once(("x",), broken)
  assert isinstance(model_cache.load_once(("x",), Model), Model)


def test_fingerprint_changes_when_a_model_file_is_rewritten(tmp_path):
  from transforms import spec as sp

  (tmp_path / "config.json").write_text("{}")
  weights = tmp_path / "model.safetensors"
  weights.write_bytes(b"1234")
  files = [tmp_path / "config.json", weights, None]
  before = sp.fingerprint(files)
  assert sp.fingerprint(files) == before
  weights.write_bytes(b"5678")
  assert sp.fingerprint(files) != before
  assert sp.fingerprint(files, salt="other") != sp.fingerprint(files)
