"""Topic classification: label mapping, loss, windowing/pooling, the Beam stage, eval, loaders, training."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = REPO / "tests" / "fixtures"
SEED_STORY = REPO / "seeds" / "000_2caeb3c1602a667c.txt"

torch = pytest.importorskip("torch")

from pipelines.training import encoder as te  # noqa: E402
from pipelines.training import metrics  # noqa: E402
from pipelines.training import topics_data as td  # noqa: E402
from pipelines.training import train_topics as tt  # noqa: E402
from schemas.records import Story  # noqa: E402
from transforms import (  # noqa: E402
  assets,  # noqa: E402
  core,
  decode,
  enrich,
)
from transforms import topics_model as tm  # noqa: E402

SPORT = "medtop:15000000"
POLITICS = "medtop:11000000"
CONFLICT = "medtop:16000000"

SPORT_STORY = (
    "Arsenal beat Chelsea 3-1 to go top of the Premier League. Two goals from the striker in the second "
    "half settled the match at the Emirates Stadium, and the manager praised his defence. Chelsea's "
    "coach said his players had been tired after their Champions League game in midweek.")


def _story(body: str, *, story_id: str = "s1", language: str | None = "en", headline: str | None = None) -> Story:
  return Story(story_id=story_id, version=1, body=body, source_format="plain", input_uri="mem://" + story_id,
               locator="", raw_sha256="0" * 64, ingested_at=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
               headline=headline, language=language)


# --- Label mapping and loss -------------------------------------------------------------------------


def test_ag_single_topic_mapping():
  target, weight, any_of = td.ag_target(2)  # Sports
  assert td.CODES[int(np.argmax(target))] == SPORT and target.sum() == 1
  assert weight[td.INDEX[SPORT]] == 1 and weight[td.INDEX["medtop:04000000"]] == 1
  assert weight[td.INDEX[POLITICS]] == pytest.approx(td.SOFT_NEGATIVE)
  assert not any_of.any()
  assert td.ag_allowed(3) == ("medtop:04000000",) and td.ag_allowed(4) == ("medtop:13000000",)


def test_ag_world_is_a_set_valued_label():
  target, weight, any_of = td.world_target()
  assert target.sum() == 0
  excluded = {td.CODES[i] for i in np.flatnonzero(weight)}
  assert excluded == {"medtop:01000000", "medtop:04000000", "medtop:10000000", "medtop:13000000", SPORT}
  allowed = {td.CODES[i] for i in np.flatnonzero(any_of)}
  assert allowed == set(td.WORLD_ALLOWED) and len(allowed) == 12
  assert POLITICS in allowed and CONFLICT in allowed and not allowed & excluded


def test_noisy_or_loss_rewards_any_allowed_topic():
  target, weight, any_of = (torch.tensor(v)[None] for v in td.world_target())
  politics = torch.full((1, 17), -6.0)
  politics[0, td.INDEX[POLITICS]] = 6.0
  sport = torch.full((1, 17), -6.0)
  sport[0, td.INDEX[SPORT]] = 6.0
  good = float(tt.partial_label_loss(politics, target, weight, any_of))
  bad = float(tt.partial_label_loss(sport, target, weight, any_of))
  assert good < 0.05 < 5 < bad


def test_clean_ag_text_and_fixed_dev_split():
  raw = "Stocks rise (Reuters) Reuters - Oil fell\\to #36;46 a barrel, quot;weak quot; &lt;b&gt;demand&lt;/b&gt;"
  assert tt.td.clean_ag_text(raw) == 'Stocks rise (Reuters) Reuters - Oil fell to $46 a barrel, "weak " demand'
  texts = [f"story number {i}" for i in range(2000)]
  dev = [t for t in texts if td.is_dev(t)]
  assert 120 < len(dev) < 280 and dev == [t for t in texts if td.is_dev(t)]


def test_iptc_definitions_become_root_examples():
  examples = td.load_iptc(FIXTURES / "topics_iptc_tiny.csv")
  by_text = {e.text.split(".")[0]: e for e in examples}
  assert "Retired example" not in by_text  # retired concepts are left out
  music = by_text["Music"]
  assert td.CODES[int(np.argmax(music.target))] == "medtop:01000000" and music.source == "iptc"
  assert by_text["Election"].label == POLITICS


@pytest.mark.parametrize("secondary", [1.0, 0.6])
def test_seed_texts_rank_their_first_topic_first(tmp_path, secondary):
  path = tmp_path / "seed.jsonl"
  path.write_text(json.dumps({"text": "Ministers defend the tax rise.", "labels": [POLITICS, "medtop:04000000"]})
                  + "\n\n" + json.dumps({"text": "Club debts rise.", "labels": ["medtop:04000000"]}) + "\n")
  tax, club = td.load_seed(path, secondary_target=secondary)
  economy, sport = td.INDEX["medtop:04000000"], td.INDEX["medtop:15000000"]
  assert tax.target[td.INDEX[POLITICS]] == 1.0 and tax.target[economy] == secondary
  assert tax.weight[economy] == 1.0 and tax.weight[sport] == 1.0  # sport: a sure negative
  assert club.target[economy] == 1.0 and club.target.sum() == 1.0 and tax.source == "seed"


def test_seed_negatives_are_configurable(tmp_path):
  path = tmp_path / "seed.jsonl"
  path.write_text(json.dumps({"text": "Ministers defend the tax rise.", "labels": [POLITICS, "medtop:04000000"]})
                  + "\n")
  arts = td.INDEX["medtop:01000000"]
  (default,) = td.load_seed(path)
  (wider,) = td.load_seed(path, negatives=td.SEED_NEGATIVES + ("medtop:01000000", POLITICS))
  assert default.weight[arts] == td.SOFT_NEGATIVE and wider.weight[arts] == 1.0 and wider.target[arts] == 0.0
  assert wider.target[td.INDEX[POLITICS]] == 1.0  # a named topic is never a negative


def test_lowered_copies_are_a_seeded_share_with_the_same_targets():
  rows = [td.Example(f"Story {i} about Apple and the FED", *td.single_topic_target("medtop:04000000", []), "ag",
                     "Business") for i in range(10)]
  copies = tt.lowered_copies(rows, 0.3, seed=7)
  assert len(copies) == 3 and [c.text for c in copies] == [c.text for c in tt.lowered_copies(rows, 0.3, seed=7)]
  assert {c.text for c in copies} != {c.text for c in tt.lowered_copies(rows, 0.3, seed=8)}
  for copy in copies:
    original = rows[int(copy.text.split()[1])]
    assert copy.text == original.text.lower() and copy.source == "ag" and copy.label == "Business"
    assert np.array_equal(copy.target, original.target) and np.array_equal(copy.weight, original.weight)
  assert rows[0].text.startswith("Story 0 about Apple")  # the originals keep their case
  assert tt.lowered_copies(rows, 0.0, seed=7) == [] and len(tt.lowered_copies(rows, 2.0, seed=7)) == 10


def test_reuters_tags_map_to_economy(tmp_path):
  body = "The company said first quarter net profit rose to 12 mln dlrs from nine mln dlrs a year ago. " * 4
  sgm = (f'<REUTERS TOPICS="YES" NEWID="1"><TOPICS><D>earn</D></TOPICS><TEXT><TITLE>ACME PROFIT UP</TITLE>'
         f'<BODY>{body} Reuter\n&#3;</BODY></TEXT></REUTERS>\n'
         f'<REUTERS TOPICS="YES" NEWID="2"><TOPICS><D>jobs</D></TOPICS><TEXT><TITLE>JOBLESS RATE FALLS</TITLE>'
         f'<BODY>{body}</BODY></TEXT></REUTERS>\n'
         f'<REUTERS TOPICS="NO" NEWID="3"><TOPICS></TOPICS><TEXT><BODY>{body}</BODY></TEXT></REUTERS>')
  (tmp_path / "reut2-000.sgm").write_text(sgm, encoding="latin-1")
  examples = td.load_reuters(tmp_path)
  assert len(examples) == 2
  jobs = [e for e in examples if e.label == "jobs"][0]
  assert {td.CODES[i] for i in np.flatnonzero(jobs.target)} == {"medtop:04000000", "medtop:09000000"}
  assert examples[0].text.startswith("Acme Profit Up. ") and "Reuter" not in examples[0].text


def test_top1_report_counts_set_labels():
  scores = np.zeros((3, 17), np.float32)
  scores[0, td.INDEX[POLITICS]] = 0.9  # World row, politics: right
  scores[1, td.INDEX[SPORT]] = 0.9  # World row, sport: wrong
  scores[2, td.INDEX[SPORT]] = 0.8  # Sports row: right
  report = metrics.top1_report(scores, [td.WORLD_ALLOWED, td.WORLD_ALLOWED, (SPORT,)])
  assert report["top1_accuracy"] == pytest.approx(2 / 3, abs=1e-4) and report["n"] == 3
  assert report["per_label"][SPORT] == {"precision": 0.5, "recall": 1.0, "support": 1, "predicted": 2}


def test_calibration_error():
  assert metrics.expected_calibration_error(np.array([0.9, 0.9]), np.array([1, 0])) == pytest.approx(0.4)
  assert metrics.expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0])) == pytest.approx(0.0)


# --- The bundled model: windows, pooling, classification ---------------------------------------------


@pytest.fixture(scope="module")
def model():
  if not (tm.DEFAULT_MODEL_DIR / tm.HEAD_CONFIG).is_file():
    pytest.fail("the bundled topic model (transforms/assets/topics) is missing")
  return core.load(stages=("topics",), threads=1)


@pytest.fixture(scope="module")
def encoder():
  """The bundled head's encoder as training reads it."""
  config = json.loads((tm.DEFAULT_MODEL_DIR / tm.HEAD_CONFIG).read_text())
  return te.Encoder(config["encoder"], relative_to=tm.DEFAULT_MODEL_DIR)


