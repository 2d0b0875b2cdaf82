"""The wheel works anywhere: built from this tree, installed (not editable) into a new virtual environment
with the locked dependencies, and run on ``seeds/`` from an unrelated directory with the default models.

Slow (a full install of the locked dependencies into a new venv: 2-4 minutes), so ``make test`` leaves it
out and ``make test-wheel`` (which ``.ci/run`` calls) runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL_FILE_LIMIT = 25 * 1024 * 1024

pytestmark = pytest.mark.wheel


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
  result = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
  assert result.returncode == 0, f"{command[:4]} failed ({result.returncode}):\n{result.stderr[-4000:]}"
  return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
  """The wheel, built offline from a copy of this tree (stale build/ folders in the tree cannot leak in)."""
  root = tmp_path_factory.mktemp("wheel")
  source = root / "src"
  shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
      ".git", ".venv", "build", "*.egg-info", "lake*", "__pycache__", ".pytest_cache", ".ruff_cache",
      ".hypothesis", ".cache"))
  _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "--wheel-dir", str(root / "dist"), str(source)])
  (built,) = (root / "dist").glob("wirestream-*.whl")
  return built


def test_wheel_carries_the_models_and_not_the_training_data(wheel):
  with zipfile.ZipFile(wheel) as archive:
    sizes = {info.filename: info.file_size for info in archive.infolist()}
  for name in ("ner/config.json", "ner/model.safetensors", "ner/README.md", "topics/topic_head.json",
               "topics/topic_head.safetensors", "topics/README.md"):
    assert f"transforms/assets/{name}" in sizes, f"{name} is not in the wheel"
  assert "transforms/data/calibration.txt" in sizes, "the int8 calibration text is not in the wheel"
  for name, size in sizes.items():
    if name.endswith(".safetensors"):
      assert size < MODEL_FILE_LIMIT, f"{name} is {size / 2**20:.1f} MB"
    assert not name.endswith(".jsonl"), f"training or evaluation data in the wheel: {name}"
    assert not name.startswith(("tests/", "seeds/", "models/")), name


def test_wheel_installed_elsewhere_runs_the_pipeline_with_its_models(wheel, tmp_path):
  venv = tmp_path / "venv"
  _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
  python = venv / "bin" / "python"
  _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-compile",
        "-r", str(REPO / "requirements.lock"), str(wheel)])
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
  env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")

  located = _run([str(python), "-c", "import transforms.assets as a; print(a.NER_DIR); print(a.TOPICS_DIR)"],
                 cwd=elsewhere, env=env).stdout.split()
  assert all(Path(path).is_relative_to(venv) for path in located), located

  wirestream = str(venv / "bin" / "wirestream")
  _run([wirestream, "run", "--input", str(REPO / "seeds"), "--output", "lake"], cwd=elsewhere, env=env)
  result = _run([wirestream, "query", "--lake", "lake", "--format", "json",
                 "SELECT count(*) AS events, sum(entity_count) AS entities, count(top_topic_code) AS topics, "
                 "any_value(ner_model) AS ner_model FROM events"], cwd=elsewhere, env=env)
  (row,) = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
  assert row["events"] == 7
  assert row["entities"] > 50
  assert row["topics"] >= 5
  assert row["ner_model"]
