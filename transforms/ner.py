"""NER stage: entity mentions (PER, ORG, LOC, MISC) for every story, over whole articles.

The stage reads like Beam's own ``apache_beam.ml.inference``: a :class:`NerModelHandler` (a
``ModelHandler``) is run by ``RunInference`` inside the :class:`ExtractEntities` PTransform. The model is
loaded once per worker process (``RunInference`` keeps it in a process-wide shared handle, and
:mod:`transforms.model_cache` keeps it when the runner tears DoFns down) and used by all threads.

How one article becomes mentions (the pure functions below, shared with ``wirestream eval ner``):

1. :func:`split_sentences` cuts the body into sentences (paragraph breaks, sentence punctuation).
2. :func:`encode_text` tokenises the whole body once with the fast tokenizer; character offsets of every
   word piece point into the original body even though the default tokenizer lowercases and strips
   accents. Each piece also gets its casing class when the model has a casing channel.
3. :func:`plan_windows` cuts the pieces into windows that fit the model: a *core* of whole sentences
   (a sentence longer than a core is cut at word starts) plus up to ``overlap`` pieces of context on each
   side, which overlap the neighbouring cores. Every piece lies in exactly one core, so nothing is dropped
   or predicted twice.
4. :func:`predict_windows` runs windows of many stories together, sorted and batched by token length.
5. :func:`decode_entities` takes each piece's label from the window whose core holds it, labels each word
   by its first piece and joins BIO/IOB runs of words into spans, never across a sentence boundary.
   ``body[start_char:end_char] == text`` holds by construction.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from schemas.records import (
  STATUS_APPLIED,
  STATUS_FAILED,
  STATUS_SKIPPED_EMPTY,
  STATUS_SKIPPED_LANGUAGE,
  DeadLetter,
  Entity,
  Story,
)
from transforms import model_cache
from transforms import ner_model as nm

LOG = logging.getLogger(__name__)

STAGE = "ner"
METRICS_NAMESPACE = "wirestream.ner"
#: Context pieces on each side of a window's core.
DEFAULT_OVERLAP = 32
#: Word pieces (padding included) per forward pass.
DEFAULT_BATCH_TOKENS = 4096


# --- Sentences ---------------------------------------------------------------------------------------

_ABBREVIATIONS = frozenset("""
mr mrs ms dr prof sr jr st gen col lt sgt capt cmdr adm gov sen rep rev hon messrs
inc corp co ltd plc bros no nos vs etc approx dept est fig jan feb mar apr jun jul aug sep sept oct nov dec
mon tue tues wed thu thur thurs fri sat sun u.s u.k u.n e.g i.e a.m p.m
""".split())
_SENT_END = re.compile(r"[.!?]+[\"')\]\u201d\u2019]*(?=\s)")
_PARA = re.compile(r"\n\s*\n")


def split_sentences(text: str) -> list[tuple[int, int]]:
  """Character ranges of the sentences of ``text`` (whitespace between sentences excluded).

  Paragraph breaks (blank lines) always end a sentence; so do ``.``, ``!`` and ``?`` followed by
  whitespace and a capital letter, digit or quote, unless the word before a full stop is a known
  abbreviation or a single letter (initials).
  """
  spans: list[tuple[int, int]] = []

  def add(start: int, end: int) -> None:
    while start < end and text[start].isspace():
      start += 1
    while end > start and text[end - 1].isspace():
      end -= 1
    if start < end:
      spans.append((start, end))

  para_start = 0
  breaks = [(m.start(), m.end()) for m in _PARA.finditer(text)] + [(len(text), len(text))]
  for para_end, next_start in breaks:
    start = para_start
    for m in _SENT_END.finditer(text, para_start, para_end):
      end = m.end()
      rest = text[end:para_end].lstrip()
      if not rest or not (rest[0].isupper() or rest[0].isdigit() or rest[0] in "\"'\u201c\u2018("):
        continue
      if text[m.start()] == "." and m.end() - m.start() == 1:
        word = text[start:m.start()].rsplit(None, 1)[-1] if text[start:m.start()].strip() else ""
        word = word.lstrip("(\"'").lower()
        if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()) or re.fullmatch(r"(\w\.)+\w", word):
          continue
      add(start, end)
      start = end
    add(start, para_end)
    para_start = next_start
  return spans


# --- Encoding and windows -----------------------------------------------------------------------------


@dataclasses.dataclass
class Encoded:
  """Word pieces of one text (no special tokens)."""

  ids: list[int]
  offsets: list[tuple[int, int]]
  #: Token-type ids: casing classes for our model, zeros otherwise.
  types: list[int]
  #: True for the first piece of each tokenizer word.
  word_start: list[bool]
  #: Sentence index of every piece.
  sentence: list[int]


def encode_text(tokenizer, text: str, sentences: Sequence[tuple[int, int]], casing: bool) -> Encoded:
  """Tokenise ``text`` once; pieces keep character offsets into ``text`` and their sentence index."""
  enc = tokenizer.encode(text, add_special_tokens=False)
  if not enc.ids:
    return Encoded([], [], [], [], [])
  spans = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
  keep = spans[:, 1] > spans[:, 0]  # pieces with characters (not e.g. a lone combining mark's remains)
  spans = spans[keep]
  ids = np.asarray(enc.ids, dtype=np.int64)[keep].tolist()
  words = np.asarray([-1 if w is None else w for w in enc.word_ids], dtype=np.int64)[keep]
  starts = spans[:, 0]
  sent_starts = np.asarray([s for s, _ in sentences], dtype=np.int64)
  sentence = np.maximum(np.searchsorted(sent_starts, starts, side="right") - 1, 0)
  # A piece starts a word when it has no word, its word differs from the previous piece's, or it starts
  # a new sentence.
  word_start = (words < 0) | np.concatenate([[True], words[1:] != words[:-1]]) \
      | np.concatenate([[True], sentence[1:] != sentence[:-1]])
  offsets = [(a, b) for a, b in spans.tolist()]
  types = [nm.casing_class(text[a:b]) for a, b in offsets] if casing else [0] * len(offsets)
  return Encoded(ids, offsets, types, word_start.tolist(), sentence.tolist())


@dataclasses.dataclass(frozen=True)
class Window:
  """Pieces ``[start, end)`` go to the model; labels are taken for ``[core_start, core_end)`` only."""

  start: int
  end: int
  core_start: int
  core_end: int


def plan_windows(word_start: Sequence[bool], sentence: Sequence[int], max_pieces: int,
                 overlap: int = DEFAULT_OVERLAP) -> list[Window]:
  """Windows of at most ``max_pieces`` pieces whose cores tile ``[0, n)``.

  Cores hold whole sentences where they fit; a longer sentence is cut at word starts (or, for a single
  word longer than a core, anywhere). Context on each side is up to ``overlap`` pieces (more where the
  other side is short), trimmed to start and end at word starts.
  """
  n = len(word_start)
  if n == 0:
    return []
  overlap = max(0, min(overlap, max_pieces // 4))
  core_max = max(1, max_pieces - 2 * overlap)
  # Units: sentences, with over-long sentences cut at word starts.
  units: list[tuple[int, int]] = []
  i = 0
  while i < n:
    j = i + 1
    while j < n and sentence[j] == sentence[i]:
      j += 1
    a = i
    while j - a > core_max:
      cut = a + core_max
      while cut > a + 1 and not word_start[cut]:
        cut -= 1
      if cut == a + 1 and not word_start[cut]:
        cut = a + core_max
      units.append((a, cut))
      a = cut
    units.append((a, j))
    i = j
  cores: list[tuple[int, int]] = []
  for a, b in units:
    if cores and b - cores[-1][0] <= core_max:
      cores[-1] = (cores[-1][0], b)
    else:
      cores.append((a, b))
  windows = []
  for cs, ce in cores:
    room = max_pieces - (ce - cs)
    left = min(cs, max(overlap, room - min(n - ce, overlap)))
    right = min(n - ce, room - left)
    start, end = cs - left, ce + right
    while start < cs and not word_start[start]:
      start += 1
    while end > ce and end < n and not word_start[end]:
      end -= 1
    windows.append(Window(start, end, cs, ce))
  return windows


# --- The model ----------------------------------------------------------------------------------------


class NerModel:
  """A loaded token-classification model with its tokenizer and label map (weak-referenceable)."""

  def __init__(self, model: Any, tokenizer: Any, id2label: dict[int, str], *, name: str, casing: bool,
               languages: Sequence[str] | None, max_window: int, prefix: Sequence[int],
               suffix: Sequence[int], pad_id: int, threads: int | None = None, bio: bool = False) -> None:
    self.model = model
    self.tokenizer = tokenizer
    self.id2label = {int(k): v for k, v in id2label.items()}
    self.name = name
    self.casing = casing
    self.languages = tuple(languages) if languages else None
    self.max_window = max_window
    self.prefix = list(prefix)
    self.suffix = list(suffix)
    self.pad_id = pad_id
    self.threads = threads
    #: Labels are BIO as trained: decode with BIO constraints (see :func:`decode_entities`).
    self.bio = bio
    try:
      params = inspect.signature(model.forward).parameters
      self.uses_token_types = "token_type_ids" in params
    except (TypeError, ValueError, AttributeError):
      self.uses_token_types = casing

  @property
  def max_pieces(self) -> int:
    """Room for text pieces in one window (special tokens excluded)."""
    return self.max_window - len(self.prefix) - len(self.suffix)

  def accepts_language(self, language: str | None) -> bool:
    if not language or self.languages is None:
      return True
    return language.split("-")[0].lower() in self.languages

  def predict(self, input_ids: np.ndarray, token_types: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Label probabilities, shape (batch, length, labels), from int64 arrays of shape (batch, length).

    This is the only place the network runs: another backend (e.g. ONNX Runtime) replaces this method.
    """
    import torch

    inputs = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
    if self.uses_token_types:
      inputs["token_type_ids"] = torch.from_numpy(token_types)
    with torch.inference_mode():
      logits = self.model(**inputs).logits
    return torch.softmax(logits.float(), dim=-1).numpy()


