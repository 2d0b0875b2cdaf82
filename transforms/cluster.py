"""Story clusters: every copy, version and rewrite of one story gets the same ``cluster_id``.

What counts as one story (:func:`similar`, on two stories' :class:`Signature`\\ s):

* the same ``story_id`` (every version of one guid), or the same text (headline without its filing
  marks, plus body: an exact copy under another guid): always;
* near copies: MinHash (64 hashes over 5-word shingles of headline and body) estimates a Jaccard
  similarity of at least ``NEAR_JACCARD``;
* rewrites that keep whole sentences: at least ``MIN_SHARED_SENTENCES`` sentences of 6 words or more
  in common, making up at least ``MIN_SENTENCE_CONTAINMENT`` of the shorter story's sentences (a
  trimmed tail, reordered paragraphs, a new lead, a write-through that keeps half the sentences
  under a new headline);
* short stories (under ``SHORT_TOKENS`` words: briefs, dividend notices, results tables whose
  bodies are templates) by MinHash only under the same headline, else by sentences only when
  ``STRONG_SENTENCE_CONTAINMENT`` of the shorter one's sentences (2 or more) are shared, so two
  companies' identical "Qtly div 10 cts vs 10 cts prior" notices stay apart.

* refilings within ``REFILE_HOURS`` (18 hours: a refiling the next morning): the same lead (the body's first sentence of
  ``LEAD_MIN_WORDS`` words or more, word-pair Jaccard >= ``LEAD_JACCARD``, the shorter lead naming no
  name or figure the other lacks in any case, naming at least one, and half the figures in common when
  both carry figures), or, under a similar title (word Jaccard >= ``SIMILAR_HEADLINE_JACCARD``),
  ``REFILE_FIGURE_CONTAINMENT`` of the figures (``REFILE_MIN_FIGURES`` or more) without any text in
  common: a results table reformatted. These rules need no text in common, so they join a cluster only within
  ``DAY_HOURS`` of its first story: a copy of a standing notice filed days later (a central bank's tender notice, a
  bond issue or a debt accord on one template) does not make the next notice on the template its refiling.

A match is strong or weak (:func:`match`). Strong: the same id or text, near copies, sentences at
``STRONG_SENTENCE_CONTAINMENT``, the same lead or the same figures refiled within ``REFILE_HOURS``: one
holds the other nearly whole. Weak: the rest (a similar or the same headline over half the sentences or
some shingles). A trimmed story left with a template's sentences (a daily report's lead and closing line)
matches every day's report under that headline weakly and its own day's report strongly, so a story joins
the clusters it matches strongly before those it matches weakly, and among those the closest: the one holding
the member whose MinHash is nearest its own (:func:`distance`). It links (bridges) two clusters only when it is
a near copy of a member of each (:func:`near`): a story that one story contains and another story contains
too (a table trimmed to its template's lead, header and a row that several days share) says nothing about
the two being one story. And only clusters begun within ``DAY_HOURS`` of each other (:func:`may_link`): a
table cut to its template nearly copies every day's table under that headline.

A story's title is its headline without filing marks, or, without a headline (a table, a quote sheet),
its body's first line (:func:`title`). Titles are similar for the headline rules only when they name
no disjoint tickers ("SUN <SUN> ..." and "PHILLIPS <P> ...") and state no disjoint figures ("GIVEN 478
MLN STG EARLY HELP" and "GIVEN FURTHER 168 MLN STG HELP": two operations). The title, the lead's terms
and this test (:func:`title`, :func:`lead_terms`, :func:`lead_names_nothing_new`, :func:`other_subjects`,
``SIMILAR_HEADLINE_JACCARD``) are shared with the labels of ``wirestream eval clusters``, which decide
with their own exact counts and windows.

Candidates come from keys, never from comparing a story with every other one: the story id,
21 LSH bands of 3 MinHash rows (a pair at Jaccard 0.5 shares a band with probability 0.94), the
story's 8 smallest sentence hashes (a bottom-k sketch of its sentence set), 6 bands of 2 MinHash
rows over the title's words and the lead's 3 smallest word-pair hashes (two leads at word-pair Jaccard
0.6 share one with probability about 0.94; only leads that name someone). Each key keeps its most recent ``cap`` members within
``ttl_seconds`` of event time (a week by default), so the work per story and the state are bounded
however large the lake grows.

Exact copies have their own, longer memory (:func:`exact_copies`): per distinct text, the event
time of its latest copy and the root of its first copy's cluster (one entry of about 100 bytes: a
64-bit text hash, a time and a 32-character id), kept ``exact_ttl_seconds`` (90 days by default)
after the latest copy. A copy filed weeks after the original, when the keys have long forgotten
it, joins the original's cluster; a near copy that late does not. The entries are bounded by the
distinct texts filed in 90 days.

The cluster id is the ``story_id`` of the cluster's first story (earliest event time, then the
smallest id). A key's members are processed in event-time order; a story joins the closest cluster among
the members it matches strongly, else weakly (the earliest of equally close ones), per key, and likewise over
its keys. The batch pipeline
sees every story of a key at once (deterministic: the same input gives the same ids on every run
and runner); the stream keeps each key's members in keyed state across windows with an expiry
timer, like :mod:`transforms.dedup`, so a story arriving days after its copy (within the TTL) still
joins, and the job scales out by key with no central index. Each window's stories are sorted
before they meet the state, so a stream that receives stories in event-time order assigns the same
ids as the batch pipeline. A story that is a near copy of members of two clusters begun within a day of each
other bridges them: batch merges them
before it writes; the stream, which never rewrites a row, records the other clusters on the story's row
(:func:`bridged`, ``events.cluster_links``) and the lake's views merge them (:func:`view_ids` is what
they compute).

Hashes are blake2b (never Python's salted ``hash()``) and the MinHash coefficients are derived
from fixed strings, so signatures are identical in every process.

This module is the clustering itself, without Beam; :mod:`transforms.cluster_stage` runs it in a
pipeline (``ClusterStories``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from schemas import Story
from transforms.revision import strip_headline_prefixes
from transforms.windows import split_sentences

METRICS_NAMESPACE = "wirestream.cluster"

SHINGLE_WORDS = 5
NUM_HASHES = 64
BANDS = 21
ROWS = 3
SENTENCE_KEYS = 8
SENTENCE_SKETCH = 32
MIN_SENTENCE_TOKENS = 6
SHORT_TOKENS = 40
FIGURE_SKETCH = 32
MIN_FIGURES = 4
FIGURE_CONTAINMENT = 0.5
HEADLINE_BANDS = 6
HEADLINE_ROWS = 2
REWRITE_HOURS = 12
REWRITE_HEADLINE_JACCARD = 0.6
REWRITE_JACCARD = 0.2
LEAD_MIN_WORDS = 15
LEAD_SKETCH = 48
LEAD_JACCARD = 0.6
LEAD_KEYS = 3
REFILE_HOURS = 18
REFILE_FIGURE_CONTAINMENT = 0.8
REFILE_MIN_FIGURES = 6
#: Headlines this similar (word Jaccard, filing marks removed) are one story's headlines when the figures agree.
SIMILAR_HEADLINE_JACCARD = 0.5

NEAR_JACCARD = 0.5
#: Near copies differ in at most this many of the ``NUM_HASHES`` MinHash values (Jaccard >= ``NEAR_JACCARD``).
NEAR_DISTANCE = round(NUM_HASHES * (1 - NEAR_JACCARD))
#: A story's day: a story links two clusters only when their first stories were filed within this many hours of
#: each other, and joins a cluster by a refiling rule only when it was filed within this many hours of its first story.
DAY_HOURS = 24
SAME_HEADLINE_JACCARD = 0.4
MIN_SHARED_SENTENCES = 2
MIN_SENTENCE_CONTAINMENT = 0.5
STRONG_SENTENCE_CONTAINMENT = 0.8

#: Default time a story stays joinable: a week of event time.
DEFAULT_TTL_SECONDS = 7 * 24 * 3600
#: Default time an exact copy stays joinable: 90 days of event time after the text's latest copy.
DEFAULT_EXACT_TTL_SECONDS = 90 * 24 * 3600
_HOUR_US = 3_600_000_000
#: Default number of members each key remembers (the most recent ones).
DEFAULT_CAP = 32
#: Tag of the links between clusters (batch).
LINKS = "links"
#: Tag of the exact texts of the stories (their own stage).
EXACT = "exact"
#: Tag of the stream's stories that joined a cluster, and of their aliases (their own stage).
ALIAS = "alias"

_MASK64 = (1 << 64) - 1
_WORD_RE = re.compile(r"\w+")
_FIGURE_RE = re.compile(r"\d+(?:[.,/]\d+)*")
_NAME_RE = re.compile(r"[^\W\d_][\w]*")
#: A ticker in angle brackets ("<SUN>", "<SCAB.ST>").
_TICKER_RE = re.compile(r"<([A-Z0-9][A-Z0-9.]{0,11})>")
#: A number standing alone in a title ("478", "1.2", "3-1/2"; not "4TH").
_TITLE_FIGURE_RE = re.compile(r"(?<![\w.])\d+(?:[.,/-]\d+)*(?![\w])")
#: Words that open a sentence capitalised without naming anyone.
_OPENERS = frozenset("A An The In It Its This That These Those He She They We On At For After But As".split())


def _h64(data: bytes) -> int:
  return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _coefficients(name: str, count: int, odd: bool) -> np.ndarray:
  values = [_h64(f"wirestream-minhash-{name}-{i}".encode()) for i in range(count)]
  return np.array([(v | 1) if odd else v for v in values], dtype=np.uint64)


_A = _coefficients("a", NUM_HASHES, odd=True)
_B = _coefficients("b", NUM_HASHES, odd=False)
_SHINGLE_MIX = _coefficients("shingle", SHINGLE_WORDS, odd=True)
_PAIR_MIX = int(_coefficients("pair", 1, odd=True)[0])


@lru_cache(maxsize=1 << 18)
def _word_hash(word: str) -> int:
  return _h64(word.encode("utf-8"))


def tokens(text: str | None) -> list[str]:
  """Lower-case word tokens (Unicode letters and digits)."""
  return _WORD_RE.findall((text or "").lower())


def figures(text: str | None) -> list[str]:
  """The figures of a text, in order ("12,231,000", "2.1", "1/4")."""
  return _FIGURE_RE.findall(text or "")


def sentence_texts(body: str | None) -> list[str]:
  """The body's sentences: every line break ends one (table rows are lines), and so do sentence ends
  (:func:`transforms.windows.split_sentences`: not after initials or abbreviations such as "U.S." or "Inc.")."""
  out = []
  for line in (body or "").split("\n"):
    out.extend(line[start:end] for start, end in split_sentences(line))
  return out


def sentences(body: str | None, texts: Sequence[str] | None = None) -> list[list[str]]:
  """The body's sentences (:func:`sentence_texts`, or ``texts`` when given) as token lists."""
  return [words for words in map(tokens, sentence_texts(body) if texts is None else texts) if words]


