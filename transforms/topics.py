"""IPTC Media Topics classification stage: Story -> Story with ``topics`` (multi-label, calibrated).

``ClassifyTopics`` runs the topic model through Beam's ``RunInference`` with :class:`TopicModelHandler`.
Every input story comes out exactly once:

* empty body -> ``topics_status = "skipped_empty"``;
* a language the model does not declare -> ``"skipped_language"`` (no guesses; a story without a known
  language is classified);
* otherwise -> ``"applied"`` with ``topics``: every topic whose calibrated score reaches the model's
  threshold (and always the top one), highest first;
* an inference failure -> ``"failed"`` plus a ``DeadLetter`` (stage ``topics``) in the second output.

Whole stories are classified: each is cut into overlapping encoder windows, the windows of all stories
in a batch are run sorted by length (little padding), and a story's score is pooled over its windows.
The stage adds no windowing of its own, so streaming windows are preserved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from schemas.records import (
    STATUS_APPLIED,
    STATUS_FAILED,
    STATUS_SKIPPED_EMPTY,
    STATUS_SKIPPED_LANGUAGE,
    DeadLetter,
    Story,
    Topic,
)
from transforms import assets, model_cache

STAGE = "topics"
NAMESPACE = "wirestream.topics"
#: Rough characters per encoder window, to size batches before tokenising.
CHARS_PER_WINDOW = 450
#: The bundled topic model (``transforms.topics_model.DEFAULT_MODEL_DIR``, without importing torch here).
DEFAULT_MODEL_DIR = assets.TOPICS_DIR


def story_text(story: Story) -> str:
  """The text the topic model reads: the headline (unless the body starts with it) and the body."""
  body = story.body or ""
  headline = (story.headline or "").strip()
  if headline and not body.lstrip().startswith(headline):
    return f"{headline}\n\n{body}"
  return body


def estimated_windows(story: Story) -> int:
  return 1 + len(story_text(story)) // CHARS_PER_WINDOW


class TopicModelHandler(ModelHandler[Story, PredictionResult, Any]):
  """Loads a topic classifier (ours or a Hugging Face one) and scores batches of stories.

  ``model_path`` None means the bundled model (``transforms/assets/topics``). Batches are sized in estimated encoder
  windows (``max_batch_windows``), not in stories, so a batch of long stories stays bounded.
  """

  def __init__(self, model_path: str | None = None, taxonomy: str | None = None, *,
               max_batch_windows: int = 64, threads: int | None = None,
               max_batch_duration_secs: float | None = None):
    self._model_path = model_path
    self._taxonomy = taxonomy
    self._max_batch_windows = max_batch_windows
    self._threads = threads
    self._max_batch_duration_secs = max_batch_duration_secs

  def load_model(self):
    return model_cache.load_for(self, [self._model_path or DEFAULT_MODEL_DIR, self._taxonomy],
                                (self._model_path, self._taxonomy, self._threads), self._load)

  def _load(self):
    from transforms import topics_model

    if self._threads:
      import torch

      torch.set_num_threads(self._threads)
    return topics_model.load_topic_model(self._model_path, self._taxonomy)

  def run_inference(self, batch: Sequence[Story], model, inference_args: dict[str, Any] | None = None
                    ) -> Iterable[PredictionResult]:
    scores = model.scores([story_text(story) for story in batch])
    return [PredictionResult(story, model.topics(row), model_id=model.name)
            for story, row in zip(batch, scores, strict=True)]

  def get_num_bytes(self, batch: Sequence[Story]) -> int:
    return sum(len(story.body.encode("utf-8", "backslashreplace")) for story in batch)

  def get_metrics_namespace(self) -> str:
    return NAMESPACE

  def batch_elements_kwargs(self) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"min_batch_size": 1, "max_batch_size": self._max_batch_windows,
                              "element_size_fn": estimated_windows}
    if self._max_batch_duration_secs:
      kwargs.update(max_batch_duration_secs=self._max_batch_duration_secs,
                    length_fn=lambda story: len(story.body), bucket_boundaries=[400, 1200, 3000, 8000])
    return kwargs


class _Route(beam.DoFn):
  """Stories to classify go to the main output; skipped ones come out finished on ``skipped``."""

  def __init__(self, languages: Sequence[str], model_name: str):
    self._languages = {lang.lower() for lang in languages}
    self._model_name = model_name
    self._skipped_language = beam.metrics.Metrics.counter(NAMESPACE, "skipped_language")
    self._skipped_empty = beam.metrics.Metrics.counter(NAMESPACE, "skipped_empty")

  def process(self, story: Story):
    if not (story.body or "").strip():
      self._skipped_empty.inc()
      yield beam.pvalue.TaggedOutput("skipped", dataclasses.replace(
          story, topics=None, topics_status=STATUS_SKIPPED_EMPTY, topics_model=self._model_name))
    elif story.language and story.language.lower().split("-")[0] not in self._languages:
      self._skipped_language.inc()
      yield beam.pvalue.TaggedOutput("skipped", dataclasses.replace(
          story, topics=None, topics_status=STATUS_SKIPPED_LANGUAGE, topics_model=self._model_name))
    else:
      yield story


class _Apply(beam.DoFn):
  def __init__(self):
    self._applied = beam.metrics.Metrics.counter(NAMESPACE, "applied")
    self._topics = beam.metrics.Metrics.counter(NAMESPACE, "topics")

  def process(self, result: PredictionResult):
    story: Story = result.example
    topics = [Topic(code=code, label=label, score=round(float(score), 6)) for code, label, score in result.inference]
    self._applied.inc()
    self._topics.inc(len(topics))
    yield dataclasses.replace(story, topics=topics, topics_status=STATUS_APPLIED, topics_model=result.model_id)


def _error_text(error: Any) -> BaseException | str:
  """Beam's exception handling hands over ``(type, repr, traceback lines)``: -> ``"Type: message"``."""
  if isinstance(error, BaseException | str):
    return error
  if isinstance(error, tuple) and error and isinstance(error[0], type):
    lines = [line for line in (error[2] if len(error) > 2 else []) if line.strip()]
    last = lines[-1].strip() if lines else ""
    if last.startswith(error[0].__name__):
      return last
    return f"{error[0].__name__}: {error[1] if len(error) > 1 else ''}"
  return f"InferenceError: {error!r}"