def _local_files_only() -> bool:
  return os.environ.get("HF_HUB_OFFLINE", "1") != "0"


def describe_model(model_ref: str | None) -> dict:
  """Name and declared languages of a model without loading its weights (for routing stories)."""
  path = Path(model_ref) if model_ref else nm.DEFAULT_MODEL_DIR
  if path.is_dir() and (path / nm.CONFIG_FILE).is_file():
    config = json.loads((path / nm.CONFIG_FILE).read_text())
    name = "wirestream-ner" if path.resolve() == nm.DEFAULT_MODEL_DIR.resolve() else path.name
  else:
    config = _hub_config(str(model_ref))
    name = str(model_ref)
  settings = config.get(nm.WIRESTREAM_KEY) or {}
  languages = settings.get("languages") or config.get("languages") or config.get("language") or ["en"]
  if isinstance(languages, str):
    languages = [languages]
  return {"name": settings.get("name", name), "languages": [str(x).lower() for x in languages]}


def _hub_config(model_ref: str) -> dict:
  looks_like_path = model_ref.startswith((".", "/", "~")) or os.sep in model_ref.strip("/").replace("/", "", 1)
  if looks_like_path or model_ref.count("/") > 1:
    raise FileNotFoundError(f"NER model directory not found: {model_ref}")
  try:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_ref, local_files_only=_local_files_only()).to_dict()
  except Exception as error:  # noqa: BLE001 - any failure means: no such model here
    raise FileNotFoundError(
        f"NER model {model_ref!r} is neither a local directory nor a Hugging Face model available "
        f"offline ({type(error).__name__}: {error})") from error


