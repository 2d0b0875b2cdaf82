"""Tests of the NER stage: windows, merging, offsets, language routing, loader, eval and training."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.training import conll
from schemas.records import (
  STATUS_APPLIED,
  STATUS_FAILED,
  STATUS_SKIPPED_EMPTY,
  STATUS_SKIPPED_LANGUAGE,
  Entity,
  Story,
)
from transforms import core, decode, enrich
from transforms import ner_model as nm
from transforms import spec as sp
from transforms import windows as wd

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY_CONLL = FIXTURES / "ner_tiny.conll"
DEFAULT_MODEL_READY = (nm.DEFAULT_MODEL_DIR / nm.WEIGHTS_FILE).is_file()

STORY = (
    "WASHINGTON (Reuters) - Rex Tillerson met Jim Mattis at the Pentagon on Tuesday.\n\n"
    "Yang Jiechi, China\u2019s top diplomat, said Beijing would work with Washington. "
    "The talks in Geneva were \u201cconstructive,\u201d said Ms. Ana Lopez of the United Nations.\n\n"
    "Caf\u00e9 owners in Z\u00fcrich were not consulted."
)


# --- A rule-based stand-in for the network (windows and merging must not depend on training) -----------


class CapitalisedIsPerson:
  """A rule backend: labels every capitalised piece PER, ``B`` after a non-capitalised piece *within the
  window*, else ``I``.

  Because the decision looks at the previous piece of the same window, a name cut by a core boundary
  is only joined when that window carries left context, which is what the overlap is for.
  """

  def __init__(self, max_window: int = 16, casing: bool = True) -> None:
    self.tokenizer = nm.load_fast_tokenizer(nm.base_model_dir())
    self.max_window = max_window
    self.casing = casing
    self.calls: list[tuple[int, int]] = []

  def predict(self, input_ids, token_types, attention_mask):
    b_per, i_per = nm.LABELS.index("B-PER"), nm.LABELS.index("I-PER")
    probs = np.zeros(input_ids.shape + (len(nm.LABELS),), dtype=np.float32)
    probs[..., 0] = 1.0
    for row in range(input_ids.shape[0]):
      prev = False
      for col in range(input_ids.shape[1]):
        title = token_types[row, col] in (nm.CASE_TITLE, nm.CASE_UPPER)
        if title:
          probs[row, col, 0] = 0.0
          probs[row, col, i_per if prev else b_per] = 0.9
          probs[row, col, 0] = 0.1
        prev = title
    return probs

  def run(self, input_ids, token_types, attention_mask):
    """The backend contract: logits whose softmax is :meth:`predict`'s probabilities."""
    self.calls.append(input_ids.shape)
    return np.log(self.predict(input_ids, token_types, attention_mask) + 1e-12), None

  def enrichment(self) -> core.Enrichment:
    spec = sp.NerSpec(ref="rule", path=None, name="rule", languages=("en",), labels=nm.LABELS,
                      casing=self.casing, bio=False, max_window=self.max_window)
    return core.Enrichment([core.Enricher(self, self.tokenizer, spec, None, [101], [102], 0,
                                          nm.casing_class if self.casing else None, self.max_window)])


def annotate(model, texts, sentences=None, overlap=wd.DEFAULT_CONTEXT, batch_tokens=wd.DEFAULT_BATCH_TOKENS):
  """Mentions of ``texts`` by the core: a loaded model with the pipeline's windows, or the rule backend
  with windows filled with context (``overlap`` pieces at least)."""
  if isinstance(model, core.Enrichment):
    return [r.entities for r in model(texts, sentences=sentences, batch_tokens=batch_tokens)]
  results = model.enrichment()(texts, sentences=sentences, context=overlap, fill=True, batch_tokens=batch_tokens)
  return [r.entities for r in results]


def prepare(model, text, overlap=wd.DEFAULT_CONTEXT):
  encoded = wd.encode_text(model.tokenizer, text, wd.split_sentences(text), nm.casing_class)
  windows = wd.plan_windows(encoded.word_start, encoded.sentence, model.max_window - 2, overlap)
  return encoded, windows


def check_offsets(text, entities):
  previous_end = 0
  for e in entities:
    assert 0 <= e.start_char < e.end_char <= len(text)
    assert text[e.start_char:e.end_char] == e.text
    assert e.text == e.text.strip()
    assert e.start_char >= previous_end
    previous_end = e.end_char
    assert 0.0 <= e.score <= 1.0
    assert e.sentence_index >= 0


# --- Sentences, casing, tags ---------------------------------------------------------------------------


def test_split_sentences_keeps_abbreviations_and_paragraphs():
  text = "Mr. Smith went to the U.S. on Monday. He met Dr. Jones.\n\nA new paragraph"
  spans = wd.split_sentences(text)
  assert [text[a:b] for a, b in spans] == [
      "Mr. Smith went to the U.S. on Monday.", "He met Dr. Jones.", "A new paragraph"]


def test_casing_classes():
  assert [nm.casing_class(t) for t in ("the", "Paris", "NATO", "A", "1996", "-", "iPhone", "Zürich")] == [
      nm.CASE_LOWER, nm.CASE_TITLE, nm.CASE_UPPER, nm.CASE_TITLE, nm.CASE_OTHER, nm.CASE_OTHER,
      nm.CASE_TITLE, nm.CASE_TITLE]


