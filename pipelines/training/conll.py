"""CoNLL-2003 data for training and evaluating the NER model: reading, tag schemes, encoded chunks."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from transforms.ner_model import casing_class

# --- Tag schemes -----------------------------------------------------------------------------------


def iob1_to_bio(tags: Sequence[str]) -> list[str]:
  """Convert IOB1 (``I-X`` opens an entity unless it continues one of type X) to BIO."""
  out: list[str] = []
  prev = "O"
  for tag in tags:
    if tag.startswith("I-"):
      kind = tag[2:]
      if prev == "O" or prev[2:] != kind:
        tag = "B-" + kind
    out.append(tag)
    prev = tag
  return out


# --- CoNLL -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class ConllSentence:
  words: list[str]
  #: Tags converted to BIO.
  tags: list[str]
  #: Index of the -DOCSTART- document the sentence belongs to.
  doc: int


def read_conll(path: str | Path) -> list[ConllSentence]:
  """Read a CoNLL-2003 style file (word first, NER tag last column; IOB1 or BIO) into BIO sentences."""
  sentences: list[ConllSentence] = []
  words: list[str] = []
  tags: list[str] = []
  doc = 0

  def flush() -> None:
    if words:
      sentences.append(ConllSentence(list(words), iob1_to_bio(tags), doc))
      words.clear()
      tags.clear()

  with open(path, encoding="utf-8") as handle:
    for line in handle:
      line = line.strip()
      if not line:
        flush()
        continue
      cols = line.split()
      if cols[0] == "-DOCSTART-":
        flush()
        if sentences:
          doc += 1
        continue
      words.append(cols[0])
      tags.append(cols[-1])
  flush()
  return sentences


def documents(sentences: Sequence[ConllSentence]) -> list[list[int]]:
  """Sentence indexes grouped by document, in order."""
  docs: dict[int, list[int]] = {}
  for i, sentence in enumerate(sentences):
    docs.setdefault(sentence.doc, []).append(i)
  return list(docs.values())


# --- Running text as CoNLL sentences ---------------------------------------------------------------

#: A word as CoNLL-2003 splits running text: dotted abbreviations (U.S.) and numbers with their separators
#: (1,250.5, 1996-08-22) whole, the possessive 's and n't apart, hyphenated words whole, any other symbol alone.
_WORD_RE = re.compile(r"(?:[A-Za-z]\.){2,}|\d+(?:[.,:/-]\d+)*%?|\w+(?='[sS]\b)|\w+(?=n't)|n't|'[sS]\b"
                      r"|\w+(?:[-&']\w+)*|\S")
#: A sentence ends at . ! or ? before a space and a capital, a quote or a bracket.
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def text_sentences(text: str, max_words: int = 150) -> list[list[str]]:
  """The sentences of running text as lists of CoNLL-style words (at most ``max_words`` a sentence)."""
  out = []
  for sentence in _SENTENCE_END_RE.split(text):
    words = _WORD_RE.findall(sentence)[:max_words]
    if words:
      out.append(words)
  return out


# --- Encoded sentences and training/eval chunks -----------------------------------------------------


@dataclasses.dataclass
class EncodedSentence:
  ids: list[int]
  casing: list[int]
  #: Label id of every piece (continuation pieces of an entity word get I-X).
  labels: list[int]
  #: Index of the word each piece belongs to.
  word_index: list[int]
  #: True for the first piece of each word.
  first: list[bool]


def encode_sentence(tokenizer, words: Sequence[str], tags: Sequence[str],
                    label2id: dict[str, int]) -> EncodedSentence:
  """Word pieces of a pre-tokenised sentence with casing classes and per-piece labels."""
  enc = tokenizer.encode(list(words), is_pretokenized=True, add_special_tokens=False)
  ids, casing, labels, word_index, first = [], [], [], [], []
  prev_word = None
  for piece_id, (start, end), w in zip(enc.ids, enc.offsets, enc.word_ids, strict=True):
    if w is None:
      continue
    is_first = w != prev_word
    prev_word = w
    tag = tags[w]
    if not is_first and tag.startswith("B-"):
      tag = "I-" + tag[2:]
    ids.append(piece_id)
    casing.append(casing_class(words[w][start:end]))
    labels.append(label2id[tag])
    word_index.append(w)
    first.append(is_first)
  return EncodedSentence(ids, casing, labels, word_index, first)


def pack_sentences(lengths: Sequence[int], budget: int, first_chunk: int = 0) -> Iterator[list[int]]:
  """Group consecutive sentence indexes (of one document) into chunks of at most ``budget`` pieces.

  A sentence longer than ``budget`` makes a chunk of its own (the caller splits it). ``first_chunk``
  caps the first chunk at that many sentences (used to shift chunk boundaries between epochs).
  """
  chunk: list[int] = []
  size = 0
  for i, n in enumerate(lengths):
    full = chunk and (size + n > budget or (first_chunk and i == first_chunk))
    if full:
      yield chunk
      chunk, size = [], 0
    chunk.append(i)
    size += n
  if chunk:
    yield chunk


def iter_batches(items: Sequence, size: int) -> Iterable[Sequence]:
  for i in range(0, len(items), size):
    yield items[i:i + size]
