"""Topic evaluation on real labelled news: the HuffPost mapping, the dev splits, the top-1 metrics and
``eval topics`` on the dev parts."""

from __future__ import annotations

import collections
import csv
import json
from pathlib import Path

import pytest

from pipelines.training import metrics
from pipelines.training import topics_data as td

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
HUFFPOST = DATA / "huffpost" / "headlines.jsonl"
AG = DATA / "ag_news" / "train_union.csv"
IPTC = DATA / "iptc_mediatopics" / "mediatopic_en-GB_flat.csv"

ARTS, CRIME, ECONOMY, SPORT, POLITICS, TECH = (td.medtop(n) for n in (1, 2, 4, 15, 11, 13))
HUFFPOST_CATEGORIES = (
    "POLITICS", "WELLNESS", "ENTERTAINMENT", "TRAVEL", "STYLE & BEAUTY", "PARENTING", "HEALTHY LIVING",
    "QUEER VOICES", "FOOD & DRINK", "BUSINESS", "COMEDY", "SPORTS", "BLACK VOICES", "HOME & LIVING",
    "PARENTS", "THE WORLDPOST", "WEDDINGS", "WOMEN", "IMPACT", "DIVORCE", "CRIME", "MEDIA", "WEIRD NEWS",
    "GREEN", "WORLDPOST", "RELIGION", "STYLE", "SCIENCE", "WORLD NEWS", "TASTE", "TECH", "MONEY", "ARTS",
    "FIFTY", "GOOD NEWS", "ARTS & CULTURE", "ENVIRONMENT", "COLLEGE", "LATINO VOICES", "CULTURE & ARTS",
    "EDUCATION")

needs_data = pytest.mark.skipif(not HUFFPOST.is_file() or not AG.is_file(), reason="no ../shared/data")


# --- the reviewed HuffPost mapping -------------------------------------------------------------------


def test_huffpost_mapping_covers_the_41_categories_with_real_roots():
  assert len(HUFFPOST_CATEGORIES) == 41
  assert set(td.HUFFPOST_TOPICS) == set(HUFFPOST_CATEGORIES)
  assert {code for code in td.HUFFPOST_TOPICS.values() if code is not None} <= set(td.CODES)
  assert set(td.HUFFPOST_CHANGES) <= set(td.HUFFPOST_TOPICS)
  assert td.HUFFPOST_TOPICS["STYLE"] == td.HUFFPOST_TOPICS["STYLE & BEAUTY"] == ARTS
  assert td.HUFFPOST_TOPICS["THE WORLDPOST"] is None


@needs_data
def test_every_change_from_the_proposed_mapping_has_a_reason():
  proposed = {}
  with open(HUFFPOST, encoding="utf-8") as handle:
    for line in handle:
      row = json.loads(line)
      proposed[row["source_category"]] = row["iptc_proposed"]
  assert set(proposed) == set(td.HUFFPOST_TOPICS)
  changed = {name for name, code in td.HUFFPOST_TOPICS.items() if proposed[name] != code}
  assert changed == set(td.HUFFPOST_CHANGES)


@pytest.mark.skipif(not IPTC.is_file(), reason="no ../shared/data")
def test_changed_categories_cite_concepts_under_the_chosen_root():
  with open(IPTC, newline="", encoding="utf-8") as handle:
    broader = {row["qcode"]: row["broader"] for row in csv.DictReader(handle)}

  def root(code: str) -> str:
    while broader.get(code):
      code = broader[code]
    return code

  for name, reason in td.HUFFPOST_CHANGES.items():
    for concept in (word.strip("(),:;") for word in reason.split() if word.startswith("(medtop:")):
      assert root(concept) == td.HUFFPOST_TOPICS[name], (name, concept)


# --- the split ---------------------------------------------------------------------------------------


def test_text_key_joins_repeats_that_differ_in_case_quotes_and_spacing():
  assert td.text_key("The 20 Funniest Tweets  From Women — This Week!") == \
      td.text_key("the 20 funniest tweets from women this week")
  assert td.text_key("cup 's") == td.text_key("Cup's") == "cup s"
  assert td.text_key("a b") != td.text_key("ab")


def test_stratified_split_is_deterministic_stratified_and_order_free():
  keys = [f"{stratum}-{i}" for stratum in "abc" for i in range({"a": 100, "b": 50, "c": 10}[stratum])]
  strata = [key[0] for key in keys]
  dev = td.stratified_split(keys, strata, 0.2)
  counts = collections.Counter(key[0] for key in dev)
  assert counts == {"a": 20, "b": 10, "c": 2}
  assert td.stratified_split(keys[::-1], strata[::-1], 0.2) == dev
  assert td.stratified_split(keys + keys[:30], strata + strata[:30], 0.2) == dev
  # the hash decides, not the position: the dev keys are not simply the first ones
  assert dev != {f"a-{i}" for i in range(20)} | {f"b-{i}" for i in range(10)} | {"c-0", "c-1"}