def test_training_reads_long_articles_in_overlapping_windows(encoder):
  text = " ".join(f"Sentence {i} about the match." for i in range(400))
  windows = encoder.windows(text, max_length=128, stride=32)
  assert len(windows) > 10 and all(w.length <= 128 for w in windows)
  assert windows[0].start_char == 0 and windows[-1].end_char == len(text)
  for a, b in zip(windows, windows[1:], strict=False):
    assert b.start_char < a.end_char  # overlap, no gap
    assert a.ids[-32 - 1:-1] == b.ids[1:33]


def test_story_score_pools_all_windows(model):
  """A story made of a politics half and a sport half: its logits are the length-weighted mean of its
  rows' logits, so the second half counts, not only the first window."""
  politics = ("The prime minister called a general election after parliament rejected the budget. "
              "Opposition parties said voters would punish the government at the polls. ") * 8
  text = politics + SPORT_STORY * 6
  part = model.parts[0]
  rows = []
  real = part.backend.run

  def run(ids, types, mask):
    out = real(ids, types, mask)
    rows.extend(zip(out[1], mask.sum(1), strict=True))
    return out

  part.backend.run = run
  try:
    got = model([text])[0].topic_scores
  finally:
    part.backend.run = real
  assert len(rows) >= 3
  expected = decode.pool_topics([r for r, _ in rows], [n for _, n in rows])
  np.testing.assert_allclose(got, expected, atol=1e-6)
  assert got[td.INDEX[SPORT]] > model([politics])[0].topic_scores[td.INDEX[SPORT]] + 0.1


