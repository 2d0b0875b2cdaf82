"""The enrichment core: one path from stories to entities and topics, whatever the backend.

Tokenise once, plan windows once, batch once, run the backend, decode once, pool once:

1. each body is split into sentences and tokenised once (:mod:`transforms.windows`) and cut into windows
   (sentence cores with context); a headline the body does not start with adds one row read by the topic
   head only;
2. the rows of every story are sorted by length and batched (:func:`transforms.windows.batches`);
3. the backend (:mod:`transforms.backends`, :mod:`transforms.onnx_backend`) returns NER logits of every
   piece and topic logits of every row;
4. each piece takes its NER label from the window whose core holds it and the pieces become character
   spans (:func:`transforms.decode.decode_entities`); a story's topic scores are pooled over its rows
   (:func:`transforms.decode.pool_topics`) and the topic rule applied (:func:`transforms.decode.choose_topics`).

:func:`load` builds the models a run needs as :class:`Enricher` parts: our NER model and topic head share
one part (one encoder pass), a Hugging Face model gets a part of its own (its own tokenizer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from schemas.records import Entity, Topic
from transforms import decode
from transforms import spec as sp
from transforms import windows as wd

STAGES = ("ner", "topics")
BACKENDS = ("onnx", "torch")
#: Windows: cores of whole sentences packed up to the window less this many pieces on each side...
DEFAULT_CONTEXT = 0
#: ...and context filled up to the window's size (``False``: at most ``DEFAULT_CONTEXT`` pieces a side).
#: CoNLL dev F1 without context: 0.9424 with the smoothed int8 graph (:mod:`transforms.onnx_backend`),
#: 0.9405 in fp32. With the former int8 graph: no context 0.9402, 8/16 pieces 0.9391/0.9393, 8 pieces filled
#: up to the window 0.9417, 32 filled 0.9435 (at twice the pieces run). Filled windows read about 1.4 times
#: the pieces and take 1.2-1.5 times as long: the default keeps the pipeline's speed.
DEFAULT_FILL = False


@dataclasses.dataclass
class Enriched:
  """The result for one story: ``None`` for a model that did not read it."""

  entities: list[Entity] | None = None
  topics: list[Topic] | None = None
  #: The pooled score of every topic label, in the model's label order.
  topic_scores: np.ndarray | None = None


@dataclasses.dataclass
class Enricher:
  """One tokenizer and one backend with the specs of the models it runs (a NER model, a topic model or
  both)."""

  backend: object
  tokenizer: object
  ner: sp.NerSpec | None
  topics: sp.TopicSpec | None
  prefix: list[int]
  suffix: list[int]
  pad_id: int
  #: Token type of a piece from its characters (our casing channel), or None for zeros.
  casing: Callable[[str], int] | None
  max_window: int

  @property
  def max_pieces(self) -> int:
    """Room for text pieces in one window (special tokens excluded)."""
    return self.max_window - len(self.prefix) - len(self.suffix)

  def _row(self, text: int, ids: list[int], types: list[int], window: wd.Window | None) -> wd.Row:
    return wd.Row(text, self.prefix + ids + self.suffix,
                  [0] * len(self.prefix) + types + [0] * len(self.suffix), window)

  def plan(self, t: int, body: str, headline: str | None, sentences: Sequence[tuple[int, int]] | None,
           topics: bool, context: int = DEFAULT_CONTEXT, fill: bool = DEFAULT_FILL
           ) -> tuple[wd.Encoded, list[wd.Row]]:
    """The pieces of text ``t`` and its model rows: its windows, and for the topic head (``topics``) a
    headline the body does not start with, or an empty row when there is nothing else to read."""
    enc = wd.encode_text(self.tokenizer, body, sentences if sentences is not None else wd.split_sentences(body),
                         self.casing)
    planned = wd.plan_windows(enc.word_start, enc.sentence, self.max_pieces, context, fill)
    rows = [self._row(t, enc.ids[w.start:w.end], enc.types[w.start:w.end], w) for w in planned]
    headline = (headline or "").strip()
    if topics and headline and not body.lstrip().startswith(headline):
      head = wd.encode_text(self.tokenizer, headline, [(0, len(headline))], self.casing)
      if head.ids:
        rows.append(self._row(t, head.ids[:self.max_pieces], head.types[:self.max_pieces], None))
    if topics and not rows:
      rows.append(self._row(t, [], [], None))  # nothing to read: the topic head sees an empty text
    return enc, rows

  def run(self, bodies: Sequence[str], headlines: Sequence[str | None], ner_flags: Sequence[bool],
          topic_flags: Sequence[bool], sentences: Sequence[Sequence[tuple[int, int]] | None], *,
          context: int, fill: bool, batch_tokens: int, max_padding: int) -> list[Enriched]:
    ner_flags = [bool(self.ner) and flag for flag in ner_flags]
    topic_flags = [bool(self.topics) and flag for flag in topic_flags]
    rows: list[wd.Row] = []
    encoded: list[wd.Encoded | None] = []
    for t, body in enumerate(bodies):
      if not (ner_flags[t] or topic_flags[t]):
        encoded.append(None)
        continue
      enc, planned = self.plan(t, body, headlines[t], sentences[t], topic_flags[t], context, fill)
      encoded.append(enc)
      rows += planned
    probs = [np.zeros((len(enc.ids), len(self.ner.labels)), np.float32) if enc and ner_flags[t] else None
             for t, enc in enumerate(encoded)]
    topic_rows: list[list[tuple[np.ndarray, int]]] = [[] for _ in bodies]
    for batch in wd.batches(rows, batch_tokens, max_padding):
      ner_logits, topic_logits = self.backend.run(*wd.padded(batch, self.pad_id))
      for r, row in enumerate(batch):
        if row.window is not None and probs[row.text] is not None:
          w, base = row.window, len(self.prefix) - row.window.start
          probs[row.text][w.core_start:w.core_end] = decode.softmax(
              ner_logits[r, base + w.core_start:base + w.core_end])
        if topic_flags[row.text]:
          topic_rows[row.text].append((topic_logits[r], len(row.ids)))
    out = []
    for t, body in enumerate(bodies):
      result = Enriched()
      if ner_flags[t]:
        result.entities = decode.decode_entities(body, encoded[t], probs[t], self.ner.labels, bio=self.ner.bio)
      if topic_flags[t]:
        logits, lengths = zip(*topic_rows[t], strict=True)
        result.topic_scores = decode.pool_topics(logits, lengths, self.topics.multi_label)
        result.topics = decode.choose_topics(result.topic_scores, self.topics.labels, self.topics.threshold)
      out.append(result)
    return out


class Enrichment:
  """The models of a run (one or two :class:`Enricher` parts) behind one call."""

  def __init__(self, parts: Sequence[Enricher]):
    self.parts = list(parts)
    self.ner = next((part.ner for part in parts if part.ner), None)
    self.topics = next((part.topics for part in parts if part.topics), None)

  @property
  def name(self) -> str:
    return "+".join(spec.name for spec in (self.ner, self.topics) if spec)

  def __call__(self, bodies: Sequence[str], headlines: Sequence[str | None] | None = None, *,
               ner_flags: Sequence[bool] | None = None, topic_flags: Sequence[bool] | None = None,
               sentences: Sequence[Sequence[tuple[int, int]] | None] | None = None,
               context: int = DEFAULT_CONTEXT, fill: bool = DEFAULT_FILL,
               batch_tokens: int = wd.DEFAULT_BATCH_TOKENS,
               max_padding: int = wd.DEFAULT_MAX_PADDING) -> list[Enriched]:
    """Entities and topics of many stories. ``sentences`` gives the sentence ranges of each body
    (default: :func:`transforms.windows.split_sentences`); flags say which model reads which story."""
    n = len(bodies)
    args = (bodies, headlines or [None] * n, ner_flags or [True] * n, topic_flags or [True] * n,
            sentences or [None] * n)
    out = [Enriched() for _ in range(n)]
    for part in self.parts:
      for merged, result in zip(out, part.run(*args, context=context, fill=fill, batch_tokens=batch_tokens,
                                              max_padding=max_padding), strict=True):
        merged.entities = result.entities if result.entities is not None else merged.entities
        if result.topics is not None:
          merged.topics, merged.topic_scores = result.topics, result.topic_scores
    return out


def _our_tokenizer(ner: sp.NerSpec | None, topics: sp.TopicSpec | None, max_window: int | None) -> dict:
  from transforms import ner_model as nm

  tokenizer = nm.load_fast_tokenizer(nm.base_model_dir())
  casing = ner is not None or topics.encoder != sp.BASE_ENCODER
  return {"tokenizer": tokenizer, "prefix": [tokenizer.token_to_id("[CLS]")],
          "suffix": [tokenizer.token_to_id("[SEP]")], "pad_id": tokenizer.token_to_id("[PAD]"),
          "casing": nm.casing_class if casing else None,
          "max_window": max_window or (ner.max_window if ner else 128)}


def _hf_part(spec, kind: str, threads: int | None, max_window: int | None) -> Enricher:
  """A Hugging Face token classifier (``kind="ner"``) or sequence classifier (``"topics"``)."""
  from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

  from transforms.backends import HFBackend

  source, local = spec.ref, spec.path is not None or sp.local_files_only()
  tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
  if not getattr(tokenizer, "is_fast", False):
    raise ValueError(f"model {source!r} needs a fast tokenizer (tokenizer.json) for character offsets")
  auto = AutoModelForTokenClassification if kind == "ner" else AutoModelForSequenceClassification
  model = auto.from_pretrained(source, local_files_only=local).eval()
  try:
    marked = tokenizer.build_inputs_with_special_tokens([-1])
  except AttributeError:  # tokenizers without it: BERT-style markers
    marked = [t for t in (tokenizer.cls_token_id,) if t is not None] + [-1] \
        + [t for t in (tokenizer.sep_token_id,) if t is not None]
  limit = int(getattr(model.config, "max_position_embeddings", 512) or 512)
  if isinstance(tokenizer.model_max_length, int) and 0 < tokenizer.model_max_length < 100_000:
    limit = min(limit, tokenizer.model_max_length)
  backend = tokenizer.backend_tokenizer
  backend.no_truncation()
  backend.no_padding()
  return Enricher(HFBackend(**{kind: model}, threads=threads), backend,
                  ner=spec if kind == "ner" else None, topics=spec if kind == "topics" else None,
                  prefix=marked[:marked.index(-1)], suffix=marked[marked.index(-1) + 1:],
                  pad_id=tokenizer.pad_token_id or 0, casing=None, max_window=min(max_window or 128, limit))


def load(ner_ref: str | None = None, topics_ref: str | None = None, *, stages: Sequence[str] = STAGES,
         backend: str = "onnx", precision: str = "int8", threads: int | None = None,
         max_window: int | None = None, taxonomy: str | None = None, share: bool = True) -> Enrichment:
  """The models ``stages`` need on ``backend`` (``onnx``: int8 by default, or ``torch``: fp32) for our
  models; a Hugging Face model always runs in torch (:class:`transforms.backends.HFBackend`)."""
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
  ner = sp.read_ner(ner_ref) if "ner" in stages else None
  topics = sp.read_topics(topics_ref, taxonomy) if "topics" in stages else None
  ours_ner = ner if ner is not None and ner.casing else None
  ours_topics = topics if topics is not None and topics.is_head else None
  parts = []
  if ours_ner or ours_topics:
    if backend == "onnx":
      from transforms import onnx_backend

      model = onnx_backend.load(ours_ner, ours_topics, precision=precision, threads=threads, share=share)
    else:
      from transforms.backends import TorchBackend
      from transforms.fused import Fused

      model = TorchBackend(Fused(ours_ner, ours_topics, share), threads)
    parts.append(Enricher(model, ner=ours_ner, topics=ours_topics, **_our_tokenizer(ours_ner, ours_topics,
                                                                                      max_window)))
  if ner is not None and ours_ner is None:
    parts.append(_hf_part(ner, "ner", threads, max_window))
  if topics is not None and ours_topics is None:
    parts.append(_hf_part(topics, "topics", threads, max_window))
  return Enrichment(parts)
