"""``wirestream bench``: the fast inference path against a plain transformers baseline, on the same texts.

Stories are read and parsed as the pipeline does; stories in a language the models do not both declare
are left out. Then, on the same stories:

* **fast path** (what the pipeline runs): the fused ONNX Runtime graph, int8 (dynamic quantisation), NER
  and topics from one encoder pass, windows of many stories bucketed by length, one tokenizer pass per
  story (:mod:`transforms.enrich`), in batches of stories as ``RunInference`` forms them.
* **baseline**, as a newcomer would write it: ``transformers.pipeline("token-classification",
  aggregation_strategy="simple")`` on our NER model (a standard ``BertForTokenClassification``), one story
  at a time, plus the topic model in torch fp32, one story at a time. Our NER model reads the casing
  class of every word piece as ``token_type_ids``; a plain pipeline would feed zeros (same cost, wrong
  entities), so the baseline pipeline's preprocessing adds them (a few lines; nothing else changes).
  The pipeline truncates a story at 512 pieces (its default), which only makes the baseline faster.

With ``--repeat N`` the two paths take turns N times (fast path, baseline, fast path, ...), so that a
machine whose speed drifts slows both alike; the best time of each path counts, and ``speedup_per_turn``
holds every turn's own ratio.

Token counts are the word pieces of the story bodies (the same for both paths), so ``tokens_per_s`` of the
two paths compare directly. ``encoder_tokens_per_s`` is the bare fused graph on full batches of full
windows (no tokenisation, padding, overlap or decoding): the practical limit of the fast path.
``peak_rss_mb`` is the process's peak resident memory after the fast path (before the baseline's torch
models are loaded). With ``--conll``, ``f1_fast`` and ``f1_reference`` (the torch model, as
``wirestream eval ner`` runs it) are scored by the code of ``wirestream eval ner``. With more than one
thread, the bare graph is timed both as one run on all threads and as one run per thread (concurrent
batches), and ``encoder_tokens_per_s`` is the better of the two (``encoder_concurrent_runs`` says which).

``--levers`` also times each lever on its own (torch batched, ONNX fp32, int8, bucketing off, sorted
windows in padded batches, the NER stage's windows, 8 pieces of context, two encoder passes, concurrent
runs or one run on all threads, one thread). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from schemas.records import RawRecord, Story


def load_stories(pattern: str, limit: int = 0, keep: Callable[[Story], bool] | None = None
                 ) -> tuple[list[Story], int]:
  """Parsed stories of the files matching ``pattern`` that ``keep`` accepts (at most ``limit``), and how
  many records failed to parse."""
  from apache_beam.io.filesystems import FileSystems

  from transforms.io import match_inputs
  from transforms.parse import parse_record

  stories: list[Story] = []
  failed = 0
  for path in match_inputs([pattern])[pattern]:
    with FileSystems.open(path) as handle:
      data = handle.read()
    for item in parse_record(RawRecord(uri=path, data=data)):
      if not isinstance(item, Story):
        failed += 1
      elif keep is None or keep(item):
        stories.append(item)
      if limit and len(stories) >= limit:
        return stories, failed
  return stories, failed


def story_batches(stories: Sequence[Story], max_chars: int = 64_000) -> list[list[Story]]:
  """Consecutive stories grouped as ``RunInference`` groups them (by body characters)."""
  batches: list[list[Story]] = []
  current: list[Story] = []
  size = 0
  for story in stories:
    n = max(1, len(story.body))
    if current and size + n > max_chars:
      batches.append(current)
      current, size = [], 0
    current.append(story)
    size += n
  if current:
    batches.append(current)
  return batches


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
  """Seconds of ``fn()`` (the best of ``repeat`` runs: on a shared machine the others only add noise)."""
  best, out = float("inf"), None
  for _ in range(max(1, repeat)):
    start = time.perf_counter()
    out = fn()
    best = min(best, time.perf_counter() - start)
  return best, out


# --- Paths --------------------------------------------------------------------------------------------------


def window_options(name: str, context: int | None = None) -> dict[str, Any]:
  """``fast``: the fast path's windows (``context`` pieces beside each core; default: the fast path's);
  ``stage``: the NER stage's (context filled up to the window)."""
  from transforms import enrich

  if name == "stage":
    return {"context": None}
  return {"context": context if context is not None else enrich.DEFAULT_CONTEXT}


