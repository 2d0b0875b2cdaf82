"""The enrichment stage: NER and IPTC topics for every story, through one ``RunInference``.

:class:`Enrich` runs whichever of the stages ``ner`` and ``topics`` it is asked for, with one
:class:`EnrichModelHandler` (the models of :mod:`transforms.core`, on the backend asked for) and one set of
route, attach and failure steps. Every input story comes out exactly once, with for each stage asked for:

* nothing to read (neither body nor headline) -> ``skipped_empty``;
* a language the stage's model does not declare -> ``skipped_language`` (a story without a known language
  is read);
* otherwise ``applied`` with its ``entities`` / ``topics``;
* a batch the models fail on, or mentions that do not match the body at their offsets -> ``failed``, plus a
  ``DeadLetter`` with the stage's name.

A story's text is its headline and its body. NER reads the body and, apart, a headline the body does not
start with (:func:`headline_to_read`; a headline-only brief is read too): headline mentions carry
``field="headline"`` and offsets into the headline, so the body's offsets stay exact. The topic model
reads a headline with the body (:mod:`transforms.core`).

Counters live in the ``wirestream.enrich`` namespace, named ``{stage}_{outcome}``. The stage adds no
windowing of its own, so streaming windows are preserved. :func:`add_listener` hears, in this process, how
many stories have been through the stage as they go (a runner may hand the stage's output on only when it
has read all its input).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from schemas.records import (
  FIELD_HEADLINE,
  STATUS_APPLIED,
  STATUS_FAILED,
  STATUS_SKIPPED_EMPTY,
  STATUS_SKIPPED_LANGUAGE,
  DeadLetter,
  Story,
)
from transforms import core, model_cache
from transforms import spec as sp
from transforms import windows as wd

NAMESPACE = "wirestream.enrich"
#: Story fields of each stage: result, status, model name.
FIELDS = {"ner": ("entities", "ner_status", "ner_model"), "topics": ("topics", "topics_status", "topics_model")}


_LISTENERS: list[Callable[[int], None]] = []


def add_listener(listener: Callable[[int], None]) -> None:
  """Tells ``listener(n)`` of every ``n`` stories that have been through the stage in this process: read by
  the models (or failed on), or routed around them."""
  _LISTENERS.append(listener)


def remove_listener(listener: Callable[[int], None]) -> None:
  if listener in _LISTENERS:
    _LISTENERS.remove(listener)


def _through(n: int) -> None:
  for listener in tuple(_LISTENERS):
    listener(n)


def story_size(story: Story) -> int:
  """A story's weight for batching: its headline and body length in characters (at least 1)."""
  return max(1, len(story.body or "") + len(story.headline or ""))


def has_text(story: Story) -> bool:
  """Whether the story has anything to read: a body or a headline."""
  return bool((story.body or "").strip() or (story.headline or "").strip())


def headline_to_read(story: Story) -> str | None:
  """The headline NER reads apart from the body: the story's headline, unless it is empty or the body
  starts with it (its mentions are then in the body already)."""
  headline = story.headline or ""
  if not headline.strip() or (story.body or "").lstrip().startswith(headline.strip()):
    return None
  return headline


def enrich_stories(model: core.Enrichment, stories: Sequence[Story],
                   batch_tokens: int = wd.DEFAULT_BATCH_TOKENS) -> list[core.Enriched]:
  """The models over ``stories``: each stage reads the stories whose status for it is still open (None).

  Headline mentions (see :func:`headline_to_read`) come first in ``entities``, with ``field="headline"``
  and ``sentence_index`` 0 (a headline is one sentence), then the body's.
  """
  ner_flags = [s.ner_status is None for s in stories]
  results = model([s.body for s in stories], [s.headline for s in stories], ner_flags=ner_flags,
                  topic_flags=[s.topics_status is None for s in stories], batch_tokens=batch_tokens)
  heads = [(i, text) for i, s in enumerate(stories)
           if ner_flags[i] and model.ner is not None and (text := headline_to_read(s)) is not None]
  if heads:
    texts = [text for _, text in heads]
    read = model(texts, ner_flags=[True] * len(texts), topic_flags=[False] * len(texts),
                 sentences=[[(0, len(text))] for text in texts], batch_tokens=batch_tokens)
    for (i, _), result in zip(heads, read, strict=True):
      mentions = [dataclasses.replace(e, field=FIELD_HEADLINE, sentence_index=0) for e in result.entities or ()]
      results[i].entities = mentions + (results[i].entities or [])
  return results