def _special_tokens(hf_tokenizer) -> tuple[list[int], list[int]]:
  try:
    marked = hf_tokenizer.build_inputs_with_special_tokens([-1])
    at = marked.index(-1)
    return list(marked[:at]), list(marked[at + 1:])
  except Exception:  # noqa: BLE001 - fall back to BERT-style markers
    prefix = [hf_tokenizer.cls_token_id] if hf_tokenizer.cls_token_id is not None else []
    suffix = [hf_tokenizer.sep_token_id] if hf_tokenizer.sep_token_id is not None else []
    return prefix, suffix


def load_ner_model(model_ref: str | None = None, *, max_window: int | None = None,
                   threads: int | None = None) -> NerModel:
  """Load our default model (``None``), one of ours from a directory, or any HF token-classification model.

  A path or id that does not exist raises ``FileNotFoundError`` with a clear message.
  """
  import torch

  if threads:
    torch.set_num_threads(threads)
  info = describe_model(model_ref)
  path = Path(model_ref) if model_ref else nm.DEFAULT_MODEL_DIR
  if path.is_dir() and nm.is_casing_model_dir(path):
    if not (path / nm.WEIGHTS_FILE).is_file():
      raise FileNotFoundError(f"NER model weights missing: {path / nm.WEIGHTS_FILE}")
    model = nm.load_casing_model(path)
    tokenizer = nm.load_fast_tokenizer(nm.base_model_dir())
    settings = getattr(model.config, nm.WIRESTREAM_KEY)
    window = max_window or int(settings.get("max_window", 128))
    return NerModel(model, tokenizer, model.config.id2label, name=info["name"], casing=True,
                    languages=info["languages"], max_window=window,
                    prefix=[tokenizer.token_to_id("[CLS]")], suffix=[tokenizer.token_to_id("[SEP]")],
                    pad_id=tokenizer.token_to_id("[PAD]"), threads=threads,
                    bio=nm.tags_are_bio(settings))
  from transformers import AutoModelForTokenClassification, AutoTokenizer

  source = str(path) if path.is_dir() else str(model_ref)
  local = path.is_dir() or _local_files_only()
  hf_tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
  if not getattr(hf_tokenizer, "is_fast", False):
    raise ValueError(f"NER model {source!r} needs a fast tokenizer (tokenizer.json) for character offsets")
  model = AutoModelForTokenClassification.from_pretrained(source, local_files_only=local)
  model.eval()
  backend = hf_tokenizer.backend_tokenizer
  backend.no_truncation()
  backend.no_padding()
  prefix, suffix = _special_tokens(hf_tokenizer)
  limit = int(getattr(model.config, "max_position_embeddings", 512) or 512)
  model_max = getattr(hf_tokenizer, "model_max_length", None)
  if isinstance(model_max, int) and 0 < model_max < 100_000:
    limit = min(limit, model_max)
  window = min(max_window or 128, limit)
  pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0
  return NerModel(model, backend, model.config.id2label, name=info["name"], casing=False,
                  languages=info["languages"], max_window=window, prefix=prefix, suffix=suffix,
                  pad_id=pad_id, threads=threads)