def run_fast(enricher, stories: Sequence[Story], *, sort_windows: bool = True,
             windows: dict[str, Any] | None = None, max_padding: int | None = None) -> list:
  from transforms import enrich

  padding = enrich.DEFAULT_MAX_PADDING if max_padding is None else max_padding
  out = []
  for batch in story_batches(stories):
    out.extend(enrich.enrich_texts(enricher, [s.body for s in batch], [s.headline for s in batch],
                                   sort_windows=sort_windows, max_padding=padding,
                                   **(windows or window_options("fast"))))
  return out


def casing_pipeline(ner_dir: Path, threads: int):
  """``pipeline("token-classification", aggregation_strategy="simple")`` on our model, feeding it the
  casing classes it was trained with as ``token_type_ids``."""
  import torch
  from transformers import AutoTokenizer, pipeline
  from transformers.pipelines import TokenClassificationPipeline

  from transforms import ner_model as nm

  torch.set_num_threads(threads)

  class CasingTokenClassificationPipeline(TokenClassificationPipeline):
    def preprocess(self, sentence, offset_mapping=None, **params):
      for inputs in super().preprocess(sentence, offset_mapping=offset_mapping, **params):
        text = inputs["sentence"] if inputs["sentence"] is not None else sentence
        offsets = inputs["offset_mapping"][0].tolist()
        inputs["token_type_ids"] = torch.tensor(
            [[nm.casing_class(text[a:b]) if b > a else 0 for a, b in offsets]], dtype=torch.long)
        yield inputs

  model = nm.load_casing_model(ner_dir)
  tokenizer = AutoTokenizer.from_pretrained(str(nm.base_model_dir()))
  return pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="simple",
                  pipeline_class=CasingTokenClassificationPipeline, device="cpu")


def run_baseline(ner_pipe, topic_model, stories: Sequence[Story]) -> list:
  from transforms.topics import story_text

  out = []
  for story in stories:
    entities = ner_pipe(story.body)
    scores = topic_model.scores([story_text(story)])[0]
    out.append((entities, topic_model.topics(scores)))
  return out


def run_torch_batched(ner, topic_model, stories: Sequence[Story]) -> None:
  """The separate torch stages, batched as the pipeline batches them (a lever row)."""
  from transforms import ner as ner_stage
  from transforms.topics import story_text

  for batch in story_batches(stories):
    ner_stage.annotate(ner, [s.body for s in batch])
    topic_model.scores([story_text(s) for s in batch])


