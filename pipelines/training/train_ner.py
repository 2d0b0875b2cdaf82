"""``wirestream train ner``: fine-tune the casing-aware MiniLM NER model on CoNLL-2003.

Training examples are chunks of consecutive sentences of one ``-DOCSTART-`` document, up to
``--context`` word pieces, so the model learns with document context (the same kind of window the
inference stage feeds it); every word piece in a chunk is labelled (first piece of a word with the word's
tag, continuation pieces with ``I-X``). Chunk boundaries shift from epoch to epoch. ``--context 0``
trains on single sentences. The best epoch by dev F1 (seqeval, conlleval mode, first piece of each word)
is kept in ``--out`` as fp16 weights that exclude the frozen word embeddings; ``--keep last`` keeps the
last epoch instead, which is how a final model is fitted on train + dev (``--train`` takes several files;
``--dev`` is then optional). ``--device cuda`` trains on a GPU (the same recipe; results differ from a
CPU run only by floating-point order).

``--teacher`` distils trained models into the new one: their mean label probabilities of every word piece
(read once, on chunks of whole sentences of up to ``--context`` pieces) are a second target beside the
gold labels, weighted by ``--distill-weight`` (the loss is ``(1 - w) * CE(gold) + w * CE(teachers)``).
The student keeps the teachers' labels and architecture, so it runs at the speed of one model.

``--unlabelled-ag`` adds news the teachers were not trained on: ``--unlabelled-rows`` rows of the AG News
train part (the topic model's dev part is never read), split into CoNLL-style sentences, one document a
row. The teachers label them (their mean probabilities' best label at the first piece of every word, as
gold tags) and their probabilities are the second target there too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pipelines.common import add_output_argument
from pipelines.training import conll, topics_data
from pipelines.training.command import command
from pipelines.training.metrics import score_bio
from transforms import ner_model as nm


def _chunks(encoded: Sequence[conll.EncodedSentence], docs: Sequence[Sequence[int]], budget: int,
            rng: random.Random | None) -> list[list[tuple[int, int, int]]]:
  """Chunks as lists of (sentence, piece_start, piece_end) parts; ``budget`` in pieces."""
  out: list[list[tuple[int, int, int]]] = []
  for doc in docs:
    parts: list[tuple[int, int, int]] = []
    for s in doc:
      n = len(encoded[s].ids)
      if n == 0:
        continue
      for start in range(0, n, budget):
        parts.append((s, start, min(n, start + budget)))
    if not parts:
      continue
    if budget <= 0:
      continue
    first = rng.randint(0, 4) if rng is not None else 0
    lengths = [end - start for _, start, end in parts]
    for group in conll.pack_sentences(lengths, budget, first_chunk=first):
      out.append([parts[i] for i in group])
  return out


def _sentence_chunks(encoded: Sequence[conll.EncodedSentence], budget: int) -> list[list[tuple[int, int, int]]]:
  out = []
  for s, enc in enumerate(encoded):
    for start in range(0, len(enc.ids), budget):
      out.append([(s, start, min(len(enc.ids), start + budget))])
  return out


def _pieces(chunk: Sequence[tuple[int, int, int]]) -> int:
  """Word pieces in a chunk (without ``[CLS]``/``[SEP]``)."""
  return sum(end - start for _, start, end in chunk)


def _collate(chunks, encoded, cls_id: int, sep_id: int, pad_id: int, soft=None):
  """Padded model inputs and per-piece gold labels of ``chunks``; with ``soft`` (one ``[pieces, labels]``
  tensor a sentence, as from :func:`teacher_targets`) also ``soft``, the target distribution of every piece."""
  import torch

  rows = []
  for chunk in chunks:
    ids, types, labels = [cls_id], [0], [-100]
    for s, a, b in chunk:
      enc = encoded[s]
      ids += enc.ids[a:b]
      types += enc.casing[a:b]
      labels += enc.labels[a:b]
    ids.append(sep_id)
    types.append(0)
    labels.append(-100)
    rows.append((ids, types, labels))
  width = max(len(r[0]) for r in rows)
  input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
  token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
  attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
  label_ids = torch.full((len(rows), width), -100, dtype=torch.long)
  for i, (ids, types, labels) in enumerate(rows):
    n = len(ids)
    input_ids[i, :n] = torch.tensor(ids)
    token_type_ids[i, :n] = torch.tensor(types)
    attention_mask[i, :n] = 1
    label_ids[i, :n] = torch.tensor(labels)
  out = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
         "labels": label_ids}
  if soft is not None:
    targets = torch.zeros((len(rows), width, soft[0].shape[-1]))
    for i, chunk in enumerate(chunks):
      targets[i, 1:1 + _pieces(chunk)] = torch.cat([soft[s][a:b] for s, a, b in chunk])
    out["soft"] = targets
  return out


def _chunk_probabilities(models, encoded, chunks, tokenizer, batch_size: int = 32):
  """Yield ``(chunk, probabilities)`` for every chunk: the mean softmax of ``models`` over the chunk's pieces
  (``[pieces, labels]``, in the chunk's order, without ``[CLS]``/``[SEP]``)."""
  import torch

  cls_id, sep_id, pad_id = (tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
  device = next(models[0].parameters()).device
  order = sorted(range(len(chunks)), key=lambda i: _pieces(chunks[i]))
  for model in models:
    model.eval()
  with torch.inference_mode():
    for batch_idx in conll.iter_batches(order, batch_size):
      batch = [chunks[i] for i in batch_idx]
      inputs = _collate(batch, encoded, cls_id, sep_id, pad_id)
      inputs.pop("labels")
      inputs = {k: v.to(device) for k, v in inputs.items()}
      probs = sum(model(**inputs).logits.float().softmax(-1) for model in models) / len(models)
      for row, chunk in zip(probs.cpu(), batch, strict=True):
        yield chunk, row[1:1 + _pieces(chunk)]


def evaluate_chunks(model, sentences, encoded, chunks, tokenizer, labels: Sequence[str],
                    batch_size: int = 32) -> dict:
  """Entity-level seqeval scores from the first piece of every word, predicted chunk by chunk."""
  predicted: list[list[str]] = [["O"] * len(s.words) for s in sentences]
  for chunk, probs in _chunk_probabilities([model], encoded, chunks, tokenizer, batch_size):
    best = probs.argmax(-1).tolist()
    pos = 0
    for s, a, b in chunk:
      enc = encoded[s]
      for k in range(a, b):
        if enc.first[k]:
          predicted[s][enc.word_index[k]] = labels[best[pos]]
        pos += 1
  return score_bio([s.tags for s in sentences], predicted)


def teacher_targets(models, encoded, chunks, tokenizer, batch_size: int = 32) -> list:
  """The teachers' mean label probabilities of every piece of every sentence (``[pieces, labels]`` a
  sentence), read on ``chunks``, which must cover every piece once."""
  import torch

  soft = [torch.zeros((len(enc.ids), len(nm.LABELS))) for enc in encoded]
  for chunk, probs in _chunk_probabilities(models, encoded, chunks, tokenizer, batch_size):
    pos = 0
    for s, a, b in chunk:
      soft[s][a:b] = probs[pos:pos + b - a]
      pos += b - a
  return soft


def unlabelled_ag(path: str | Path, rows: int, first_doc: int = 0) -> list[conll.ConllSentence]:
  """The sentences of ``rows`` AG News rows (the train part of :func:`topics_data.split_ag`, in an order
  fixed by seed 0), one document a row numbered from ``first_doc``, every word tagged ``O``."""
  texts = [text for text, _ in topics_data.split_ag(Path(path))[0]]
  random.Random(0).shuffle(texts)
  return [conll.ConllSentence(words, ["O"] * len(words), first_doc + doc)
          for doc, text in enumerate(texts[:rows]) for words in conll.text_sentences(text)]


def pseudo_labelled(sentences: Sequence[conll.ConllSentence], encoded: Sequence[conll.EncodedSentence],
                    soft: Sequence, labels: Sequence[str]) -> list[conll.ConllSentence]:
  """``sentences`` tagged with the best label of ``soft`` (from :func:`teacher_targets`) at the first piece
  of every word, mended to valid BIO (an inside tag that continues nothing opens an entity)."""
  out = []
  for sentence, enc, probs in zip(sentences, encoded, soft, strict=True):
    tags = ["O"] * len(sentence.words)
    for k, first in enumerate(enc.first):
      if first:
        tags[enc.word_index[k]] = labels[int(probs[k].argmax())]
    out.append(dataclasses.replace(sentence, tags=conll.iob1_to_bio(tags)))
  return out


def distillation_loss(logits, labels, soft, weight: float):
  """``(1 - weight) * CE(gold) + weight * CE(soft)``, averaged over the labelled pieces."""
  import torch

  mask = labels != -100
  logp = torch.log_softmax(logits[mask].float(), dim=-1)
  gold = torch.nn.functional.nll_loss(logp, labels[mask])
  return (1 - weight) * gold + weight * -(soft[mask] * logp).sum(-1).mean()


def read_documents(paths: Sequence[str | Path]) -> list[conll.ConllSentence]:
  """The sentences of several CoNLL files, one after the other, with document numbers kept apart."""
  out: list[conll.ConllSentence] = []
  for path in paths:
    offset = out[-1].doc + 1 if out else 0
    out += [dataclasses.replace(s, doc=s.doc + offset) for s in conll.read_conll(path)]
  return out


def train(args: argparse.Namespace) -> dict:
  """Train, keep the best dev epoch (or the last, ``--keep last``) in ``args.out``; return the training summary."""
  import torch
  from transformers import get_linear_schedule_with_warmup

  from pipelines.training.encoder import seed_everything  # torch: loaded when training, not for --help

  torch.set_num_threads(args.threads)
  device = torch.device(args.device)
  seed_everything(args.seed)
  started = time.time()
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)

  labels = list(nm.LABELS)
  label2id = {label: i for i, label in enumerate(labels)}
  tokenizer = nm.load_fast_tokenizer(nm.base_model_dir())
  cls_id, sep_id, pad_id = (tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))

  train_sents = read_documents(args.train)
  dev_sents = conll.read_conll(args.dev) if args.dev else []
  if args.limit_sentences:
    train_sents = train_sents[:args.limit_sentences]
    dev_sents = dev_sents[:args.limit_sentences]
  train_enc = [conll.encode_sentence(tokenizer, s.words, s.tags, label2id) for s in train_sents]
  dev_enc = [conll.encode_sentence(tokenizer, s.words, s.tags, label2id) for s in dev_sents]
  budget = (args.context or args.sentence_pieces) - 2
  train_docs = conll.documents(train_sents)
  dev_docs = conll.documents(dev_sents)

  def chunks_of(encoded, docs, rng=None):
    """Chunks of whole sentences (boundaries shifted by ``rng``), or single sentences with ``--context 0``."""
    if args.context:
      return _chunks(encoded, docs, budget, rng)
    return _sentence_chunks(encoded, budget)

  def load(path, role=""):
    model = nm.load_casing_model(path)
    if list(model.config.id2label.values()) != labels:
      raise ValueError(f"{role}{path} has labels {model.config.id2label}, expected {labels}")
    return model

  dev_chunks = chunks_of(dev_enc, dev_docs)

  if args.init_from:
    model = load(args.init_from)
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
  else:
    model = nm.build_casing_model(labels, max_window=max(args.context, 128))
  model.to(device)
  soft = None
  if args.teacher:
    teachers = [load(path, "teacher ").to(device) for path in args.teacher]
    read_chunks = chunks_of(train_enc, train_docs)
    soft = teacher_targets(teachers, train_enc, read_chunks, tokenizer)
    print(f"teachers: {len(args.teacher)} models read {len(read_chunks)} chunks "
          f"({time.time() - started:.0f}s); distillation weight {args.distill_weight}", flush=True)
    if args.unlabelled_ag:
      extra = unlabelled_ag(args.unlabelled_ag, args.unlabelled_rows, first_doc=train_sents[-1].doc + 1)
      extra_enc = [conll.encode_sentence(tokenizer, s.words, s.tags, label2id) for s in extra]
      extra_soft = teacher_targets(teachers, extra_enc, chunks_of(extra_enc, conll.documents(extra)), tokenizer)
      extra = pseudo_labelled(extra, extra_enc, extra_soft, labels)
      train_sents += extra
      train_enc += [conll.encode_sentence(tokenizer, s.words, s.tags, label2id) for s in extra]
      soft += extra_soft
      train_docs = conll.documents(train_sents)
      print(f"unlabelled: {args.unlabelled_rows} AG rows asked, {len(extra)} sentences, "
            f"{sum(len(s.words) for s in extra)} words labelled by the teachers "
            f"({time.time() - started:.0f}s)", flush=True)
    del teachers
  no_decay = ("bias", "LayerNorm.weight")
  params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
  optimizer = torch.optim.AdamW([
      {"params": [p for n, p in params if not any(k in n for k in no_decay)], "weight_decay": 0.01},
      {"params": [p for n, p in params if any(k in n for k in no_decay)], "weight_decay": 0.0},
  ], lr=args.lr)
  rng = random.Random(args.seed)
  steps_per_epoch = -(-len(chunks_of(train_enc, train_docs, random.Random(0))) // args.batch_size)
  total_steps = args.max_steps or steps_per_epoch * args.epochs
  scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup * total_steps), total_steps)
  print(f"train: {len(train_sents)} sentences, {sum(len(e.ids) for e in train_enc)} pieces, "
        f"~{steps_per_epoch} steps/epoch x {args.epochs} epochs (batch {args.batch_size}, context "
        f"{args.context or 'none'}); dev: {len(dev_sents)} sentences", flush=True)

  history = []
  best = None
  step = 0
  for epoch in range(1, args.epochs + 1):
    model.train()
    chunks = chunks_of(train_enc, train_docs, rng)
    rng.shuffle(chunks)
    epoch_start = time.time()
    running = 0.0
    for i, batch in enumerate(conll.iter_batches(chunks, args.batch_size), 1):
      inputs = {k: v.to(device) for k, v in _collate(batch, train_enc, cls_id, sep_id, pad_id, soft).items()}
      if soft is None:
        loss = model(**inputs).loss
      else:
        targets, gold = inputs.pop("soft"), inputs.pop("labels")
        loss = distillation_loss(model(**inputs).logits, gold, targets, args.distill_weight)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      optimizer.step()
      scheduler.step()
      optimizer.zero_grad(set_to_none=True)
      running += loss.item()
      step += 1
      if i % args.log_every == 0:
        rate = i / (time.time() - epoch_start)
        print(f"epoch {epoch} step {i}/{-(-len(chunks) // args.batch_size)} loss {running / args.log_every:.4f}"
              f" ({rate:.2f} steps/s)", flush=True)
        running = 0.0
      if args.max_steps and step >= args.max_steps:
        break
    train_s = time.time() - epoch_start
    last = epoch == args.epochs or bool(args.max_steps and step >= args.max_steps)
    record = {"epoch": epoch, "train_seconds": round(train_s, 1)}
    scores = None
    if dev_sents:
      scores = evaluate_chunks(model, dev_sents, dev_enc, dev_chunks, tokenizer, labels)
      record.update({"dev_f1": scores["f1"], "dev_precision": scores["precision"], "dev_recall": scores["recall"],
                     "per_type": {k: v["f1"] for k, v in scores["per_type"].items()}})
      print(f"epoch {epoch}: dev F1 {scores['f1']:.4f} (P {scores['precision']:.4f} R {scores['recall']:.4f}) "
            f"per type {record['per_type']} [{train_s:.0f}s train]", flush=True)
    record["elapsed_seconds"] = round(time.time() - started, 1)
    history.append(record)
    keep = last if args.keep == "last" else best is None or scores["f1"] > best["dev"]["f1"]
    if keep:
      best = {"epoch": epoch, "dev": scores}
      nm.save_casing_model(model, out, dtype=args.save_dtype)
      print(f"saved the model of epoch {epoch} ({args.keep}) to {out}", flush=True)
    if last:
      break

  summary = {
      "command": command_line(args),
      "train_files": [Path(p).name for p in args.train], "dev_file": Path(args.dev).name if args.dev else None,
      "seed": args.seed, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
      "context": args.context, "threads": args.threads, "device": args.device, "keep": args.keep,
      "teachers": list(args.teacher or []), "distill_weight": args.distill_weight if args.teacher else None,
      "unlabelled_ag": Path(args.unlabelled_ag).name if args.unlabelled_ag else None,
      "unlabelled_rows": args.unlabelled_rows if args.unlabelled_ag else None,
      "best_epoch": best["epoch"] if best else None, "dev": best["dev"] if best else None,
      "history": history, "train_seconds_total": round(time.time() - started, 1),
  }
  (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
  print(json.dumps({"best_epoch": summary["best_epoch"], "dev_f1": (summary["dev"] or {}).get("f1"),
                    "seconds": summary["train_seconds_total"]}), flush=True)
  return summary


def command_line(args: argparse.Namespace) -> str:
  """The ``wirestream train ner`` command that reproduces this run."""
  parts = ["wirestream", "train", "ner"]
  for key in ("train", "dev", "out", "epochs", "lr", "batch_size", "warmup", "seed", "context", "threads",
              "init_from", "keep", "device", "teacher"):
    value = getattr(args, key, None)
    if value is not None:
      parts += ["--" + key.replace("_", "-"), *(map(str, value) if isinstance(value, list) else [str(value)])]
  if getattr(args, "teacher", None):
    parts += ["--distill-weight", str(args.distill_weight)]
    if getattr(args, "unlabelled_ag", None):
      parts += ["--unlabelled-ag", str(args.unlabelled_ag), "--unlabelled-rows", str(args.unlabelled_rows)]
  return " ".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--train", required=True, nargs="+",
                      help="CoNLL-2003 training file(s) (IOB1 or BIO); several are read one after the other.")
  parser.add_argument("--dev", help="CoNLL-2003 dev file, scored after every epoch (required with --keep best).")
  parser.add_argument("--keep", choices=("best", "last"), default="best",
                      help="Keep the epoch with the best dev F1, or the last epoch (a final fit on train + dev).")
  parser.add_argument("--device", default="cpu", help="Torch device to train on, e.g. cpu or cuda.")
  add_output_argument(parser, "Directory for the kept model (fp16 delta + config).", dest="out", required=True)
  parser.add_argument("--epochs", type=int, default=5)
  parser.add_argument("--lr", type=float, default=1e-4)
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--warmup", type=float, default=0.1, help="Warm-up fraction of all steps.")
  parser.add_argument("--seed", type=int, default=13)
  parser.add_argument("--context", type=int, default=128,
                      help="Word pieces per training chunk of consecutive sentences (0: single sentences).")
  parser.add_argument("--sentence-pieces", type=int, default=128, help="Piece cap with --context 0.")
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--log-every", type=int, default=50)
  parser.add_argument("--max-steps", type=int, default=0, help="Stop after this many steps (smoke runs).")
  parser.add_argument("--limit-sentences", type=int, default=0, help="Use only the first N sentences.")
  parser.add_argument("--init-from", default=None,
                      help="Continue from one of our saved models (a directory) instead of the base encoder.")
  parser.add_argument("--save-dtype", choices=("float16", "float32"), default="float16")
  parser.add_argument("--teacher", nargs="+", default=None,
                      help="Trained NER models (directories) to distil: their mean probabilities are a second target.")
  parser.add_argument("--distill-weight", type=float, default=0.5,
                      help="Weight of the teachers' target in the loss (with --teacher; the gold labels get the rest).")
  parser.add_argument("--unlabelled-ag", default=None,
                      help="AG News CSV whose train part supplies news for the teachers to label (with --teacher).")
  parser.add_argument("--unlabelled-rows", type=int, default=5000,
                      help="AG rows to read with --unlabelled-ag (a fixed shuffle of the train part).")


