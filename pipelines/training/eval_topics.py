"""``wirestream eval topics``: score a topic model on labelled texts, through the production path.

Data: ``--jsonl FILE`` (lines of ``{"text": "...", "labels": ["medtop:15000000", ...]}``, the main topic
first), and/or the dev parts of real labelled news: ``--huffpost FILE`` (HuffPost headlines, categories
mapped to IPTC roots by ``topics_data.HUFFPOST_TOPICS``) and ``--ag FILE`` (AG News). The dev parts are
deterministic, stratified hash splits of the de-duplicated data (``topics_data.split_huffpost`` and
``split_ag``); training reads only the other parts.

Each data set prints one JSON line: ``top1_accuracy`` (top topic == the main topic), ``top1_in_gold``
(top topic is any of the row's topics; AG World rows have a set of 12 and no main topic), per topic
precision/recall/support of the top-1, the largest confusion pairs (gold -> predicted, counts) and, for
HuffPost and AG, the same per source class. The topics a text gets (its top topic and every other that
reaches the model's threshold, as the pipeline writes them) are scored too: ``main_in_topics`` and, per
topic, ``in_topics_recall`` / ``in_topics_precision``. HuffPost headlines are lower-cased: casing is lost,
so the NER casing features (the encoder's token types) see lower case.

By default the enrichment core on the ONNX int8 graph scores, as the pipeline runs it;
``--inference-backend torch`` scores the fp32 torch path.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines.training import topics_data as td
from pipelines.training.command import command
from pipelines.training.metrics import top1_topic_report

HUFFPOST_NOTE = ("HuffPost headlines only, lower-cased: casing is lost (the NER casing features see lower "
                 "case)")


def read_jsonl(path: Path) -> tuple[list[str], list[list[str]]]:
  texts, labels = [], []
  with open(path, encoding="utf-8") as handle:
    for number, line in enumerate(handle, 1):
      line = line.strip()
      if not line:
        continue
      row = json.loads(line)
      if (not isinstance(row.get("text"), str) or not isinstance(row.get("labels"), list)
          or not row["labels"]):
        raise ValueError(f"{path}:{number}: expected {{\"text\": str, \"labels\": [str, ...]}}")
      texts.append(row["text"])
      labels.append([str(label) for label in row["labels"]])
  return texts, labels


def evaluate_rows(model, rows: Sequence[td.LabelledText], batch_size: int = 32,
                  groups: bool = True) -> dict:
  """Score ``model`` (a :class:`transforms.core.Enrichment` with a topic model) on ``rows``:
  :func:`pipelines.training.metrics.top1_topic_report` (with the topics each text gets) plus the
  mean top score."""
  texts = [row.text for row in rows]
  started = time.time()
  results = [r for i in range(0, len(texts), batch_size)
             for r in model(texts[i:i + batch_size], ner_flags=[False] * len(texts[i:i + batch_size]))]
  codes = [code for code, _ in model.topics.labels]
  scores = np.stack([r.topic_scores for r in results]) if results else np.zeros((0, len(codes)))
  top = [codes[i] for i in np.argmax(scores, axis=1)]
  report = top1_topic_report(top, [row.labels for row in rows], [row.main for row in rows],
                             [row.group for row in rows] if groups else None,
                             topics=[[topic.code for topic in r.topics] for r in results])
  if len(texts):
    report["mean_top_score"] = round(float(scores.max(axis=1).mean()), 4)
  report["model"] = model.name
  report["seconds"] = round(time.time() - started, 2)
  return report


def evaluate_jsonl(model, path: Path, batch_size: int = 32) -> dict:
  """:func:`evaluate_rows` on a JSONL file of ``{"text", "labels"}`` (the main topic first)."""
  texts, labels = read_jsonl(path)
  rows = [td.LabelledText(text, tuple(codes), codes[0], codes[0]) for text, codes in zip(texts, labels,
                                                                                          strict=True)]
  report = evaluate_rows(model, rows, batch_size, groups=False)
  report["file"] = str(path)
  return report


def evaluate_huffpost(model, path: Path, dev_fraction: float = td.HUFFPOST_DEV_FRACTION) -> dict:
  """:func:`evaluate_rows` on the HuffPost dev part (per group: the HuffPost category)."""
  _, dev = td.split_huffpost(path, dev_fraction)
  report = evaluate_rows(model, dev)
  report.update(file=str(path), data=f"HuffPost dev part ({dev_fraction:.0%} of every category)",
                note=HUFFPOST_NOTE)
  return report


def evaluate_ag(model, path: Path, dev_fraction: float = td.AG_DEV_FRACTION) -> dict:
  """:func:`evaluate_rows` on the AG News dev part (per group: the AG class)."""
  _, dev = td.split_ag(path, dev_fraction)
  report = evaluate_rows(model, td.ag_labelled(dev))
  report.update(file=str(path), data=f"AG News dev part ({dev_fraction:.1%} of every class)")
  return report


def _run(args: argparse.Namespace) -> int:
  from transforms import core

  if not (args.jsonl or args.huffpost or args.ag):
    raise SystemExit("eval topics: give --jsonl, --huffpost and/or --ag")
  model = core.load(topics_ref=args.topics_model, stages=("topics",), backend=args.inference_backend,
                    threads=args.threads or None, taxonomy=args.topics_taxonomy)
  reports = []
  if args.jsonl:
    reports.append(evaluate_jsonl(model, Path(args.jsonl)))
  if args.huffpost:
    reports.append(evaluate_huffpost(model, Path(args.huffpost), args.huffpost_dev_fraction))
  if args.ag:
    reports.append(evaluate_ag(model, Path(args.ag), args.ag_dev_fraction))
  for report in reports:
    if args.verbose_labels:
      for code, row in sorted(report["per_label"].items()):
        print(f"{code}\tP={row['precision']}\tR={row['recall']}\tsupport={row['support']}"
              f"\tin topics: P={row['in_topics_precision']}\tR={row['in_topics_recall']}")
      for gold, predicted, count in report["confusions"]:
        print(f"{gold} -> {predicted}\t{count}")
    print(json.dumps(report, sort_keys=True))
  return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--jsonl", default=None,
                      help="Lines of {\"text\": ..., \"labels\": [codes]}, the main topic first.")
  parser.add_argument("--huffpost", default=None,
                      help="HuffPost headlines JSONL (text, source_category): scores its dev part.")
  parser.add_argument("--huffpost-dev-fraction", type=float, default=td.HUFFPOST_DEV_FRACTION,
                      help="Share of every HuffPost category in the dev part (default: %(default)s).")
  parser.add_argument("--ag", default=None, help="AG News CSV (label,label_name,text): scores its dev part.")
  parser.add_argument("--ag-dev-fraction", type=float, default=td.AG_DEV_FRACTION,
                      help="Share of every AG class in the dev part (default: %(default)s).")
  parser.add_argument("--topics-model", default=None,
                      help="Topic model directory (ours or a HF sequence-classification model); "
                           "default: the bundled one.")
  parser.add_argument("--topics-taxonomy", default=None, help="CSV of code,label for --topics-model's labels.")
  parser.add_argument("--threads", type=int, default=0, help="Inference threads (default: all cores).")
  parser.add_argument("--inference-backend", choices=("onnx", "torch"), default="onnx",
                      help="Backend of our models (default: onnx, int8, as the pipeline runs them).")
  parser.add_argument("--verbose-labels", action="store_true",
                      help="Also print one line per label and per confusion pair.")


register, main = command(
    "topics", "Evaluate a topic model on labelled texts (JSONL, HuffPost/AG dev parts).", __doc__,
    add_arguments, _run, prog="wirestream eval topics")


if __name__ == "__main__":
  sys.exit(main())