def test_casing_classes_agree_with_their_definition():
  """The ASCII shortcut (str methods) gives what the letter-by-letter definition gives."""
  import random
  import string

  def by_definition(piece: str) -> int:
    letters = [c for c in piece if c.isalpha()]
    if not letters:
      return nm.CASE_OTHER
    if all(c.isupper() for c in letters) and len(letters) > 1:
      return nm.CASE_UPPER
    return nm.CASE_TITLE if any(c.isupper() for c in letters) else nm.CASE_LOWER

  rnd = random.Random(5)
  alphabet = string.ascii_letters + string.digits + "-'.,#" + "ÄäÉéßñǅª"
  pieces = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 5))) for _ in range(20000)]
  assert [nm.casing_class(p) for p in pieces] == [by_definition(p) for p in pieces]


def test_iob1_to_bio():
  assert conll.iob1_to_bio(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-MISC"]) == [
      "B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG", "B-MISC"]
  assert decode.split_tag("S-LOC") == ("B", "LOC")
  assert decode.split_tag("PER") == ("I", "PER")
  assert decode.split_tag("O") == ("O", None)


# --- Windows and merging -------------------------------------------------------------------------------


def _check_plan(windows, n, max_pieces, word_start):
  position = 0
  for w in windows:
    assert w.core_start == position, "cores must tile the pieces"
    assert w.start <= w.core_start < w.core_end <= w.end
    assert w.end - w.start <= max_pieces
    # Windows start and end at word starts, unless a core cuts a word longer than a core.
    assert w.start == 0 or word_start[w.start] or w.start == w.core_start
    assert w.end == n or word_start[w.end] or w.end == w.core_end
    position = w.core_end
  assert position == n


@given(st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=40),
       st.integers(min_value=8, max_value=130), st.integers(min_value=0, max_value=40),
       st.randoms(use_true_random=False))
def test_plan_windows_cover_every_piece_once(sentence_lengths, max_pieces, overlap, rnd):
  sentence, word_start = [], []
  for s, length in enumerate(sentence_lengths):
    for k in range(length):
      sentence.append(s)
      word_start.append(k == 0 or rnd.random() < 0.6)
  windows = wd.plan_windows(word_start, sentence, max_pieces, overlap)
  _check_plan(windows, len(sentence), max_pieces, word_start)


def test_name_across_a_core_boundary_is_one_span_thanks_to_overlap():
  model = CapitalisedIsPerson(max_window=16)
  # One long sentence, so cores must cut it; names everywhere so some straddle a cut.
  text = " ".join(["and Rex Tillerson met Jim Mattis"] * 12)
  _, windows = prepare(model, text, overlap=4)
  assert len(windows) > 4
  entities = annotate(model, [text], overlap=4)[0]
  check_offsets(text, entities)
  assert [e.text for e in entities] == ["Rex Tillerson", "Jim Mattis"] * 12
  # Without context the rule cannot tell a continuation at a core start: names get cut.
  cut = annotate(model, [text], overlap=0)[0]
  check_offsets(text, cut)
  assert len(cut) > len(entities)


def test_long_article_over_2000_tokens_is_covered_end_to_end():
  model = CapitalisedIsPerson(max_window=128)
  paragraph = ("officials said on tuesday that talks between the two sides would continue next week, "
               "and that Rex Tillerson would attend. ")
  text = "\n\n".join(f"{paragraph * 3}section {i} ends here." for i in range(60))
  encoded, _ = prepare(model, text)
  assert len(encoded.ids) > 2000
  entities = annotate(model, [text])[0]
  check_offsets(text, entities)
  assert [e.text for e in entities] == ["Rex Tillerson"] * 180
  # The last mention is found too: nothing at the end was truncated.
  assert entities[-1].start_char == text.rindex("Rex Tillerson")
  sentences = wd.split_sentences(text)
  for e in entities:
    a, b = sentences[e.sentence_index]
    assert a <= e.start_char and e.end_char <= b


def test_windows_of_many_texts_are_batched_by_length():
  model = CapitalisedIsPerson(max_window=32)
  texts = ["Short one by Ann Lee.", "word " * 300 + "Bob Stone.", "Another Short Text."]
  results = annotate(model, texts, batch_tokens=128)
  assert [e.text for e in results[0]] == ["Short", "Ann Lee"]
  assert [e.text for e in results[1]] == ["Bob Stone"]
  widths = [shape[1] for shape in model.calls]
  assert widths == sorted(widths), "batches go shortest windows first"
  assert all(rows * width <= 128 or rows == 1 for rows, width in model.calls)


class LabelByPiece(CapitalisedIsPerson):
  """Labels pieces by their text (lower case), O otherwise."""

  def __init__(self, table):
    super().__init__(max_window=64)
    self.table = {self.tokenizer.token_to_id(k): nm.LABELS.index(v) for k, v in table.items()}

  def predict(self, input_ids, token_types, attention_mask):
    probs = np.zeros(input_ids.shape + (len(nm.LABELS),), dtype=np.float32)
    probs[..., 0] = 1.0
    for (row, col), piece in np.ndenumerate(input_ids):
      if int(piece) in self.table:
        probs[row, col, 0] = 0.0
        probs[row, col, self.table[int(piece)]] = 1.0
    return probs