def minhash(words: Sequence[str]) -> tuple[np.ndarray, int]:
  """(MinHash of the 5-word shingles as ``NUM_HASHES`` uint32, number of distinct shingles)."""
  if not words:
    return np.full(NUM_HASHES, 0xFFFFFFFF, dtype=np.uint32), 0
  hashes = np.array([_word_hash(w) for w in words], dtype=np.uint64)
  width = min(SHINGLE_WORDS, len(hashes))
  count = len(hashes) - width + 1
  shingles = np.zeros(count, dtype=np.uint64)
  for offset in range(width):
    shingles += hashes[offset:offset + count] * _SHINGLE_MIX[offset]
  shingles = np.unique(shingles ^ (shingles >> np.uint64(31)))
  values = (shingles[:, None] * _A[None, :] + _B[None, :]) >> np.uint64(32)
  return values.min(axis=0).astype(np.uint32), len(shingles)


@dataclasses.dataclass(frozen=True)
class Signature:
  """What clustering keeps of one story version (small; picklable)."""

  event_id: str
  story_id: str
  #: Event time (publication, else ingest) in microseconds since the epoch.
  time_us: int
  #: Hash of the text (headline without filing marks, and body).
  exact: int
  #: Hash of the headline without filing marks (0 when there is none).
  headline: int
  n_tokens: int
  n_shingles: int
  minhash: bytes
  #: The smallest ``SENTENCE_SKETCH`` sentence hashes, ascending.
  sentences: tuple[int, ...]
  n_sentences: int
  #: The smallest ``FIGURE_SKETCH`` hashes of the body's figures (each occurrence counted), ascending.
  figures: tuple[int, ...] = ()
  n_figures: int = 0
  #: 32-bit hashes of the headline's distinct words (filing marks removed), ascending.
  head_words: tuple[int, ...] = ()
  #: 16-bit hashes of the lead's distinct word pairs (the ``LEAD_SKETCH`` smallest, ascending, as uint16
  #: bytes; empty when the body's first sentence has under ``LEAD_MIN_WORDS`` words). Two leads of 40 word
  #: pairs have 0.02 pairs in common by chance.
  lead: bytes = b""
  #: 16-bit hashes of the lead's names and figures (capitalised words other than a sentence's opening
  #: function word, and numbers; lower-cased), ascending, as uint16 bytes.
  lead_facts: bytes = b""
  #: 16-bit hashes of all the lead's words and figures (lower-cased), ascending, as uint16 bytes.
  lead_words: bytes = b""
  #: The lead's ``LEAD_KEYS`` smallest 64-bit word-pair hashes, ascending (its candidate keys; empty when the
  #: lead names no one, since such a lead joins nothing).
  lead_keys: tuple[int, ...] = ()
  #: 32-bit hashes of the tickers in the title ("<SUN>"), ascending (:func:`title_marks`).
  head_tickers: tuple[int, ...] = ()
  #: 32-bit hashes of the figures in the title ("478" in "GIVEN 478 MLN STG HELP"), ascending.
  head_figures: tuple[int, ...] = ()

  @property
  def root(self) -> tuple[int, str]:
    return (self.time_us, self.story_id)


