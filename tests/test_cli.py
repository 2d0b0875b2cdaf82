"""The command line as a new user meets it: strict options, honest exits and summaries, one truth in the lake.

Every test here stands for one mistake people make on day one (see the README's "Commands" section, whose
examples ``test_readme_examples_run_as_written`` runs literally).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipelines import query
from pipelines.cli import main

REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO / "seeds"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _run(*argv: str) -> int:
  return main(["run", *argv, "--runner=DirectRunner"])


def _cli(*argv: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
  return subprocess.run([sys.executable, "-m", "pipelines.cli", *argv], cwd=cwd or REPO, env=env or ENV,
                        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _count(lake: Path, sql: str) -> int:
  return query.connect(str(lake)).execute(sql).fetchone()[0]


# --------------------------------------------------------------------------- strict options


def test_an_unquoted_glob_reads_every_file(tmp_path):
  """`--input seeds/*.xml` as the shell expands it: both files are read (no longer one, exit 0)."""
  files = sorted(str(p) for p in SEEDS.glob("*.xml"))
  assert len(files) == 2
  assert _run("--input", *files, "--output", str(tmp_path / "lake"), "--stages", "none") == 0
  assert _count(tmp_path / "lake", "SELECT count(*) FROM events") == 2


@pytest.mark.parametrize("argv, message", [
    (["--stagse", "none"], "unrecognized option --stagse (did you mean --stages?)"),
    (["--max_story_bytes", "0"], "unrecognized option --max_story_bytes (did you mean --max-story-bytes?)"),
    (["--direct_num_worker", "2"], "unrecognized option --direct_num_worker (did you mean --direct_num_workers?)"),
    (["--ouptut=x"], "unrecognized option --ouptut (did you mean --output?)"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_unknown_options_stop_with_the_closest_name(tmp_path, capsys, argv, message):
  with pytest.raises(SystemExit) as stop:
    main(["run", "--output", str(tmp_path / "lake"), *argv, "--input", str(SEEDS)])
  assert stop.value.code == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "lake").exists()


def test_beam_options_pass_through(tmp_path):
  lake = tmp_path / "lake"
  assert _run("--input", str(SEEDS / "000_2caeb3c1602a667c.txt"), "--output", str(lake), "--stages", "none",
              "--direct_num_workers", "1", "--direct_running_mode=in_memory") == 0
  assert _count(lake, "SELECT count(*) FROM events") == 1


def test_other_commands_are_strict_too(capsys):
  with pytest.raises(SystemExit) as stop:
    main(["query", "--lake", "x", "--fromat", "csv", "SELECT 1"])
  assert stop.value.code == 2 and "did you mean --format?" in capsys.readouterr().err


def test_a_directory_means_its_files_and_says_so_about_subfolders(tmp_path, capsys):
  src = tmp_path / "in"
  (src / "more").mkdir(parents=True)
  shutil.copy(SEEDS / "000_2caeb3c1602a667c.txt", src)
  shutil.copy(SEEDS / "003_nitf_de_hochwasser.xml", src / "more")
  assert _run("--input", str(src), "--output", str(tmp_path / "lake"), "--stages", "none") == 0
  assert "1 subfolder(s) not read" in capsys.readouterr().err
  assert _count(tmp_path / "lake", "SELECT count(*) FROM events") == 1
  assert _run("--input", f"{src}/**", "--output", str(tmp_path / "all"), "--stages", "none") == 0
  assert _count(tmp_path / "all", "SELECT count(*) FROM events") == 2


@pytest.mark.parametrize("value", ["-5", "0", "99999999999999999999", "five"])
def test_bad_values_are_refused(tmp_path, capsys, value):
  with pytest.raises(SystemExit) as stop:
    main(["run", "--input", str(SEEDS), "--output", str(tmp_path / "lake"), "--max-story-bytes", value])
  assert stop.value.code == 2 and "--max-story-bytes" in capsys.readouterr().err


def test_every_command_names_its_output_output():
  from pipelines.cli import build_parser
  from pipelines.common import OUTPUT_OPTIONS

  parser = build_parser()
  leaves = {name: sub for name, sub in parser._subparsers._group_actions[0].choices.items()}
  for name in ("run", "stream", "dataflow-dry-run"):
    spellings = [o for a in leaves[name]._actions for o in a.option_strings]
    assert set(OUTPUT_OPTIONS) <= set(spellings), name
  for group in ("train",):
    for model, sub in leaves[group]._subparsers._group_actions[0].choices.items():
      assert set(OUTPUT_OPTIONS) <= {o for a in sub._actions for o in a.option_strings}, (group, model)


# --------------------------------------------------------------------------- one truth in the lake


def test_readme_views_are_what_query_uses(tmp_path, monkeypatch):
  """The README's SQL is `--print-views`, and DuckDB running it gets the rows the views give."""
  readme = (REPO / "README.md").read_text()
  sql = re.search(r"```sql\n(.*?)```", readme[readme.index("for a lake in `lake` they are:"):], re.S).group(1)
  assert sql.strip() == query.views_sql("lake")
  lake = tmp_path / "lake"
  # One story in two runs with other company: two files of the partition hold it; the truth holds it once.
  shutil.copy(SEEDS / "000_2caeb3c1602a667c.txt", tmp_path / "a.txt")
  (tmp_path / "b.txt").write_text("LONDON (Reuters) - Shares rose on Monday.\nTraders said so.\n")
  assert _run("--input", str(tmp_path / "a.txt"), "--output", str(lake), "--stages", "none") == 0
  assert _run("--input", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "--output", str(lake),
              "--stages", "none") == 0
  con = duckdb.connect()
  monkeypatch.chdir(tmp_path)
  con.execute(sql)
  raw = con.execute("SELECT count(*) FROM read_parquet('lake/events/*/*.parquet')").fetchone()[0]
  assert raw == 3
  for table in query.TABLE_NAMES:
    direct = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    assert direct == _count(lake, f"SELECT count(*) FROM {table}")
  assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 2


