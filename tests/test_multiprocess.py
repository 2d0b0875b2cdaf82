"""The batch pipeline with work spread over worker processes, as on Dataflow workers.

``--direct_running_mode=multi_processing`` runs the bundles in separate SDK worker processes: every DoFn
and model handler is pickled across the process boundary and each process loads its own model copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import query
from pipelines.common import ALL_STAGES
from schemas import Story
from transforms.parse import parse_record

REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO / "seeds"


def _stages() -> tuple[str, ...]:
  """The enrichment stages whose bundled model this checkout has (the batch pipeline runs all of them)."""
  from transforms import assets

  ready = {"ner": (assets.NER_DIR / "model.safetensors").is_file(),
           "topics": (assets.TOPICS_DIR / "topic_head.json").is_file()}
  return tuple(stage for stage in ALL_STAGES if ready[stage])


def _seed_stories() -> set[tuple[str, int]]:
  from schemas import RawRecord

  expected = set()
  for path in sorted(SEEDS.iterdir()):
    if path.is_file() and not path.name.startswith("."):
      for item in parse_record(RawRecord(uri=str(path), data=path.read_bytes())):
        if isinstance(item, Story):
          expected.add((item.story_id, item.version))
  return expected


@pytest.mark.slow
def test_batch_pipeline_on_two_worker_processes(tmp_path):
  expected = _seed_stories()
  assert expected, "seeds/ holds no story"
  stages = _stages()
  lake = tmp_path / "lake"
  env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
  start = time.monotonic()
  result = subprocess.run(
      [sys.executable, "-m", "pipelines.cli", "run", "--input", str(SEEDS), "--output", str(lake),
       "--stages", ",".join(stages) or "none",
       "--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
  elapsed = time.monotonic() - start
  assert result.returncode == 0, result.stderr[-4000:]
  print(f"multi-process batch run over {len(expected)} seed stories, stages {stages}: {elapsed:.1f}s")

  con = query.connect(str(lake))
  rows = con.execute("SELECT story_id, version, ner_status, topics_status, entity_count FROM events").fetchall()
  assert {(story_id, version) for story_id, version, *_ in rows} == expected
  assert len(rows) == len(expected), "a story landed twice"
  errors = con.execute("SELECT stage, error_type, message FROM errors").fetchall()
  assert [e for e in errors if e[0] in stages] == [], errors
  if "ner" in stages:
    assert all(ner_status is not None for _, _, ner_status, _, _ in rows)
    mentions = con.execute("SELECT count(*), count(DISTINCT story_id) FROM entities").fetchone()
    assert mentions[0] > 0, "the NER stage ran in the worker processes but found no entity"
    assert mentions[0] == sum(count or 0 for *_, count in rows)
  if "topics" in stages:
    assert all(topics_status is not None for _, _, _, topics_status, _ in rows)