def event_time(story: Story) -> dt.datetime:
  when = story.published_at or story.ingested_at
  return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _micros(when: dt.datetime) -> int:
  return int(round(when.timestamp() * 1_000_000))


def title(story: Story) -> str:
  """The story's title: its headline without filing marks; a story without a headline (a table, a quote
  sheet) is titled by its body's first line. One definition for the clustering and the evaluation's labels."""
  return strip_headline_prefixes(story.headline or (story.body or "").strip().split("\n", 1)[0])[0]


def title_marks(text: str) -> tuple[set[str], set[str]]:
  """(tickers, figures) a title states: the tickers in angle brackets ("SUN <SUN> RAISES CRUDE POSTINGS") and
  the numbers standing alone ("U.K. MONEY MARKET GIVEN 478 MLN STG HELP"; not "4TH QTR")."""
  return set(_TICKER_RE.findall(text)), set(_TITLE_FIGURE_RE.findall(text))


def other_subjects(tickers_a: set[Any], tickers_b: set[Any], figures_a: set[Any], figures_b: set[Any]) -> bool:
  """Whether two titles name disjoint tickers (two companies' news) or state disjoint figures (two reports:
  "GIVEN 478 MLN STG EARLY HELP" and "GIVEN FURTHER 168 MLN STG HELP", "BRITISH LAND ISSUES 30 MLN STG BOND"
  and "DRG ISSUES 40 MLN STG BOND"). One definition for the clustering and the evaluation's labels."""
  return bool(tickers_a and tickers_b and not tickers_a & tickers_b) or bool(
      figures_a and figures_b and not figures_a & figures_b)


def _hashes32(values: Iterable[str]) -> tuple[int, ...]:
  return tuple(sorted({_word_hash(v) & 0xFFFFFFFF for v in values}))


def can_bridge(n_tokens: int) -> bool:
  """Whether a story is long enough to link two clusters it matches (a short item matching two
  clusters more likely shares their boilerplate than their news)."""
  return n_tokens >= SHORT_TOKENS


def text_hash(words: Sequence[str]) -> int:
  """Hash of a story's text (:func:`_words`: headline without filing marks, and body), the same for
  every exact copy."""
  return _h64(" ".join(words).encode("utf-8"))


def _uint16s(values: Iterable[int]) -> bytes:
  return np.array(sorted(set(values)), dtype=np.uint16).tobytes()


