"""``wirestream bench``: the enrichment core on each backend against a plain transformers baseline.

Stories are read and parsed as the pipeline does; stories in a language the models do not both declare
are left out. Then, on the same stories:

* **onnx** (what the pipeline runs): :mod:`transforms.core` on the ONNX Runtime int8 backend, in batches
  of stories as ``RunInference`` forms them;
* **torch**: the same core on the torch fp32 backend (the reference for agreement);
* **baseline**, as a newcomer would write it: ``transformers.pipeline("token-classification",
  aggregation_strategy="simple")`` on our NER model, one story at a time (feeding it the casing classes
  it reads as ``token_type_ids``), plus the topic model in torch fp32, one story at a time.

``mention_agreement`` (same span and label) and ``top_topic_agreement`` compare onnx int8 with torch fp32.
With ``--repeat N`` the onnx path and the baseline take turns N times; the best time of each counts.
``peak_rss_mb`` is the process's peak resident memory after the onnx path (before any torch model is
loaded). With ``--conll``, ``f1_onnx`` and ``f1_torch`` are scored by ``wirestream eval ner``'s code.
The last line printed is one JSON object.
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

from pipelines.training.command import command
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


def run_core(model, stories: Sequence[Story]) -> list:
  """The core over ``stories`` in the batches ``RunInference`` would form."""
  return [r for batch in story_batches(stories)
          for r in model([s.body for s in batch], [s.headline for s in batch])]


def casing_pipeline(ner_dir: Path | None, threads: int):
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

  model = nm.load_casing_model(ner_dir or nm.DEFAULT_MODEL_DIR)
  tokenizer = AutoTokenizer.from_pretrained(str(nm.base_model_dir()))
  return pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="simple",
                  pipeline_class=CasingTokenClassificationPipeline, device="cpu")


def run_baseline(ner_pipe, topic_model, stories: Sequence[Story]) -> None:
  for story in stories:
    ner_pipe(story.body)
    topic_model([story.body], [story.headline], ner_flags=[False])


def agreement(results: Sequence, reference: Sequence) -> dict[str, float]:
  """Mention-level agreement (same span and label) and top-topic agreement of two runs."""
  both = only = top_same = 0
  for a, b in zip(results, reference, strict=True):
    x = {(e.start_char, e.end_char, e.label) for e in a.entities or []}
    y = {(e.start_char, e.end_char, e.label) for e in b.entities or []}
    both += len(x & y)
    only += len(x ^ y)
    top_same += bool(a.topics and b.topics and a.topics[0].code == b.topics[0].code)
  return {"mention_agreement": round(both / max(1, both + only), 4),
          "top_topic_agreement": round(top_same / max(1, len(results)), 4)}


# --- The command --------------------------------------------------------------------------------------------


def bench(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
  from pipelines.training.eval_ner import conll_scores
  from transforms import core
  from transforms import spec as sp
  from transforms.backends import default_threads

  threads = args.threads or default_threads()
  # Export (first run only) in a child process, so that this process's peak memory is inference only.
  export_cmd = [sys.executable, "-m", "transforms.onnx_backend"]
  for flag, value in (("--ner-model", args.ner_model), ("--topics-model", args.topics_model)):
    export_cmd += [flag, value] if value else []
  export_s, _ = _timed(lambda: subprocess.run(export_cmd, check=True, stdout=subprocess.DEVNULL))
  load_s, fast = _timed(lambda: core.load(args.ner_model, args.topics_model, precision=args.precision,
                                          threads=threads, max_window=args.window))
  left_out = []

  def keep(story: Story) -> bool:
    ok = bool((story.body or "").strip()) and sp.accepts_language(fast.ner.languages, story.language) \
        and sp.accepts_language(fast.topics.languages, story.language)
    if not ok:
      left_out.append(story.story_id)
    return ok

  stories, failed = load_stories(args.input, args.limit, keep)
  if not stories:
    raise ValueError(f"no stories with a body in a language of both models in {args.input!r}")
  tokenizer = fast.parts[0].tokenizer
  tokens = sum(len(tokenizer.encode(s.body, add_special_tokens=False).ids) for s in stories)
  log(f"{len(stories)} stories ({len(left_out)} left out: empty or another language; {failed} unparsable), "
      f"{tokens} word pieces; threads {threads}")
  run_core(fast, stories[:2])  # warm-up
  first_s, results = _timed(lambda: run_core(fast, stories))
  fast_rss = peak_rss_mb()  # before any torch model is loaded
  log(f"onnx {args.precision} (first run): {first_s:.2f}s, {tokens / first_s:.0f} tokens/s")
  torch_model = core.load(args.ner_model, args.topics_model, backend="torch", threads=threads,
                          max_window=args.window)
  torch_s, reference = _timed(lambda: run_core(torch_model, stories))
  log(f"torch fp32: {torch_s:.2f}s, {tokens / torch_s:.0f} tokens/s")
  ner_pipe = casing_pipeline(Path(args.ner_model) if args.ner_model else None, threads)
  topic_model = core.load(topics_ref=args.topics_model, stages=("topics",), backend="torch", threads=threads)
  run_baseline(ner_pipe, topic_model, stories[:2])  # warm-up
  fast_times, base_times = [], []
  for turn in range(max(1, args.repeat)):
    fast_times.append(_timed(lambda: run_core(fast, stories))[0])
    base_times.append(_timed(lambda: run_baseline(ner_pipe, topic_model, stories))[0])
    log(f"turn {turn + 1}: onnx {fast_times[-1]:.2f}s ({tokens / fast_times[-1]:.0f} tokens/s), baseline "
        f"{base_times[-1]:.2f}s ({tokens / base_times[-1]:.0f} tokens/s): {base_times[-1] / fast_times[-1]:.2f}x")
  fast_s, base_s = min(fast_times), min(base_times)
  result: dict[str, Any] = {
      "repeat": args.repeat, "stories": len(stories), "stories_left_out": len(left_out), "tokens": tokens,
      "threads": threads, "precision": args.precision, "window": fast.parts[0].max_window,
      "context": core.DEFAULT_CONTEXT, "fill": core.DEFAULT_FILL,
      "seconds": round(fast_s, 3), "tokens_per_s": round(tokens / fast_s, 1),
      "stories_per_s": round(len(stories) / fast_s, 2),
      "torch_seconds": round(torch_s, 3), "torch_tokens_per_s": round(tokens / torch_s, 1),
      "baseline_seconds": round(base_s, 3), "baseline_tokens_per_s": round(tokens / base_s, 1),
      "speedup": round(base_s / fast_s, 2),
      "speedup_per_turn": [round(b / f, 2) for f, b in zip(fast_times, base_times, strict=True)],
      "peak_rss_mb": round(fast_rss, 1), "export_s": round(export_s, 2), "load_s": round(load_s, 2),
      **agreement(results, reference),
      "baseline": "transformers pipeline('token-classification', aggregation_strategy='simple') on our model "
                  "(casing classes as token_type_ids) + topic model in torch fp32, one story at a time",
  }
  if args.conll:
    for name, model in (("onnx", fast), ("torch", torch_model)):
      result[f"f1_{name}"] = conll_scores(
          lambda texts, spans, m=model: [r.entities for r in m(texts, sentences=spans,
                                                                 topic_flags=[False] * len(texts))],
          args.conll)["f1"]
    log(f"CoNLL F1: onnx {result['f1_onnx']}, torch {result['f1_torch']}")
  result["peak_rss_mb_total"] = round(peak_rss_mb(), 1)
  return result


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
  parser.add_argument("--window", type=int, default=None, help="Window in pieces (default: the model's, 128).")
  parser.add_argument("--repeat", type=int, default=1,
                      help="Time the onnx path and the baseline this many times each, taking turns; the best "
                           "time of each counts.")


register, main = command(
    "bench", "Time the fast inference path against a transformers baseline.", __doc__, add_arguments, _run,
    prog="wirestream bench")


if __name__ == "__main__":
  sys.exit(main())