class _Failed(beam.DoFn):
  """A failed batch -> each story with status failed, plus a dead letter per story."""

  def __init__(self, model_name: str):
    self._model_name = model_name
    self._failed = beam.metrics.Metrics.counter(NAMESPACE, "failed")

  def process(self, failure):
    batch, error = failure
    error = _error_text(error)
    for story in batch:
      self._failed.inc()
      yield dataclasses.replace(story, topics=None, topics_status=STATUS_FAILED, topics_model=self._model_name)
      yield beam.pvalue.TaggedOutput("errors", DeadLetter.from_raw(
          story.body.encode("utf-8", "backslashreplace"), uri=story.input_uri, locator=story.locator, stage=STAGE, error=error,
          message_id=story.message_id, story_id=story.story_id))


def model_display_name(model_path: str | None) -> str:

  from transforms import topics_model

  directory = Path(model_path) if model_path else topics_model.DEFAULT_MODEL_DIR
  return f"wirestream-topics:{directory.name}" if topics_model.is_head_dir(directory) else directory.name


class ClassifyTopics(beam.PTransform):
  """PCollection[Story] -> (PCollection[Story] with topics filled, PCollection[DeadLetter])."""

  def __init__(self, model_path: str | None = None, taxonomy: str | None = None, *,
               languages: Sequence[str] | None = None, model_handler: ModelHandler | None = None,
               max_batch_windows: int = 64, threads: int | None = None,
               max_batch_duration_secs: float | None = None):
    super().__init__()
    from transforms import topics_model

    self._handler = model_handler or TopicModelHandler(
        model_path, taxonomy, max_batch_windows=max_batch_windows, threads=threads,
        max_batch_duration_secs=max_batch_duration_secs)
    self._languages = tuple(languages or topics_model.declared_languages(model_path))
    self._model_name = model_display_name(model_path)

  def expand(self, stories):
    routed = stories | "Route" >> beam.ParDo(_Route(self._languages, self._model_name)).with_outputs(
        "skipped", main="classify")
    main, failures = routed.classify | "RunInference" >> RunInference(self._handler).with_exception_handling()
    applied = main | "Apply" >> beam.ParDo(_Apply())
    failed = failures.failed_inferences | "Failed" >> beam.ParDo(_Failed(self._model_name)).with_outputs(
        "errors", main="stories")
    out = (applied, routed.skipped, failed.stories) | "Merge" >> beam.Flatten()
    return out, failed.errors