def lead_terms(text: str) -> tuple[list[str], set[str], set[str]]:
  """(words, facts, vocabulary) of a lead sentence: its lower-case words; the names and figures it states
  (capitalised words other than a sentence's opening function word, and numbers), lower-cased; and every
  word and figure in it, lower-cased. One definition for the clustering and the evaluation's labels."""
  words = tokens(text)
  numbers = figures(text)
  facts = {w.lower() for w in _NAME_RE.findall(text) if w[0].isupper() and w not in _OPENERS}
  facts.update(numbers)
  return words, facts, {*words, *numbers}


def lead_names_nothing_new(facts: set[Any], vocabulary: set[Any]) -> bool:
  """Whether a lead's facts (names and figures) all occur in another lead's vocabulary, in any case: a
  rewrite may lower-case "Parliament", not name another company or another figure."""
  return facts <= vocabulary


def lead(body: str | None, texts: Sequence[str] | None = None) -> tuple[bytes, bytes, bytes, tuple[int, ...]]:
  """(the word pairs, the names and figures, all words and figures) of the body's first sentence, as 16-bit
  hashes (:func:`lead_terms`), and its ``LEAD_KEYS`` smallest 64-bit word-pair hashes (a bottom-k sketch: two
  leads at word-pair Jaccard 0.6 share one with probability about 0.94); empty when it has under
  ``LEAD_MIN_WORDS`` words. A wire story's lead states
  its news: a rewrite keeps it, perhaps with a few words changed; another company's story on the same
  template names another company."""
  for text in sentence_texts(body) if texts is None else texts:
    words, facts, vocabulary = lead_terms(text)
    if not words:
      continue
    if len(words) < LEAD_MIN_WORDS:
      break
    hashes = [_word_hash(w) for w in words]
    full = sorted({(a * _PAIR_MIX + b) & _MASK64 for a, b in zip(hashes, hashes[1:], strict=False)})
    pairs = sorted({h >> 48 for h in full})
    return (_uint16s(pairs[:LEAD_SKETCH]), _uint16s(_word_hash(f) >> 48 for f in facts),
            _uint16s(_word_hash(w) >> 48 for w in vocabulary), tuple(full[:LEAD_KEYS]))
  return b"", b"", b"", ()


def signature(story: Story) -> Signature:
  name = title(story)
  head_words = tokens(name)
  # the title is the headline without filing marks when there is one: the text is headline and body
  words = (head_words if story.headline else []) + tokens(story.body)
  head_tickers, head_figures = title_marks(name)
  texts = sentence_texts(story.body)
  lead_pairs, lead_facts, lead_words, lead_keys = lead(story.body, texts)
  mh, n_shingles = minhash(words)
  sentence_hashes = sorted({_h64(" ".join(s).encode("utf-8")) for s in sentences(story.body, texts)
                            if len(s) >= MIN_SENTENCE_TOKENS})
  figure_hashes = sorted(_h64(f"{figure}#{n}".encode()) for figure, count in Counter(figures(story.body)).items()
                         for n in range(count))
  return Signature(
      event_id=story.event_id, story_id=story.story_id, time_us=_micros(event_time(story)),
      exact=text_hash(words), headline=_h64(" ".join(head_words).encode()) if head_words else 0,
      n_tokens=len(words), n_shingles=n_shingles, minhash=mh.tobytes(),
      sentences=tuple(sentence_hashes[:SENTENCE_SKETCH]), n_sentences=len(sentence_hashes),
      figures=tuple(figure_hashes[:FIGURE_SKETCH]), n_figures=len(figure_hashes),
      head_words=tuple(sorted({_word_hash(w) & 0xFFFFFFFF for w in head_words})),
      lead=lead_pairs, lead_facts=lead_facts, lead_words=lead_words,
      lead_keys=lead_keys if lead_facts else (), head_tickers=_hashes32(head_tickers),
      head_figures=_hashes32(head_figures))


def keys(sig: Signature) -> list[str]:
  """The candidate keys of a story: id, LSH bands, smallest sentence hashes, headline bands, smallest lead
  word-pair hashes (exact copies share every band; beyond the TTL they meet in :func:`exact_copies`)."""
  out = [f"s:{sig.story_id}"]
  if sig.n_shingles:
    for band in range(BANDS):
      chunk = sig.minhash[band * ROWS * 4:(band + 1) * ROWS * 4]
      out.append(f"b{band}:{_h64(bytes([band]) + chunk):016x}")
  out.extend(f"t:{h:016x}" for h in sig.sentences[:SENTENCE_KEYS])
  if len(sig.head_words) >= HEADLINE_ROWS:
    words = np.array(sig.head_words, dtype=np.uint64)
    mins = ((words[:, None] * _A[None, :HEADLINE_BANDS * HEADLINE_ROWS] + _B[None, :HEADLINE_BANDS * HEADLINE_ROWS])
            >> np.uint64(32)).min(axis=0).astype(np.uint32)
    for band in range(HEADLINE_BANDS):
      chunk = mins[band * HEADLINE_ROWS:(band + 1) * HEADLINE_ROWS].tobytes()
      out.append(f"h{band}:{_h64(bytes([band]) + chunk):016x}")
  out.extend(f"l:{h:016x}" for h in sig.lead_keys)
  return out


def headline_jaccard(a: Signature, b: Signature) -> float:
  """Jaccard similarity of the two headlines' word sets (0.0 when either has none)."""
  if not a.head_words or not b.head_words:
    return 0.0
  both = len(set(a.head_words) & set(b.head_words))
  return both / (len(a.head_words) + len(b.head_words) - both)