def test_errors_table_exists_without_errors(tmp_path):
  lake = tmp_path / "lake"
  assert _run("--input", str(SEEDS / "000_2caeb3c1602a667c.txt"), "--output", str(lake), "--stages", "none") == 0
  con = duckdb.connect()
  for table in query.TABLE_NAMES:
    assert con.execute(f"SELECT count(*) FROM read_parquet('{lake}/{table}/*/*.parquet')").fetchone()[0] >= 0
  assert con.execute(f"SELECT count(*) FROM read_parquet('{lake}/errors/*/*.parquet')").fetchone()[0] == 0


def test_one_run_writes_one_row_per_id(tmp_path, capsys):
  src = tmp_path / "in"
  src.mkdir()
  for name in ("a.txt", "b.txt"):
    shutil.copy(SEEDS / "000_2caeb3c1602a667c.txt", src / name)
  lake = tmp_path / "lake"
  # The same story in two files, and the folder named twice.
  assert _run("--input", str(src), f"{src}/*.txt", "--output", str(lake), "--stages", "none") == 0
  err = capsys.readouterr().err
  assert "repeated an id already in this run" in err
  assert re.search(r"files +2 read", err), err  # each file read once, whatever patterns match it
  con = duckdb.connect()
  assert con.execute(f"SELECT count(*) FROM read_parquet('{lake}/events/*/*.parquet')").fetchone()[0] == 1
  uri = con.execute(f"SELECT input_uri FROM read_parquet('{lake}/events/*/*.parquet')").fetchone()[0]
  assert uri.endswith("/a.txt")  # the first in path order: reruns keep the same one