def test_features_of_several_windows_keep_their_text(encoder, tmp_path):
  """--seed-windows: a long text gives one feature row a window, each pointing back at its text."""
  long_text = " ".join(f"Sentence {i} about the match." for i in range(100))
  texts = ["A short story about a football match.", long_text]
  encoder.cache_key = "enc-test"
  cached = [tt.cached_features(encoder, texts, 3, 128, tmp_path, "seed", log=lambda _: None, max_windows=3)
            for _ in range(2)]  # extracted, then read back from the cache
  assert len(list(tmp_path.glob("*-L3-M128-W3-seed-*.npz"))) == 1
  for feats in cached:
    assert feats.owner.tolist() == [0, 1, 1, 1]
    windows = encoder.windows(long_text, 128, 32, max_windows=3)
    assert feats.lens.tolist() == [encoder.windows(texts[0])[0].length] + [w.length for w in windows]
  first = tt.extract_features(encoder, texts, 3, 128, log=lambda _: None)
  assert first.owner.tolist() == [0, 1] and first.lens[1] == cached[0].lens[1]
  np.testing.assert_array_equal(first.toks[first.offsets[1]:], cached[0].toks[cached[0].offsets[1]:cached[0].offsets[2]])


def test_topics_threshold_and_order():
  row = np.zeros(17, np.float32)
  row[td.INDEX[SPORT]] = 0.7
  row[td.INDEX[POLITICS]] = 0.9
  assert [t.code for t in decode.choose_topics(row, tm.IPTC_ROOTS, 0.5)] == [POLITICS, SPORT]
  row[:] = 0.1
  row[td.INDEX[CONFLICT]] = 0.2
  assert [t.code for t in decode.choose_topics(row, tm.IPTC_ROOTS, 0.5)] == [CONFLICT]  # at least the top one