def similar_headlines(a: Signature, b: Signature, threshold: float) -> bool:
  """Whether two headlines are one story's: word Jaccard of at least ``threshold``, naming no disjoint tickers
  and stating no disjoint figures (:func:`other_subjects`: "SUN <SUN> RAISES CRUDE POSTINGS 50 CTS" and
  "PHILLIPS <P> RAISES CRUDE POSTINGS 50 CTS" are two companies' news)."""
  if other_subjects(set(a.head_tickers), set(b.head_tickers), set(a.head_figures), set(b.head_figures)):
    return False
  return headline_jaccard(a, b) >= threshold


def jaccard(a: Signature, b: Signature) -> float:
  """MinHash estimate of the shingle sets' Jaccard similarity."""
  if not a.n_shingles or not b.n_shingles:
    return 0.0
  return (NUM_HASHES - _differing(a, b)) / NUM_HASHES


def _common(a: tuple[int, ...], n_a: int, b: tuple[int, ...], n_b: int, size: int) -> float:
  """Size of the intersection of two sets given by their ``size`` smallest hashes and their sizes
  (exact when both sketches hold the whole set, else estimated from the union's bottom-k sketch)."""
  sa, sb = set(a), set(b)
  if n_a <= size and n_b <= size:
    return float(len(sa & sb))
  union_sketch = sorted(sa | sb)[:size]
  both = sum(1 for h in union_sketch if h in sa and h in sb)
  j = both / len(union_sketch)
  return j * (n_a + n_b) / (1.0 + j)


def shared_sentences(a: Signature, b: Signature) -> float:
  """Number of sentences the two stories share (exact when both sketches hold every sentence)."""
  return _common(a.sentences, a.n_sentences, b.sentences, b.n_sentences, SENTENCE_SKETCH)


def figure_containment(a: Signature, b: Signature) -> float:
  """Share of the figures of the story with fewer figures that are in the other (1.0 when one has none)."""
  fewest = min(a.n_figures, b.n_figures)
  if not fewest:
    return 1.0
  return _common(a.figures, a.n_figures, b.figures, b.n_figures, FIGURE_SKETCH) / fewest


def same_lead(a: Signature, b: Signature) -> bool:
  """Whether two stories open with the same lead: word-pair Jaccard of at least ``LEAD_JACCARD``, the
  lead with fewer word pairs naming no name or figure that the other lacks (:func:`lead_names_nothing_new`)."""
  if not a.lead_facts or not b.lead_facts:
    return False
  pairs_a, pairs_b = set(memoryview(a.lead).cast("H")), set(memoryview(b.lead).cast("H"))
  both = len(pairs_a & pairs_b)
  if both < LEAD_JACCARD * (len(pairs_a) + len(pairs_b) - both):
    return False
  short, other = (a, b) if len(pairs_a) <= len(pairs_b) else (b, a)
  return lead_names_nothing_new(set(memoryview(short.lead_facts).cast("H")), set(memoryview(other.lead_words).cast("H")))


#: How strongly two story versions match (:func:`match`): the smaller, the stronger.
STRONG = 0
WEAK = 1
#: A key's answer for a story that matched no member: it stays alone (its own root).
ALONE = 2
#: How a story matched another (:func:`rank`), or a cluster's closest member: (``STRONG``, ``WEAK`` or ``ALONE``,
#: :func:`distance`); the smaller, the closer.
Rank = tuple[int, int]
_ALONE = (ALONE, 0)


def match(a: Signature, b: Signature) -> int | None:
  """How two story versions are one story (see the module docstring): ``STRONG`` when one holds the other's
  text nearly whole (the same id or text, shingle Jaccard >= ``NEAR_JACCARD``, ``STRONG_SENTENCE_CONTAINMENT``
  of the shorter one's sentences, the same lead or the same figures filed again within ``REFILE_HOURS``);
  ``WEAK`` when they are one story by part of their text (a similar headline, half the sentences); ``None``
  when they are two stories. A story joins the clusters it matches strongly before those it matches weakly
  (the closest first, :func:`distance`), and links (bridges) only clusters it nearly copies (:func:`near`): a
  trimmed story left with a template's sentences matches every day's report under that headline weakly, and its
  own story strongly."""
  found = rank(a, b)
  return None if found is None else found[0]