def test_glued_words_follow_their_first_word_and_separators_are_trimmed():
  model = LabelByPiece({"u": "B-LOC", ".": "B-MISC", "s": "B-ORG", "-": "I-LOC", "china": "B-LOC",
                        "washington": "B-LOC", "reuters": "B-ORG", "(": "B-ORG", "smith": "B-PER"})
  text = "U.S.-China talks (Reuters) in Washington. Smith said"
  entities = annotate(model, [text])[0]
  check_offsets(text, entities)
  # "U.S." is one unit labelled by "u"; the hyphen is trimmed; "Washington." keeps the stop out only
  # because the model labels it (B-MISC here, so it is its own mention, and "." alone is dropped).
  assert [(e.text, e.label) for e in entities] == [
      ("U.S.", "LOC"), ("China", "LOC"), ("Reuters", "ORG"), ("Washington", "LOC"), ("Smith", "PER")]


def test_a_closing_bracket_stays_when_its_opening_one_is_in_the_mention():
  model = LabelByPiece({"mla": "B-ORG", "(": "I-ORG", "b": "I-ORG", ")": "I-ORG", "ra": "B-ORG"})
  text = "Mladost (BJ) beat Rad) 2-0"
  entities = annotate(model, [text])[0]
  check_offsets(text, entities)
  assert [(e.text, e.label) for e in entities] == [("Mladost (BJ)", "ORG"), ("Rad", "ORG")]


def test_bio_viterbi_keeps_valid_sequences_and_mends_invalid_ones():
  labels = nm.LABELS
  allowed, may_start = decode.bio_transitions(labels)
  o, b_per, i_per, i_loc = (labels.index(x) for x in ("O", "B-PER", "I-PER", "I-LOC"))
  assert not may_start[i_per] and may_start[b_per] and may_start[o]
  assert allowed[b_per, i_per] and allowed[i_per, i_per] and not allowed[o, i_per] and not allowed[b_per, i_loc]

  def rows(*dists):
    out = np.full((len(dists), len(labels)), 1e-6)
    for r, dist in enumerate(dists):
      for label, p in dist.items():
        out[r, labels.index(label)] = p
    return np.log(out)

  valid = rows({"B-PER": 0.9, "O": 0.1}, {"I-PER": 0.8, "O": 0.2}, {"O": 1.0})
  assert decode.bio_viterbi(valid, allowed, may_start) == [b_per, i_per, o]
  # "Rex" is slightly more O than B-PER, "Tillerson" clearly I-PER: the valid reading is one name.
  mended = rows({"O": 0.55, "B-PER": 0.45}, {"I-PER": 0.9, "B-PER": 0.05, "O": 0.05})
  assert decode.bio_viterbi(mended, allowed, may_start) == [b_per, i_per]
  # A lone I-LOC after PER becomes its own B-LOC when nothing favours joining.
  switch = rows({"B-PER": 0.9}, {"I-LOC": 0.6, "B-LOC": 0.3, "I-PER": 0.1})
  assert [labels[i] for i in decode.bio_viterbi(switch, allowed, may_start)] == ["B-PER", "B-LOC"]
  assert decode.bio_viterbi(np.zeros((0, len(labels))), allowed, may_start) == []


def test_bio_decoding_reads_each_sentence_as_a_whole():
  model = CapitalisedIsPerson(max_window=64)
  text = "Rex Tillerson met her.\n\nTillerson left."
  encoded, _ = prepare(model, text)
  probs = np.zeros((len(encoded.ids), len(nm.LABELS)), dtype=np.float32)
  probs[:, 0] = 1.0
  first_pieces = {"rex": {"O": 0.55, "B-PER": 0.45}, "till": {"I-PER": 0.8, "B-PER": 0.15, "O": 0.05}}
  for k, (a, b) in enumerate(encoded.offsets):
    dist = first_pieces.get(text[a:b].lower()) if encoded.word_start[k] else None
    if dist:
      probs[k] = 0.0
      for label, p in dist.items():
        probs[k, nm.LABELS.index(label)] = p
  plain = decode.decode_entities(text, encoded, probs, nm.LABELS)
  constrained = decode.decode_entities(text, encoded, probs, nm.LABELS, bio=True)
  check_offsets(text, constrained)
  # Argmax per word: "Rex" is O, so the name starts at "Tillerson"; as BIO the whole name is kept.
  assert [e.text for e in plain] == ["Tillerson", "Tillerson"]
  assert [(e.text, e.sentence_index) for e in constrained] == [("Rex Tillerson", 0), ("Tillerson", 1)]
  assert constrained[0].score == pytest.approx((0.45 + 0.8) / 2, abs=1e-6)
  # A sentence cannot open with I-PER: the second "Tillerson" is read as B-PER (0.15), not O (0.05).
  assert constrained[1].score == pytest.approx(0.15, abs=1e-6)


def test_entities_never_cross_sentences():
  model = CapitalisedIsPerson(max_window=64)
  text = "He met Ann.\n\nBob Stone left."
  entities = annotate(model, [text])[0]
  assert [(e.text, e.sentence_index) for e in entities] == [("He", 0), ("Ann", 0), ("Bob Stone", 1)]


TEXT_ALPHABET = st.sampled_from(list("abcXYZ \n\t.,'\u2019\"-()éÉßçÇ日本語🙂\u0301\u00a0\u200b") + [
    "Rex ", "Tillerson", "U.S.", "  ", "\n\n", "ﬁ", "İ", "Σ"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TEXT_ALPHABET, max_size=120).map("".join), st.integers(min_value=8, max_value=40))
def test_offset_invariant_holds_for_any_text(text, max_window):
  model = CapitalisedIsPerson(max_window=max_window)
  entities = annotate(model, [text])[0]
  check_offsets(text, entities)