def _run(args: argparse.Namespace) -> int:
  if args.keep == "best" and not args.dev:
    print("error: --keep best needs --dev (or use --keep last)", file=sys.stderr)
    return 2
  for path in [*args.train, *([args.dev] if args.dev else []), *([args.unlabelled_ag] if args.unlabelled_ag else [])]:
    if not Path(path).is_file():
      print(f"error: no such file: {path}", file=sys.stderr)
      return 2
  for path in args.teacher or []:
    if not (Path(path) / nm.WEIGHTS_FILE).is_file():
      print(f"error: no NER model in teacher directory {path}", file=sys.stderr)
      return 2
  if args.unlabelled_ag and not args.teacher:
    print("error: --unlabelled-ag needs --teacher (the teachers label its sentences)", file=sys.stderr)
    return 2
  if args.unlabelled_rows < 1:
    print("error: --unlabelled-rows must be at least 1", file=sys.stderr)
    return 2
  if not 0.0 <= args.distill_weight <= 1.0:
    print("error: --distill-weight must be between 0 and 1", file=sys.stderr)
    return 2
  train(args)
  return 0


register, main = command(
    "ner", "Train the NER model on CoNLL-2003.", __doc__, add_arguments, _run,
    prog="wirestream train ner")


if __name__ == "__main__":
  sys.exit(main())