def rank(a: Signature, b: Signature, begun_us: int | None = None) -> Rank | None:
  """How two story versions match (:func:`match`) and how far apart they are (:func:`distance`), or ``None``.

  ``begun_us``: the event time of the first story of ``a``'s cluster. The refiling rules (the same lead, the same
  figures under a similar title), which need no text in common, then hold only when both stories were filed within
  ``DAY_HOURS`` of it: a copy of a standing notice filed days after it (a tender notice, a bond issue, a debt
  accord on one template) is not what the next day's notice refiles."""
  if a.story_id == b.story_id or a.exact == b.exact:
    return STRONG, 0
  if min(a.n_figures, b.n_figures) >= MIN_FIGURES and figure_containment(a, b) < FIGURE_CONTAINMENT:
    return None
  apart = distance(a, b)
  j = (NUM_HASHES - apart) / NUM_HASHES
  shared = shared_sentences(a, b)
  fewest = min(a.n_sentences, b.n_sentences)
  contained = shared / fewest if fewest else 0.0
  strong = j >= NEAR_JACCARD or (shared >= MIN_SHARED_SENTENCES and contained >= STRONG_SENTENCE_CONTAINMENT)
  apart_us = abs(a.time_us - b.time_us)
  if apart_us <= REFILE_HOURS * _HOUR_US and (
      begun_us is None or max(a.time_us, b.time_us) - begun_us <= DAY_HOURS * _HOUR_US):
    if same_lead(a, b) and (not min(a.n_figures, b.n_figures) or figure_containment(a, b) >= FIGURE_CONTAINMENT):
      return STRONG, apart
    if (min(a.n_figures, b.n_figures) >= REFILE_MIN_FIGURES and figure_containment(a, b) >= REFILE_FIGURE_CONTAINMENT
        and similar_headlines(a, b, SIMILAR_HEADLINE_JACCARD)):
      return STRONG, apart
  if (apart_us <= REWRITE_HOURS * _HOUR_US and min(a.n_figures, b.n_figures) >= 2
      and (shared >= 1 or j >= REWRITE_JACCARD)
      and similar_headlines(a, b, REWRITE_HEADLINE_JACCARD) and figure_containment(a, b) >= FIGURE_CONTAINMENT):
    return (STRONG if strong else WEAK), apart
  if a.headline and a.headline == b.headline:
    if strong:
      return STRONG, apart
    if j >= SAME_HEADLINE_JACCARD or (shared >= MIN_SHARED_SENTENCES and contained >= MIN_SENTENCE_CONTAINMENT):
      return WEAK, apart
    return None
  if min(a.n_tokens, b.n_tokens) < SHORT_TOKENS:
    return (STRONG, apart) if shared >= MIN_SHARED_SENTENCES and contained >= STRONG_SENTENCE_CONTAINMENT else None
  if strong:
    return STRONG, apart
  return (WEAK, apart) if shared >= MIN_SHARED_SENTENCES + 1 and contained >= MIN_SENTENCE_CONTAINMENT else None


def distance(a: Signature, b: Signature) -> int:
  """How far apart two story versions are: the MinHash values in which they differ (0 to ``NUM_HASHES``; 0 for
  versions of one story id or one text, ``NUM_HASHES`` when either has no text). Near copies are at most
  ``NEAR_DISTANCE`` apart."""
  if a.story_id == b.story_id or a.exact == b.exact:
    return 0
  if not a.n_shingles or not b.n_shingles:
    return NUM_HASHES
  return _differing(a, b)


def _differing(a: Signature, b: Signature) -> int:
  return NUM_HASHES - int(np.count_nonzero(np.frombuffer(a.minhash, dtype=np.uint32)
                                           == np.frombuffer(b.minhash, dtype=np.uint32)))


def similar(a: Signature, b: Signature) -> bool:
  """Whether two story versions are one story (:func:`match`, strongly or weakly)."""
  return match(a, b) is not None


# --------------------------------------------------------------------------- one key's members

#: A key's member: (signature, root of its cluster as this key saw it).
Member = tuple[Signature, tuple[int, str]]
#: A key's answer for one story: (rank, root time, root id) joined, ranked by its closest member among those it
#: matched most strongly; ((``ALONE``, 0), own time, own id) alone. The smallest proposal over a story's keys is
#: the cluster it joins.
Proposal = tuple[Rank, int, str]
#: Two cluster roots found to be one story (a story that is a near copy of members of both).
Link = tuple[tuple[int, str], tuple[int, str]]
#: A link and the event id of the story that made it.
StoryLink = tuple[str, Link]


def assign(members: list[Member], arrivals: Iterable[Signature], *, ttl_us: int, cap: int
           ) -> tuple[list[Member], list[tuple[str, Proposal]], list[StoryLink]]:
  """Adds ``arrivals`` (in the order given) to one key's ``members`` (in arrival order).

  Each arrival joins the cluster of the closest member among those it matches strongly, else among those it
  matches weakly (:func:`match`, :func:`distance`; within ``ttl_us`` of event time; the earliest cluster of
  equally close ones), else starts its own. Returns the members left (the ``cap`` most recent arrivals within
  ``ttl_us`` of the newest event time), ``(event_id, proposal)`` for each arrival (:data:`Proposal`), and
  ``(event_id, (root joined, other root))`` for every other cluster an arrival nearly copies a member of
  (:func:`near`; the arrival bridges them: they are one story).
  """
  members = list(members)
  proposals = []
  links = []
  newest = max((m[0].time_us for m in members), default=None)
  for sig in arrivals:
    matched: dict[tuple[int, str], Rank] = {}
    for other, other_root in members:
      if abs(other.time_us - sig.time_us) <= ttl_us:
        found = rank(other, sig, other_root[0])
        if found is not None and found < matched.get(other_root, _ALONE):
          matched[other_root] = found
    closest, best = min(((found, root) for root, found in matched.items()), default=(_ALONE, sig.root))
    if can_bridge(sig.n_tokens):
      links.extend((sig.event_id, (best, root)) for root in sorted(matched)
                   if root != best and may_link(best, root, matched[root]))
    members.append((sig, best))
    proposals.append((sig.event_id, (closest, *best)))
    newest = sig.time_us if newest is None else max(newest, sig.time_us)
    if len(members) > cap or members[0][0].time_us < newest - ttl_us:
      members = [m for m in members if m[0].time_us >= newest - ttl_us][-cap:]
  return members, proposals, links


def near(rank: Rank) -> bool:
  """Whether a story matched a cluster as a near copy of a member: strongly, at most ``NEAR_DISTANCE`` apart."""
  return rank[0] == STRONG and rank[1] <= NEAR_DISTANCE


