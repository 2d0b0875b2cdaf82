"""Fused enrichment stage: NER and IPTC topics from one encoder pass, on ONNX Runtime (int8).

:class:`Enrich` fills what :class:`transforms.ner.ExtractEntities` and
:class:`transforms.topics.ClassifyTopics` fill (``entities``/``ner_status``/``ner_model`` and
``topics``/``topics_status``/``topics_model``) in a single ``RunInference``:

1. each story's body is tokenised once and cut into the NER stage's windows (sentence cores plus
   overlap, see :mod:`transforms.ner`); a headline that the body does not start with adds one short
   window read by the topic head only (the topic stage reads headline + body);
2. the windows of every story in a batch are sorted by token length and run together in batches of
   at most ``batch_tokens`` pieces, each batch of windows of one length (no padding, see
   :data:`DEFAULT_MAX_PADDING`);
3. one ``session.run`` per batch returns the NER logits of every piece and the topic logits of every
   window (see :mod:`transforms.onnx_backend`);
4. each piece takes its NER label from the window whose core holds it (the NER stage's decoding), and a
   story's topic logits are the length-weighted mean over its windows (the topic stage's pooling),
   then a sigmoid.

Language routing is per stage: a story the NER model does not declare gets ``skipped_language`` for NER
and may still get topics, and the other way round. A batch the model fails on marks both stages
``failed`` with one dead letter per stage. Windowing is left as it is.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
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
  Topic,
)
from transforms import model_cache
from transforms import ner as ner_stage
from transforms import ner_model as nm
from transforms import onnx_backend as ob
from transforms import topics as topics_stage

NAMESPACE = "wirestream.enrich"
NER_NAMESPACE = ner_stage.METRICS_NAMESPACE
TOPICS_NAMESPACE = "wirestream.topics"
#: Default window (pieces, specials included) of the fast path. The NER model is trained on 128-piece
#: contexts; it is run on 128 here too (wider windows waste less on overlap but are a different input
#: distribution: see the bench notes in the README).
DEFAULT_WINDOW = 128
#: Context of the fast path's windows: sentence cores packed up to the window less this many pieces of
#: context on each side. ``None``: the NER stage's windows (filled with context up to their size, so a
#: wire story's pieces run about twice). The default, 0, gives windows of whole consecutive sentences,
#: as the NER model was trained on, and runs each piece once. Measured on 200 Reuters stories, 0 against
#: 8 pieces: 10-25% more tokens/s (windows of 1.02 vs 1.14 times the pieces, specials included),
#: mentions that agree with the NER stage's 0.909 vs 0.912, CoNLL dev F1 0.9394 vs 0.9400 (the NER
#: stage: 0.9416), top topics that agree with the topic stage's 0.975 vs 0.98. ``wirestream bench
#: --conll`` measures it.
DEFAULT_CONTEXT = 0
#: Pieces a window may be padded by in a batch. 0: a batch holds windows of one length only. Padding
#: costs more than its share on ONNX Runtime's CPU kernels (softmax over masked scores, activation ranges
#: of dynamic quantisation): measured here, a batch of windows of 64..126 pieces padded to 128 took 1.7x
#: the time of the same windows run at their own lengths, while small batches lose little.
DEFAULT_MAX_PADDING = 0
TOPICS_DEFAULT_DIR = topics_stage.DEFAULT_MODEL_DIR


# --- The loaded model ---------------------------------------------------------------------------------------


class OnnxNerModel(ner_stage.NerModel):
  """:class:`transforms.ner.NerModel` whose network is the fused ONNX graph (NER output only).

  Works everywhere a ``NerModel`` does (``ner.annotate``, ``wirestream eval ner`` code).
  """

  def predict(self, input_ids: np.ndarray, token_types: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    ner_logits, _ = self.model.run(input_ids, token_types, attention_mask)
    return ob.softmax(ner_logits.astype(np.float32, copy=False))


@dataclasses.dataclass
class TopicInfo:
  """What the fused path needs to know about the topic head (read from ``topic_head.json``)."""

  labels: list[tuple[str, str]]
  languages: tuple[str, ...]
  threshold: float
  name: str

  @classmethod
  def read(cls, directory: Path) -> TopicInfo:
    config = json.loads((directory / "topic_head.json").read_text())
    return cls(labels=[(code, label) for code, label in config["labels"]],
               languages=tuple(lang.lower() for lang in (config.get("languages") or ("en",))),
               threshold=float(config.get("threshold", 0.5)),
               name=config.get("name") or f"wirestream-topics:{directory.name}")

  def accepts_language(self, language: str | None) -> bool:
    return not language or language.split("-")[0].lower() in self.languages

  def topics(self, scores: np.ndarray) -> list[Topic]:
    """Topics at or above the threshold (at least the top one), highest first (as the topic stage)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), self.labels[i][0]))
    chosen = [i for i in order if float(scores[i]) >= self.threshold] or order[:1]
    return [Topic(code=self.labels[i][0], label=self.labels[i][1], score=round(float(scores[i]), 6))
            for i in chosen]