class EnrichModelHandler(ModelHandler[Story, PredictionResult, core.Enrichment]):
  """Runs batches of stories through the models; ``PredictionResult.inference`` is :class:`core.Enriched`.

  The models are loaded once per worker process (``RunInference``'s shared handle, and
  :mod:`transforms.model_cache` when the runner tears DoFns down) and used by all its threads.
  """

  def __init__(self, ner_model: str | None = None, topics_model: str | None = None, *,
               stages: Sequence[str] = core.STAGES, backend: str = "onnx", precision: str = "int8",
               threads: int | None = None, max_window: int | None = None, taxonomy: str | None = None,
               max_batch_chars: int = 64_000, batch_tokens: int = wd.DEFAULT_BATCH_TOKENS):
    super().__init__()
    self._load_args = {"stages": tuple(stages), "backend": backend, "precision": precision, "threads": threads,
                       "max_window": max_window, "taxonomy": taxonomy}
    self._refs = (ner_model, topics_model)
    self._max_batch_chars = max_batch_chars
    self._batch_tokens = batch_tokens

  def load_model(self) -> core.Enrichment:
    stages = self._load_args["stages"]
    files = [*(sp.read_ner(self._refs[0]).files() if "ner" in stages else []),
             *(sp.read_topics(self._refs[1]).files() if "topics" in stages else [])]
    key = (self._refs, tuple(sorted(self._load_args.items())), sp.fingerprint(files))
    return model_cache.load_once(key, lambda: core.load(*self._refs, **self._load_args))

  def run_inference(self, batch: Sequence[Story], model: core.Enrichment,
                    inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
    # a stage reads a story whose status the route left open
    try:
      results = enrich_stories(model, batch, self._batch_tokens)
    finally:
      _through(len(batch))
    return [PredictionResult(story, result, model.name) for story, result in zip(batch, results, strict=True)]

  def get_num_bytes(self, batch: Sequence[Story]) -> int:
    return sum(len(story.body.encode("utf-8", "backslashreplace"))
               + len((story.headline or "").encode("utf-8", "backslashreplace")) for story in batch)

  def get_metrics_namespace(self) -> str:
    return NAMESPACE

  def batch_elements_kwargs(self) -> dict[str, Any]:
    # Batches are capped by text length (in characters), not by story count alone.
    return {"max_batch_size": self._max_batch_chars, "element_size_fn": story_size}


def _with(story: Story, stage: str, value, status: str, model: str) -> Story:
  result, status_field, model_field = FIELDS[stage]
  return dataclasses.replace(story, **{result: value, status_field: status, model_field: model})


def _dead_letter(story: Story, stage: str, error: BaseException | str) -> DeadLetter:
  text = story.body if story.body.strip() else (story.headline or "")
  return DeadLetter.from_raw(text.encode("utf-8", "backslashreplace"), uri=story.input_uri, locator=story.locator,
                             stage=stage, error=error, message_id=story.message_id, story_id=story.story_id)


def error_text(error: Any) -> BaseException | str:
  """Beam's exception handling hands over ``(type, repr, traceback lines)``: -> ``"Type: message"``."""
  if isinstance(error, BaseException | str):
    return error
  if isinstance(error, tuple) and error and isinstance(error[0], type):
    lines = [line for line in (error[2] if len(error) > 2 and error[2] else []) if line.strip()]
    last = lines[-1].strip() if lines else ""
    if last.startswith(error[0].__name__):
      return last
    return f"{error[0].__name__}: {error[1] if len(error) > 1 else ''}"
  return f"InferenceError: {error!r}"


class _StageDoFn(beam.DoFn):
  def __init__(self, models: dict[str, tuple[str, tuple[str, ...]]]):
    #: stage -> (model name, declared languages)
    self._models = models

  def setup(self):
    self._counters = {}

  def count(self, stage: str, outcome: str, n: int = 1) -> None:
    name = f"{stage}_{outcome}"
    if name not in self._counters:
      self._counters[name] = beam.metrics.Metrics.counter(NAMESPACE, name)
    self._counters[name].inc(n)


class _Route(_StageDoFn):
  """Sets the status of every stage that does not apply; stories with at least one stage left go on."""

  def process(self, story: Story):
    empty = not has_text(story)
    left = False
    for stage, (name, languages) in self._models.items():
      if empty or not sp.accepts_language(languages, story.language):
        outcome = STATUS_SKIPPED_EMPTY if empty else STATUS_SKIPPED_LANGUAGE
        self.count(stage, outcome)
        story = _with(story, stage, None, outcome, name)
      else:
        left = True
    if not left:
      _through(1)
    yield story if left else beam.pvalue.TaggedOutput("skipped", story)


class _Attach(_StageDoFn):
  """Prediction results -> stories with the fields of every stage that read them."""

  def process(self, result: PredictionResult):
    story: Story = result.example
    enriched: core.Enriched = result.inference
    entities = enriched.entities
    if entities is not None:
      bad = [e for e in entities if story.text_of(e)[e.start_char:e.end_char] != e.text]
      if bad:
        self.count("ner", STATUS_FAILED)
        yield beam.pvalue.TaggedOutput("errors", _dead_letter(
            story, "ner", ValueError(f"{len(bad)} mention(s) do not match their text at their offsets")))
        story = _with(story, "ner", None, STATUS_FAILED, self._models["ner"][0])
      else:
        self.count("ner", STATUS_APPLIED)
        self.count("ner", "mentions", len(entities))
        story = _with(story, "ner", entities, STATUS_APPLIED, self._models["ner"][0])
    if enriched.topics is not None:
      self.count("topics", STATUS_APPLIED)
      story = _with(story, "topics", enriched.topics, STATUS_APPLIED, self._models["topics"][0])
    yield story


class _Failed(_StageDoFn):
  """A batch the models failed on: each stage that was to read a story is ``failed``, with a dead letter."""

  def process(self, failed: tuple[Sequence[Story], Any]):
    batch, error = failed
    error = error_text(error)
    for story in batch:
      for stage, (name, _) in self._models.items():
        if getattr(story, FIELDS[stage][1]) is None:
          self.count(stage, STATUS_FAILED)
          yield beam.pvalue.TaggedOutput("errors", _dead_letter(story, stage, error))
          story = _with(story, stage, None, STATUS_FAILED, name)
      yield story


class Enrich(beam.PTransform):
  """PCollection[Story] -> (PCollection[Story] with the fields of ``stages`` filled,
  PCollection[DeadLetter])."""

  def __init__(self, ner_model: str | None = None, topics_model: str | None = None, *,
               stages: Sequence[str] = core.STAGES, handler: ModelHandler | None = None,
               taxonomy: str | None = None, **handler_kwargs: Any):
    super().__init__()
    self._models = {}
    if "ner" in stages:
      ner = sp.read_ner(ner_model)
      self._models["ner"] = (ner.name, ner.languages)
    if "topics" in stages:
      topics = sp.read_topics(topics_model, taxonomy)
      self._models["topics"] = (topics.name, topics.languages)
    self._handler = handler or EnrichModelHandler(ner_model, topics_model, stages=tuple(self._models),
                                                  taxonomy=taxonomy, **handler_kwargs)

  def expand(self, stories):
    routed = stories | "Route" >> beam.ParDo(_Route(self._models)).with_outputs("skipped", main="enrich")
    main, other = routed.enrich | "RunInference" >> RunInference(self._handler).with_exception_handling()
    attached = main | "Attach" >> beam.ParDo(_Attach(self._models)).with_outputs("errors", main="stories")
    failed = other.failed_inferences | "Failed" >> beam.ParDo(_Failed(self._models)).with_outputs(
        "errors", main="stories")
    out = (routed.skipped, attached.stories, failed.stories) | "Stories" >> beam.Flatten()
    errors = (attached.errors, failed.errors) | "Errors" >> beam.Flatten()
    return out, errors
