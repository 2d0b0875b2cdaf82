"""From model outputs to results: BIO decoding into character spans, topic pooling and the topic rule.

Every backend's logits go through these functions, whoever runs the model: the Beam stage, ``wirestream
eval`` and ``wirestream bench``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from schemas.records import Entity, Topic
from transforms.windows import ABBREVIATIONS, Encoded

# --- Tag schemes -----------------------------------------------------------------------------------


def split_tag(tag: str) -> tuple[str, str | None]:
  """``"B-PER" -> ("B", "PER")``; ``"O" -> ("O", None)``; bare labels ("PER") count as ``I``."""
  if tag in ("O", "", None):
    return "O", None
  if len(tag) > 2 and tag[1] in "-_" and tag[0] in "BIESLU":
    prefix = {"E": "I", "L": "I", "S": "B", "U": "B"}.get(tag[0], tag[0])
    return prefix, tag[2:]
  return "I", tag


def tags_are_bio(settings: dict | None) -> bool:
  """True when our model's settings (``config.json``'s ``wirestream`` entry) say it was trained on BIO
  tags, so its predictions decode under BIO constraints."""
  return (settings or {}).get("tag_scheme") == "BIO"


def bio_transitions(labels: Sequence[str]):
  """Which label may follow which in BIO: ``(allowed[prev, cur], may_start[cur])`` boolean arrays.

  ``I-X`` may only continue ``B-X`` or ``I-X``; every other label may follow anything.
  """
  parsed = [split_tag(label) for label in labels]
  allowed = np.ones((len(labels), len(labels)), dtype=bool)
  may_start = np.ones(len(labels), dtype=bool)
  for j, (prefix, kind) in enumerate(parsed):
    if prefix == "I":
      may_start[j] = False
      allowed[:, j] = [k == kind for _, k in parsed]
  return allowed, may_start


def bio_viterbi(log_probs, allowed, may_start) -> list[int]:
  """The most probable label sequence that is valid BIO, from per-word log probabilities (words, labels).

  When the per-word best labels already form valid BIO this is their argmax; otherwise it mends the
  sequence as a whole (``O I-PER I-PER`` becomes ``O B-PER I-PER`` or ``O O O``, whichever the model
  prefers) instead of word by word.
  """
  n = len(log_probs)
  if n == 0:
    return []
  penalty = np.where(allowed, 0.0, -np.inf)
  score = np.where(may_start, log_probs[0], -np.inf)
  back = np.zeros((n, len(may_start)), dtype=np.int64)
  for t in range(1, n):
    candidates = score[:, None] + penalty
    back[t] = candidates.argmax(0)
    score = candidates.max(0) + log_probs[t]
  path = [int(score.argmax())]
  for t in range(n - 1, 0, -1):
    path.append(int(back[t, path[-1]]))
  return path[::-1]


# --- Entities ---------------------------------------------------------------------------------------


#: Characters that may separate two entities inside one whitespace-delimited token ("U.S.-China",
#: "(Reuters)", "Smith's"); they are also trimmed from the edges of a mention.
SEPARATORS = frozenset("-‐‑‒–—/\\()[]{}\"'‘’“”«»,;:!?|")


_BRACKETS = {")": "(", "]": "[", "}": "{"}


def _closes_bracket(text: str, start: int, at: int) -> bool:
  """True when ``text[at]`` closes a bracket opened inside ``text[start:at]`` ("Mladost (BJ)")."""
  opener = _BRACKETS.get(text[at])
  if opener is None:
    return False
  inside = text[start:at]
  return inside.count(opener) > inside.count(text[at])


def _is_separator(word: str) -> bool:
  return bool(word) and all(c in SEPARATORS for c in word)


@functools.lru_cache(maxsize=8)
def _transitions(labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
  return bio_transitions(labels)


def _mend_bio(best: np.ndarray, probs: np.ndarray, firsts: Sequence[int], sentence: Sequence[int],
              labels: Sequence[str]) -> None:
  """Replace, in place, the first-piece labels of every sentence whose best labels are not valid BIO with
  the sentence's most probable valid sequence (:func:`bio_viterbi`)."""
  if not len(firsts):
    return
  allowed, may_start = _transitions(tuple(labels))
  firsts = np.asarray(firsts)
  labels = best[firsts]
  sentences = np.asarray(sentence)[firsts]
  opens = np.ones(len(firsts), dtype=bool)
  opens[1:] = sentences[1:] != sentences[:-1]
  invalid = np.where(opens, ~may_start[labels], ~allowed[np.roll(labels, 1), labels])
  if not invalid.any():
    return
  starts = np.flatnonzero(opens)
  ends = np.append(starts[1:], len(firsts))
  for a, b in zip(starts, ends, strict=True):
    if invalid[a:b].any():
      rows = np.log(np.clip(probs[firsts[a:b]], 1e-12, None))
      best[firsts[a:b]] = bio_viterbi(rows, allowed, may_start)