# --- The Beam stage ---------------------------------------------------------------------------------


_COLLECTED: dict[str, list] = {}


class _CollectDoFn(beam.DoFn):
  """Keeps every element in _COLLECTED (the DirectRunner runs in this process)."""

  def __init__(self, name: str):
    self.name = name

  def process(self, element):
    _COLLECTED.setdefault(self.name, []).append(element)


def _run_stage(stories, **kwargs):
  """Run the topics stage on the DirectRunner (in process) and return (stories, dead letters)."""
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions

  _COLLECTED.clear()
  with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
    classified, errors = p | beam.Create(stories) | enrich.Enrich(stages=("topics",), **kwargs)
    _ = classified | "CollectStories" >> beam.ParDo(_CollectDoFn("stories"))
    _ = errors | "CollectErrors" >> beam.ParDo(_CollectDoFn("errors"))
  return list(_COLLECTED.get("stories", [])), list(_COLLECTED.get("errors", []))


def test_stage_classifies_skips_and_keeps_every_story():
  seed = SEED_STORY.read_text(encoding="utf-8")
  stories = [_story(SPORT_STORY, story_id="sport"), _story(seed, story_id="seed"),
             _story("Le gouvernement a présenté son budget mercredi.", story_id="fr", language="fr"),
             _story("   ", story_id="empty"),
             _story(SPORT_STORY, story_id="unknown-language", language=None)]
  out, errors = _run_stage(stories, threads=1)
  assert not errors
  by_id = {s.story_id: s for s in out}
  assert sorted(by_id) == sorted(s.story_id for s in stories) and len(out) == len(stories)
  sport = by_id["sport"]
  assert sport.topics_status == "applied" and sport.topics[0].code == SPORT
  assert sport.topics[0].label == "sport" and sport.topics_model.startswith("wirestream-topics")
  assert [t.score for t in sport.topics] == sorted((t.score for t in sport.topics), reverse=True)
  assert all(0.0 <= t.score <= 1.0 for t in sport.topics)
  assert by_id["seed"].topics[0].code in (POLITICS, CONFLICT)
  assert by_id["fr"].topics_status == "skipped_language" and by_id["fr"].topics is None
  assert by_id["empty"].topics_status == "skipped_empty"
  assert by_id["unknown-language"].topics[0].code == SPORT


def test_stage_failure_gives_dead_letter():
  class Broken(enrich.EnrichModelHandler):
    def load_model(self):
      return None

    def run_inference(self, batch, model, inference_args=None):
      raise RuntimeError("model exploded")

  stories = [_story(SPORT_STORY, story_id="a"), _story(SPORT_STORY, story_id="b")]
  out, errors = _run_stage(stories, handler=Broken(stages=("topics",)))
  assert sorted(s.story_id for s in out) == ["a", "b"]
  assert all(s.topics_status == "failed" and s.topics is None for s in out)
  assert sorted(e.story_id for e in errors) == ["a", "b"]
  assert {e.stage for e in errors} == {"topics"} and "model exploded" in errors[0].message


# --- eval command, HF loader, training smoke run -----------------------------------------------------