def _write_huffpost(path: Path, per_category: int = 50) -> None:
  lines = []
  for c, category in enumerate(HUFFPOST_CATEGORIES):
    for i in range(per_category):
      lines.append({"text": f"headline {i} of category {c}", "source_category": category,
                    "iptc_proposed": None})
  # a recurring headline, repeated with different casing and spacing
  lines += [{"text": t, "source_category": "ENVIRONMENT", "iptc_proposed": None}
            for t in ("extreme weather photos of the week", "Extreme  weather photos of the week") * 6]
  path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def test_huffpost_split_dedups_and_keeps_repeats_on_one_side(tmp_path):
  path = tmp_path / "headlines.jsonl"
  _write_huffpost(path)
  train, dev = td.split_huffpost(path, 0.2)
  texts = [row.text for row in train + dev]
  assert len(texts) == len({td.text_key(t) for t in texts})  # one row per repeat group
  mapped = [c for c in HUFFPOST_CATEGORIES if td.HUFFPOST_TOPICS[c]]
  assert len(train) + len(dev) == 50 * len(mapped) + 1
  assert not {row.group for row in train + dev} - set(mapped)
  per_category = collections.Counter(row.group for row in dev)
  assert per_category["POLITICS"] == 10 and per_category["TECH"] == 10
  assert all(row.labels == (td.HUFFPOST_TOPICS[row.group],) == (row.main,) for row in dev)
  again = td.split_huffpost(path, 0.2)
  assert [r.text for r in again[1]] == [r.text for r in dev]