# --- Prediction and decoding ---------------------------------------------------------------------------


@dataclasses.dataclass
class Prepared:
  """One text ready for the model."""

  text: str
  sentences: list[tuple[int, int]]
  encoded: Encoded
  windows: list[Window]


def prepare(model: NerModel, text: str, sentences: Sequence[tuple[int, int]] | None = None,
            overlap: int = DEFAULT_OVERLAP) -> Prepared:
  sentences = list(sentences) if sentences is not None else split_sentences(text)
  encoded = encode_text(model.tokenizer, text, sentences, model.casing)
  windows = plan_windows(encoded.word_start, encoded.sentence, model.max_pieces, overlap)
  return Prepared(text, sentences, encoded, windows)


def predict_windows(model: NerModel, prepared: Sequence[Prepared],
                    batch_tokens: int = DEFAULT_BATCH_TOKENS) -> list[np.ndarray]:
  """Label probabilities for every piece of every text, shape (pieces, labels) per text.

  Windows of all texts are sorted by length and run in batches of at most ``batch_tokens`` padded
  pieces; each piece takes its probabilities from the window whose core holds it.
  """
  num_labels = len(model.id2label)
  out = [np.zeros((len(p.encoded.ids), num_labels), dtype=np.float32) for p in prepared]
  jobs = [(t, w) for t, p in enumerate(prepared) for w in p.windows]
  jobs.sort(key=lambda job: job[1].end - job[1].start)
  extra = len(model.prefix) + len(model.suffix)
  i = 0
  while i < len(jobs):
    j = i + 1
    while j < len(jobs) and (j + 1 - i) * (jobs[j][1].end - jobs[j][1].start + extra) <= batch_tokens:
      j += 1
    batch = jobs[i:j]
    width = max(w.end - w.start for _, w in batch) + extra
    ids = np.full((len(batch), width), model.pad_id, dtype=np.int64)
    types = np.zeros((len(batch), width), dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for row, (t, w) in enumerate(batch):
      enc = prepared[t].encoded
      seq = model.prefix + enc.ids[w.start:w.end] + model.suffix
      ids[row, :len(seq)] = seq
      types[row, len(model.prefix):len(model.prefix) + w.end - w.start] = enc.types[w.start:w.end]
      mask[row, :len(seq)] = 1
    probs = model.predict(ids, types, mask)
    for row, (t, w) in enumerate(batch):
      base = len(model.prefix) - w.start
      out[t][w.core_start:w.core_end] = probs[row, base + w.core_start:base + w.core_end]
    i = j
  return out


#: Characters that may separate two entities inside one whitespace-delimited token ("U.S.-China",
#: "(Reuters)", "Smith's"); they are also trimmed from the edges of a mention.
SEPARATORS = frozenset("-‐‑‒–—/\\()[]{}\"'‘’“”«»,;:!?|")


_BRACKETS = {")": "(", "]": "[", "}": "{"}


def _closes_bracket(text: str, start: int, at: int) -> bool:
  """True when ``text[at]`` closes a bracket opened inside ``text[start:at]`` ("Mladost (BJ)")."""
  opener = _BRACKETS.get(text[at])
  if opener is None:
    return False
  inside = text[start:at]
  return inside.count(opener) > inside.count(text[at])


def _is_separator(word: str) -> bool:
  return bool(word) and all(c in SEPARATORS for c in word)


@functools.lru_cache(maxsize=8)
def _transitions(labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
  return nm.bio_transitions(labels)


def _mend_bio(best: np.ndarray, probs: np.ndarray, firsts: Sequence[int], sentence: Sequence[int],
              id2label: dict[int, str]) -> None:
  """Replace, in place, the first-piece labels of every sentence whose best labels are not valid BIO with
  the sentence's most probable valid sequence (:func:`transforms.ner_model.bio_viterbi`)."""
  if not len(firsts):
    return
  allowed, may_start = _transitions(tuple(id2label[i] for i in range(len(id2label))))
  firsts = np.asarray(firsts)
  labels = best[firsts]
  sentences = np.asarray(sentence)[firsts]
  opens = np.ones(len(firsts), dtype=bool)
  opens[1:] = sentences[1:] != sentences[:-1]
  invalid = np.where(opens, ~may_start[labels], ~allowed[np.roll(labels, 1), labels])
  if not invalid.any():
    return
  starts = np.flatnonzero(opens)
  ends = np.append(starts[1:], len(firsts))
  for a, b in zip(starts, ends, strict=True):
    if invalid[a:b].any():
      rows = np.log(np.clip(probs[firsts[a:b]], 1e-12, None))
      best[firsts[a:b]] = nm.bio_viterbi(rows, allowed, may_start)


def decode_entities(prepared: Prepared, probs: np.ndarray, id2label: dict[int, str], *,
                    bio: bool = False) -> list[Entity]:
  """Spans from per-piece probabilities.

  Each tokenizer word takes the label of its first piece; with ``bio`` (a model trained on BIO tags), a
  sentence whose labels are not valid BIO (``I-X`` not after ``B-X``/``I-X``) takes its most probable
  valid sequence instead. Words glued together without a separator
  (``u`` ``.`` ``s`` in "U.S.") form one unit labelled by its first word, as CoNLL tokens are; a final
  full stop keeps its own label ("Washington." vs "U.S."). BIO or IOB1 runs of words then join into
  spans, never across a sentence boundary; separators at the edges of a span are trimmed,
  except a closing bracket whose opening one is inside the span ("Mladost (BJ)").
  """
  enc = prepared.encoded
  text = prepared.text
  n = len(enc.ids)
  words: list[tuple[int, int]] = []
  for k in range(n):
    if enc.word_start[k] or not words:
      words.append((k, k + 1))
    else:
      words[-1] = (words[-1][0], k + 1)
  best = probs.argmax(-1) if n else np.zeros(0, dtype=np.int64)
  if bio:
    _mend_bio(best, probs, [a for a, _ in words], enc.sentence, id2label)
  tags: list[tuple[str, str | None, float]] = []
  unit_start = 0  # character where the current glued unit starts
  for w, (a, b) in enumerate(words):
    prefix, kind = nm.split_tag(id2label[int(best[a])])
    score = float(probs[a, best[a]])
    if w:
      pa, pb = words[w - 1]
      word = text[enc.offsets[a][0]:enc.offsets[b - 1][1]]
      previous = text[enc.offsets[pa][0]:enc.offsets[pb - 1][1]]
      glued = enc.offsets[pb - 1][1] == enc.offsets[a][0] and enc.sentence[pa] == enc.sentence[a]
      unit = text[unit_start:enc.offsets[pb - 1][1]] if glued else ""
      abbreviation = "." in unit or (len(unit) == 1 and unit.isalpha()) or unit.lower() in _ABBREVIATIONS
      final_stop = word == "." and not abbreviation and (
          w + 1 == len(words) or enc.offsets[words[w + 1][0]][0] != enc.offsets[b - 1][1]
          or _is_separator(text[enc.offsets[words[w + 1][0]][0]:enc.offsets[words[w + 1][1] - 1][1]]))
      glued = glued and not _is_separator(word) and not _is_separator(previous)
      if not glued:
        unit_start = enc.offsets[a][0]
      if glued and not final_stop:
        _, prev_kind, prev_score = tags[-1]
        prefix, kind, score = ("I", prev_kind, prev_score) if prev_kind else ("O", None, prev_score)
    tags.append((prefix, kind, score))

  entities: list[Entity] = []
  current: list | None = None  # [type, first_piece, last_piece, scores]

  def close() -> None:
    nonlocal current
    if current is None:
      return
    kind, first, last, scores = current
    start, end = enc.offsets[first][0], enc.offsets[last][1]
    while start < end and (text[start].isspace() or text[start] in SEPARATORS):
      start += 1
    while end > start and (text[end - 1].isspace() or text[end - 1] in SEPARATORS):
      if _closes_bracket(text, start, end - 1):
        break
      end -= 1
    if start < end and any(c.isalnum() for c in text[start:end]):
      entities.append(Entity(text=text[start:end], label=kind, start_char=start, end_char=end,
                             score=float(np.mean(scores)), sentence_index=int(enc.sentence[first])))
    current = None

  for (a, b), (prefix, kind, score) in zip(words, tags, strict=True):
    if kind is None:
      close()
      continue
    same_sentence = current is not None and enc.sentence[current[1]] == enc.sentence[a]
    if prefix == "B" or current is None or current[0] != kind or not same_sentence:
      close()
      current = [kind, a, b - 1, [score]]
    else:
      current[2] = b - 1
      current[3].append(score)
  close()
  return entities


def annotate(model: NerModel, texts: Sequence[str],
             sentences: Sequence[Sequence[tuple[int, int]] | None] | None = None,
             overlap: int = DEFAULT_OVERLAP, batch_tokens: int = DEFAULT_BATCH_TOKENS) -> list[list[Entity]]:
  """Entity mentions of many texts at once (windows batched across texts)."""
  sentences = sentences if sentences is not None else [None] * len(texts)
  prepared = [prepare(model, text, sents, overlap) for text, sents in zip(texts, sentences, strict=True)]
  probs = predict_windows(model, prepared, batch_tokens)
  return [decode_entities(p, pr, model.id2label, bio=model.bio) for p, pr in zip(prepared, probs, strict=True)]


# --- Beam ----------------------------------------------------------------------------------------------


class NerModelHandler(ModelHandler[Story, PredictionResult, NerModel]):
  """Runs a batch of stories through the NER model; ``PredictionResult.inference`` is ``list[Entity]``."""

  def __init__(self, model_ref: str | None = None, *, max_batch_chars: int = 64_000,
               batch_tokens: int = DEFAULT_BATCH_TOKENS,
               overlap: int = DEFAULT_OVERLAP, threads: int | None = None,
               max_window: int | None = None) -> None:
    super().__init__()
    self._model_ref = model_ref
    self._max_batch_chars = max_batch_chars
    self._batch_tokens = batch_tokens
    self._overlap = overlap
    self._threads = threads
    self._max_window = max_window

  def load_model(self) -> NerModel:
    return model_cache.load_for(self, [self._model_ref or nm.DEFAULT_MODEL_DIR], self._settings(), self._load)

  def _settings(self) -> tuple:
    """Settings the loaded model depends on (with its files: see :mod:`transforms.model_cache`)."""
    return (self._model_ref, self._threads, self._max_window)

  def _load(self) -> NerModel:
    return load_ner_model(self._model_ref, threads=self._threads, max_window=self._max_window)

  def run_inference(self, batch: Sequence[Story], model: NerModel,
                    inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
    texts = [story.body for story in batch]
    results = annotate(model, texts, overlap=self._overlap, batch_tokens=self._batch_tokens)
    return [PredictionResult(story, entities, model.name) for story, entities in zip(batch, results, strict=True)]

  def get_num_bytes(self, batch: Sequence[Story]) -> int:
    return sum(len(story.body.encode("utf-8", "backslashreplace")) for story in batch)

  def get_metrics_namespace(self) -> str:
    return METRICS_NAMESPACE

  def batch_elements_kwargs(self) -> dict[str, Any]:
    # Batches are capped by body length (in characters), not by story count alone.
    return {"max_batch_size": self._max_batch_chars, "element_size_fn": story_size}


def story_size(story: Story) -> int:
  """A story's weight for batching: its body length in characters (at least 1)."""
  return max(1, len(story.body))


_OK, _SKIP = "ok", "skip"


class _Route(beam.DoFn):
  """Stories the model applies to go on; the others leave with their status set."""

  def __init__(self, languages: Sequence[str] | None, model_name: str) -> None:
    self._languages = tuple(languages) if languages else None
    self._model_name = model_name
    self._skipped_language = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "stories_skipped_language")
    self._skipped_empty = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "stories_skipped_empty")

  def process(self, story: Story):
    language = (story.language or "").split("-")[0].lower()
    if not story.body or not story.body.strip():
      self._skipped_empty.inc()
      yield beam.pvalue.TaggedOutput(_SKIP, dataclasses.replace(
          story, entities=None, ner_status=STATUS_SKIPPED_EMPTY, ner_model=self._model_name))
    elif language and self._languages is not None and language not in self._languages:
      self._skipped_language.inc()
      yield beam.pvalue.TaggedOutput(_SKIP, dataclasses.replace(
          story, entities=None, ner_status=STATUS_SKIPPED_LANGUAGE, ner_model=self._model_name))
    else:
      yield story


class _Attach(beam.DoFn):
  """Prediction results -> stories with their entities (checking the offset invariant)."""

  def __init__(self, model_name: str) -> None:
    self._model_name = model_name
    self._applied = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "stories_applied")
    self._mentions = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "mentions")
    self._failed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "stories_failed")

  def process(self, result: PredictionResult):
    story: Story = result.example
    entities: list[Entity] = result.inference
    bad = [e for e in entities if story.body[e.start_char:e.end_char] != e.text]
    if bad:
      self._failed.inc()
      error = ValueError(f"{len(bad)} mention(s) do not match the body at their offsets")
      yield beam.pvalue.TaggedOutput("errors", _dead_letter(story, error))
      yield dataclasses.replace(story, entities=None, ner_status=STATUS_FAILED,
                                ner_model=result.model_id or self._model_name)
      return
    self._applied.inc()
    self._mentions.inc(len(entities))
    yield dataclasses.replace(story, entities=entities, ner_status=STATUS_APPLIED,
                              ner_model=result.model_id or self._model_name)