def decode_entities(text: str, enc: Encoded, probs: np.ndarray, labels: Sequence[str], *,
                    bio: bool = False) -> list[Entity]:
  """Spans from per-piece probabilities.

  Each tokenizer word takes the label of its first piece; with ``bio`` (a model trained on BIO tags), a
  sentence whose labels are not valid BIO (``I-X`` not after ``B-X``/``I-X``) takes its most probable
  valid sequence instead. Words glued together without a separator
  (``u`` ``.`` ``s`` in "U.S.") form one unit labelled by its first word, as CoNLL tokens are; a final
  full stop keeps its own label ("Washington." vs "U.S."). BIO or IOB1 runs of words then join into
  spans, never across a sentence boundary; separators at the edges of a span are trimmed,
  except a closing bracket whose opening one is inside the span ("Mladost (BJ)").
  """
  n = len(enc.ids)
  words: list[tuple[int, int]] = []
  for k in range(n):
    if enc.word_start[k] or not words:
      words.append((k, k + 1))
    else:
      words[-1] = (words[-1][0], k + 1)
  best = probs.argmax(-1) if n else np.zeros(0, dtype=np.int64)
  if bio:
    _mend_bio(best, probs, [a for a, _ in words], enc.sentence, labels)
  tags: list[tuple[str, str | None, float]] = []
  unit_start = 0  # character where the current glued unit starts
  for w, (a, b) in enumerate(words):
    prefix, kind = split_tag(labels[int(best[a])])
    score = float(probs[a, best[a]])
    if w:
      pa, pb = words[w - 1]
      word = text[enc.offsets[a][0]:enc.offsets[b - 1][1]]
      previous = text[enc.offsets[pa][0]:enc.offsets[pb - 1][1]]
      glued = enc.offsets[pb - 1][1] == enc.offsets[a][0] and enc.sentence[pa] == enc.sentence[a]
      unit = text[unit_start:enc.offsets[pb - 1][1]] if glued else ""
      abbreviation = "." in unit or (len(unit) == 1 and unit.isalpha()) or unit.lower() in ABBREVIATIONS
      final_stop = word == "." and not abbreviation and (
          w + 1 == len(words) or enc.offsets[words[w + 1][0]][0] != enc.offsets[b - 1][1]
          or _is_separator(text[enc.offsets[words[w + 1][0]][0]:enc.offsets[words[w + 1][1] - 1][1]]))
      glued = glued and not _is_separator(word) and not _is_separator(previous)
      if not glued:
        unit_start = enc.offsets[a][0]
      if glued and not final_stop:
        _, prev_kind, prev_score = tags[-1]
        prefix, kind, score = ("I", prev_kind, prev_score) if prev_kind else ("O", None, prev_score)
    tags.append((prefix, kind, score))

  entities: list[Entity] = []
  current: list | None = None  # [type, first_piece, last_piece, scores]

  def close() -> None:
    nonlocal current
    if current is None:
      return
    kind, first, last, scores = current
    start, end = enc.offsets[first][0], enc.offsets[last][1]
    while start < end and (text[start].isspace() or text[start] in SEPARATORS):
      start += 1
    while end > start and (text[end - 1].isspace() or text[end - 1] in SEPARATORS):
      if _closes_bracket(text, start, end - 1):
        break
      end -= 1
    if start < end and any(c.isalnum() for c in text[start:end]):
      entities.append(Entity(text=text[start:end], label=kind, start_char=start, end_char=end,
                             score=float(np.mean(scores)), sentence_index=int(enc.sentence[first])))
    current = None

  for (a, b), (prefix, kind, score) in zip(words, tags, strict=True):
    if kind is None:
      close()
      continue
    same_sentence = current is not None and enc.sentence[current[1]] == enc.sentence[a]
    if prefix == "B" or current is None or current[0] != kind or not same_sentence:
      close()
      current = [kind, a, b - 1, [score]]
    else:
      current[2] = b - 1
      current[3].append(score)
  close()
  return entities


# --- Topics ------------------------------------------------------------------------------------------


def softmax(logits: np.ndarray) -> np.ndarray:
  shifted = logits.astype(np.float32) - logits.max(-1, keepdims=True)
  np.exp(shifted, out=shifted)
  shifted /= shifted.sum(-1, keepdims=True)
  return shifted


def pool_topics(logits: Sequence[np.ndarray], lengths: Sequence[int], multi_label: bool = True) -> np.ndarray:
  """A story's topic scores: the length-weighted mean of its rows' logits, then a sigmoid (multi-label
  models) or a softmax."""
  weights = np.asarray(lengths, dtype=np.float64)
  pooled = (np.asarray(logits, dtype=np.float64) * weights[:, None]).sum(0) / weights.sum()
  return 1.0 / (1.0 + np.exp(-pooled)) if multi_label else softmax(pooled)


def choose_topics(scores: Sequence[float], labels: Sequence[tuple[str, str]], threshold: float) -> list[Topic]:
  """Topics whose score reaches ``threshold`` (always the top one), highest first."""
  order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), labels[i][0]))
  chosen = [i for i in order if float(scores[i]) >= threshold] or order[:1]
  return [Topic(code=labels[i][0], label=labels[i][1], score=round(float(scores[i]), 6)) for i in chosen]