def test_offsets_on_fixture_story():
  model = CapitalisedIsPerson(max_window=24)
  entities = annotate(model, [STORY])[0]
  check_offsets(STORY, entities)
  assert "Rex Tillerson" in [e.text for e in entities]
  assert "Z\u00fcrich" in [e.text for e in entities]


# --- Beam stage ----------------------------------------------------------------------------------------


class RuleHandler(enrich.EnrichModelHandler):
  def load_model(self):
    return CapitalisedIsPerson(max_window=32).enrichment()

  def run_inference(self, batch, model, inference_args=None):
    if any("EXPLODE" in story.body for story in batch):
      raise RuntimeError("model failed")
    return super().run_inference(batch, model, inference_args)


def _story(story_id, body, language="en", headline=None):
  return Story(story_id=story_id, version=1, body=body, source_format="plain", input_uri="mem://" + story_id,
               locator="", raw_sha256="0" * 64, ingested_at=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
               language=language, headline=headline)


def test_stage_routes_languages_and_failures():
  stories = [
      _story("en", STORY),
      _story("de", "Angela Merkel besuchte Berlin.", language="de"),
      _story("empty", "   "),
      _story("boom", "EXPLODE now"),
      _story("unknown", "Ann Lee spoke.", language=None),
  ]
  with test_pipeline.TestPipeline(runner="DirectRunner") as p:
    out, errors = (p | beam.Create(stories)
                   | enrich.Enrich(stages=("ner",), handler=RuleHandler(stages=("ner",), max_batch_chars=10)))
    summary = out | beam.Map(lambda s: (s.story_id, s.ner_status,
                                        None if s.entities is None else [e.text for e in s.entities]))
    expected_en = [e.text for e in annotate(CapitalisedIsPerson(max_window=32), [STORY])[0]]
    assert_that(summary, equal_to([
        ("en", STATUS_APPLIED, expected_en),
        ("de", STATUS_SKIPPED_LANGUAGE, None),
        ("empty", STATUS_SKIPPED_EMPTY, None),
        ("boom", STATUS_FAILED, None),
        ("unknown", STATUS_APPLIED, ["Ann Lee"]),
    ]), label="stories")
    assert_that(errors | beam.Map(lambda d: (d.stage, d.story_id, d.error_type)),
                equal_to([("ner", "boom", "RuntimeError")]), label="errors")


def test_the_headline_is_read_apart_with_offsets_into_it():
  assert enrich.headline_to_read(_story("a", "Ann Lee spoke.", headline="  ")) is None
  assert enrich.headline_to_read(_story("b", "  Ann Lee quits\n\nShe said.", headline="Ann Lee quits")) is None
  assert enrich.headline_to_read(_story("c", "", headline="ANN LEE QUITS ")) == "ANN LEE QUITS "
  stories = [_story("brief", "", headline="  ANN LEE QUITS"),
             _story("both", "then Bob Day said so.", headline="Cy Ray wins"),
             _story("repeat", "Cy Ray wins\n\nthen Bob Day said so.", headline="Cy Ray wins"),
             _story("nothing", " ", headline=" ")]
  with test_pipeline.TestPipeline(runner="DirectRunner") as p:
    out, errors = (p | beam.Create(stories)
                   | enrich.Enrich(stages=("ner",), handler=RuleHandler(stages=("ner",))))
    summary = out | beam.Map(lambda s: (s.story_id, s.ner_status, None if s.entities is None else [
        (e.field, e.text, e.start_char, e.sentence_index, s.text_of(e)[e.start_char:e.end_char]) for e in s.entities]))
    assert_that(summary, equal_to([
        ("brief", STATUS_APPLIED, [("headline", "ANN LEE QUITS", 2, 0, "ANN LEE QUITS")]),
        ("both", STATUS_APPLIED, [("headline", "Cy Ray", 0, 0, "Cy Ray"), ("body", "Bob Day", 5, 0, "Bob Day")]),
        ("repeat", STATUS_APPLIED, [("body", "Cy Ray", 0, 0, "Cy Ray"), ("body", "Bob Day", 18, 1, "Bob Day")]),
        ("nothing", STATUS_SKIPPED_EMPTY, None),
    ]), label="stories")
    assert_that(errors, equal_to([]), label="errors")


# --- Loading models ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_hf_model(tmp_path_factory):
  """A tiny random BERT token classifier in the standard HF layout, with IOB1 labels."""
  import torch
  from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

  torch.manual_seed(0)
  path = tmp_path_factory.mktemp("tiny_hf_ner")
  labels = ["O", "I-PER", "I-LOC", "B-PER", "B-LOC"]
  config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=37, max_position_embeddings=64, num_labels=len(labels),
                      id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)})
  BertForTokenClassification(config).save_pretrained(path)
  AutoTokenizer.from_pretrained(str(nm.base_model_dir())).save_pretrained(path)
  return path


def test_loader_reads_a_standard_hf_directory(tiny_hf_model):
  model = core.load(str(tiny_hf_model), stages=("ner",), threads=1)
  part = model.parts[0]
  assert part.casing is None and not part.ner.casing
  assert part.ner.labels[1] == "I-PER"
  assert part.max_window == 64
  assert part.prefix == [101] and part.suffix == [102]
  text = STORY * 3
  entities = model([text])[0].entities
  check_offsets(text, entities)
  assert {e.label for e in entities} <= {"PER", "LOC"}


def test_loader_rejects_missing_models(tmp_path):
  with pytest.raises(FileNotFoundError, match="not found"):
    sp.read_ner(str(tmp_path / "no-such-dir"))
  with pytest.raises(FileNotFoundError, match="offline"):
    sp.read_ner("nobody-here/no-such-ner-model")


