"""``wirestream eval topics-reference``: what a model of our encoder's size reaches on the HuffPost dev part
with nothing held fixed, as a yardstick for ``wirestream eval topics``.

The whole encoder (default: the base package's MiniLM-L6; ``--encoder DIR``: one of our NER models, with
its casing token types) is fine-tuned, all its layers, with mean pooling and one linear layer over the
mapped IPTC roots (softmax, one root a headline), on the HuffPost train part alone, and scored on the same
dev part, with the same report as ``eval topics`` (``topics_data.split_huffpost``; per root top-1
precision/recall, confusions, per category). It is not a shipped design: the product's topic head reads
the frozen NER encoder's layer-3 states (one encoder pass serves both stages), adds one layer and learns
from AG News, Reuters and the IPTC vocabulary too. The gap between the two is what that design costs on
these headlines; the reference's per-root recall is what the labels allow a model of this size.

Prints one JSON line per epoch (top-1 and the lowest recall among roots with ``--min-support`` dev rows)
and a last line with the full report. About 6 minutes an epoch on two CPU threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from pipelines.training import topics_data as td
from pipelines.training.command import command
from pipelines.training.metrics import top1_topic_report
from transforms.spec import BASE_ENCODER


def lowest_recall(report: dict, min_support: int) -> float | None:
  """The lowest top-1 recall among the roots with at least ``min_support`` rows mainly about them."""
  recalls = [row["recall"] for row in report["per_label"].values() if row["support"] >= min_support]
  return min(recalls) if recalls else None


def _run(args: argparse.Namespace) -> int:
  import torch
  from transformers import get_linear_schedule_with_warmup

  from pipelines.training import encoder as te

  if args.threads:
    torch.set_num_threads(args.threads)
  te.seed_everything(args.seed)
  train, dev = td.split_huffpost(Path(args.huffpost), args.huffpost_dev_fraction)
  codes = sorted({row.main for row in train})
  index = {code: i for i, code in enumerate(codes)}
  encoder = te.Encoder(args.encoder)
  bert = encoder.bert
  classifier = torch.nn.Linear(encoder.hidden_size, len(codes))
  def first_windows(rows: list) -> list:
    return [encoder.windows(row.text, max_length=args.max_length, max_windows=1)[0] for row in rows]

  windows, dev_windows = first_windows(train), first_windows(dev)
  targets = torch.tensor([index[row.main] for row in train])

  def logits(batch: list) -> torch.Tensor:
    ids, types, mask = encoder.batch(batch)
    hidden = bert(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
    return classifier(te.masked_hidden_mean(hidden, mask))

  steps = args.epochs * -(-len(train) // args.batch_size)
  optimizer = torch.optim.AdamW([{"params": bert.parameters(), "lr": args.lr},
                                 {"params": classifier.parameters(), "lr": args.head_lr}], weight_decay=0.01)
  scheduler = get_linear_schedule_with_warmup(optimizer, max(1, int(0.06 * steps)), steps)
  rng = np.random.default_rng(args.seed)
  started = time.time()
  report: dict = {}
  for epoch in range(1, args.epochs + 1):
    bert.train()
    order = rng.permutation(len(train))
    for start in range(0, len(order), args.batch_size):
      rows = order[start:start + args.batch_size]
      loss = torch.nn.functional.cross_entropy(logits([windows[i] for i in rows]), targets[rows])
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
      scheduler.step()
    bert.eval()
    with torch.inference_mode():
      predicted = [int(i) for start in range(0, len(dev_windows), 128)
                   for i in logits(dev_windows[start:start + 128]).argmax(-1)]
    top = [codes[i] for i in predicted]
    report = top1_topic_report(top, [row.labels for row in dev], [row.main for row in dev],
                               [row.group for row in dev])
    print(json.dumps({"epoch": epoch, "top1_accuracy": report["top1_accuracy"],
                      "lowest_recall": lowest_recall(report, args.min_support),
                      "seconds": round(time.time() - started, 1)}), flush=True)
  report.update(data=f"HuffPost dev part ({args.huffpost_dev_fraction:.0%} of every category)",
                reference=f"{args.encoder} fine-tuned whole on the HuffPost train part ({len(train)} rows)",
                file=str(args.huffpost), epochs=args.epochs, lr=args.lr, seed=args.seed,
                lowest_recall=lowest_recall(report, args.min_support), min_support=args.min_support)
  print(json.dumps(report, sort_keys=True))
  return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--huffpost", required=True,
                      help="HuffPost headlines JSONL (text, source_category): trains on its train part, "
                           "scores its dev part.")
  parser.add_argument("--huffpost-dev-fraction", type=float, default=td.HUFFPOST_DEV_FRACTION,
                      help="Share of every HuffPost category in the dev part (default: %(default)s).")
  parser.add_argument("--encoder", default=BASE_ENCODER,
                      help="Encoder to fine-tune: 'base' (the base package) or a NER model directory "
                           "(default: %(default)s).")
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--lr", type=float, default=5e-5, help="Encoder learning rate (default: %(default)s).")
  parser.add_argument("--head-lr", type=float, default=1e-3,
                      help="Learning rate of the linear layer (default: %(default)s).")
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--max-length", type=int, default=48,
                      help="Word pieces a headline keeps, with [CLS]/[SEP] (default: %(default)s).")
  parser.add_argument("--min-support", type=int, default=200,
                      help="lowest_recall counts roots with this many dev rows (default: %(default)s).")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--threads", type=int, default=0, help="Torch threads (default: all cores).")


register, main = command(
    "topics-reference", "Fine-tune a whole encoder on the HuffPost train part: a yardstick for eval topics.",
    __doc__, add_arguments, _run, prog="wirestream eval topics-reference")


if __name__ == "__main__":
  sys.exit(main())