class _Failed(beam.DoFn):
  """A batch the model failed on: every story in it comes out failed, with a dead letter."""

  def __init__(self, model_name: str) -> None:
    self._model_name = model_name
    self._failed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "stories_failed")

  def process(self, failed: tuple[Sequence[Story], Any]):
    batch, error = failed
    if isinstance(error, tuple):
      # Beam's dead-letter form: (exception type, repr, formatted traceback lines).
      kind, text, trace = (tuple(error) + (None, None, None))[:3]
      last = trace[-1].strip() if trace else ""
      error = last if last.startswith(getattr(kind, "__name__", "?")) else f"{getattr(kind, '__name__', kind)}: {text}"
    for story in batch:
      self._failed.inc()
      yield beam.pvalue.TaggedOutput("errors", _dead_letter(story, error))
      yield dataclasses.replace(story, entities=None, ner_status=STATUS_FAILED, ner_model=self._model_name)


def _dead_letter(story: Story, error: BaseException | str) -> DeadLetter:
  return DeadLetter.from_raw(story.body.encode("utf-8", "backslashreplace"), uri=story.input_uri, locator=story.locator,
                             stage=STAGE, error=error, message_id=story.message_id, story_id=story.story_id)


class ExtractEntities(beam.PTransform):
  """PCollection[Story] -> (PCollection[Story] with ``entities``/``ner_status``/``ner_model``,
  PCollection[DeadLetter]).

  Every input story comes out exactly once. Stories in a language the model does not declare get
  ``skipped_language``; empty bodies ``skipped_empty``; stories the model fails on ``failed`` (plus a
  dead letter with ``stage="ner"``). Windowing is left as it is.
  """

  def __init__(self, model_ref: str | None = None, *, handler: ModelHandler | None = None,
               languages: Sequence[str] | None = None, model_name: str | None = None,
               **handler_kwargs: Any) -> None:
    super().__init__()
    if handler is None:
      info = describe_model(model_ref)
      handler = NerModelHandler(model_ref, **handler_kwargs)
      languages = languages if languages is not None else info["languages"]
      model_name = model_name or info["name"]
    self._handler = handler
    self._languages = languages
    self._model_name = model_name or "ner"

  def expand(self, stories):
    routed = stories | "Route" >> beam.ParDo(_Route(self._languages, self._model_name)).with_outputs(
        _SKIP, main=_OK)
    main, other = routed[_OK] | "RunInference" >> RunInference(self._handler).with_exception_handling()
    attached = main | "Attach" >> beam.ParDo(_Attach(self._model_name)).with_outputs("errors", main="stories")
    failed = other.failed_inferences | "Failed" >> beam.ParDo(_Failed(self._model_name)).with_outputs(
        "errors", main="stories")
    out = (routed[_SKIP], attached.stories, failed.stories) | "Stories" >> beam.Flatten()
    errors = (attached.errors, failed.errors) | "Errors" >> beam.Flatten()
    return out, errors


def entities_fn(model: NerModel, **kwargs: Any) -> Callable[[str], list[Entity]]:
  """A plain function ``text -> entities`` (handy outside Beam)."""
  return lambda text: annotate(model, [text], **kwargs)[0]
