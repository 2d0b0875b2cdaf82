"""From a text to model inputs: sentences, word pieces, windows and batches (one place for all of it).

1. :func:`split_sentences` cuts a text into sentences (paragraph breaks, sentence punctuation).
2. :func:`encode_text` tokenises the whole text once; every word piece keeps its character offsets into
   the original text (even though the default tokenizer lowercases and strips accents), its casing class
   when the model reads one, whether it starts a word, and its sentence.
3. :func:`plan_windows` cuts the pieces into windows that fit the model: a *core* of whole sentences (a
   sentence longer than a core is cut at word starts) plus context on each side. Every piece lies in
   exactly one core, so nothing is dropped or labelled twice.
4. :func:`batches` groups the rows of many texts by length (one batch: rows of nearly one length, at most
   ``batch_tokens`` pieces) and :func:`padded` turns a batch into the three arrays every backend takes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Sequence

import numpy as np

#: Context pieces on each side of a window's core (see :func:`plan_windows`).
DEFAULT_CONTEXT = 32
#: Word pieces (padding included) per forward pass.
DEFAULT_BATCH_TOKENS = 4096
#: Pieces a row may be padded by in a batch. The backends run every row unpadded (see
#: :mod:`transforms.backends`), so padding costs array space only, and full batches keep every core busy.
DEFAULT_MAX_PADDING = 1 << 16

# --- Sentences ---------------------------------------------------------------------------------------

ABBREVIATIONS = frozenset("""
mr mrs ms dr prof sr jr st gen col lt sgt capt cmdr adm gov sen rep rev hon messrs
inc corp co ltd plc bros no nos vs etc approx dept est fig jan feb mar apr jun jul aug sep sept oct nov dec
mon tue tues wed thu thur thurs fri sat sun u.s u.k u.n e.g i.e a.m p.m
""".split())
_SENT_END = re.compile(r"[.!?]+[\"')\]\u201d\u2019]*(?=\s)")
_PARA = re.compile(r"\n\s*\n")


def split_sentences(text: str) -> list[tuple[int, int]]:
  """Character ranges of the sentences of ``text`` (whitespace between sentences excluded).

  Paragraph breaks (blank lines) always end a sentence; so do ``.``, ``!`` and ``?`` followed by
  whitespace and a capital letter, digit or quote, unless the word before a full stop is a known
  abbreviation or a single letter (initials).
  """
  spans: list[tuple[int, int]] = []

  def add(start: int, end: int) -> None:
    while start < end and text[start].isspace():
      start += 1
    while end > start and text[end - 1].isspace():
      end -= 1
    if start < end:
      spans.append((start, end))

  para_start = 0
  breaks = [(m.start(), m.end()) for m in _PARA.finditer(text)] + [(len(text), len(text))]
  for para_end, next_start in breaks:
    start = para_start
    for m in _SENT_END.finditer(text, para_start, para_end):
      end = m.end()
      rest = text[end:para_end].lstrip()
      if not rest or not (rest[0].isupper() or rest[0].isdigit() or rest[0] in "\"'\u201c\u2018("):
        continue
      if text[m.start()] == "." and m.end() - m.start() == 1:
        word = text[start:m.start()].rsplit(None, 1)[-1] if text[start:m.start()].strip() else ""
        word = word.lstrip("(\"'").lower()
        if word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()) or re.fullmatch(r"(\w\.)+\w", word):
          continue
      add(start, end)
      start = end
    add(start, para_end)
    para_start = next_start
  return spans


# --- Word pieces ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Encoded:
  """Word pieces of one text (no special tokens)."""

  ids: list[int]
  offsets: list[tuple[int, int]]
  #: Token-type ids: casing classes for a model with a casing channel, zeros otherwise.
  types: list[int]
  #: True for the first piece of each tokenizer word.
  word_start: list[bool]
  #: Sentence index of every piece.
  sentence: list[int]


def encode_text(tokenizer, text: str, sentences: Sequence[tuple[int, int]],
                casing: Callable[[str], int] | None) -> Encoded:
  """Tokenise ``text`` once; pieces keep character offsets into ``text`` and their sentence index.

  ``casing`` gives the token type of a piece from its characters (``None``: all zeros).
  """
  enc = tokenizer.encode(text, add_special_tokens=False)
  if not enc.ids:
    return Encoded([], [], [], [], [])
  spans = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
  keep = spans[:, 1] > spans[:, 0]  # pieces with characters (not e.g. a lone combining mark's remains)
  spans = spans[keep]
  ids = np.asarray(enc.ids, dtype=np.int64)[keep].tolist()
  words = np.asarray([-1 if w is None else w for w in enc.word_ids], dtype=np.int64)[keep]
  sent_starts = np.asarray([s for s, _ in sentences], dtype=np.int64)
  sentence = np.maximum(np.searchsorted(sent_starts, spans[:, 0], side="right") - 1, 0)
  # A piece starts a word when it has no word, its word differs from the previous piece's, or it starts
  # a new sentence.
  word_start = (words < 0) | np.concatenate([[True], words[1:] != words[:-1]]) \
      | np.concatenate([[True], sentence[1:] != sentence[:-1]])
  offsets = [(a, b) for a, b in spans.tolist()]
  types = [casing(text[a:b]) for a, b in offsets] if casing else [0] * len(offsets)
  return Encoded(ids, offsets, types, word_start.tolist(), sentence.tolist())


# --- Windows ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Window:
  """Pieces ``[start, end)`` go to the model; labels are taken for ``[core_start, core_end)`` only."""

  start: int
  end: int
  core_start: int
  core_end: int


def plan_windows(word_start: Sequence[bool], sentence: Sequence[int], max_pieces: int,
                 context: int = DEFAULT_CONTEXT, fill: bool = True) -> list[Window]:
  """Windows of at most ``max_pieces`` pieces whose cores tile ``[0, n)``.

  Cores hold whole sentences where they fit (``max_pieces`` less ``context`` on each side); a longer
  sentence is cut at word starts (or, for a single word longer than a core, anywhere). Context on each
  side is up to ``context`` pieces, or with ``fill`` as much as the window has room for; it starts and
  ends at word starts.
  """
  n = len(word_start)
  if n == 0:
    return []
  context = max(0, min(context, max_pieces // 4))
  core_max = max(1, max_pieces - 2 * context)
  units: list[tuple[int, int]] = []  # sentences, with over-long ones cut at word starts
  i = 0
  while i < n:
    j = i + 1
    while j < n and sentence[j] == sentence[i]:
      j += 1
    a = i
    while j - a > core_max:
      cut = a + core_max
      while cut > a + 1 and not word_start[cut]:
        cut -= 1
      if cut == a + 1 and not word_start[cut]:
        cut = a + core_max
      units.append((a, cut))
      a = cut
    units.append((a, j))
    i = j
  cores: list[tuple[int, int]] = []
  for a, b in units:
    if cores and b - cores[-1][0] <= core_max:
      cores[-1] = (cores[-1][0], b)
    else:
      cores.append((a, b))
  windows = []
  for cs, ce in cores:
    room = max_pieces - (ce - cs)
    left = min(cs, max(context, room - min(n - ce, context))) if fill else min(cs, context)
    right = min(n - ce, room - left) if fill else min(n - ce, context)
    start, end = cs - left, ce + right
    while start < cs and not word_start[start]:
      start += 1
    while end > ce and end < n and not word_start[end]:
      end -= 1
    windows.append(Window(start, end, cs, ce))
  return windows


# --- Rows and batches -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
  """One model input: the pieces of one window (special tokens included) of text ``text``."""

  text: int
  ids: list[int]
  types: list[int]
  #: The window it reads (None: a row read by the topic head only, e.g. a headline).
  window: Window | None


def batches(rows: Sequence[Row], batch_tokens: int = DEFAULT_BATCH_TOKENS,
            max_padding: int = DEFAULT_MAX_PADDING) -> Iterator[list[Row]]:
  """Rows sorted by length, in batches of at most ``batch_tokens`` padded pieces whose rows differ in
  length by at most ``max_padding`` pieces."""
  ordered = sorted(rows, key=lambda row: len(row.ids))
  i = 0
  while i < len(ordered):
    j = i + 1
    widest = len(ordered[i].ids) + max_padding
    while j < len(ordered) and (j + 1 - i) * len(ordered[j].ids) <= batch_tokens \
        and len(ordered[j].ids) <= widest:
      j += 1
    yield ordered[i:j]
    i = j


def padded(rows: Sequence[Row], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``input_ids``, ``token_type_ids`` and ``attention_mask`` of a batch, padded to its widest row."""
  width = max(len(row.ids) for row in rows)
  ids = np.full((len(rows), width), pad_id, dtype=np.int64)
  types = np.zeros((len(rows), width), dtype=np.int64)
  mask = np.zeros((len(rows), width), dtype=np.int64)
  for r, row in enumerate(rows):
    ids[r, :len(row.ids)] = row.ids
    types[r, :len(row.types)] = row.types
    mask[r, :len(row.ids)] = 1
  return ids, types, mask