# --- Eval and train ------------------------------------------------------------------------------------


def test_conll_round_trip_scores_perfectly():
  from pipelines.training import eval_ner
  from pipelines.training.metrics import score_bio

  sentences = conll.read_conll(TINY_CONLL)
  assert len(sentences) == 6 and len(conll.documents(sentences)) == 2
  text, spans, words = eval_ner.document_text(sentences[:3])
  gold, pred = [], []
  for sentence, span, word_spans in zip(sentences[:3], spans, words, strict=True):
    entities = []
    for i, tag in enumerate(sentence.tags):
      prefix, kind = decode.split_tag(tag)
      if prefix == "B":
        j = i + 1
        while j < len(sentence.tags) and sentence.tags[j] == "I-" + kind:
          j += 1
        a, b = word_spans[i][0], word_spans[j - 1][1]
        entities.append(Entity(text[a:b], kind, a, b, 1.0, 0))
    gold.append(sentence.tags)
    pred.append(eval_ner.tags_from_entities(entities, word_spans, span))
  assert pred == gold
  assert score_bio(gold, pred)["f1"] == 1.0


def test_eval_cli_prints_json_last_line(tiny_hf_model, capsys):
  from pipelines.training import eval_ner

  assert eval_ner.main(["--conll", str(TINY_CONLL), "--ner-model", str(tiny_hf_model), "--threads", "1"]) == 0
  last = capsys.readouterr().out.strip().splitlines()[-1]
  scores = json.loads(last)
  assert set(scores) == {"precision", "recall", "f1", "per_type", "sentences", "backend"}
  assert scores["sentences"] == 6
  assert set(scores["per_type"]) == {"PER", "LOC", "ORG", "MISC"}


def test_eval_cli_reports_missing_model(capsys, tmp_path):
  from pipelines.training import eval_ner

  assert eval_ner.main(["--conll", str(TINY_CONLL), "--ner-model", str(tmp_path / "nope")]) == 2
  assert "not found" in capsys.readouterr().err


@pytest.mark.slow
def test_train_smoke_end_to_end(tmp_path):
  from safetensors import safe_open

  from pipelines.training import train_ner

  out = tmp_path / "model"
  code = train_ner.main(["--train", str(TINY_CONLL), "--dev", str(TINY_CONLL), "--out", str(out),
                         "--epochs", "1", "--max-steps", "2", "--batch-size", "2", "--context", "64",
                         "--threads", "1", "--log-every", "1"])
  assert code == 0
  weights = out / nm.WEIGHTS_FILE
  assert weights.stat().st_size < 25 * 1024 * 1024
  with safe_open(str(weights), "pt") as f:
    keys = set(f.keys())
    assert "bert.embeddings.word_embeddings.weight" not in keys
    assert f.get_tensor("classifier.weight").dtype.is_floating_point
    assert str(f.get_tensor("classifier.weight").dtype) == "torch.float16"
  summary = json.loads((out / "training.json").read_text())
  assert summary["best_epoch"] == 1 and "f1" in summary["dev"]
  model = core.load(str(out), stages=("ner",), backend="torch", threads=1)
  assert model.ner.casing and model.ner.languages == ("en",)
  entities = annotate(model, [STORY])[0]
  check_offsets(STORY, entities)


def test_several_training_files_keep_their_documents_apart():
  from pipelines.training import train_ner

  one = conll.read_conll(TINY_CONLL)
  both = train_ner.read_documents([TINY_CONLL, TINY_CONLL])
  assert len(both) == 2 * len(one)
  docs = conll.documents(both)
  assert len(docs) == 2 * len(conll.documents(one))
  assert [s.words for s in both[len(one):]] == [s.words for s in one]
  assert both[len(one)].doc == one[-1].doc + 1


@pytest.mark.slow
def test_final_fit_on_train_and_dev_keeps_the_last_epoch(tmp_path, capsys):
  from pipelines.training import train_ner

  out = tmp_path / "model"
  assert train_ner.main(["--train", str(TINY_CONLL), "--out", str(out), "--epochs", "1"]) == 2
  assert "--keep best needs --dev" in capsys.readouterr().err
  assert not out.exists()
  code = train_ner.main(["--train", str(TINY_CONLL), str(TINY_CONLL), "--keep", "last", "--out", str(out),
                         "--epochs", "2", "--batch-size", "2", "--context", "64", "--threads", "1",
                         "--log-every", "1000", "--device", "cpu"])
  assert code == 0
  summary = json.loads((out / "training.json").read_text())
  assert summary["train_files"] == [TINY_CONLL.name, TINY_CONLL.name] and summary["dev_file"] is None
  assert summary["keep"] == "last" and summary["best_epoch"] == 2 and summary["dev"] is None
  assert [r["epoch"] for r in summary["history"]] == [1, 2] and "dev_f1" not in summary["history"][0]
  assert summary["command"].startswith(f"wirestream train ner --train {TINY_CONLL} {TINY_CONLL} --out")
  assert "--keep last --device cpu" in summary["command"]
  assert nm.load_casing_model(out).config.num_labels == len(nm.LABELS)


def _random_casing_model(seed: int, labels=nm.LABELS):
  import torch

  torch.manual_seed(seed)
  model = nm.build_casing_model(labels)
  with torch.no_grad():
    model.classifier.weight.normal_(0, 0.5)
  return model.eval()


