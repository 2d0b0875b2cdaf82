"""``wirestream eval clusters``: story clustering on a labelled set built from Reuters-21578 files.

The set: every story of the given ``reut2-*.sgm`` files, plus, for each story long enough to rewrite
(``MIN_BASE_SENTENCES`` sentences of 6 words or more), variants made the way wire desks change a
story (each seeded by the story's id, so the set is the same on every run):

* ``copy``: the same story under another guid; ``repeat``: ``RPT-``/``REFILE-`` headline, same text;
* ``new_lead``: a new first paragraph; ``trimmed``: the tail cut to 50-80% of the paragraphs;
* ``update``: ``UPDATE n-`` headline, a figure changed and a paragraph of new facts appended;
* ``correction``: ``CORRECTED-`` headline, a ``(Corrects ...)`` line, one figure changed;
* ``reordered``: the lead kept, the other paragraphs shuffled;
* ``write_through``: a new headline over about half the sentences in another order.

Labels: a story and its variants are one story. Real stories are one story when they are the same
text, have the same body of 200 characters or more, bodies of 200 characters or more at 5-word
shingle Jaccard >= 0.8 (exact, found by prefix filtering, not by the clustering under test), or
similar headlines (word Jaccard >= 0.5) over bodies where half or more of the shorter one's 5-word
shingles (20 or more) are in the other: the same story filed again (Reuters-21578 holds many
refilings with amended figures or a reworded headline; templated stories about different events,
such as two bond issues, differ in their headlines). Two more kinds of refiling are one story when
filed within 24 hours of each other (:func:`same_news_pairs`): the same lead sentence (a rewrite
under a new headline, perhaps with a word changed), and the same figures under a similar headline (a
results table filed again, reformatted: "Qtly div" corrected to "Shr", "Sales" to "Revs", a figure
amended; the 5-word shingles of such tables break at every edit, so body overlap misses them).
Similar titles (:func:`_similar_titles`) name no disjoint tickers and state no disjoint figures ("GIVEN
478 MLN STG EARLY HELP" and "GIVEN FURTHER 168 MLN STG HELP" are two operations of the Bank of England;
"BRITISH LAND ISSUES 30 MLN STG CONVERTIBLE BOND" and "DRG ISSUES 40 MLN STG CONVERTIBLE BOND" two issues).
A story's title, its lead's names and figures, and "names nothing the other lacks" (in any case: a rewrite
may lower-case "Parliament") are the clustering's own definitions (:mod:`transforms.cluster`), so labels
and clusters mean the same by them. Exact sets decide, not the clustering under test.
Everything else must stay apart, among them thousands of same-topic stories about different events
(earnings, acquisitions, commodities).

Printed: one JSON line with pairwise precision, recall and F1 (over all pairs of stories) of the
ids the batch pipeline writes (linked clusters merged), the same for the stream's ids as the lake's views
show them (``stream``: each row's id fixed when the story arrives, clusters its rows record as bridged
merged by the views) and as its rows carry them (``stream_written``), the
number of clusters, seconds spent clustering, and recalls per variant kind, for exact copies and
for real near copies; ``apart_merged`` counts merged pairs of different stories that share a
Reuters topic. ``--show-errors N`` also prints (to stderr) the N largest false joins and
missed joins of the batch and the stream ids, a few stories of each part. ``--scale N`` instead times N synthetic stories (variants of the files' stories,
spread over time at ``--per-day`` stories a day) and reports the cost per story and the state size.

    wirestream eval clusters --reuters ../shared/data/reuters21578 --files 007-013
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import random
import re
import resource
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from schemas import RawRecord, Story
from transforms import cluster as C
from transforms.revision import strip_headline_prefixes

MIN_BASE_SENTENCES = 4
NEAR_COPY_JACCARD = 0.8
NEAR_COPY_MIN_CHARS = 200
NEAR_JACCARD = C.NEAR_JACCARD
REFILED_CONTAINMENT = 0.5
REFILED_MIN_SHINGLES = 20
REFILED_MAX_DF = 50
REFILED_HEADLINE = C.SIMILAR_HEADLINE_JACCARD
REFILED_HOURS = 24
SAME_LEAD_MIN_WORDS = 15
SAME_LEAD_JACCARD = 0.6
SAME_FIGURES_MIN = 6
SAME_FIGURES_CONTAINMENT = 0.5
VARIANT_KINDS = ("copy", "repeat", "new_lead", "trimmed", "update", "correction", "reordered", "write_through")

_NUMBER_RE = re.compile(r"\b\d+(?:[.,]\d+)?\b")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
_LEADS = (
    "{place} - {subject}, according to people familiar with the matter, in a move analysts had expected.",
    "{place} - Markets reacted on {day} after {subject}, traders and officials said.",
    "{place} - {subject}, officials told reporters on {day}, adding that further details would follow.",
)
_ADDED = (
    "In a statement issued later on {day}, a spokesman said the figures would be reviewed again next month.",
    "Analysts polled on {day} said they expected the trend to continue into the next quarter.",
    "Further details were not immediately available, a spokeswoman said late on {day}.",
)
_CORRECTIONS = ("(Corrects figure in paragraph {n})", "(Corrects spelling of name in paragraph {n})",
                "(Corrects date in paragraph {n} to {day})")


@dataclasses.dataclass
class Item:
  story: Story
  label: int
  kind: str  # "real" or a variant kind
  base: str  # event_id of the real story it derives from


def parse_files(paths: Sequence[Path]) -> list[Story]:
  from transforms.parse import parse_record  # Beam: loaded to run, not for --help

  stories = []
  for path in paths:
    for out in parse_record(RawRecord(uri=str(path), data=path.read_bytes())):
      if isinstance(out, Story):
        stories.append(out)
  return stories


def select_files(directory: Path, spec: str) -> list[Path]:
  """``000-006`` or ``007,009`` -> the ``reut2-NNN.sgm`` files."""
  numbers: list[int] = []
  for part in spec.split(","):
    low, _, high = part.partition("-")
    numbers.extend(range(int(low), int(high or low) + 1))
  paths = [directory / f"reut2-{n:03d}.sgm" for n in numbers]
  missing = [str(p) for p in paths if not p.exists()]
  if missing:
    raise FileNotFoundError(f"missing: {', '.join(missing)}")
  return paths


# --------------------------------------------------------------------------- variants


def _paragraphs(body: str) -> list[str]:
  return [p for p in body.split("\n\n") if p.strip()]


def _sentences(body: str) -> list[str]:
  out = []
  for paragraph in _paragraphs(body):
    out.extend(s.strip() for s in C.sentence_texts(paragraph) if s.strip())
  return out


def _change_figure(text: str, rng: random.Random) -> str:
  numbers = list(_NUMBER_RE.finditer(text))
  if not numbers:
    return text
  match = rng.choice(numbers)
  value = match.group(0)
  digits = [i for i, ch in enumerate(value) if ch.isdigit()]
  i = rng.choice(digits)
  changed = value[:i] + str((int(value[i]) + rng.randint(1, 8)) % 10) + value[i + 1:]
  return text[:match.start()] + changed + text[match.end():]


def _subject(story: Story) -> str:
  words = (story.headline or "story").split()
  return " ".join(words[:8]).capitalize()


def variant(story: Story, kind: str, rng: random.Random) -> Story:
  """One wire-desk variant of ``story`` (a new guid, an event time minutes to days later)."""
  paragraphs = _paragraphs(story.body)
  headline = story.headline or ""
  day = rng.choice(_WEEKDAYS)
  place = story.dateline_place or "NEW YORK"
  body = story.body
  if kind == "repeat":
    headline = rng.choice(("RPT-", "REFILE-")) + headline
  elif kind == "new_lead":
    body = "\n\n".join([rng.choice(_LEADS).format(place=place, subject=_subject(story), day=day), *paragraphs])
  elif kind == "trimmed":
    keep = max(2, round(len(paragraphs) * rng.uniform(0.5, 0.8)))
    body = "\n\n".join(paragraphs[:keep])
  elif kind == "update":
    headline = f"UPDATE {rng.randint(1, 4)}-{headline}"
    edited = list(paragraphs)
    if len(edited) > 1:
      at = rng.randrange(1, len(edited))
      edited[at] = _change_figure(edited[at], rng)
    body = "\n\n".join([*edited, rng.choice(_ADDED).format(day=day)])
  elif kind == "correction":
    edited = list(paragraphs)
    at = rng.randrange(len(edited))
    edited[at] = _change_figure(edited[at], rng)
    note = rng.choice(_CORRECTIONS).format(n=at + 1, day=day)
    headline = "CORRECTED-" + headline
    body = "\n\n".join([note, *edited])
  elif kind == "reordered":
    rest = paragraphs[1:]
    rng.shuffle(rest)
    body = "\n\n".join(paragraphs[:1] + rest)
  elif kind == "write_through":
    sentences = _sentences(story.body)
    kept = rng.sample(sentences, max(2, round(len(sentences) * rng.uniform(0.45, 0.6))))
    rng.shuffle(kept)
    lead_words = kept[0].split()[:9]
    headline = " ".join(lead_words).rstrip(".,").upper()
    body = "\n\n".join(kept)
  elif kind != "copy":
    raise ValueError(f"unknown variant kind {kind!r}")
  delay = dt.timedelta(minutes=rng.randint(1, 3 * 24 * 60))
  published = (story.published_at or story.ingested_at) + delay
  guid = f"{story.guid}-{kind}"
  story_id = hashlib.sha256(f"eval|{guid}".encode()).hexdigest()[:32]
  return dataclasses.replace(story, story_id=story_id, guid=guid, headline=headline, body=body,
                             published_at=published, locator=f"{story.locator}/{kind}")


def _rng(story: Story, salt: str = "") -> random.Random:
  return random.Random(int.from_bytes(hashlib.sha256(f"{story.story_id}|{salt}".encode()).digest()[:8], "big"))


def is_base(story: Story) -> bool:
  long_sentences = [s for s in C.sentences(story.body) if len(s) >= C.MIN_SENTENCE_TOKENS]
  return len(long_sentences) >= MIN_BASE_SENTENCES


# --------------------------------------------------------------------------- labels


def _shingles(text: str) -> set[str]:
  words = C.tokens(text)
  width = min(C.SHINGLE_WORDS, len(words))
  return {" ".join(words[i:i + width]) for i in range(len(words) - width + 1)} if words else set()


def near_copy_pairs(bodies: Sequence[str], threshold: float = NEAR_COPY_JACCARD) -> list[tuple[int, int, float]]:
  """All pairs of texts at 5-word shingle Jaccard >= threshold (exact: prefix filtering)."""
  sets = [_shingles(b) for b in bodies]
  df = Counter(s for shingles in sets for s in shingles)
  index: dict[str, list[int]] = defaultdict(list)
  pairs = []
  for i, shingles in enumerate(sets):
    if not shingles:
      continue
    ordered = sorted(shingles, key=lambda s: (df[s], s))
    prefix = ordered[:int((1 - threshold) * len(ordered)) + 1]
    candidates = {j for s in prefix for j in index[s]}
    for j in sorted(candidates):
      other = sets[j]
      if min(len(other), len(shingles)) < threshold * max(len(other), len(shingles)):
        continue
      jac = len(shingles & other) / len(shingles | other)
      if jac >= threshold:
        pairs.append((j, i, jac))
    for s in prefix:
      index[s].append(i)
  return pairs


def refiled_pairs(stories: Sequence[Story], min_containment: float = REFILED_CONTAINMENT) -> list[tuple[int, int]]:
  """Pairs of real stories with similar titles (:func:`_similar_titles`) where half or more of the shorter
  body's 5-word shingles (at least ``REFILED_MIN_SHINGLES``) are in the other body: one story filed again with
  changes; or, under any title, bodies at 5-word shingle Jaccard >= ``NEAR_JACCARD`` with the same lead
  (:func:`_rewritten`): one story rewritten under a new headline. Exact counts; candidates share a shingle
  found in at most ``REFILED_MAX_DF`` stories."""
  sets = [_shingles(story.body) for story in stories]
  figures = [_figures(story) for story in stories]
  titles = [_title(story) for story in stories]
  df = Counter(s for shingles in sets for s in shingles)
  index: dict[str, list[int]] = defaultdict(list)
  for i, shingles in enumerate(sets):
    for s in shingles:
      if df[s] <= REFILED_MAX_DF:
        index[s].append(i)
  pairs = []
  for i, shingles in enumerate(sets):
    if len(shingles) < REFILED_MIN_SHINGLES:
      continue
    candidates = {j for s in shingles if df[s] <= REFILED_MAX_DF for j in index[s] if j > i}
    for j in sorted(candidates):
      if not _same_figures(figures[i], figures[j]):
        continue
      small = min(len(shingles), len(sets[j]))
      both = len(shingles & sets[j])
      if small < REFILED_MIN_SHINGLES or both < min_containment * small:
        continue
      if _similar_titles(titles[i], titles[j]) or (
          both >= NEAR_JACCARD * (len(shingles) + len(sets[j]) - both)
          and _rewritten(stories[i], stories[j], titles[i], titles[j])):
        pairs.append((i, j))
  return pairs


def _rewritten(a: Story, b: Story, title_a: _Title, title_b: _Title) -> bool:
  """Whether two stories whose bodies keep half their 5-word shingles (Jaccard >= ``NEAR_JACCARD``) are one
  story rewritten under a new headline: filed within ``REFILED_HOURS``, the lead kept in its wording (word-pair
  Jaccard >= ``SAME_LEAD_JACCARD``, a name perhaps replaced: "U.S. farmers", "American farmers") and titles
  naming no disjoint tickers or figures (two companies' stories on one template stay apart)."""
  if _hours_apart(a, b) > REFILED_HOURS:
    return False
  if not _same_wording(_lead(a)[0], _lead(b)[0]):
    return False
  return not C.other_subjects(title_a.tickers, title_b.tickers, title_a.figures, title_b.figures)


class _Title(NamedTuple):
  """What the labels read of a story's title (:func:`transforms.cluster.title`), computed once a story."""

  words: set[str]
  tickers: set[str]
  figures: set[str]


def _title(story: Story) -> _Title:
  return _Title(_headline_words(story), *C.title_marks(C.title(story)))


def _similar_titles(a: _Title, b: _Title) -> bool:
  """Titles at word Jaccard >= ``REFILED_HEADLINE`` that name no disjoint tickers and state no disjoint figures
  (:func:`transforms.cluster.other_subjects`)."""
  union = a.words | b.words
  if not union or len(a.words & b.words) < REFILED_HEADLINE * len(union):
    return False
  return not C.other_subjects(a.tickers, b.tickers, a.figures, b.figures)


def _headline_words(story: Story) -> set[str]:
  """The words of the story's title (:func:`transforms.cluster.title`: the headline without filing marks, or
  the body's first line)."""
  return set(C.tokens(C.title(story)))


def _hours_apart(a: Story, b: Story) -> float:
  ta, tb = a.published_at or a.ingested_at, b.published_at or b.ingested_at
  return abs((ta - tb).total_seconds()) / 3600


def _lead(story: Story) -> tuple[set[str], set[str], set[str]]:
  """The word pairs of the body's first sentence, its names and figures, and all its words and figures
  (:func:`transforms.cluster.lead_terms`); empty when it has under ``SAME_LEAD_MIN_WORDS`` words."""
  for sentence in _sentences(story.body):
    words, facts, vocabulary = C.lead_terms(sentence)
    if len(words) >= SAME_LEAD_MIN_WORDS:
      return {f"{a} {b}" for a, b in zip(words, words[1:], strict=False)}, facts, vocabulary
    break
  return set(), set(), set()


def _same_wording(pairs_a: set[str], pairs_b: set[str]) -> bool:
  """Whether two leads' word pairs (both non-empty) are at Jaccard >= ``SAME_LEAD_JACCARD``."""
  return bool(pairs_a and pairs_b) and len(pairs_a & pairs_b) >= SAME_LEAD_JACCARD * len(pairs_a | pairs_b)


def _same_lead(a: tuple[set[str], set[str], set[str]], b: tuple[set[str], set[str], set[str]]) -> bool:
  """Leads at word-pair Jaccard >= ``SAME_LEAD_JACCARD``, the shorter one holding no name or figure
  that the other lacks (:func:`transforms.cluster.lead_names_nothing_new`)."""
  (pairs_a, facts_a, words_a), (pairs_b, facts_b, words_b) = a, b
  if not _same_wording(pairs_a, pairs_b):
    return False
  if len(pairs_a) <= len(pairs_b):
    return C.lead_names_nothing_new(facts_a, words_b)
  return C.lead_names_nothing_new(facts_b, words_a)


def _same_figures(a: Counter, b: Counter) -> bool:
  """Whether half or more of the figures of the body with fewer (counted with repeats) are in the other
  (true when one has none)."""
  fewer = min(sum(a.values()), sum(b.values()))
  return sum((a & b).values()) >= SAME_FIGURES_CONTAINMENT * fewer


def _figures(story: Story) -> Counter:
  return Counter(C.figures(story.body))


def same_news_pairs(stories: Sequence[Story]) -> list[tuple[int, int]]:
  """Pairs of real stories filed within ``REFILED_HOURS`` of each other that report the same news:

  * the same lead: their first sentences (``SAME_LEAD_MIN_WORDS`` words or more) at word-pair
    Jaccard >= ``SAME_LEAD_JACCARD``, the shorter lead naming no one the other does not (a wire
    story's lead states its news; a rewrite under a new headline keeps it, perhaps with a few words
    changed; the same template about another company names another company);
  * the same figures: ``SAME_FIGURES_CONTAINMENT`` or more of the shorter body's figures (at least
    ``SAME_FIGURES_MIN``, counted with repeats) are in the other, under similar headlines (word
    Jaccard >= ``REFILED_HEADLINE``, filing marks removed): a results table or statistics release
    filed again, reformatted or with a figure amended.

  Candidates share a lead word pair, or a figure found in at most ``REFILED_MAX_DF`` stories."""
  leads = [_lead(story) for story in stories]
  figures = [_figures(story) for story in stories]
  titles = [_title(story) for story in stories]
  df = Counter(f for counts in figures for f in counts)
  index: dict[str, list[int]] = defaultdict(list)
  for i in range(len(stories)):
    for s in leads[i][0]:
      index["l" + s].append(i)
    if sum(figures[i].values()) >= SAME_FIGURES_MIN:
      for f in figures[i]:
        if df[f] <= REFILED_MAX_DF:
          index["f" + f].append(i)
  pairs = []
  for i in range(len(stories)):
    candidates = {j for key in [*("l" + s for s in leads[i][0]), *("f" + f for f in figures[i])]
                  for j in index.get(key, ()) if j > i}
    for j in sorted(candidates):
      if _hours_apart(stories[i], stories[j]) > REFILED_HOURS:
        continue
      if _same_lead(leads[i], leads[j]):
        pairs.append((i, j))
        continue
      fewer = min(sum(figures[i].values()), sum(figures[j].values()))
      if fewer >= SAME_FIGURES_MIN and _same_figures(figures[i], figures[j]) and _similar_titles(titles[i], titles[j]):
        pairs.append((i, j))
  return pairs


def _text_key(story: Story) -> str:
  return " ".join(C.tokens(strip_headline_prefixes(story.headline)[0]) + C.tokens(story.body))


def build_set(stories: Sequence[Story]) -> tuple[list[Item], dict]:
  """The labelled set: real stories with labels, then their variants."""
  links: list[tuple[int, int]] = []
  by_text: dict[str, int] = {}
  by_body: dict[str, int] = {}
  exact_pairs = 0
  for i, story in enumerate(stories):
    for table, key in ((by_text, _text_key(story)),
                       (by_body, " ".join(C.tokens(story.body)) if len(story.body) >= NEAR_COPY_MIN_CHARS else None)):
      if key is None:
        continue
      if key in table:
        links.append((table[key], i))
        exact_pairs += 1
      else:
        table[key] = i
  long_ids = [i for i, s in enumerate(stories) if len(s.body) >= NEAR_COPY_MIN_CHARS]
  near = near_copy_pairs([stories[i].body for i in long_ids])
  near_pairs = [(long_ids[a], long_ids[b]) for a, b, _ in near]
  refiled = refiled_pairs(stories)
  same_news = same_news_pairs(stories)
  components = C.merge_links([*links, *near_pairs, *refiled, *same_news])
  label = [components.get(i, i) for i in range(len(stories))]
  items = [Item(s, label[i], "real", s.event_id) for i, s in enumerate(stories)]
  for i, story in enumerate(stories):
    if not is_base(story):
      continue
    for kind in VARIANT_KINDS:
      items.append(Item(variant(story, kind, _rng(story, kind)), label[i], kind, story.event_id))
  info = {"real_stories": len(stories), "bases": sum(1 for s in stories if is_base(s)),
          "real_exact_pairs": exact_pairs, "real_near_pairs": len(near_pairs), "real_refiled_pairs": len(refiled),
          "real_same_news_pairs": len(same_news)}
  return items, {"info": info, "near_pairs": near_pairs}


# --------------------------------------------------------------------------- scoring


def _pairs(n: int) -> int:
  return n * (n - 1) // 2


def cluster_items(items: Sequence[Item], ttl_seconds: float = C.DEFAULT_TTL_SECONDS
                  ) -> tuple[list[str], list[str], list[str], float]:
  """Cluster ids of ``items`` as the batch pipeline writes them (linked clusters merged), as the lake's
  views show the stream's rows (bridged clusters merged) and as the stream writes them (each story's id
  fixed on arrival), all in event-time order, and the seconds spent."""
  started = time.perf_counter()
  sigs = [C.signature(item.story) for item in items]
  order = sorted(range(len(items)), key=lambda i: (sigs[i].time_us, sigs[i].event_id))
  clusterer = C.Clusterer(ttl_seconds=ttl_seconds)
  on_arrival = [""] * len(items)
  batch = [""] * len(items)
  for i in order:
    on_arrival[i], batch[i] = clusterer.place(sigs[i])
  merged, viewed = clusterer.merged(), clusterer.view_merged()
  return ([merged.get(cid, cid) for cid in batch], [viewed.get(cid, cid) for cid in on_arrival], on_arrival,
          time.perf_counter() - started)


def score(items: Sequence[Item], ids: Sequence[str], near_pairs: Iterable[tuple[int, int]]) -> dict:
  cells = Counter(zip(ids, (item.label for item in items), strict=True))
  tp = sum(_pairs(n) for n in cells.values())
  predicted = sum(_pairs(n) for n in Counter(ids).values())
  actual = sum(_pairs(n) for n in Counter(item.label for item in items).values())
  precision = tp / predicted if predicted else 1.0
  recall = tp / actual if actual else 1.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  base_index = {item.story.event_id: i for i, item in enumerate(items) if item.kind == "real"}
  by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
  for i, item in enumerate(items):
    if item.kind != "real":
      by_kind[item.kind][0] += ids[i] == ids[base_index[item.base]]
      by_kind[item.kind][1] += 1
  exact = [0, 0]
  groups: dict[str, list[int]] = defaultdict(list)
  for i, item in enumerate(items):
    groups[_text_key(item.story)].append(i)
  for members in groups.values():
    for j in members[1:]:
      exact[0] += ids[j] == ids[members[0]]
      exact[1] += 1
  near = [0, 0]
  for a, b in near_pairs:
    near[0] += ids[a] == ids[b]
    near[1] += 1
  apart = 0
  topic_members: dict[tuple[str, str], list[int]] = defaultdict(list)
  for i, item in enumerate(items):
    for topic in item.story.source_subjects:
      topic_members[(ids[i], topic)].append(i)
  for members in topic_members.values():
    labels = Counter(items[i].label for i in members)
    apart += _pairs(len(members)) - sum(_pairs(n) for n in labels.values())
  return {
      "precision": round(precision, 5), "recall": round(recall, 5), "f1": round(f1, 5),
      "clusters": len(set(ids)), "labelled_stories": len(set(item.label for item in items)),
      "stories": len(items), "true_pairs": actual, "predicted_pairs": predicted,
      "exact_copy_recall": round(exact[0] / exact[1], 5) if exact[1] else None, "exact_copy_pairs": exact[1],
      "near_copy_recall": round(near[0] / near[1], 5) if near[1] else None, "near_copy_pairs": near[1],
      "variant_recall": {kind: round(hit / total, 4) for kind, (hit, total) in sorted(by_kind.items())},
      "apart_merged": apart,
  }


def _describe(item: Item) -> str:
  story = item.story
  title = story.headline or "(no headline) " + (story.body or "").strip().split("\n", 1)[0]
  when = (story.published_at or story.ingested_at).strftime("%Y-%m-%d %H:%M")
  return f"{item.kind:>13} {when} {title[:90]!r}"


def errors(items: Sequence[Item], ids: Sequence[str], count: int) -> dict[str, list[dict]]:
  """The ``count`` largest errors of ``ids``: ``false``, clusters holding stories of several labels (the
  pairs they wrongly join), and ``missed``, labels split over several clusters (the pairs they miss);
  each with a few stories of every part."""
  by_cluster: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
  by_label: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
  for i, (cid, item) in enumerate(zip(ids, items, strict=True)):
    by_cluster[cid][item.label].append(i)
    by_label[item.label][cid].append(i)

  def cross(parts: Iterable[list[int]]) -> int:
    sizes = [len(p) for p in parts]
    return _pairs(sum(sizes)) - sum(_pairs(n) for n in sizes)

  def shown(parts: dict) -> list[list[str]]:
    ordered = sorted(parts.values(), key=lambda p: (-len(p), p))
    return [[f"{len(p)} x"] + [_describe(items[i]) for i in p[:3]] for p in ordered[:4]]

  out = {}
  for name, groups in (("false", by_cluster), ("missed", by_label)):
    errs = [(cross(parts.values()), key, parts) for key, parts in groups.items() if len(parts) > 1]
    errs.sort(key=lambda e: (-e[0], str(e[1])))
    out[name] = [{"pairs": pairs, "parts": shown(parts)} for pairs, _, parts in errs[:count]]
  return out


def print_errors(name: str, found: dict[str, list[dict]], file=sys.stderr) -> None:
  for kind, errs in found.items():
    print(f"== {name}: {kind} pairs (largest first)", file=file)
    for err in errs:
      print(f"-- {err['pairs']} pairs", file=file)
      for part in err["parts"]:
        print(f"   [{part[0]}]", file=file)
        for line in part[1:]:
          print(f"      {line}", file=file)


def evaluate(paths: Sequence[Path], show_errors: int = 0) -> dict:
  stories = parse_files(paths)
  items, extra = build_set(stories)
  ids, viewed, on_arrival, seconds = cluster_items(items)
  if show_errors:
    print_errors("batch", errors(items, ids, show_errors))
    print_errors("stream", errors(items, viewed, show_errors))
  report = score(items, ids, extra["near_pairs"])
  for name, stream_ids in (("stream", viewed), ("stream_written", on_arrival)):
    stream = score(items, stream_ids, extra["near_pairs"])
    report[name] = {key: stream[key] for key in ("precision", "recall", "f1", "clusters", "exact_copy_recall",
                                                 "near_copy_recall")}
  report.update(extra["info"])
  report["seconds"] = round(seconds, 2)
  report["ms_per_story"] = round(1000 * seconds / len(items), 3)
  report["files"] = [p.name for p in paths]
  return report


# --------------------------------------------------------------------------- scale


def synthetic(stories: Sequence[Story], count: int, per_day: int) -> Iterator[Story]:
  """``count`` stories: the files' stories, then their variants (copies of stories too short to rewrite),
  re-dated ``per_day`` a day, in time order."""
  start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
  bases = [s for s in stories if s.body]
  n = 0
  cycle = 0
  while True:
    for story in bases:
      kind = (VARIANT_KINDS[(n // len(bases)) % len(VARIANT_KINDS)] if is_base(story) else "copy") if cycle else None
      out = variant(story, kind, _rng(story, f"{kind}{cycle}")) if kind else story
      when = start + dt.timedelta(days=n / per_day)
      out = dataclasses.replace(out, story_id=hashlib.sha256(f"{out.story_id}|{cycle}".encode()).hexdigest()[:32],
                                published_at=when)
      yield out
      n += 1
      if n >= count:
        return
    cycle += 1


def _rss_peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def scale(stories: Sequence[Story], count: int, per_day: int, ttl_seconds: float) -> dict:
  """Times ``count`` synthetic stories through the stream's clustering (bounded state, no links kept).

  At every tenth of the run: the cost per story so far, the process's peak resident memory and the
  members held in the keys' state (expired daily, as the stream's timers do)."""
  clusterer = C.Clusterer(ttl_seconds=ttl_seconds, keep_links=False)
  started = time.perf_counter()
  checkpoints = {}
  members_peak = 0
  last_day = None
  rss_start = _rss_peak_mb()
  for i, story in enumerate(synthetic(stories, count, per_day), 1):
    sig = C.signature(story)
    clusterer.add(sig)
    day = sig.time_us // 86_400_000_000
    if day != last_day:
      clusterer.expire(sig.time_us)
      last_day = day
      members_peak = max(members_peak, sum(len(m) for m in clusterer.index.values()))
    if i % (count // 10 or 1) == 0:
      checkpoints[i] = {"ms_per_story": round(1000 * (time.perf_counter() - started) / i, 3),
                        "rss_peak_mb": round(_rss_peak_mb(), 1),
                        "members": sum(len(m) for m in clusterer.index.values())}
  seconds = time.perf_counter() - started
  return {"stories": count, "per_day": per_day, "ttl_seconds": ttl_seconds, "seconds": round(seconds, 2),
          "ms_per_story": round(1000 * seconds / count, 3), "so_far": checkpoints,
          "keys": len(clusterer.index), "members_peak": members_peak,
          "rss_before_mb": round(rss_start, 1), "rss_peak_mb": round(_rss_peak_mb(), 1)}


def _run(args: argparse.Namespace) -> int:
  try:
    paths = select_files(Path(args.reuters), args.files)
  except (FileNotFoundError, ValueError) as error:
    print(f"wirestream eval clusters: error: {error}", file=sys.stderr)
    return 2
  if args.scale:
    report = scale(parse_files(paths), args.scale, args.per_day, args.ttl_seconds)
  else:
    report = evaluate(paths, args.show_errors)
  print(json.dumps(report))
  return 0


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "clusters", help="Evaluate story clustering on a labelled set built from Reuters-21578 files.",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--reuters", required=True, metavar="DIR", help="Directory of reut2-NNN.sgm files.")
  parser.add_argument("--files", default="007-013", help="File numbers, e.g. 007-013 or 000,003 (default: 007-013).")
  parser.add_argument("--scale", type=int, default=0, metavar="N",
                      help="Time N synthetic stories instead (cost per story, state size).")
  parser.add_argument("--show-errors", type=int, default=0, metavar="N",
                      help="Also print the N largest false and missed joins (batch and stream) to stderr.")
  parser.add_argument("--per-day", type=int, default=5000, help="--scale: stories per day of event time.")
  parser.add_argument("--ttl-seconds", type=float, default=C.DEFAULT_TTL_SECONDS,
                      help="--scale: how long a story stays joinable (default: a week).")
  parser.set_defaults(func=_run)