def test_eval_command_on_tiny_jsonl(tmp_path, capsys):
  from pipelines.training import eval_topics

  path = tmp_path / "tiny.jsonl"
  rows = [{"text": SPORT_STORY, "labels": [SPORT]},
          {"text": SEED_STORY.read_text(encoding="utf-8"), "labels": [POLITICS, CONFLICT]},
          {"text": "Shares in the bank fell 5% after it reported a drop in quarterly profit and cut its "
                   "dividend; analysts expect further losses on loans.", "labels": ["medtop:04000000"]}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert eval_topics.main(["--jsonl", str(path), "--threads", "1"]) == 0
  report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert report["n"] == 3 and report["top1_accuracy"] == pytest.approx(1.0)
  sport = report["per_label"][SPORT]
  assert {k: sport[k] for k in ("precision", "recall", "support", "predicted")} == {
      "precision": 1.0, "recall": 1.0, "support": 1, "predicted": 1}
  assert sport["in_topics_recall"] == 1.0 and report["main_in_topics"] == 1.0
  assert set(report["per_label"][POLITICS]) >= {"precision", "recall", "support", "in_topics_precision"}


def _tiny_hf_dir(tmp_path: Path, labels: list[str]) -> Path:
  import shutil

  from transformers import BertConfig, BertForSequenceClassification

  base = tm.base_model_dir()
  out = tmp_path / "tiny-hf"
  out.mkdir()
  for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
    if (base / name).is_file():
      shutil.copy(base / name, out / name)
  config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128, num_labels=len(labels),
                      id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)},
                      problem_type="multi_label_classification")
  torch.manual_seed(0)
  BertForSequenceClassification(config).save_pretrained(out)
  return out


def test_hf_model_loader_with_taxonomy(tmp_path):
  directory = _tiny_hf_dir(tmp_path, ["medtop:15000000", "politics", "other"])
  taxonomy = tmp_path / "taxonomy.csv"
  taxonomy.write_text("code,label\nmedtop:15000000,sport\nmedtop:11000000,politics\n")
  model = core.load(topics_ref=str(directory), stages=("topics",), taxonomy=str(taxonomy), threads=1)
  assert model.topics.labels == ((SPORT, "sport"), (POLITICS, "politics"), ("other", "other"))
  long_text = SPORT_STORY * 20  # more than one 128-position window
  scores = np.stack([r.topic_scores for r in model([SPORT_STORY, long_text])])
  assert scores.shape == (2, 3) and np.all((scores > 0) & (scores < 1))
  out, errors = _run_stage([_story(SPORT_STORY)], topics_model=str(directory), taxonomy=str(taxonomy))
  assert not errors and out[0].topics_status == "applied" and out[0].topics_model == "tiny-hf"
  assert {t.code for t in out[0].topics} <= {SPORT, POLITICS, "other"}


def test_train_refuses_an_evaluation_that_could_not_find_the_encoder_before_training(tmp_path, capsys):
  out = tmp_path / "scratch" / "topics"
  code = tt.main(["--ag", str(FIXTURES / "topics_ag_tiny.csv"), "--iptc", str(FIXTURES / "topics_iptc_tiny.csv"),
                  "--out", str(out), "--encoder-ref", "../ner", "--eval-jsonl", str(FIXTURES / "topics_bbcstyle_dev.jsonl"),
                  "--epochs", "1", "--threads", "1"])
  assert code == 2
  err = capsys.readouterr().err
  assert "--encoder-ref ../ner" in err and str(tmp_path / "scratch" / "ner") in err
  assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["default", "base"])