class Enricher:
  """The fused model: tokenizer + NER label map + topic head info + one ONNX Runtime session."""

  def __init__(self, ner: OnnxNerModel, topics: TopicInfo, session: ob.EnrichSession, shared_encoder: bool):
    self.ner = ner
    self.topics = topics
    self.session = session
    self.shared_encoder = shared_encoder

  @property
  def name(self) -> str:
    return f"{self.ner.name}+{self.topics.name}"


def is_fusable(ner_ref: str | None, topics_ref: str | None) -> bool:
  """True when both models are ours (casing NER model + topic head), which the fused graph supports."""
  ner_dir = Path(ner_ref) if ner_ref else nm.DEFAULT_MODEL_DIR
  topic_dir = Path(topics_ref) if topics_ref else TOPICS_DEFAULT_DIR
  return (nm.is_casing_model_dir(ner_dir) and (ner_dir / nm.WEIGHTS_FILE).is_file()
          and (topic_dir / "topic_head.json").is_file())


def load_enricher(ner_ref: str | None = None, topics_ref: str | None = None, *, precision: str = "int8",
                  threads: int | None = None, max_window: int | None = None, share: bool = True,
                  runs: int | None = None) -> Enricher:
  """Export (first time, cached) and open the fused graph for our NER model and topic head.

  ``threads`` cores serve ``runs`` concurrent batches (default: :func:`transforms.onnx_backend.default_runs`).

  ``share=False`` gives the topic head its own copy of the encoder even when it could share the NER
  model's (two encoder passes; for measurements only).
  """
  ner_dir = Path(ner_ref) if ner_ref else nm.DEFAULT_MODEL_DIR
  topic_dir = Path(topics_ref) if topics_ref else TOPICS_DEFAULT_DIR
  if not is_fusable(str(ner_dir), str(topic_dir)):
    raise ValueError(f"the fused ONNX path needs our NER model and topic head ({ner_dir}, {topic_dir})")
  session = ob.open_session(ner_dir, topic_dir, precision=precision, threads=threads, share=share, runs=runs)
  ner = _onnx_ner_model(session, ner_dir, ner_ref, max_window)
  return Enricher(ner, TopicInfo.read(topic_dir), session, share and ob.shares_encoder(ner_dir, topic_dir))


def _onnx_ner_model(session, ner_dir: Path, ner_ref: str | None, max_window: int | None) -> OnnxNerModel:
  """Our NER model's labels, tokenizer and window settings around an open ONNX session."""
  info = ner_stage.describe_model(str(ner_dir) if ner_ref else None)
  config = json.loads((ner_dir / nm.CONFIG_FILE).read_text())
  tokenizer = nm.load_fast_tokenizer(nm.base_model_dir())
  return OnnxNerModel(session, tokenizer, config["id2label"], name=info["name"], casing=True,
                      languages=info["languages"], max_window=max_window or DEFAULT_WINDOW,
                      prefix=[tokenizer.token_to_id("[CLS]")], suffix=[tokenizer.token_to_id("[SEP]")],
                      pad_id=tokenizer.token_to_id("[PAD]"), threads=session.threads,
                      bio=nm.tags_are_bio(config.get(nm.WIRESTREAM_KEY)))


def load_onnx_ner(ner_ref: str | None = None, *, precision: str = "int8", threads: int | None = None,
                  max_window: int | None = None) -> OnnxNerModel:
  """Our NER model alone on ONNX Runtime (a graph without the topic head), for the NER stage by itself."""
  ner_dir = Path(ner_ref) if ner_ref else nm.DEFAULT_MODEL_DIR
  if not (nm.is_casing_model_dir(ner_dir) and (ner_dir / nm.WEIGHTS_FILE).is_file()):
    raise ValueError(f"the ONNX path needs our NER model (a casing model directory), not {ner_dir}")
  # one batch at a time (transforms.ner.predict_windows): all threads serve each run
  session = ob.open_session(ner_dir, None, precision=precision, threads=threads, runs=1)
  return _onnx_ner_model(session, ner_dir, ner_ref, max_window)