def may_link(joined: tuple[int, str], other: tuple[int, str], rank: Rank) -> bool:
  """Whether a story links the cluster it joined (root ``joined``) to another it matched with ``rank``: it nearly
  copies a member of the other (:func:`near`), and the two clusters' first stories were filed within
  ``DAY_HOURS`` of each other. Clusters begun days apart are two events (two days' reports under one standing
  headline) even when a later story, cut to the template they share, nearly copies both."""
  return near(rank) and abs(joined[0] - other[0]) <= DAY_HOURS * _HOUR_US


def joins(proposal: Proposal) -> bool:
  """Whether a proposal is to join a cluster (not ``ALONE``)."""
  return proposal[0][0] != ALONE


def chosen(proposals: Iterable[Proposal], sig: Signature) -> Proposal:
  """The cluster a story joins among its keys' proposals: the closest root proposed strongly, else weakly (the
  earliest of equally close ones), else its own (``ALONE``)."""
  return min(proposals, default=(_ALONE, *sig.root))


def proposal_links(proposals: Iterable[Proposal], joined: tuple[int, str]) -> list[Link]:
  """Links from ``joined``, the root of the cluster one story joins (:func:`chosen`), to the others its keys proposed
  it join as a near copy (:func:`may_link`; each key saw its own members)."""
  roots = {(p[1], p[2]) for p in proposals if may_link(joined, (p[1], p[2]), p[0])}
  roots.discard(joined)
  return [(joined, root) for root in sorted(roots)]


def bridged(proposals: Iterable[Proposal], key_links: Iterable[Link], sig: Signature, joined: tuple[int, str]
            ) -> list[str]:
  """The ids of the other clusters a story nearly copies beside ``joined``, the root of the one it joined: those its
  keys proposed (:func:`proposal_links`) and those a key saw it link (``key_links``). None for a story too short to
  bridge (:func:`can_bridge`). The stream records them on the story's row (``events.cluster_links``) and the lake's
  views merge the clusters (:func:`view_ids`); batch merges them before it writes."""
  if not can_bridge(sig.n_tokens):
    return []
  roots = {root[1] for link in [*proposal_links(proposals, joined), *key_links] for root in link}
  roots.discard(joined[1])
  return sorted(roots)


#: What the lake's views read of one events row to merge bridged clusters: (story id, event time in
#: microseconds, cluster id, the ids in its ``cluster_links``).
RowLinks = tuple[str, int, str, Sequence[str]]


def view_ids(rows: Iterable[RowLinks]) -> dict[str, str]:
  """Cluster id as written -> cluster id as the lake's views show it (only the ids that change), as the
  ``events`` view of ``wirestream query`` computes it. A row's ``cluster_links`` name clusters by their first
  story's id, and a link counts when that story heads its cluster (a row of it carries its own id). A story
  that joined another cluster through its other keys heads none: a key remembered it under its own id, which
  no row carries, and batch links that id, not the cluster the story joined. Linked clusters form connected
  components, each named after the cluster seen first (its earliest event time, then the smallest id), as
  batch names a merged cluster after its earliest story."""
  rows = list(rows)
  heads = {story_id for story_id, _, cluster_id, _ in rows if story_id == cluster_id}
  first_seen: dict[str, int] = {}
  for _, time_us, cluster_id, _ in rows:
    first_seen[cluster_id] = min(time_us, first_seen.get(cluster_id, time_us))
  return merged_ids(((first_seen[a], a), (first_seen[b], b)) for _, _, a, others in rows for b in others
                    if b in heads and b != a)


def merged_ids(links: Iterable[Link]) -> dict[str, str]:
  """Cluster id -> the id of its component once linked clusters are merged (:func:`merge_links`), only the ids
  that change."""
  return {root[1]: top[1] for root, top in merge_links(links).items() if root != top}


def merge_links(links: Iterable[tuple[Any, Any]]) -> dict[Any, Any]:
  """Connected components of linked roots (any ordered values): root -> the component's smallest root,
  for the linked roots only."""
  parent: dict[Any, Any] = {}

  def find(root):
    parent.setdefault(root, root)
    while parent[root] != root:
      parent[root] = parent[parent[root]]
      root = parent[root]
    return root

  for a, b in links:
    ra, rb = find(a), find(b)
    if ra != rb:
      parent[max(ra, rb)] = min(ra, rb)
  return {root: find(root) for root in list(parent)}


#: What the exact-copy state keeps of one text: (event time of its latest copy, root of its first copy's cluster).
ExactEntry = tuple[int, tuple[int, str]]


def exact_copies(entry: ExactEntry | None, arrivals: Iterable[tuple[int, tuple[int, str]]], *, ttl_us: int
                 ) -> tuple[ExactEntry | None, list[tuple[int, str]], list[Link]]:
  """Exact copies of one text: ``arrivals`` are (event time, cluster root found by the keys) of its
  copies, in event-time order. A copy within ``ttl_us`` of the text's latest copy joins the cluster of
  the text's first copy, else it starts the text's entry anew. Returns the entry left, each arrival's
  root, and a link (first copy's root, root found by the keys) where they differ."""
  roots = []
  links = []
  for time_us, root in arrivals:
    if entry is not None and abs(time_us - entry[0]) <= ttl_us:
      if root != entry[1]:
        links.append((entry[1], root))
      entry = (max(entry[0], time_us), entry[1])
    else:
      entry = (time_us, root)
    roots.append(entry[1])
  return entry, roots, links


#: What the stream keeps of a story that joined another story's cluster, under its own id: (its event time,
#: the root of the cluster it joined).
AliasEntry = tuple[int, tuple[int, str]]


