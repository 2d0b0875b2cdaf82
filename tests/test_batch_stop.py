"""The batch pipeline stopped by a signal: prompt exit, no unfinished file where readers look, a rerun completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from pipelines import query

REPO = Path(__file__).resolve().parents[1]
FILES, LINES = 40, 60


def _inputs(folder: Path) -> None:
  folder.mkdir()
  for f in range(FILES):
    lines = [json.dumps({"guid": f"stop-{f}-{i}", "headline": f"Story {f}/{i}",
                         "body": f"OSLO (NTB) - Story {i} of file {f} was filed on a quiet afternoon in Oslo."})
             for i in range(LINES)]
    (folder / f"batch-{f:02d}.jsonl").write_text("\n".join(lines) + "\n")


def _run(inputs: Path, lake: Path) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, "-m", "pipelines.cli", "run", "--input", str(inputs), "--output", str(lake),
       "--stages", "none"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
      text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def _writing(lake: Path) -> bool:
  return any(not path.name.startswith("part-schema-") for path in lake.glob("*/*/*"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("when", ["reading", "writing"])
def test_a_stopped_run_leaves_only_complete_files_and_a_rerun_completes(tmp_path, signum, when):
  inputs, lake = tmp_path / "in", tmp_path / "lake"
  _inputs(inputs)
  run = _run(inputs, lake)
  started = time.monotonic()
  # "reading": three seconds in (Beam runs, the parse stage is busy); "writing": once the first
  # data file (not one of the empty schema files every run writes first) is being written.
  while time.monotonic() - started < 120 and run.poll() is None:
    if _writing(lake) if when == "writing" else time.monotonic() - started > 3:
      break
    time.sleep(0.01)
  if run.poll() is not None:
    pytest.skip(f"the run finished before the signal ({when})")
  stopping = time.monotonic()
  run.send_signal(signum)
  out, _ = run.communicate(timeout=30)
  assert run.returncode == 128 + signum, out
  assert time.monotonic() - stopping < 5, out
  assert not list(lake.rglob(".tmp-*")), out
  con = duckdb.connect()
  for path in lake.rglob("*.parquet"):
    con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()  # complete and readable
  rerun = _run(inputs, lake)
  out, _ = rerun.communicate(timeout=300)
  assert rerun.returncode == 0, out
  assert query.connect(str(lake)).execute("SELECT count(*) FROM events").fetchone()[0] == FILES * LINES