class OnnxNerModelHandler(ner_stage.NerModelHandler):
  """The NER stage's handler on ONNX Runtime: ``ExtractEntities(handler=OnnxNerModelHandler(...))``."""

  def __init__(self, model_ref: str | None = None, *, precision: str = "int8", **kwargs: Any):
    super().__init__(model_ref, **kwargs)
    self._precision = precision

  def _settings(self) -> tuple:
    return (*super()._settings(), self._precision, str(ob.cache_root()))

  def _load(self) -> OnnxNerModel:
    return load_onnx_ner(self._model_ref, precision=self._precision, threads=self._threads,
                         max_window=self._max_window)


# --- One batch of stories -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Enriched:
  """The result for one story: ``None`` for a stage that does not apply to it."""

  entities: list[Entity] | None
  topics: list[Topic] | None


@dataclasses.dataclass
class _Job:
  story: int
  ids: list[int]
  types: list[int]
  #: NER window (None for a topic-only headline window).
  window: ner_stage.Window | None


def fast_windows(prepared: ner_stage.Prepared, context: int | None) -> list[ner_stage.Window]:
  """The windows of ``prepared`` with at most ``context`` pieces (whole words) beside each core
  (``None``: as planned)."""
  if context is None:
    return prepared.windows
  word_start = prepared.encoded.word_start
  n = len(word_start)
  out = []
  for w in prepared.windows:
    start, end = max(w.start, w.core_start - context), min(w.end, w.core_end + context)
    while start < w.core_start and not word_start[start]:
      start += 1
    while w.core_end < end < n and not word_start[end]:
      end -= 1
    out.append(ner_stage.Window(start, end, w.core_start, w.core_end))
  return out


