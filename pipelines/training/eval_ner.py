"""``wirestream eval ner``: entity-level scores of an NER model on a CoNLL file.

Each ``-DOCSTART-`` document is rebuilt as text (words joined by spaces, one sentence per line) and run
through the pipeline's own inference path (:mod:`transforms.core`, on the ONNX int8 backend unless
``--inference-backend torch``). The spans are then mapped back onto the CoNLL tokens and scored with seqeval (default
mode, as conlleval). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pipelines.training import conll
from pipelines.training.command import command
from pipelines.training.metrics import score_bio
from schemas.records import Entity
from transforms.decode import split_tag


def document_text(sentences: Sequence[conll.ConllSentence]) -> tuple[str, list[tuple[int, int]], list[list[tuple[int, int]]]]:
  """Text of a document, the character range of every sentence and of every word."""
  parts: list[str] = []
  pos = 0
  sentence_spans: list[tuple[int, int]] = []
  word_spans: list[list[tuple[int, int]]] = []
  for s, sentence in enumerate(sentences):
    if s:
      parts.append("\n")
      pos += 1
    start = pos
    spans = []
    for w, word in enumerate(sentence.words):
      if w:
        parts.append(" ")
        pos += 1
      spans.append((pos, pos + len(word)))
      parts.append(word)
      pos += len(word)
    sentence_spans.append((start, pos))
    word_spans.append(spans)
  return "".join(parts), sentence_spans, word_spans


def tags_from_entities(entities: Sequence[Entity], word_spans: Sequence[tuple[int, int]],
                       sentence_range: tuple[int, int]) -> list[str]:
  """BIO tags of one sentence's words from character-span mentions (a word overlapping a span joins it)."""
  tags = ["O"] * len(word_spans)
  lo, hi = sentence_range
  for entity in entities:
    if entity.end_char <= lo or entity.start_char >= hi:
      continue
    inside = [i for i, (a, b) in enumerate(word_spans) if a < entity.end_char and b > entity.start_char]
    for n, i in enumerate(inside):
      if tags[i] == "O":
        tags[i] = ("B-" if n == 0 else "I-") + entity.label
  return tags


def evaluate_conll(conll_file: str | Path, model_ref: str | None = None, *, threads: int | None = None,
                   limit_documents: int = 0, backend: str = "onnx") -> dict:
  """Scores of ``model_ref`` (default: ours) on a CoNLL file, through the pipeline's inference code."""
  from transforms import core

  model = core.load(model_ref, stages=("ner",), backend=backend, threads=threads)
  started = time.time()
  scores = conll_scores(lambda texts, spans: [r.entities for r in model(texts, sentences=spans)], conll_file,
                        limit_documents)
  scores["seconds"] = round(time.time() - started, 1)
  scores["model"] = model.name
  scores["backend"] = backend
  return scores


def conll_scores(annotate: Callable[[list[str], list[list[tuple[int, int]]]], list], conll_file: str | Path,
                 limit_documents: int = 0) -> dict:
  """Entity-level scores on a CoNLL file; ``annotate(texts, sentence_ranges)`` gives the mentions of each
  document text."""
  sentences = conll.read_conll(conll_file)
  docs = conll.documents(sentences)[:limit_documents or None]
  texts, sent_spans, word_spans = [], [], []
  for doc in docs:
    text, spans, words = document_text([sentences[i] for i in doc])
    texts.append(text)
    sent_spans.append(spans)
    word_spans.append(words)
  gold: list[list[str]] = []
  predicted: list[list[str]] = []
  for doc, spans, words, entities in zip(docs, sent_spans, word_spans, annotate(texts, sent_spans), strict=True):
    for i, span, sentence_words in zip(doc, spans, words, strict=True):
      gold.append(_to_bio(sentences[i].tags))
      predicted.append(tags_from_entities(entities, sentence_words, span))
  return score_bio(gold, predicted)


def _to_bio(tags: Sequence[str]) -> list[str]:
  """Gold tags with bare or other-scheme labels normalised to BIO."""
  out = []
  prev = None
  for tag in tags:
    prefix, kind = split_tag(tag)
    if kind is None:
      out.append("O")
    elif prefix == "B" or prev != kind:
      out.append("B-" + kind)
    else:
      out.append("I-" + kind)
    prev = kind
  return out


def _run(args: argparse.Namespace) -> int:
  if not Path(args.conll).is_file():
    print(f"error: no such file: {args.conll}", file=sys.stderr)
    return 2
  try:
    scores = evaluate_conll(args.conll, args.ner_model, threads=args.threads,
                            limit_documents=args.limit_documents, backend=args.inference_backend)
  except FileNotFoundError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  for kind, row in scores["per_type"].items():
    print(f"{kind:6s} P {row['precision']:.4f} R {row['recall']:.4f} F1 {row['f1']:.4f} (n={row['support']})")
  print(json.dumps({k: scores[k] for k in ("precision", "recall", "f1", "per_type", "sentences", "backend")}))
  return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--conll", required=True, help="CoNLL-2003 style file (word first, NER tag last).")
  parser.add_argument("--ner-model", default=None,
                      help="Model directory or Hugging Face id (default: the bundled wirestream model).")
  parser.add_argument("--threads", type=int, default=None, help="Inference threads (default: all cores).")
  parser.add_argument("--inference-backend", choices=("onnx", "torch"), default="onnx",
                      help="Backend of our models (default: onnx, int8, as the pipeline runs them).")
  parser.add_argument("--limit-documents", type=int, default=0, help="Score only the first N documents.")


register, main = command(
    "ner", "Score an NER model on a CoNLL file (seqeval).", __doc__, add_arguments, _run,
    prog="wirestream eval ner")


if __name__ == "__main__":
  sys.exit(main())