def encoder_throughput(session, window: int, rows: int = 32, seconds: float = 3.0, seed: int = 0) -> float:
  """Tokens/s of the bare graph on full batches of full windows, as many batches at once as the session
  runs concurrently."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1000, 29000, size=(rows, window), dtype=np.int64)
  ids[:, 0], ids[:, -1] = 101, 102
  types = rng.integers(0, 4, size=(rows, window), dtype=np.int64)
  mask = np.ones((rows, window), dtype=np.int64)
  at_once = [(ids, types, mask)] * session.runs
  list(session.run_batches(at_once))
  runs = 0
  start = time.perf_counter()
  while True:
    list(session.run_batches(at_once))
    runs += len(at_once)
    elapsed = time.perf_counter() - start
    if elapsed >= seconds and runs >= 2:
      return rows * window * runs / elapsed


def conll_f1(annotate: Callable[[list[str], list[list[tuple[int, int]]]], list], conll: str | Path) -> float:
  """Entity-level F1 on a CoNLL file by ``wirestream eval ner``'s code; ``annotate(texts, sentence_ranges)``
  gives the mentions of each document text."""
  from pipelines import eval_ner
  from pipelines.train_ner import score_bio
  from transforms import ner_model as nm

  sentences = nm.read_conll(conll)
  docs = nm.documents(sentences)
  texts, sent_spans, word_spans = [], [], []
  for doc in docs:
    text, spans, words = eval_ner.document_text([sentences[i] for i in doc])
    texts.append(text)
    sent_spans.append(spans)
    word_spans.append(words)
  results = annotate(texts, sent_spans)
  gold, predicted = [], []
  for doc, spans, words, entities in zip(docs, sent_spans, word_spans, results, strict=True):
    for i, span, sentence_words in zip(doc, spans, words, strict=True):
      gold.append(eval_ner._to_bio(sentences[i].tags))
      predicted.append(eval_ner.tags_from_entities(entities, sentence_words, span))
  return float(score_bio(gold, predicted)["f1"])


def agreement(fast: Sequence, reference_entities: Sequence, reference_topics: Sequence) -> dict[str, float]:
  """Mention-level agreement (same span and label) and top-topic agreement of the fast path."""
  both = only = 0
  top_same = 0
  for result, entities, topics in zip(fast, reference_entities, reference_topics, strict=True):
    a = {(e.start_char, e.end_char, e.label) for e in result.entities or []}
    b = {(e.start_char, e.end_char, e.label) for e in entities}
    both += len(a & b)
    only += len(a ^ b)
    top_same += bool(result.topics and topics and result.topics[0].code == topics[0][0])
  return {"mention_agreement": round(both / max(1, both + only), 4),
          "top_topic_agreement": round(top_same / max(1, len(fast)), 4)}


def fast_entities(enricher, texts: Sequence[str], sentences: Sequence[Sequence[tuple[int, int]]],
                  windows: dict[str, Any] | None = None) -> list:
  """Mentions of many texts by the fast path (NER only), sentence ranges given."""
  from transforms import enrich

  results = enrich.enrich_texts(enricher, texts, sentences=sentences, topic_flags=[False] * len(texts),
                                **(windows or window_options("fast")))
  return [r.entities for r in results]


# --- The command --------------------------------------------------------------------------------------------


def bench(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
  from transforms import enrich
  from transforms import ner as ner_stage
  from transforms import ner_model as nm
  from transforms import onnx_backend as ob

  ner_dir = Path(args.ner_model) if args.ner_model else nm.DEFAULT_MODEL_DIR
  topic_dir = Path(args.topics_model) if args.topics_model else enrich.TOPICS_DEFAULT_DIR
  threads = args.threads or ob.default_threads()
  windows = window_options(args.windows, args.context)
  # Export (first run only) in a child process, so that this process's peak memory is inference only.
  export_s, _ = _timed(lambda: subprocess.run(
      [sys.executable, "-m", "transforms.onnx_backend", "--ner-model", str(ner_dir),
       "--topics-model", str(topic_dir)],
      check=True, stdout=subprocess.DEVNULL))
  load_s, enricher = _timed(lambda: enrich.load_enricher(
      args.ner_model, args.topics_model, precision=args.precision, threads=threads, max_window=args.window))
  left_out = []

  def keep(story: Story) -> bool:
    ok = bool((story.body or "").strip()) and enricher.ner.accepts_language(story.language) \
        and enricher.topics.accepts_language(story.language)
    if not ok:
      left_out.append(story.story_id)
    return ok

  stories, failed = load_stories(args.input, args.limit, keep)
  if not stories:
    raise ValueError(f"no stories with a body in a language of both models in {args.input!r}")
  tokens = sum(len(enricher.ner.tokenizer.encode(s.body, add_special_tokens=False).ids) for s in stories)
  log(f"{len(stories)} stories ({len(left_out)} left out: empty or another language; {failed} unparsable), "
      f"{tokens} word pieces; threads {threads}; encoder shared by NER and topics: {enricher.shared_encoder}")

  run_fast(enricher, stories[:2], windows=windows)  # warm-up
  first_s, fast = _timed(lambda: run_fast(enricher, stories, windows=windows))
  fast_rss = peak_rss_mb()  # before the baseline's torch models are loaded
  log(f"fast path (first run): {first_s:.2f}s, {tokens / first_s:.0f} tokens/s")
  window = enricher.ner.max_window
  encoder = encoder_throughput(enricher.session, window)
  encoder_runs = enricher.session.runs
  other_runs_path = None  # the same graph run the other way: one run on all threads, or one run per thread
  if threads > 1:  # the practical limit is the better of the two
    other_runs_path = enrich.load_enricher(args.ner_model, args.topics_model, precision=args.precision,
                                           threads=threads, max_window=args.window,
                                           runs=1 if encoder_runs > 1 else threads)
    other_encoder = encoder_throughput(other_runs_path.session, window)
    if other_encoder > encoder:
      encoder, encoder_runs = other_encoder, other_runs_path.session.runs
  fp32 = enrich.load_enricher(args.ner_model, args.topics_model, precision="fp32", threads=threads,
                              max_window=args.window)
  encoder_fp32 = encoder_throughput(fp32.session, window)
  log(f"bare graph on full batches ({window} pieces): int8 {encoder:.0f} tokens/s, fp32 {encoder_fp32:.0f}")

  from transforms import topics_model as tm

  ner_pipe = casing_pipeline(ner_dir, threads)
  topic_model = tm.load_topic_model(topic_dir)
  run_baseline(ner_pipe, topic_model, stories[:2])  # warm-up
  # The two paths take turns, so that a machine whose speed drifts (a shared one) slows both alike.
  fast_times, base_times = [], []
  for turn in range(max(1, args.repeat)):
    fast_times.append(_timed(lambda: run_fast(enricher, stories, windows=windows))[0])
    base_times.append(_timed(lambda: run_baseline(ner_pipe, topic_model, stories))[0])
    log(f"turn {turn + 1}: fast path {fast_times[-1]:.2f}s ({tokens / fast_times[-1]:.0f} tokens/s), baseline "
        f"{base_times[-1]:.2f}s ({tokens / base_times[-1]:.0f} tokens/s): {base_times[-1] / fast_times[-1]:.2f}x")
  fast_s, base_s = min(fast_times), min(base_times)

  reference_ner = ner_stage.load_ner_model(args.ner_model, threads=threads)
  reference_entities = [e for batch in story_batches(stories)
                        for e in ner_stage.annotate(reference_ner, [s.body for s in batch])]
  from transforms.topics import story_text

  reference_topics = [topic_model.topics(row) for batch in story_batches(stories)
                      for row in topic_model.scores([story_text(s) for s in batch])]
  result: dict[str, Any] = {
      "repeat": args.repeat, "stories": len(stories), "stories_left_out": len(left_out), "tokens": tokens,
      "threads": threads, "concurrent_runs": enricher.session.runs, "precision": args.precision,
      "window": window, "windows": args.windows, "context": windows["context"],
      "shared_encoder": enricher.shared_encoder,
      "seconds": round(fast_s, 3), "tokens_per_s": round(tokens / fast_s, 1),
      "stories_per_s": round(len(stories) / fast_s, 2),
      "baseline_seconds": round(base_s, 3), "baseline_tokens_per_s": round(tokens / base_s, 1),
      "baseline_stories_per_s": round(len(stories) / base_s, 2),
      "speedup": round(base_s / fast_s, 2),
      "speedup_per_turn": [round(b / f, 2) for f, b in zip(fast_times, base_times, strict=True)],
      "encoder_tokens_per_s": round(encoder, 1), "encoder_concurrent_runs": encoder_runs,
      "encoder_fp32_tokens_per_s": round(encoder_fp32, 1),
      "fraction_of_encoder": round(tokens / fast_s / encoder, 3),
      "peak_rss_mb": round(fast_rss, 1),
      "export_s": round(export_s, 2), "load_s": round(load_s, 2),
      **agreement(fast, reference_entities, reference_topics),
      "baseline": "transformers pipeline('token-classification', aggregation_strategy='simple') on our model "
                  "(casing classes as token_type_ids) + topic model in torch fp32, one story at a time",
  }
  if args.levers:
    result["levers_tokens_per_s"] = levers(args, stories, tokens, threads, reference_ner, topic_model,
                                           fast_s, base_s, fp32, other_runs_path, log)
  if args.conll:
    result["f1_reference"] = round(conll_f1(
        lambda texts, spans: ner_stage.annotate(reference_ner, texts, spans), args.conll), 4)
    result["f1_fast"] = round(conll_f1(lambda texts, spans: fast_entities(enricher, texts, spans, windows),
                                       args.conll), 4)
    result["f1_delta"] = round(result["f1_fast"] - result["f1_reference"], 4)
    log(f"CoNLL F1: fast {result['f1_fast']}, reference {result['f1_reference']}")
  result["peak_rss_mb_total"] = round(peak_rss_mb(), 1)
  return result


def levers(args, stories, tokens, threads, reference_ner, topic_model, fast_s, base_s, fp32, other_runs_path,
           log) -> dict:
  """Tokens/s of each lever on its own, same stories (``other_runs_path``: the fast path's graph with the other
  number of concurrent runs, or None on one thread)."""
  from transforms import enrich

  windows = window_options(args.windows, args.context)
  rows: dict[str, float] = {"baseline_per_story_torch_fp32": tokens / base_s}
  seconds, _ = _timed(lambda: run_torch_batched(reference_ner, topic_model, stories))
  rows["torch_fp32_batched_separate_stages"] = tokens / seconds
  seconds, _ = _timed(lambda: run_fast(fp32, stories, windows=windows), args.repeat)
  rows["onnx_fp32_fused_bucketed"] = tokens / seconds
  rows["onnx_int8_fused_bucketed (fast path)"] = tokens / fast_s
  fast = enrich.load_enricher(args.ner_model, args.topics_model, threads=threads, max_window=args.window)
  seconds, _ = _timed(lambda: run_fast(fast, stories, sort_windows=False, windows=windows), args.repeat)
  rows["onnx_int8_fused_unbucketed"] = tokens / seconds
  seconds, _ = _timed(lambda: run_fast(fast, stories, windows=windows, max_padding=1 << 20), args.repeat)
  rows["onnx_int8_fused_sorted_padded_batches"] = tokens / seconds
  other = "stage" if args.windows == "fast" else "fast"
  other_windows = window_options(other, args.context)
  seconds, _ = _timed(lambda: run_fast(fast, stories, windows=other_windows), args.repeat)
  rows[f"onnx_int8_fused_bucketed_{other}_windows"] = tokens / seconds
  if args.windows == "fast" and windows["context"] != 8:
    seconds, _ = _timed(lambda: run_fast(fast, stories, windows=window_options("fast", 8)), args.repeat)
    rows["onnx_int8_fused_bucketed_fast_windows_context_8"] = tokens / seconds
  if fast.shared_encoder:
    two = enrich.load_enricher(args.ner_model, args.topics_model, threads=threads, max_window=args.window,
                               share=False)
    run_fast(two, stories[:2])
    seconds, _ = _timed(lambda: run_fast(two, stories, windows=windows), args.repeat)
    rows["onnx_int8_two_encoder_passes_bucketed"] = tokens / seconds
  if other_runs_path is not None:
    run_fast(other_runs_path, stories[:2])
    seconds, _ = _timed(lambda: run_fast(other_runs_path, stories, windows=windows), args.repeat)
    rows[f"onnx_{args.precision}_fused_bucketed_{other_runs_path.session.runs}_concurrent_runs"] = tokens / seconds
  if threads > 1:
    one = enrich.load_enricher(args.ner_model, args.topics_model, threads=1, max_window=args.window)
    run_fast(one, stories[:2])
    seconds, _ = _timed(lambda: run_fast(one, stories, windows=windows), args.repeat)
    rows["onnx_int8_fused_bucketed_1_thread"] = tokens / seconds
  for name, value in rows.items():
    log(f"  {name:45s} {value:9.0f} tokens/s")
  return {name: round(value, 1) for name, value in rows.items()}


def _run(args: argparse.Namespace) -> int:
  def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)

  try:
    result = bench(args, log)
  except (ValueError, FileNotFoundError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(json.dumps(result))
  return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--input", required=True,
                      help="Story files (glob or directory), parsed as the pipeline does.")
  parser.add_argument("--limit", type=int, default=0, help="Use at most this many stories.")
  parser.add_argument("--conll", default=None, help="Also score both paths on this CoNLL file (entity F1).")
  parser.add_argument("--threads", type=int, default=None,
                      help="Threads for both paths (default: all cores).")
  parser.add_argument("--ner-model", default=None, help="Our NER model directory (default: the bundled one).")
  parser.add_argument("--topics-model", default=None,
                      help="Our topic head directory (default: the bundled one).")
  parser.add_argument("--precision", choices=("int8", "fp32"), default="int8", help="Fast path precision.")
  parser.add_argument("--window", type=int, default=None, help="Fast path window in pieces (default: 128).")
  parser.add_argument("--windows", choices=("fast", "stage"), default="fast",
                      help="Fast path windows: sentence cores with --context pieces around (default) or "
                           "the NER stage's (context filled up to the window).")
  parser.add_argument("--context", type=int, default=None,
                      help="Context pieces beside each core in fast windows (default: transforms.enrich's).")
  parser.add_argument("--levers", action="store_true", help="Also time each lever on its own.")
  parser.add_argument("--repeat", type=int, default=1,
                      help="Time the fast path and the baseline this many times each, taking turns, and "
                           "each ONNX lever this many times; the best time of each counts.")


def register(subparsers) -> None:
  """Add ``bench`` to the top-level subcommands."""
  parser = subparsers.add_parser("bench",
                                 help="Time the fast inference path against a transformers baseline.",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  add_arguments(parser)
  parser.set_defaults(func=_run)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="wirestream bench", description=__doc__)
  add_arguments(parser)
  return _run(parser.parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())