def _batch_arrays(batch: Sequence[_Job], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``input_ids``, ``token_type_ids`` and ``attention_mask`` of a batch, padded to its widest window."""
  width = max(len(job.ids) for job in batch)
  ids = np.full((len(batch), width), pad_id, dtype=np.int64)
  types = np.zeros((len(batch), width), dtype=np.int64)
  mask = np.zeros((len(batch), width), dtype=np.int64)
  for row, job in enumerate(batch):
    ids[row, :len(job.ids)] = job.ids
    types[row, :len(job.types)] = job.types
    mask[row, :len(job.ids)] = 1
  return ids, types, mask


def enrich_texts(enricher: Enricher, bodies: Sequence[str], headlines: Sequence[str | None] | None = None,
                 *, ner_flags: Sequence[bool] | None = None, topic_flags: Sequence[bool] | None = None,
                 sentences: Sequence[Sequence[tuple[int, int]] | None] | None = None,
                 context: int | None = DEFAULT_CONTEXT, batch_tokens: int = ner_stage.DEFAULT_BATCH_TOKENS,
                 max_padding: int = DEFAULT_MAX_PADDING, sort_windows: bool = True) -> list[Enriched]:
  """Entities and topics of many stories, windows batched by length across stories, one pass each.

  ``sentences`` gives the sentence ranges of each body (default: :func:`transforms.ner.split_sentences`).
  ``context`` shapes the windows (see :data:`DEFAULT_CONTEXT`; ``None`` gives the NER stage's windows).
  Windows are sorted by length and batched up to ``batch_tokens`` pieces, a batch spanning at most
  ``max_padding`` pieces of length. ``sort_windows=False`` keeps the windows in story order and batches
  them by ``batch_tokens`` alone (padding; for measurements only).
  """
  n = len(bodies)
  headlines = headlines if headlines is not None else [None] * n
  ner_flags = ner_flags if ner_flags is not None else [True] * n
  topic_flags = topic_flags if topic_flags is not None else [True] * n
  model = enricher.ner
  prefix, suffix = model.prefix, model.suffix
  sentences = sentences if sentences is not None else [None] * n
  overlap = ner_stage.DEFAULT_OVERLAP if context is None else context
  prepared = [ner_stage.prepare(model, body, sents, overlap=overlap)
              for body, sents in zip(bodies, sentences, strict=True)]
  jobs: list[_Job] = []
  for t, (prep, headline) in enumerate(zip(prepared, headlines, strict=True)):
    enc = prep.encoded
    for w in fast_windows(prep, context):
      jobs.append(_Job(t, prefix + enc.ids[w.start:w.end] + suffix,
                       [0] * len(prefix) + enc.types[w.start:w.end] + [0] * len(suffix), w))
    if topic_flags[t] and headline and story_text_prefix(headline, bodies[t]):
      head = prepare_headline(model, headline)
      if head is not None:
        jobs.append(_Job(t, *head, None))
    if topic_flags[t] and not prep.windows and (not jobs or jobs[-1].story != t):
      jobs.append(_Job(t, prefix + suffix, [0] * (len(prefix) + len(suffix)), None))
  if sort_windows:
    jobs.sort(key=lambda job: len(job.ids))
  num_labels = len(model.id2label)
  probs = [np.zeros((len(p.encoded.ids), num_labels), dtype=np.float32) for p in prepared]
  topic_sum = [None] * n
  topic_weight = np.zeros(n, dtype=np.float64)
  batches: list[list[_Job]] = []
  i = 0
  while i < len(jobs):
    j = i + 1
    widest = len(jobs[i].ids) + max_padding if sort_windows else None
    while j < len(jobs) and (j + 1 - i) * len(jobs[j].ids) <= batch_tokens \
        and (widest is None or len(jobs[j].ids) <= widest):
      j += 1
    batches.append(jobs[i:j])
    i = j
  arrays = (_batch_arrays(batch, model.pad_id) for batch in batches)
  for batch, (ner_logits, topic_logits) in zip(batches, enricher.session.run_batches(arrays), strict=True):
    for row, job in enumerate(batch):
      t = job.story
      if job.window is not None and ner_flags[t]:
        w = job.window
        base = len(prefix) - w.start
        probs[t][w.core_start:w.core_end] = ob.softmax(ner_logits[row, base + w.core_start:base + w.core_end])
      if topic_flags[t]:
        weighted = topic_logits[row].astype(np.float64) * len(job.ids)
        topic_sum[t] = weighted if topic_sum[t] is None else topic_sum[t] + weighted
        topic_weight[t] += len(job.ids)
  out = []
  for t in range(n):
    entities = ner_stage.decode_entities(prepared[t], probs[t], model.id2label, bio=model.bio) if ner_flags[t] else None
    topics = None
    if topic_flags[t]:
      scores = 1.0 / (1.0 + np.exp(-(topic_sum[t] / topic_weight[t])))
      topics = enricher.topics.topics(scores)
    out.append(Enriched(entities, topics))
  return out


def story_text_prefix(headline: str, body: str) -> bool:
  """True when the topic stage would put ``headline`` in front of ``body`` (see ``topics.story_text``)."""
  headline = headline.strip()
  return bool(headline) and not body.lstrip().startswith(headline)


def prepare_headline(model: OnnxNerModel, headline: str) -> tuple[list[int], list[int]] | None:
  """Word pieces and token types of a headline window (cut to the window size)."""
  enc = ner_stage.encode_text(model.tokenizer, headline, [(0, len(headline))], model.casing)
  if not enc.ids:
    return None
  ids = enc.ids[:model.max_pieces]
  types = enc.types[:model.max_pieces]
  return (model.prefix + ids + model.suffix,
          [0] * len(model.prefix) + types + [0] * len(model.suffix))


# --- Beam ---------------------------------------------------------------------------------------------------


class EnrichModelHandler(ModelHandler[Story, PredictionResult, Enricher]):
  """Runs batches of stories through the fused model; ``PredictionResult.inference`` is :class:`Enriched`."""

  def __init__(self, ner_ref: str | None = None, topics_ref: str | None = None, *, precision: str = "int8",
               threads: int | None = None, max_window: int | None = None, max_batch_chars: int = 64_000,
               batch_tokens: int = ner_stage.DEFAULT_BATCH_TOKENS, context: int | None = DEFAULT_CONTEXT):
    super().__init__()
    self._ner_ref = ner_ref
    self._topics_ref = topics_ref
    self._precision = precision
    self._threads = threads
    self._max_window = max_window
    self._max_batch_chars = max_batch_chars
    self._batch_tokens = batch_tokens
    self._context = context

  def load_model(self) -> Enricher:
    settings = (self._ner_ref, self._topics_ref, self._precision, self._threads, self._max_window,
                str(ob.cache_root()))
    return model_cache.load_for(
        self, [self._ner_ref or nm.DEFAULT_MODEL_DIR, self._topics_ref or TOPICS_DEFAULT_DIR], settings,
        lambda: load_enricher(self._ner_ref, self._topics_ref, precision=self._precision,
                              threads=self._threads, max_window=self._max_window))

  def run_inference(self, batch: Sequence[Story], model: Enricher,
                    inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
    results = enrich_texts(
        model, [s.body for s in batch], [s.headline for s in batch],
        ner_flags=[model.ner.accepts_language(s.language) for s in batch],
        topic_flags=[model.topics.accepts_language(s.language) for s in batch],
        context=self._context, batch_tokens=self._batch_tokens)
    return [PredictionResult(story, result, model.name) for story, result in zip(batch, results, strict=True)]

  def get_num_bytes(self, batch: Sequence[Story]) -> int:
    return sum(len(story.body.encode("utf-8", "backslashreplace")) for story in batch)

  def get_metrics_namespace(self) -> str:
    return NAMESPACE

  def batch_elements_kwargs(self) -> dict[str, Any]:
    return {"max_batch_size": self._max_batch_chars, "element_size_fn": ner_stage.story_size}


def _language(story: Story) -> str:
  return (story.language or "").split("-")[0].lower()


class _Route(beam.DoFn):
  """Sets the status of every stage that does not apply; stories with at least one stage go on."""

  def __init__(self, ner_languages: Sequence[str] | None, topic_languages: Sequence[str],
               ner_name: str, topics_name: str):
    self._ner_languages = tuple(ner_languages) if ner_languages else None
    self._topic_languages = tuple(topic_languages)
    self._ner_name = ner_name
    self._topics_name = topics_name
    self._counters = {
        (ns, name): beam.metrics.Metrics.counter(ns, name)
        for ns, name in ((NER_NAMESPACE, "stories_skipped_language"),
                         (NER_NAMESPACE, "stories_skipped_empty"),
                         (TOPICS_NAMESPACE, "skipped_language"), (TOPICS_NAMESPACE, "skipped_empty"))}

  def process(self, story: Story):
    language = _language(story)
    if not (story.body or "").strip():
      self._counters[(NER_NAMESPACE, "stories_skipped_empty")].inc()
      self._counters[(TOPICS_NAMESPACE, "skipped_empty")].inc()
      yield beam.pvalue.TaggedOutput("skipped", dataclasses.replace(
          story, entities=None, ner_status=STATUS_SKIPPED_EMPTY, ner_model=self._ner_name,
          topics=None, topics_status=STATUS_SKIPPED_EMPTY, topics_model=self._topics_name))
      return
    ner_ok = not language or self._ner_languages is None or language in self._ner_languages
    topics_ok = not language or language in self._topic_languages
    if not ner_ok:
      self._counters[(NER_NAMESPACE, "stories_skipped_language")].inc()
      story = dataclasses.replace(story, entities=None, ner_status=STATUS_SKIPPED_LANGUAGE,
                                  ner_model=self._ner_name)
    if not topics_ok:
      self._counters[(TOPICS_NAMESPACE, "skipped_language")].inc()
      story = dataclasses.replace(story, topics=None, topics_status=STATUS_SKIPPED_LANGUAGE,
                                  topics_model=self._topics_name)
    if ner_ok or topics_ok:
      yield story
    else:
      yield beam.pvalue.TaggedOutput("skipped", story)


class _Attach(beam.DoFn):
  """Prediction results -> stories with the fields of every stage that applied."""

  def __init__(self, ner_name: str, topics_name: str):
    self._ner_name = ner_name
    self._topics_name = topics_name
    self._ner_applied = beam.metrics.Metrics.counter(NER_NAMESPACE, "stories_applied")
    self._mentions = beam.metrics.Metrics.counter(NER_NAMESPACE, "mentions")
    self._ner_failed = beam.metrics.Metrics.counter(NER_NAMESPACE, "stories_failed")
    self._topics_applied = beam.metrics.Metrics.counter(TOPICS_NAMESPACE, "applied")
    self._topics = beam.metrics.Metrics.counter(TOPICS_NAMESPACE, "topics")

  def process(self, result: PredictionResult):
    story: Story = result.example
    enriched: Enriched = result.inference
    if enriched.entities is not None:
      bad = [e for e in enriched.entities if story.body[e.start_char:e.end_char] != e.text]
      if bad:
        self._ner_failed.inc()
        error = ValueError(f"{len(bad)} mention(s) do not match the body at their offsets")
        yield beam.pvalue.TaggedOutput("errors", _dead_letter(story, "ner", error))
        story = dataclasses.replace(story, entities=None, ner_status=STATUS_FAILED, ner_model=self._ner_name)
      else:
        self._ner_applied.inc()
        self._mentions.inc(len(enriched.entities))
        story = dataclasses.replace(story, entities=enriched.entities, ner_status=STATUS_APPLIED,
                                    ner_model=self._ner_name)
    if enriched.topics is not None:
      self._topics_applied.inc()
      self._topics.inc(len(enriched.topics))
      story = dataclasses.replace(story, topics=enriched.topics, topics_status=STATUS_APPLIED,
                                  topics_model=self._topics_name)
    yield story


class _Failed(beam.DoFn):
  """A batch the model failed on: each stage that applied is ``failed``, with one dead letter per stage."""

  def __init__(self, ner_name: str, topics_name: str):
    self._ner_name = ner_name
    self._topics_name = topics_name
    self._ner_failed = beam.metrics.Metrics.counter(NER_NAMESPACE, "stories_failed")
    self._topics_failed = beam.metrics.Metrics.counter(TOPICS_NAMESPACE, "failed")

  def process(self, failed: tuple[Sequence[Story], Any]):
    batch, error = failed
    if isinstance(error, tuple):
      kind, text, _ = (tuple(error) + (None, None, None))[:3]
      error = f"{getattr(kind, '__name__', kind)}: {text}"
    for story in batch:
      if story.ner_status != STATUS_SKIPPED_LANGUAGE:
        self._ner_failed.inc()
        yield beam.pvalue.TaggedOutput("errors", _dead_letter(story, "ner", error))
        story = dataclasses.replace(story, entities=None, ner_status=STATUS_FAILED, ner_model=self._ner_name)
      if story.topics_status != STATUS_SKIPPED_LANGUAGE:
        self._topics_failed.inc()
        yield beam.pvalue.TaggedOutput("errors", _dead_letter(story, "topics", error))
        story = dataclasses.replace(story, topics=None, topics_status=STATUS_FAILED,
                                    topics_model=self._topics_name)
      yield story


def _dead_letter(story: Story, stage: str, error: BaseException | str) -> DeadLetter:
  return DeadLetter.from_raw(story.body.encode("utf-8", "backslashreplace"), uri=story.input_uri, locator=story.locator,
                             stage=stage, error=error, message_id=story.message_id, story_id=story.story_id)


class Enrich(beam.PTransform):
  """PCollection[Story] -> (PCollection[Story] with NER and topic fields, PCollection[DeadLetter]).

  The fused equivalent of ``ExtractEntities`` followed by ``ClassifyTopics`` for our own models (see
  :func:`is_fusable`); every input story comes out exactly once.
  """

  def __init__(self, ner_model: str | None = None, topics_model: str | None = None, *,
               handler: ModelHandler | None = None, precision: str = "int8", threads: int | None = None,
               max_window: int | None = None, **handler_kwargs: Any):
    super().__init__()
    ner_info = ner_stage.describe_model(ner_model)
    topic_dir = Path(topics_model) if topics_model else TOPICS_DEFAULT_DIR
    topic_info = TopicInfo.read(topic_dir)
    self._ner_languages = ner_info["languages"]
    self._topic_languages = topic_info.languages
    self._ner_name = ner_info["name"]
    self._topics_name = topic_info.name
    self._handler = handler or EnrichModelHandler(ner_model, topics_model, precision=precision,
                                                  threads=threads, max_window=max_window, **handler_kwargs)

  def expand(self, stories):
    routed = stories | "Route" >> beam.ParDo(_Route(
        self._ner_languages, self._topic_languages, self._ner_name, self._topics_name)).with_outputs(
        "skipped", main="enrich")
    main, other = routed.enrich | "RunInference" >> RunInference(self._handler).with_exception_handling()
    attached = main | "Attach" >> beam.ParDo(_Attach(self._ner_name, self._topics_name)).with_outputs(
        "errors", main="stories")
    failed = other.failed_inferences | "Failed" >> beam.ParDo(
        _Failed(self._ner_name, self._topics_name)).with_outputs("errors", main="stories")
    out = (routed.skipped, attached.stories, failed.stories) | "Stories" >> beam.Flatten()
    errors = (attached.errors, failed.errors) | "Errors" >> beam.Flatten()
    return out, errors