def test_huffpost_split_rejects_an_unmapped_category(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text(json.dumps({"text": "x", "source_category": "NEW DESK"}) + "\n", encoding="utf-8")
  with pytest.raises(ValueError, match="NEW DESK"):
    td.split_huffpost(path)


def _write_ag(path: Path) -> None:
  rows = [(label, f"story number {i} about class {label} and more words") for label in (1, 2, 3, 4)
          for i in range(200)]
  rows += [(2, "Repeat Story: the same match report"), (2, "repeat story the same match report")] * 3
  rows += [(3, "Conflicting labels here"), (4, "conflicting labels here")]
  with open(path, "w", newline="", encoding="utf-8") as handle:
    writer = csv.writer(handle)
    writer.writerow(["label", "label_name", "text"])
    for label, text in rows:
      writer.writerow([label, td.AG_NAMES[label], text])


def test_ag_split_stays_inside_the_former_holdout_and_is_stratified(tmp_path):
  path = tmp_path / "ag.csv"
  _write_ag(path)
  train, dev = td.split_ag(path, 0.05)
  assert all(td.is_dev(text) for text, _ in dev)
  assert collections.Counter(label for _, label in dev) == {1: 10, 2: 10, 3: 10, 4: 10}
  keys = [td.text_key(text) for text, _ in train + dev]
  assert len(keys) == len(set(keys)) == 4 * 200 + 1  # the repeat once, the conflicting pair dropped
  assert not any(td.text_key(text) == "conflicting labels here" for text, _ in train + dev)
  train_examples, dev_examples = td.load_ag(path, 0.05)
  assert [e.text for e in dev_examples] == [text for text, _ in dev]
  assert len(train_examples) == len(train)
  rows = td.ag_labelled(dev)
  world = [row for row in rows if row.group == "World"]
  assert world and all(row.main is None and row.labels == td.WORLD_ALLOWED for row in world)


@needs_data
def test_real_dev_parts_never_share_a_repeat_with_training():
  for train, dev in (td.split_huffpost(HUFFPOST),
                     tuple(td.ag_labelled(part) for part in td.split_ag(AG))):
    train_keys = {td.text_key(row.text) for row in train}
    assert not train_keys & {td.text_key(row.text) for row in dev}
    assert 0.08 < len(dev) / (len(train) + len(dev)) < 0.13
  _, huffpost_dev = td.split_huffpost(HUFFPOST)
  sizes = collections.Counter(row.group for row in huffpost_dev)
  assert len(sizes) == sum(code is not None for code in td.HUFFPOST_TOPICS.values())
  assert min(sizes.values()) >= 100 and max(sizes.values()) == 108


@needs_data
def test_ag_dev_part_was_held_out_from_the_shipped_head():
  """Every copy of every AG dev row is in the 10% that the shipped head was trained without."""
  _, dev = td.split_ag(AG)
  dev_keys = {td.text_key(text) for text, _ in dev}
  with open(AG, newline="", encoding="utf-8") as handle:
    for row in csv.DictReader(handle):
      text = td.clean_ag_text(row["text"])
      if td.text_key(text) in dev_keys:
        assert td.is_dev(text)


# --- metrics -----------------------------------------------------------------------------------------


def test_top1_topic_report_exact_values():
  top = [SPORT, SPORT, ECONOMY, POLITICS, TECH, POLITICS]
  gold = [(SPORT,), (ECONOMY,), (ECONOMY, POLITICS), (ECONOMY,), (TECH,), (CRIME, POLITICS)]
  main = [SPORT, ECONOMY, POLITICS, ECONOMY, TECH, None]
  report = metrics.top1_topic_report(top, gold, main, groups=["s", "b", "b", "b", "t", "w"])
  assert report["n"] == 6 and report["n_main"] == 5
  assert report["top1_accuracy"] == 0.4  # sport, tech right; the budget story's top-1 is its second topic
  assert report["top1_in_gold"] == pytest.approx(4 / 6, abs=1e-4)
  assert report["per_label"][SPORT] == {"precision": 0.5, "recall": 1.0, "support": 1, "predicted": 2}
  assert report["per_label"][ECONOMY] == {"precision": 1.0, "recall": 0.0, "support": 2, "predicted": 1}
  assert report["per_label"][POLITICS] == {"precision": 0.5, "recall": 0.0, "support": 1, "predicted": 2}
  assert report["per_label"][TECH] == {"precision": 1.0, "recall": 1.0, "support": 1, "predicted": 1}
  assert report["confusions"] == [[ECONOMY, POLITICS, 1], [ECONOMY, SPORT, 1]]
  assert report["by_group"]["b"] == {"n": 3, "top1_in_gold": pytest.approx(1 / 3, abs=1e-4),
                                     "top": [(ECONOMY, 1), (POLITICS, 1), (SPORT, 1)]}


def test_top1_topic_report_scores_the_topics_each_row_gets():
  top = [SPORT, ECONOMY, POLITICS, POLITICS]
  gold = [(SPORT,), (ECONOMY, POLITICS), (ECONOMY,), (CRIME, POLITICS)]
  main = [SPORT, ECONOMY, ECONOMY, None]
  topics = [[SPORT, ECONOMY], [ECONOMY, POLITICS], [POLITICS], [POLITICS, CRIME]]
  report = metrics.top1_topic_report(top, gold, main, topics=topics)
  assert report["main_in_topics"] == pytest.approx(2 / 3, abs=1e-4)  # the third row misses economy
  assert report["mean_topics_per_text"] == 1.75
  economy = report["per_label"][ECONOMY]
  assert economy["recall"] == 0.5 and economy["in_topics_recall"] == 0.5
  assert economy["in_topics"] == 2 and economy["in_topics_precision"] == 0.5  # the sport row does not carry it
  politics = report["per_label"][POLITICS]
  assert politics["in_topics"] == 3 and politics["in_topics_precision"] == pytest.approx(2 / 3, abs=1e-4)
  assert politics["in_topics_recall"] is None and politics["support"] == 0
  assert report["per_label"][CRIME] == {"precision": None, "recall": None, "support": 0, "predicted": 0,
                                        "in_topics_recall": None, "in_topics_precision": 1.0, "in_topics": 1}
  with pytest.raises(ValueError):
    metrics.top1_topic_report(top, gold, main, topics=topics[:3])
  assert "main_in_topics" not in metrics.top1_topic_report(top, gold, main)


def test_top1_topic_report_names_set_rows_by_group_and_counts_confusions():
  top = [ARTS, ARTS, ARTS, SPORT]
  gold = [(POLITICS, CRIME)] * 3 + [(SPORT,)]
  report = metrics.top1_topic_report(top, gold, [None, None, None, SPORT], groups=["World"] * 3 + ["Sports"],
                                     confusions=1)
  assert report["top1_accuracy"] == 1.0 and report["top1_in_gold"] == 0.25
  assert report["confusions"] == [["World", ARTS, 3]]
  assert report["per_label"][ARTS] == {"precision": 0.0, "recall": None, "support": 0, "predicted": 3}
  with pytest.raises(ValueError):
    metrics.top1_topic_report(top, gold[:2], [None, None])


# --- the command -------------------------------------------------------------------------------------


def test_eval_command_on_tiny_huffpost_and_ag_dev_parts(tmp_path, capsys):
  pytest.importorskip("torch")
  from pipelines.training import eval_topics

  huffpost = tmp_path / "headlines.jsonl"
  rows = [{"text": f"the team won the cup final {i} to nil", "source_category": "SPORTS"} for i in range(8)]
  rows += [{"text": f"shares fell {i}% after the bank cut its profit forecast", "source_category": "BUSINESS"}
           for i in range(8)]
  rows += [{"text": "a recurring headline", "source_category": "WOMEN"}]
  huffpost.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  ag = tmp_path / "ag.csv"
  _write_ag(ag)
  assert eval_topics.main(["--huffpost", str(huffpost), "--huffpost-dev-fraction", "0.25",
                           "--ag", str(ag), "--ag-dev-fraction", "0.01", "--threads", "1"]) == 0
  lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
  assert len(lines) == 2
  huff, ag_report = lines
  assert huff["n"] == 4 and huff["n_main"] == 4 and "lower-cased" in huff["note"]
  assert set(huff["by_group"]) == {"SPORTS", "BUSINESS"}
  assert huff["per_label"][SPORT]["support"] == 2 and huff["per_label"][ECONOMY]["support"] == 2
  assert {"top1_accuracy", "top1_in_gold", "confusions", "per_label", "model", "main_in_topics"} <= set(huff)
  assert huff["main_in_topics"] >= huff["top1_accuracy"]  # the top topic is always among a text's topics
  assert huff["mean_topics_per_text"] >= 1 and "in_topics_recall" in huff["per_label"][SPORT]
  assert ag_report["n"] == 8 and ag_report["n_main"] == 6
  assert set(ag_report["by_group"]) == {"World", "Sports", "Business", "Sci/Tech"}


def test_eval_command_needs_some_data():
  from pipelines.training import eval_topics

  with pytest.raises(SystemExit):
    eval_topics.main(["--threads", "1"])


def test_huffpost_training_rows_come_from_the_train_part_only(tmp_path):
  path = tmp_path / "headlines.jsonl"
  _write_huffpost(path)
  train, dev = td.split_huffpost(path, 0.2)
  examples = td.huffpost_examples(train)
  assert [e.text for e in examples] == [row.text for row in train]
  assert not {e.text for e in examples} & {row.text for row in dev}
  sport = next(e for e in examples if e.label == "SPORTS")
  assert sport.source == "huffpost" and sport.target[td.INDEX[SPORT]] == 1.0 and sport.target.sum() == 1.0


def test_huffpost_training_rows_of_chosen_roots_can_be_left_out(tmp_path):
  from pipelines.training import train_topics as tt

  path = tmp_path / "headlines.jsonl"
  _write_huffpost(path)
  train, _ = td.split_huffpost(path)
  every = td.huffpost_examples(train)
  skipped = tt.topic_codes("15,medtop:04000000")
  assert skipped == [SPORT, "medtop:04000000"]
  fewer = td.huffpost_examples(train, skipped)
  left_out = {e.label for e in every} - {e.label for e in fewer}
  assert left_out == {"SPORTS", "BUSINESS", "MONEY"}
  assert [e.text for e in fewer] == [e.text for e in every if e.label not in left_out]


def test_topics_reference_fine_tunes_the_whole_encoder_and_learns_the_dev_part(tmp_path, capsys):
  pytest.importorskip("torch")
  from pipelines.training import reference_topics

  huffpost = tmp_path / "headlines.jsonl"
  rows = [{"text": f"the {team} won the cup final {i} to nil", "source_category": "SPORTS"}
          for i, team in enumerate(["reds", "blues", "city", "united", "rovers", "wanderers"] * 2)]
  rows += [{"text": f"shares in {firm} fell {i}% after the bank cut its profit forecast",
            "source_category": "BUSINESS"}
           for i, firm in enumerate(["acme", "globex", "initech", "umbrella", "hooli", "vandelay"] * 2)]
  huffpost.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  assert reference_topics.main(["--huffpost", str(huffpost), "--huffpost-dev-fraction", "0.25",
                                "--epochs", "3", "--lr", "1e-4", "--batch-size", "4", "--min-support", "2",
                                "--threads", "1"]) == 0
  lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
  assert [line["epoch"] for line in lines[:-1]] == [1, 2, 3]
  report = lines[-1]
  assert report["n"] == 6 and set(report["by_group"]) == {"SPORTS", "BUSINESS"}
  assert report["per_label"][SPORT]["support"] == 3 and report["per_label"][ECONOMY]["support"] == 3
  assert report["top1_accuracy"] == 1.0 and report["lowest_recall"] == 1.0  # two plain desks, learnt
  assert "18 rows" in report["reference"] and report["epochs"] == 3


def test_lowest_recall_counts_only_roots_with_enough_support():
  from pipelines.training import reference_topics

  report = {"per_label": {SPORT: {"recall": 0.9, "support": 300}, ECONOMY: {"recall": 0.4, "support": 10},
                          ARTS: {"recall": None, "support": 0}}}
  assert reference_topics.lowest_recall(report, 200) == 0.9
  assert reference_topics.lowest_recall(report, 5) == 0.4
  assert reference_topics.lowest_recall(report, 500) is None