def test_teacher_targets_are_the_teachers_mean_probabilities_of_every_piece():
  import torch

  from pipelines.training import train_ner
  from pipelines.training.metrics import score_bio

  tokenizer = nm.load_fast_tokenizer(nm.base_model_dir())
  label2id = {label: i for i, label in enumerate(nm.LABELS)}
  sentences = conll.read_conll(TINY_CONLL)
  encoded = [conll.encode_sentence(tokenizer, s.words, s.tags, label2id) for s in sentences]
  chunks = train_ner._chunks(encoded, conll.documents(sentences), 30, None)
  assert any(len(chunk) > 1 for chunk in chunks)
  teachers = [_random_casing_model(1), _random_casing_model(2)]

  soft = train_ner.teacher_targets(teachers, encoded, chunks, tokenizer, batch_size=2)
  assert [t.shape for t in soft] == [(len(e.ids), len(nm.LABELS)) for e in encoded]
  for targets in soft:
    assert torch.allclose(targets.sum(-1), torch.ones(len(targets)), atol=1e-5)

  # Each piece's target is the mean of the teachers' softmax over the chunk that holds it (its context).
  cls_id, sep_id, pad_id = (tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
  chunk = next(c for c in chunks if len(c) > 1)
  inputs = train_ner._collate([chunk], encoded, cls_id, sep_id, pad_id)
  inputs.pop("labels")
  with torch.no_grad():
    mean = sum(t(**inputs).logits.softmax(-1)[0] for t in teachers) / 2
  expected = mean[1:-1]
  got = torch.cat([soft[s][a:b] for s, a, b in chunk])
  assert torch.allclose(got, expected, atol=1e-5)
  assert not torch.allclose(got, teachers[0](**inputs).logits.softmax(-1)[0, 1:-1].detach(), atol=1e-3)

  # The evaluation reads the same probabilities: one teacher's argmax at first pieces is what it scores.
  one = train_ner.teacher_targets(teachers[:1], encoded, chunks, tokenizer)
  predicted = [[nm.LABELS[int(one[i][k].argmax())] for k in range(len(e.ids)) if e.first[k]]
               for i, e in enumerate(encoded)]
  scores = train_ner.evaluate_chunks(teachers[0], sentences, encoded, chunks, tokenizer, nm.LABELS)
  assert scores == score_bio([s.tags for s in sentences], predicted)

  # Training batches carry the targets beside the gold labels, aligned piece for piece.
  batch = train_ner._collate([chunk], encoded, cls_id, sep_id, pad_id, soft)
  labelled = batch["labels"][0] != -100
  assert torch.allclose(batch["soft"][0][labelled], got)
  assert not batch["soft"][0][~labelled].any()


def test_distillation_loss_mixes_the_gold_and_the_teachers_targets():
  import torch

  from pipelines.training import train_ner

  model = _random_casing_model(3).train(False)
  torch.manual_seed(0)
  inputs = {"input_ids": torch.randint(1000, 2000, (2, 7)), "token_type_ids": torch.randint(0, 4, (2, 7)),
            "attention_mask": torch.ones((2, 7), dtype=torch.long)}
  labels = torch.randint(0, len(nm.LABELS), (2, 7))
  labels[:, 0] = labels[:, -1] = -100
  with torch.no_grad():
    out = model(**inputs, labels=labels)
  one_hot = torch.nn.functional.one_hot(labels.clamp(min=0), len(nm.LABELS)).float()
  uniform = torch.full_like(one_hot, 1 / len(nm.LABELS))
  gold = train_ner.distillation_loss(out.logits, labels, uniform, 0.0)
  assert torch.allclose(gold, out.loss, atol=1e-6)
  assert torch.allclose(train_ner.distillation_loss(out.logits, labels, one_hot, 1.0), out.loss, atol=1e-6)
  teachers = train_ner.distillation_loss(out.logits, labels, uniform, 1.0)
  mask = labels != -100
  expected = -torch.log_softmax(out.logits[mask], -1).mean(-1).mean()
  assert torch.allclose(teachers, expected, atol=1e-6)
  half = train_ner.distillation_loss(out.logits, labels, uniform, 0.25)
  assert torch.allclose(half, 0.75 * gold + 0.25 * teachers, atol=1e-6)


#: A one-epoch training run on the tiny CoNLL file (add --out and the options under test).
_TINY_RUN = ["--train", str(TINY_CONLL), "--keep", "last", "--epochs", "1", "--batch-size", "2", "--context", "64",
             "--threads", "1", "--log-every", "1000"]


@pytest.mark.slow
def test_training_with_teachers_records_them_and_checks_them(tmp_path, capsys):
  from pipelines.training import train_ner

  teacher = nm.save_casing_model(_random_casing_model(4), tmp_path / "teacher", dtype="float32")
  out = tmp_path / "student"
  assert train_ner.main([*_TINY_RUN, "--out", str(out), "--teacher", str(tmp_path / "none")]) == 2
  assert "no NER model in teacher directory" in capsys.readouterr().err
  assert train_ner.main([*_TINY_RUN, "--out", str(out), "--teacher", str(teacher), "--distill-weight", "1.5"]) == 2
  assert not out.exists()
  other = nm.save_casing_model(_random_casing_model(5, labels=("O", "B-PER", "I-PER")), tmp_path / "other")
  with pytest.raises(ValueError, match="teacher"):
    train_ner.main([*_TINY_RUN, "--out", str(tmp_path / "bad"), "--teacher", str(other)])

  assert train_ner.main([*_TINY_RUN, "--out", str(out), "--teacher", str(teacher), str(teacher),
                         "--distill-weight", "0.7"]) == 0
  assert "teachers: 2 models read" in capsys.readouterr().out
  summary = json.loads((out / "training.json").read_text())
  assert summary["teachers"] == [str(teacher), str(teacher)] and summary["distill_weight"] == 0.7
  assert summary["command"].endswith(f"--teacher {teacher} {teacher} --distill-weight 0.7")
  assert nm.load_casing_model(out).config.num_labels == len(nm.LABELS)


def test_running_text_splits_into_conll_sentences_and_words():
  text = ("Investor's Business Daily - U.S. stocks don't rise 1,250.5 points on 1996-08-22. "
          "Anglo-Dutch (Reuters) said. \"Yes!\" he said. Mr. Smith left.")
  assert conll.text_sentences(text) == [
      ["Investor", "'s", "Business", "Daily", "-", "U.S.", "stocks", "do", "n't", "rise", "1,250.5", "points",
       "on", "1996-08-22", "."],
      ["Anglo-Dutch", "(", "Reuters", ")", "said", "."],
      ['"', "Yes", "!", '"', "he", "said", "."],
      ["Mr", "."], ["Smith", "left", "."]]
  assert conll.text_sentences("a " * 200) == [["a"] * 150]
  assert conll.text_sentences("  ") == []


def _ag_csv(path: Path, rows: int = 60) -> Path:
  import csv

  with open(path, "w", newline="", encoding="utf-8") as handle:
    writer = csv.writer(handle)
    writer.writerow(["label", "label_name", "text"])
    for i in range(rows):
      writer.writerow([1 + i % 4, "x", f"Story {i} (Reuters) Reuters - Officials in Paris met Ann Lee on day {i}. "
                                        f"They agreed #36;{i} million."])
  return path


def test_unlabelled_news_is_the_ag_train_part_tagged_by_the_teachers(tmp_path):
  import torch

  from pipelines.training import topics_data, train_ner

  csv_path = _ag_csv(tmp_path / "ag.csv")
  train, dev = topics_data.split_ag(csv_path)
  assert dev, "the fixture must have a dev part for this test to mean anything"
  sentences = train_ner.unlabelled_ag(csv_path, 1000, first_doc=7)
  texts = {" ".join(w for s in sentences if s.doc == d for w in s.words) for d in {s.doc for s in sentences}}
  assert texts == {" ".join(w for s in conll.text_sentences(t) for w in s) for t, _ in train}
  assert {s.doc for s in sentences} == set(range(7, 7 + len(train)))
  assert all(set(s.tags) == {"O"} for s in sentences)
  assert "#36" not in " ".join(texts) and "$" in " ".join(texts)  # AG's escapes are undone
  first = train_ner.unlabelled_ag(csv_path, 5)
  assert len({s.doc for s in first}) == 5
  assert [s.words for s in first] == [s.words for s in sentences if s.doc < 12]  # a fixed order

  # The teachers' best label at the first piece of every word, mended to valid BIO.
  tokenizer = nm.load_fast_tokenizer(nm.base_model_dir())
  label2id = {label: i for i, label in enumerate(nm.LABELS)}
  encoded = [conll.encode_sentence(tokenizer, s.words, s.tags, label2id) for s in first]
  chunks = train_ner._chunks(encoded, conll.documents(first), 30, None)
  soft = train_ner.teacher_targets([_random_casing_model(1), _random_casing_model(2)], encoded, chunks, tokenizer)
  labelled = train_ner.pseudo_labelled(first, encoded, soft, nm.LABELS)
  for sentence, enc, probs in zip(labelled, encoded, soft, strict=True):
    best = [nm.LABELS[int(probs[k].argmax())] for k in range(len(enc.ids)) if enc.first[k]]
    assert sentence.tags == conll.iob1_to_bio(best)
    for prev, tag in zip(["O", *sentence.tags[:-1]], sentence.tags, strict=True):
      assert not tag.startswith("I-") or prev[2:] == tag[2:]
  assert any(t != "O" for s in labelled for t in s.tags)
  assert any(t.startswith("I-") for s in labelled for t in s.tags)
  assert [s.words for s in labelled] == [s.words for s in first] and [s.doc for s in labelled] == [s.doc for s in first]
  torch.testing.assert_close(soft[0].sum(-1), torch.ones(len(encoded[0].ids)))


@pytest.mark.slow
def test_training_on_unlabelled_news_needs_teachers_and_records_it(tmp_path, capsys):
  from pipelines.training import train_ner

  teacher = nm.save_casing_model(_random_casing_model(4), tmp_path / "teacher", dtype="float32")
  csv_path = _ag_csv(tmp_path / "ag.csv")
  out = tmp_path / "student"
  common = [*_TINY_RUN, "--out", str(out)]
  assert train_ner.main([*common, "--unlabelled-ag", str(csv_path)]) == 2
  assert "--unlabelled-ag needs --teacher" in capsys.readouterr().err
  assert train_ner.main([*common, "--teacher", str(teacher), "--unlabelled-ag", str(tmp_path / "none.csv")]) == 2
  assert "no such file" in capsys.readouterr().err
  assert train_ner.main([*common, "--teacher", str(teacher), "--unlabelled-ag", str(csv_path),
                         "--unlabelled-rows", "0"]) == 2
  assert not out.exists()

  assert train_ner.main([*common, "--teacher", str(teacher), "--unlabelled-ag", str(csv_path),
                         "--unlabelled-rows", "4"]) == 0
  printed = capsys.readouterr().out
  tiny = len(conll.read_conll(TINY_CONLL))
  extra = len(train_ner.unlabelled_ag(csv_path, 4))
  assert f"unlabelled: 4 AG rows asked, {extra} sentences" in printed
  assert f"train: {tiny + extra} sentences" in printed
  summary = json.loads((out / "training.json").read_text())
  assert summary["unlabelled_ag"] == "ag.csv" and summary["unlabelled_rows"] == 4
  assert summary["command"].endswith(f"--distill-weight 0.5 --unlabelled-ag {csv_path} --unlabelled-rows 4")


def test_averaged_runs_are_the_mean_of_their_weights_and_load_as_one_model(tmp_path):
  import torch
  from safetensors.torch import load_file

  from pipelines.training import average_ner

  runs = []
  for seed in (1, 2, 3):
    torch.manual_seed(seed)
    model = nm.build_casing_model()
    with torch.no_grad():
      model.classifier.weight.normal_(0, 0.5)
      model.bert.encoder.layer[0].output.dense.bias.normal_(0, 0.5)
    run = nm.save_casing_model(model, tmp_path / f"run{seed}", dtype="float32")
    (run / "training.json").write_text(json.dumps({"seed": seed, "best_epoch": 2, "dev": {"f1": 0.9 + seed / 100}}))
    runs.append(run)

  out = tmp_path / "mean"
  assert average_ner.main(["--models", *map(str, runs), "--output", str(out), "--save-dtype", "float32"]) == 0
  states = [load_file(str(r / nm.WEIGHTS_FILE)) for r in runs]
  mean = load_file(str(out / nm.WEIGHTS_FILE))
  assert set(mean) == set(states[0])
  for key in ("classifier.weight", "bert.encoder.layer.0.output.dense.bias"):
    expected = (states[0][key] + states[1][key] + states[2][key]) / 3
    assert torch.allclose(mean[key], expected, atol=1e-6)
    assert not torch.allclose(mean[key], states[0][key])
  summary = json.loads((out / "training.json").read_text())
  assert [r["seed"] for r in summary["averaged"]] == [1, 2, 3]
  assert [r["dev_f1"] for r in summary["averaged"]] == [0.91, 0.92, 0.93]
  loaded = nm.load_casing_model(out)
  assert torch.allclose(loaded.classifier.weight, mean["classifier.weight"])

  other = nm.build_casing_model(labels=("O", "B-PER", "I-PER"))
  nm.save_casing_model(other, tmp_path / "other", dtype="float32")
  assert average_ner.main(["--models", str(runs[0]), str(tmp_path / "other"), "--output",
                           str(tmp_path / "bad")]) == 2
  assert average_ner.main(["--models", str(runs[0]), "--output", str(tmp_path / "one")]) == 2
  assert not (tmp_path / "bad" / nm.WEIGHTS_FILE).exists()


# --- The bundled model ---------------------------------------------------------------------------------


@pytest.mark.skipif(not DEFAULT_MODEL_READY, reason="bundled NER model not built")
def test_default_model_finds_the_seed_people():
  model = core.load(stages=("ner",), threads=1)
  entities = annotate(model, [STORY])[0]
  check_offsets(STORY, entities)
  found = {(e.text, e.label) for e in entities}
  assert {("Rex Tillerson", "PER"), ("Jim Mattis", "PER"), ("Yang Jiechi", "PER")} <= found
  assert ("Washington", "LOC") in found or ("WASHINGTON", "LOC") in found
  assert ("United Nations", "ORG") in found


@pytest.fixture(scope="module")
def default_model():
  if not DEFAULT_MODEL_READY:
    pytest.skip("bundled NER model not built")
  return core.load(stages=("ner",), threads=1)


def test_default_model_on_the_seed_story(default_model):
  seed = REPO / "seeds" / "000_2caeb3c1602a667c.txt"
  if not seed.is_file():
    pytest.skip("seed story absent")
  text = seed.read_text(encoding="utf-8")
  entities = annotate(default_model, [text])[0]
  check_offsets(text, entities)
  people = {e.text for e in entities if e.label == "PER"}
  assert {"Rex Tillerson", "Jim Mattis", "Yang Jiechi", "Fang Fenghui"} <= people
  places = {e.text for e in entities if e.label == "LOC"}
  assert {"WASHINGTON", "China", "North Korea"} <= places


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(TEXT_ALPHABET, max_size=80).map("".join))
def test_default_model_offset_invariant(default_model, text):
  check_offsets(text, annotate(default_model, [text])[0])


@pytest.mark.skipif(not DEFAULT_MODEL_READY, reason="bundled NER model not built")
def test_default_model_on_tiny_conll(capsys):
  from pipelines.training import eval_ner

  assert eval_ner.main(["--conll", str(TINY_CONLL), "--threads", "1"]) == 0
  scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert scores["f1"] >= 0.8


@pytest.mark.skipif(not (SHARED / "data" / "conll2003" / "eng.testa").is_file() or not DEFAULT_MODEL_READY,
                    reason="CoNLL-2003 dev data or bundled model absent")
def test_default_model_on_a_slice_of_conll_dev():
  from pipelines.training import eval_ner

  scores = eval_ner.evaluate_conll(SHARED / "data" / "conll2003" / "eng.testa", threads=1, limit_documents=8)
  assert scores["f1"] >= 0.85