def test_a_rerun_with_fewer_stages_drops_the_old_enrichment(tmp_path):
  """An enriched lake, then `--stages none` over the same story: no old mentions beside the new row."""
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions

  from schemas import Entity, RawRecord, Story
  from transforms.parse import parse_record
  from transforms.write import WriteTables

  seed = SEEDS / "000_2caeb3c1602a667c.txt"
  [story] = parse_record(RawRecord(uri=str(seed), data=seed.read_bytes()))
  assert isinstance(story, Story)
  start = story.body.index("WASHINGTON")
  story.entities = [Entity("WASHINGTON", "LOC", start, start + 10, 0.9, 0)]
  story.ner_status, story.ner_model = "applied", "wirestream-ner"
  lake = tmp_path / "lake"
  with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
    (p | "S" >> beam.Create([story]), p | "E" >> beam.Create([])) | WriteTables(str(lake))
  assert _count(lake, "SELECT count(*) FROM entities") == 1
  assert _run("--input", str(seed), "--output", str(lake), "--stages", "none") == 0
  con = query.connect(str(lake))
  assert con.execute("SELECT count(*), any_value(ner_status), any_value(entity_count) FROM events").fetchone() == (
      1, None, None)
  assert con.execute("SELECT count(*) FROM entities").fetchone()[0] == 0
  # ...and the old mention is still in its file: only the views decide, the same for every reader.
  raw = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{lake}/entities/*/*.parquet')").fetchone()
  assert raw[0] == 1


# --------------------------------------------------------------------------- honest exits


@pytest.mark.parametrize("where", ["table", "file", "unrelated"])
def test_query_without_tables_is_an_error(tmp_path, capsys, where):
  lake = tmp_path / "lake"
  assert _run("--input", str(SEEDS / "000_2caeb3c1602a667c.txt"), "--output", str(lake), "--stages", "none") == 0
  capsys.readouterr()
  path = {"table": lake / "events", "file": SEEDS / "000_2caeb3c1602a667c.txt", "unrelated": SEEDS}[where]
  assert main(["query", "--lake", str(path), "SELECT count(*) FROM events"]) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert "holds no lake tables" in captured.err or f"use --lake {lake}" in captured.err


def test_run_summary_and_fail_on_errors(tmp_path, capsys):
  src = tmp_path / "in"
  src.mkdir()
  shutil.copy(SEEDS / "000_2caeb3c1602a667c.txt", src)
  (src / "prices.csv").write_text("date,ticker,close\n2024-01-02,ABC,10.5\n2024-01-03,ABC,10.7\n")
  (src / "notes.md").write_text("# Notes\n\nNothing here.\n")
  (src / "empty.json").write_bytes(b"")
  lake = tmp_path / "lake"
  assert _run("--input", str(src), "--output", str(lake), "--stages", "none") == 0
  captured = capsys.readouterr()
  assert "summary:" not in captured.out
  err = captured.err
  assert re.search(r"files\s+4 read", err) and re.search(r"stories\s+1 parsed", err)
  assert re.search(r"events\s+1 rows", err) and re.search(r"entities\s+0 rows", err)
  assert "errors    3: parse/EmptyRecord 1, parse/NotAStory 2" in err
  assert f"wirestream query --lake {lake} \"SELECT stage, error_type" in err
  assert _count(lake, "SELECT count(*) FROM errors WHERE error_type = 'NotAStory'") == 2
  assert _count(lake, "SELECT count(*) FROM events WHERE input_uri LIKE '%.csv' OR input_uri LIKE '%.md'") == 0
  assert _run("--input", str(src), "--output", str(lake), "--stages", "none", "--fail-on-errors") == 1
  assert "failing (--fail-on-errors): 3 record(s)" in capsys.readouterr().err
  assert _run("--input", str(src / "000_2caeb3c1602a667c.txt"), "--output", str(lake), "--stages", "none",
              "--fail-on-errors") == 0


# --------------------------------------------------------------------------- operator mistakes, no tracebacks


def _no_cloud_env(tmp_path: Path, **extra: str) -> dict:
  env = {k: v for k, v in ENV.items()
         if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "PUBSUB_EMULATOR_HOST", "CLOUDSDK_CONFIG")}
  return {**env, "HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
          "GCE_METADATA_HOST": "127.0.0.1:1", "GCE_METADATA_IP": "127.0.0.1:1", "NO_GCE_CHECK": "True", **extra}


@pytest.mark.parametrize("argv, env_extra, message", [
    (["publish", "--topic", "mytopic", "seeds"], {}, "not a full topic name"),
    (["publish", "--topic", "projects/p/topics/t", "seeds"], {}, "no Google Cloud credentials"),
    (["publish", "--topic", "projects/p/topics/t", "seeds"], {"PUBSUB_EMULATOR_HOST": "127.0.0.1:1"},
     "cannot reach the Pub/Sub emulator at 127.0.0.1:1"),
    (["stream", "--subscription", "mysub", "--output", "LAKE"], {}, "not a full subscription name"),
    (["stream", "--subscription", "projects/p/subscriptions/s", "--output", "LAKE"], {},
     "no Google Cloud credentials"),
    (["stream", "--subscription", "projects/p/subscriptions/s", "--output", "LAKE", "--stages", "none"],
     {"PUBSUB_EMULATOR_HOST": "127.0.0.1:1"}, "cannot reach the Pub/Sub emulator"),
    (["stream", "--subscription", "projects/p/subscriptions/s", "--output", "LAKE", "--ner-model", "no/such"],
     {"PUBSUB_EMULATOR_HOST": "127.0.0.1:1"}, "error: NER model 'no/such' is neither a local directory nor"),
])
def test_pubsub_operator_mistakes_are_one_line(tmp_path, argv, env_extra, message):
  argv = [str(tmp_path / "lake") if arg == "LAKE" else arg for arg in argv]
  result = _cli(*argv, env=_no_cloud_env(tmp_path, **env_extra), timeout=120)
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0], result.stderr
  assert "Traceback" not in result.stderr and "summary" not in result.stdout


# --------------------------------------------------------------------------- feedback


@pytest.mark.parametrize("command", [[], ["run"], ["query"], ["stream"], ["publish"], ["train", "ner"]])
def test_help_loads_neither_beam_nor_the_models(command):
  code = ("import sys\nfrom pipelines.cli import main\ntry:\n  main(sys.argv[1:] + ['--help'])\n"
          "except SystemExit:\n  pass\nprint(sorted(m for m in ('apache_beam', 'torch', 'duckdb', 'transformers') "
          "if m in sys.modules))")
  result = subprocess.run([sys.executable, "-c", code, *command], env=ENV, capture_output=True, text=True,
                          timeout=120, cwd=REPO)
  assert result.returncode == 0, result.stderr
  assert "usage: wirestream" in result.stdout
  assert result.stdout.strip().splitlines()[-1] == "[]"


def test_version_names_the_package_and_the_default_models(capsys):
  from importlib import metadata

  from transforms import spec as sp
  from transforms.enrich import Enrich

  with pytest.raises(SystemExit) as stop:
    main(["--version"])
  assert stop.value.code == 0
  out = capsys.readouterr().out.splitlines()
  # What the default stages record in events.ner_model / events.topics_model.
  recorded = {stage: name for stage, (name, _) in Enrich()._models.items()}
  assert recorded == {"ner": sp.read_ner(None).name, "topics": sp.read_topics(None).name}
  assert out == [f"wirestream {metadata.version('wirestream')}", f"ner_model: {recorded['ner']}",
                 f"topics_model: {recorded['topics']}"]


def test_progress_line_has_totals_and_eta():
  from pipelines.progress import Progress

  lines = []
  progress = Progress(files=4, size=4096, enriching=True, every_seconds=0.0, printer=lines.append)
  progress.start -= 10
  for what, amount in (("files", 2), ("bytes", 2048), ("stories", 10), ("enriched", 5)):
    progress.add(what, amount)
  assert lines[-1].startswith("progress: 2/4 files (50%, 2.0 KB of 4.0 KB), 10 stories parsed, 5 enriched, 0 errors;")
  assert re.search(r"ETA \d+s$", lines[-1])  # a quarter done after ~10 s: about 30 s to go


def test_progress_counts_what_the_enrichment_stage_reads_and_prints_while_nothing_passes():
  import time

  from pipelines.progress import Progress
  from transforms import enrich

  lines = []
  progress = Progress(files=1, size=100, enriching=True, every_seconds=0.05, printer=lines.append)
  progress.begin()
  try:
    time.sleep(0.3)
    assert lines == []  # nothing counted in this process (its workers are elsewhere): nothing to say
    progress.add("stories", 4)
    enrich._through(3)
    time.sleep(0.5)  # nothing passes: the line is printed all the same
    assert progress.counts["enriched"] == 3 and len(lines) >= 3, lines
    assert "4 stories parsed, 3 enriched" in lines[-1]
  finally:
    progress.end()
  printed = len(lines)
  enrich._through(1)
  time.sleep(0.2)
  assert progress.counts["enriched"] == 3 and len(lines) == printed  # ended: deaf and quiet


def test_a_run_prints_progress_with_the_total(tmp_path, capsys):
  assert _run("--input", str(SEEDS), "--output", str(tmp_path / "lake"), "--stages", "none",
              "--progress-seconds", "0.001") == 0
  err = capsys.readouterr().err
  assert re.search(r"progress: \d/6 files \(\d+%, .* of .*\).*ETA", err), err


def test_model_export_is_announced_once(tmp_path, monkeypatch, capsys):
  import argparse

  from pipelines.common import ALL_STAGES, prepare_models
  from transforms import onnx_backend as ob

  monkeypatch.setenv("WIRESTREAM_CACHE", str(tmp_path))
  exported = []

  def fake_export(ner, topics, share=True):
    target = ob.cache_root() / ob.cache_key(ner, topics, share)
    target.mkdir(parents=True)
    (target / ob.META_FILE).write_text("{}")
    exported.append(target)
    return target

  monkeypatch.setattr(ob, "ensure_exported", fake_export)
  args = argparse.Namespace(stages=ALL_STAGES, inference_backend="onnx", ner_model=None, topics_model=None)
  prepare_models(args, "wirestream run")
  assert "exporting them to ONNX once" in capsys.readouterr().err and len(exported) == 1
  prepare_models(args, "wirestream run")
  assert capsys.readouterr().err == "" and len(exported) == 1


def test_library_warnings_are_hidden_unless_verbose():
  code = ("import logging, sys, warnings\nfrom pipelines.cli import configure_output\n"
          "configure_output(sys.argv[1] == 'v')\n"
          "logging.getLogger('onnxruntime').warning('pre-processing before quantization')\n"
          "logging.getLogger('pipelines.x').warning('ours')\n"
          "warnings.warn_explicit('lib note', UserWarning, 'x.py', 1, module='torch.onnx')\n")
  quiet = subprocess.run([sys.executable, "-c", code, "q"], env=ENV, capture_output=True, text=True, cwd=REPO)
  loud = subprocess.run([sys.executable, "-c", code, "v"], env=ENV, capture_output=True, text=True, cwd=REPO)
  assert "ours" in quiet.stderr and "quantization" not in quiet.stderr and "lib note" not in quiet.stderr
  assert "ours" in loud.stderr and "quantization" in loud.stderr and "lib note" in loud.stderr


def test_csv_writes_nested_values_as_json(tmp_path, capsys):
  lake = tmp_path / "lake"
  assert _run("--input", str(SEEDS / "004_newsml_g2_rates.xml"), "--output", str(lake), "--stages", "none") == 0
  capsys.readouterr()
  assert main(["query", "--lake", str(lake), "--format", "csv",
               "SELECT source_subjects, {'a': 1, 'b': [2, 3]} AS s FROM events"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "source_subjects,s"
  assert lines[1] == '"[""medtop:20000350""]","{""a"": 1, ""b"": [2, 3]}"'


# --------------------------------------------------------------------------- the README, literally


def _readme_block(heading_text: str) -> list[str]:
  readme = (REPO / "README.md").read_text()
  after = readme[readme.index(heading_text):]
  block = re.search(r"```sh\n(.*?)```", after, re.S).group(1)
  return [line for line in block.splitlines() if line.strip()]


def test_readme_examples_run_as_written(tmp_path):
  shutil.copytree(SEEDS, tmp_path / "seeds")
  lines = _readme_block("Try it (the tests run exactly these lines")
  assert lines and all(line.startswith("wirestream ") for line in lines)
  outputs = []
  for line in lines:
    result = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                            timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (line, result.stderr[-3000:])
    assert "Traceback" not in result.stderr and "WARNING" not in result.stderr, (line, result.stderr)
    outputs.append(result.stdout)
  assert "(7 rows)" in outputs[2]
  assert outputs[3].splitlines() == ["headline,source_subjects",
                                     '"ECB cuts deposit rate by quarter point, keeps options open","[""medtop:20000350""]"']
  assert "(0 rows)" in outputs[4]
  assert (tmp_path / "views.sql").read_text().strip() == query.views_sql("lake")


# --------------------------------------------------------------------------- values checked before anything is written


@pytest.mark.parametrize("argv, message", [
    (["--ner-model", "nosuch/model"], "error: NER model 'nosuch/model' is neither a local directory nor"),
    (["--topics-model", "nosuch/model"], "error: Topic model 'nosuch/model' is neither a local directory nor"),
    (["--ner-model", "./no/such/dir"], "error: NER model directory not found: ./no/such/dir"),
    (["--topics-taxonomy", "nosuch.csv"], "error: --topics-taxonomy 'nosuch.csv': no such file"),
    (["--runner", "Foo"], "error: unknown --runner 'Foo'"),
    (["--runner=DirectRuner"], "(did you mean DirectRunner?)"),
    (["--runner", "no_such_module.Runner"], "error: --runner 'no_such_module.Runner' cannot be loaded"),
    (["--runner", "DataflowRunner"], "error: --runner DataflowRunner: Pipeline has validations errors: "),
    (["--runner", "DataflowRunner"], "Missing required option: project. Missing required option: region."),
])
def test_wrong_values_stop_before_anything_is_written(tmp_path, argv, message):
  """One `error:` line and exit 2, not a traceback; the lake (not even its folder) is not created."""
  lake = tmp_path / "lake"
  done = _cli("run", "--input", str(SEEDS), "--output", str(lake), *argv)
  assert done.returncode == 2, done.stderr
  assert "Traceback" not in done.stderr
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("wirestream run: error: ") and message in lines[0], done.stderr
  assert not lake.exists()


def test_a_model_directory_without_its_weights_is_refused(tmp_path, capsys):
  from transforms import assets

  head = tmp_path / "topics"
  head.mkdir()
  shutil.copy(assets.TOPICS_DIR / "topic_head.json", head)
  assert _run("--input", str(SEEDS), "--output", str(tmp_path / "lake"), "--stages", "topics",
              "--topics-model", str(head)) == 2
  err = capsys.readouterr().err
  assert "error: model file(s) missing: " in err and str(head / "topic_head.safetensors") in err, err
  assert not (tmp_path / "lake").exists()


def test_a_directory_that_is_not_a_model_is_refused(tmp_path, capsys):
  model = tmp_path / "ner"
  model.mkdir()
  (model / "config.json").write_text("{}")
  assert _run("--input", str(SEEDS), "--output", str(tmp_path / "lake"), "--stages", "ner",
              "--ner-model", str(model)) == 2
  assert "error: --ner-model: not a usable model (KeyError: 'id2label')" in capsys.readouterr().err
  assert not (tmp_path / "lake").exists()


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_progress_seconds_must_be_positive(tmp_path, capsys, value):
  with pytest.raises(SystemExit) as stop:
    _run("--input", str(SEEDS), "--output", str(tmp_path / "lake"), "--progress-seconds", value)
  assert stop.value.code == 2 and "argument --progress-seconds:" in capsys.readouterr().err
  assert not (tmp_path / "lake").exists()


def test_a_directory_of_subfolders_only_names_them(tmp_path, capsys):
  src = tmp_path / "in"
  for name in ("a", "b", ".hidden"):
    (src / name).mkdir(parents=True)
    shutil.copy(SEEDS / "000_2caeb3c1602a667c.txt", src / name)
  assert _run("--input", str(src), "--output", str(tmp_path / "lake"), "--stages", "none") == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"wirestream run: error: input {str(src)!r} matches no files; 2 subfolder(s) not read "
                 f"({src / 'a'}, {src / 'b'}); a directory means the files directly in it: add "
                 f"'{src / '**'}' to read every level"]
  assert not (tmp_path / "lake").exists()
  # An empty directory has nothing to suggest.
  (tmp_path / "empty").mkdir()
  assert _run("--input", str(tmp_path / "empty"), "--output", str(tmp_path / "lake"), "--stages", "none") == 2
  assert capsys.readouterr().err.strip() == f"wirestream run: error: input {str(tmp_path / 'empty')!r} matches no files"