def resolve_alias(entry: AliasEntry | None, root: tuple[int, str], *, now_us: int, ttl_us: int) -> tuple[int, str]:
  """The cluster of a story whose keys proposed ``root`` (the stream). A key remembers each member with the
  root that key saw: a member alone in one key but joining an earlier cluster through its other keys is
  remembered there under its own root, which no row carries. The alias entry kept under that root (within
  ``ttl_us``) names the cluster the member joined: the stream writes that cluster, batch links the two."""
  if entry is not None and abs(now_us - entry[0]) <= ttl_us:
    return entry[1]
  return root


def _arrival_order(sig: Signature) -> tuple[int, str]:
  return (sig.time_us, sig.event_id)


class Clusterer:
  """Clustering in one process, one story at a time (the evaluation, tests, small tools).

  Keeps the same per-key members as the pipelines. ``add`` returns the story's cluster id on arrival
  (what the stream writes); ``place`` also the batch pipeline's id before linked clusters are merged, and
  ``merged`` maps those to the ids after (what the batch pipeline writes); ``view_merged`` maps the ids
  on arrival to those the lake's views show for the stream's rows (bridged clusters merged, :func:`view_ids`).
  ``keep_links=False`` keeps no links (bounded memory), no batch ids and no rows.
  """

  def __init__(self, ttl_seconds: float = DEFAULT_TTL_SECONDS, cap: int = DEFAULT_CAP, keep_links: bool = True,
               exact_ttl_seconds: float = DEFAULT_EXACT_TTL_SECONDS):
    self.ttl_us = int(ttl_seconds * 1_000_000)
    self.exact_ttl_us = int(exact_ttl_seconds * 1_000_000)
    self.cap = cap
    self.index: dict[str, list[Member]] = {}
    #: Text hash -> :data:`ExactEntry` (the exact-copy state: one small entry per distinct text).
    self.exact: dict[int, ExactEntry] = {}
    self.links: list[Link] | None = [] if keep_links else None
    self._roots: dict[str, tuple[int, str]] = {}
    #: The batch pipeline's exact copies (it gives them the roots before aliases; only with links).
    self._exact_batch: dict[int, ExactEntry] = {}
    #: Story id -> :data:`AliasEntry` (the stream's aliases: stories that joined another story's cluster).
    self.alias: dict[str, AliasEntry] = {}
    #: What the stream's rows say to the views (:data:`RowLinks`; only with links).
    self.rows: list[RowLinks] = []

  def add(self, sig: Signature) -> str:
    """Adds one story version; returns its cluster id on arrival (what the stream writes)."""
    return self.place(sig)[0]

  def place(self, sig: Signature) -> tuple[str, str]:
    """Adds one story version; returns its cluster id on arrival in the stream, and in batch before linked
    clusters are merged (:meth:`merged` maps the latter)."""
    proposals = []
    key_links = []
    for key in keys(sig):
      members, proposed, links = assign(self.index.get(key, []), [sig], ttl_us=self.ttl_us, cap=self.cap)
      self.index[key] = members
      proposals.append(proposed[0][1])
      key_links.extend(link for _, link in links)
    if self.links is not None:
      self.links.extend(key_links)
    best = chosen(proposals, sig)
    key_root = root = (best[1], best[2])
    if joins(best):
      root = resolve_alias(self.alias.get(key_root[1]), key_root, now_us=sig.time_us, ttl_us=self.ttl_us)
      if root != key_root and self.links is not None:
        self.links.append((root, key_root))
      if key_root != sig.root:
        self.alias[sig.story_id] = (sig.time_us, key_root)
    if self.links is not None and can_bridge(sig.n_tokens):
      self.links.extend(proposal_links(proposals, key_root))
    batch_root = key_root
    if sig.n_tokens:
      self.exact[sig.exact], (root,), _ = exact_copies(
          self.exact.get(sig.exact), [(sig.time_us, root)], ttl_us=self.exact_ttl_us)
      if self.links is not None:
        self._exact_batch[sig.exact], (batch_root,), links = exact_copies(
            self._exact_batch.get(sig.exact), [(sig.time_us, key_root)], ttl_us=self.exact_ttl_us)
        self.links.extend(links)
    if self.links is not None:
      self._roots[batch_root[1]] = batch_root
      self.rows.append((sig.story_id, sig.time_us, root[1], bridged(proposals, key_links, sig, key_root)))
    return root[1], batch_root[1]

  def merged(self) -> dict[str, str]:
    """Cluster id on arrival -> cluster id once linked clusters are merged (only the ids that change)."""
    merged = merge_links(self.links or [])
    return {cid: merged[root][1] for cid, root in self._roots.items() if root in merged and merged[root] != root}

  def view_merged(self) -> dict[str, str]:
    """Cluster id on arrival -> the cluster id the lake's views show for the stream's rows, bridged clusters
    merged (only the ids that change)."""
    return view_ids(self.rows)

  def expire(self, now_us: int) -> None:
    """Drops the keys whose newest member is older than the TTL, and the texts whose latest copy is older
    than the exact-copy TTL (the stream's expiry timers)."""
    stale = [k for k, members in self.index.items() if max(m[0].time_us for m in members) < now_us - self.ttl_us]
    for key in stale:
      del self.index[key]
    for text in [text for text, (newest, _) in self.exact.items() if newest < now_us - self.exact_ttl_us]:
      del self.exact[text]
    for story_id in [story_id for story_id, (when, _) in self.alias.items() if when < now_us - self.ttl_us]:
      del self.alias[story_id]