def test_train_smoke_run(tmp_path, capsys, encoder):
  out = tmp_path / "model"
  extra = ["--encoder", "base"] if encoder == "base" else []
  assert tt.main(["--ag", str(FIXTURES / "topics_ag_tiny.csv"), "--iptc", str(FIXTURES / "topics_iptc_tiny.csv"),
                  "--out", str(out), "--epochs", "1", "--batch-size", "8", "--threads", "1", "--seed", "3",
                  "--cache-dir", str(tmp_path / "cache"), *extra]) == 0
  printed = capsys.readouterr().out
  assert "AG dev top-1" in printed and "epoch 1/1" in printed and "World pseudo-labels" in printed
  config = json.loads((out / tm.HEAD_CONFIG).read_text())
  if encoder == "base":
    assert list((tmp_path / "cache").glob("base-L5-M128-agtrain-*.npz"))
    assert config["encoder"] == "base" and config["encoder_sha1"] is None and config["feature_layer"] == 5
  else:  # the bundled NER model's pass, named relative to the head's directory
    assert list((tmp_path / "cache").glob("enc-*-L3-M128-agtrain-*.npz"))
    assert (out / config["encoder"]).resolve() == assets.NER_DIR.resolve()
    assert config["encoder_sha1"] and config["feature_layer"] == 3 and config["casing_token_types"]
  assert len(config["labels"]) == 17 and config["temperature"] > 0
  written = json.loads((out / "metrics.json").read_text())
  assert written["ag_dev"]["n"] >= 1
  model = core.load(topics_ref=str(out), stages=("topics",), backend="torch", threads=1)
  assert model(["A short story about a football match."])[0].topic_scores.shape == (17,)
  assert (out / tm.HEAD_WEIGHTS).stat().st_size < 25 * 1024 * 1024


def test_head_layers_start_as_the_encoder_layers_they_replace():
  encoder = te.Encoder(te.BASE_ENCODER)
  args = {"hidden": 384, "heads": 12, "intermediate": 1536, "n_labels": 17, "layers": 2}
  head = tt.new_head(encoder, 3, args)
  assert len(head.layers) == 2
  for block, index in zip(head.layers, (3, 4), strict=True):
    bert = encoder.bert.encoder.layer[index]
    assert torch.equal(block.query.weight, bert.attention.self.query.weight)
    assert torch.equal(block.ffn_out.bias, bert.output.dense.bias)
  # More head layers than follow the feature layer: the last encoder layer again.
  head = tt.new_head(encoder, 5, args)
  last = encoder.bert.encoder.layer[5].output.LayerNorm.weight
  assert all(torch.equal(b.out_norm.weight, last) for b in head.layers)


def test_heads_of_one_and_two_layers_save_and_load(tmp_path):
  from safetensors.torch import load_file, save_file

  hidden = torch.randn(2, 9, 64)
  mask = torch.ones(2, 9, dtype=torch.long)
  mask[1, 6:] = 0
  config = {"encoder": "base", "feature_layer": 5, "labels": [list(x) for x in tm.IPTC_ROOTS[:3]]}
  outputs = {}
  for layers in (1, 2):
    torch.manual_seed(layers)
    head = tm.TopicHead(hidden=64, heads=4, intermediate=128, n_labels=3, layers=layers).eval()
    args = {"hidden": 64, "heads": 4, "intermediate": 128, "n_labels": 3, "layers": layers}
    tm.save_head(head, tmp_path / str(layers), {**config, "head": args})
    loaded, _ = tm.load_head(tmp_path / str(layers))
    assert len(loaded.layers) == layers
    with torch.inference_mode():
      outputs[layers] = loaded(hidden, mask)
      torch.testing.assert_close(outputs[layers], head.half().float()(hidden, mask), atol=1e-5, rtol=1e-4)
  assert not torch.allclose(outputs[1], outputs[2])
  # A head written before heads had several layers names its one layer "layer."
  path = tmp_path / "1" / tm.HEAD_WEIGHTS
  save_file({k.replace("layers.0.", "layer."): v for k, v in load_file(str(path)).items()}, str(path))
  old, _ = tm.load_head(tmp_path / "1")
  with torch.inference_mode():
    torch.testing.assert_close(old(hidden, mask), outputs[1])


def test_bundled_head_fits_its_encoder():
  """The head reads the hidden states of one exact encoder: a new NER model needs a retrained head."""
  config = json.loads((tm.DEFAULT_MODEL_DIR / tm.HEAD_CONFIG).read_text())
  if config["encoder"] == te.BASE_ENCODER:
    assert config.get("encoder_sha1") is None
    return
  encoder_dir = (tm.DEFAULT_MODEL_DIR / config["encoder"]).resolve()
  import hashlib

  digest = hashlib.sha1((encoder_dir / "model.safetensors").read_bytes()).hexdigest()
  assert digest == config["encoder_sha1"], (
      f"transforms/assets/topics was trained on another {encoder_dir.name} model: run wirestream train topics "
      f"--encoder {encoder_dir} --encoder-ref {config['encoder']}")
