"""``wirestream eval topics``: score a topic model on a JSONL file of labelled texts.

Each line is ``{"text": "...", "labels": ["medtop:15000000", ...]}``. The model's top topic counts as
correct when it is one of the line's labels. Per label: precision and recall of the top-1 prediction,
and support (lines carrying the label). The last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from pipelines.training.command import command
from pipelines.training.metrics import top1_report


def read_jsonl(path: Path) -> tuple[list[str], list[list[str]]]:
  texts, labels = [], []
  with open(path, encoding="utf-8") as handle:
    for number, line in enumerate(handle, 1):
      line = line.strip()
      if not line:
        continue
      row = json.loads(line)
      if not isinstance(row.get("text"), str) or not isinstance(row.get("labels"), list):
        raise ValueError(f"{path}:{number}: expected {{\"text\": str, \"labels\": [str, ...]}}")
      texts.append(row["text"])
      labels.append([str(label) for label in row["labels"]])
  return texts, labels


def evaluate_jsonl(model, path: Path, batch_size: int = 32) -> dict:
  """Top-1 accuracy, per-label precision/recall/support and mean multi-label size of ``model`` (a
  :class:`transforms.core.Enrichment` with a topic model) on ``path``."""
  texts, labels = read_jsonl(path)
  started = time.time()
  results = [r for i in range(0, len(texts), batch_size)
             for r in model(texts[i:i + batch_size], ner_flags=[False] * len(texts[i:i + batch_size]))]
  codes = [code for code, _ in model.topics.labels]
  scores = np.stack([r.topic_scores for r in results]) if results else np.zeros((0, len(codes)))
  report = top1_report(scores, labels, codes)
  if len(texts):
    report["mean_top_score"] = round(float(scores.max(axis=1).mean()), 4)
    report["mean_topics_per_text"] = round(float(np.mean([len(r.topics) for r in results])), 3)
  report["model"] = model.name
  report["file"] = str(path)
  report["seconds"] = round(time.time() - started, 2)
  return report


def _run(args: argparse.Namespace) -> int:
  from transforms import core

  model = core.load(topics_ref=args.topics_model, stages=("topics",), backend=args.inference_backend,
                    threads=args.threads or None, taxonomy=args.topics_taxonomy)
  report = evaluate_jsonl(model, Path(args.jsonl))
  if args.verbose_labels:
    for code, row in sorted(report["per_label"].items()):
      print(f"{code}\tP={row['precision']}\tR={row['recall']}\tsupport={row['support']}")
  print(json.dumps(report, sort_keys=True))
  return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--jsonl", required=True, help="Lines of {\"text\": ..., \"labels\": [codes]}.")
  parser.add_argument("--topics-model", default=None,
                      help="Topic model directory (ours or a HF sequence-classification model); "
                           "default: the bundled one.")
  parser.add_argument("--topics-taxonomy", default=None, help="CSV of code,label for --topics-model's labels.")
  parser.add_argument("--threads", type=int, default=0, help="Inference threads (default: all cores).")
  parser.add_argument("--inference-backend", choices=("onnx", "torch"), default="onnx",
                      help="Backend of our models (default: onnx, int8, as the pipeline runs them).")
  parser.add_argument("--verbose-labels", action="store_true", help="Also print one line per label.")


register, main = command(
    "topics", "Evaluate a topic model on a JSONL file.", __doc__, add_arguments, _run,
    prog="wirestream eval topics")


if __name__ == "__main__":
  sys.exit(main())
