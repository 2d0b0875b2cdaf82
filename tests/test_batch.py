"""The batch pipeline end to end through the CLI (parse-and-store; enrichment has its own tests)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from pipelines import query
from pipelines.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REUTERS = SHARED / "data" / "reuters21578"


def _run(*argv: str) -> int:
  return main(["run", *argv, "--runner=DirectRunner"])


def test_seed_story_lands_with_its_dateline(tmp_path, capsys):
  lake = tmp_path / "lake"
  assert _run("--input", str(REPO / "seeds" / "000_2caeb3c1602a667c.txt"), "--output", str(lake),
              "--stages", "none") == 0
  err = capsys.readouterr().err
  assert "stories   1 parsed" in err and "events    1 rows" in err
  con = query.connect(str(lake))
  row = con.execute("SELECT dateline, dateline_place, agency, language, body, ner_status FROM events").fetchall()
  assert len(row) == 1
  dateline, place, agency, language, body, ner_status = row[0]
  assert (dateline, place, agency, language) == ("WASHINGTON (Reuters)", "WASHINGTON", "Reuters", "en")
  assert body.startswith("WASHINGTON (Reuters) - U.S. and Chinese diplomatic") and "\n\n" in body
  assert ner_status is None  # the NER stage did not run


def test_rerun_over_the_same_input_gives_the_same_ids(tmp_path):
  lake = tmp_path / "lake"
  for _ in range(2):
    assert _run("--input", str(REPO / "seeds"), "--output", str(lake), "--stages", "none") == 0
  con = query.connect(str(lake))
  total, distinct = con.execute(
      "SELECT count(*), count(DISTINCT event_id) FROM read_parquet(?, union_by_name=true)",
      [str(lake / "events" / "*" / "*.parquet")]).fetchone()
  assert total == distinct > 0


def test_bad_files_land_in_errors_and_the_run_goes_on(tmp_path):
  src = tmp_path / "in"
  src.mkdir()
  (src / "good.txt").write_text("LONDON (Reuters) - Shares rose on Monday.\nTraders said so.\n")
  (src / "empty.json").write_bytes(b"")
  (src / "bad.xml").write_bytes(b"<?xml version='1.0'?><nitf><body><p>truncated")
  (src / "bin.gz").write_bytes(gzip.compress(b"\x80\x81\xfe\x00\x9f" * 50))
  lake = tmp_path / "lake"
  assert _run("--input", str(src / "*"), "--output", str(lake), "--stages", "none") == 0
  con = query.connect(str(lake))
  assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 1
  errors = dict(con.execute("SELECT regexp_extract(input_uri, '[^/]+$'), stage FROM errors").fetchall())
  assert set(errors) == {"empty.json", "bad.xml", "bin.gz"}
  assert set(errors.values()) == {"parse"}


def test_cli_errors_are_clear(tmp_path, capsys):
  assert _run("--input", str(tmp_path / "nope" / "*.txt"), "--output", str(tmp_path / "lake")) == 2
  assert "matches no files" in capsys.readouterr().err
  blocker = tmp_path / "blocker"
  blocker.write_text("x")
  assert _run("--input", str(REPO / "seeds"), "--output", str(blocker / "lake")) == 2
  assert "not writable" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    main(["run", "--input", "x", "--output", "y", "--stages", "bogus"])


@pytest.mark.skipif(not REUTERS.is_dir(), reason="Reuters-21578 files are not available")
def test_reuters_ledger_balances(tmp_path):
  """Every <REUTERS> record of the corpus ends in exactly one of events or errors."""
  expected = sum(len(re.findall(rb"<REUTERS ", p.read_bytes())) for p in REUTERS.glob("*.sgm"))
  lake = tmp_path / "lake"
  assert _run("--input", str(REUTERS / "*.sgm"), "--output", str(lake), "--stages", "none") == 0
  con = query.connect(str(lake))
  events = con.execute("SELECT count(*) FROM events").fetchone()[0]
  errors = con.execute("SELECT count(*) FROM errors").fetchone()[0]
  located = con.execute(
      "SELECT count(DISTINCT input_uri || '#' || locator) FROM "
      "(SELECT input_uri, locator FROM events UNION ALL SELECT input_uri, locator FROM errors)").fetchone()[0]
  assert events + errors == expected == located
  assert errors / expected < 0.02
  print(f"reuters ledger: {expected} records, {events} events, {errors} errors")
