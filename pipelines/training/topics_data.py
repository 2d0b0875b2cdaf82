"""Training and dev data for the IPTC topic model: AG News, HuffPost headlines, IPTC definitions,
Reuters-21578.

Every example becomes a 17-way *partial* multi-label target over the IPTC
top-level Media Topics: a ``target`` vector (1 = the topic applies, 0 = it does
not), a ``weight`` vector (0 = unknown, no loss) and, for examples whose label
is a *set* of allowed topics (AG "World"), an ``any_of`` mask: at least one of
those topics applies (noisy-OR), which one is not known.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import html
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transforms.spec import IPTC_ROOTS

N_TOPICS = len(IPTC_ROOTS)
CODES = [code for code, _ in IPTC_ROOTS]
INDEX = {code: i for i, code in enumerate(CODES)}


def medtop(n: int) -> str:
  return f"medtop:{n:02d}000000"


#: AG News class -> IPTC topic (World has no single topic: see WORLD_ALLOWED).
AG_TOPIC = {2: medtop(15), 3: medtop(4), 4: medtop(13)}
AG_NAMES = {1: "World", 2: "Sports", 3: "Business", 4: "Sci/Tech"}
#: The topics an AG "World" story is NOT about, and the ones it may be about.
WORLD_EXCLUDED = tuple(medtop(n) for n in (1, 4, 10, 13, 15))
WORLD_ALLOWED = tuple(code for code in CODES if code not in WORLD_EXCLUDED)
#: BBC News categories -> IPTC topic (evaluation only).
BBC_TOPIC = {"business": medtop(4), "entertainment": medtop(1), "politics": medtop(11), "sport": medtop(15),
             "tech": medtop(13)}
#: Reuters-21578 TOPICS tags are all economic; a few also name a second topic.
REUTERS_EXTRA = {"jobs": medtop(9), "housing": medtop(4)}
#: Weight of a negative target for a topic that a class does not name but could still touch
#: (e.g. politics on a Business story): weaker than a sure negative.
SOFT_NEGATIVE = 0.3
#: AG News has no arts/entertainment class, and its 26k rows would otherwise drown the few arts examples
#: (definitions, seed texts) in negatives: arts negatives on AG rows weigh this much.
AG_ARTS_NEGATIVE = 0.3
ARTS = "medtop:01000000"


@dataclasses.dataclass
class Example:
  """One training/dev example with its partial multi-label target."""

  text: str
  target: np.ndarray  # float32 [17]
  weight: np.ndarray  # float32 [17], 0 = unknown
  any_of: np.ndarray  # float32 [17], 1 = member of a "at least one of" set (empty: none)
  source: str
  label: str  # the original label, for reporting


def _vectors() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  return (np.zeros(N_TOPICS, np.float32), np.zeros(N_TOPICS, np.float32), np.zeros(N_TOPICS, np.float32))


def single_topic_target(code: str, hard_negatives: Iterable[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Target of an example about ``code``: hard negatives for ``hard_negatives``, soft ones elsewhere."""
  target, weight, any_of = _vectors()
  weight[:] = SOFT_NEGATIVE
  for other in hard_negatives:
    weight[INDEX[other]] = 1.0
  target[INDEX[code]] = 1.0
  weight[INDEX[code]] = 1.0
  return target, weight, any_of


def world_target() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """AG World: surely not 01/04/10/13/15; at least one of the other twelve topics."""
  target, weight, any_of = _vectors()
  for code in WORLD_EXCLUDED:
    weight[INDEX[code]] = 1.0
  for code in WORLD_ALLOWED:
    any_of[INDEX[code]] = 1.0
  return target, weight, any_of


def ag_target(label: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Partial target of an AG News class (1 World, 2 Sports, 3 Business, 4 Sci/Tech)."""
  if label == 1:
    target, weight, any_of = world_target()
  else:
    code = AG_TOPIC[label]
    others = [AG_TOPIC[k] for k in AG_TOPIC if AG_TOPIC[k] != code]
    target, weight, any_of = single_topic_target(code, others + [medtop(1), medtop(10)])
  weight[INDEX[ARTS]] = AG_ARTS_NEGATIVE
  return target, weight, any_of


def ag_allowed(label: int) -> tuple[str, ...]:
  """The topics that count as a correct top-1 for an AG class."""
  return WORLD_ALLOWED if label == 1 else (AG_TOPIC[label],)


_AG_ENTITY = re.compile(r"(?<![&\w])#(\d{2,5});")
_TAG = re.compile(r"<[^>]{1,40}>")


def clean_ag_text(text: str) -> str:
  """Undo AG News' escaping: ``\\`` line breaks, ``#36;`` entities, ``quot;``, HTML tags."""
  text = text.replace("\\", " ")
  text = _AG_ENTITY.sub(lambda m: chr(int(m.group(1))), text)
  text = re.sub(r"(?<!&)\b(quot|amp|lt|gt);", r"&\1;", text)
  text = html.unescape(html.unescape(text))
  text = _TAG.sub(" ", text)
  return re.sub(r"\s+", " ", text).strip()


def is_dev(text: str, fraction_pct: int = 10) -> bool:
  """The former fixed AG dev split: a hash of the text, independent of seed and file order (the shipped
  head was trained without these rows; :func:`split_ag` keeps its dev part inside them)."""
  return _legacy_bucket(text) < fraction_pct


def _legacy_bucket(text: str) -> int:
  return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:8], 16) % 100


_NON_WORD = re.compile(r"[\W_]+")


def text_key(text: str) -> str:
  """The key that finds repeats: NFKC, lower case, every run of non-word characters one space (so a
  repeat that differs in casing, quotes or spacing is still a repeat)."""
  return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def key_rank(key: str) -> str:
  """Default rank of a key in :func:`stratified_split`: its sha1 (a fixed pseudo-random order)."""
  return hashlib.sha1(key.encode("utf-8")).hexdigest()


def stratified_split(keys: Sequence[str], strata: Sequence[str], dev_fraction: float,
                     rank: Callable[[str], Any] = key_rank) -> set[str]:
  """The dev keys of a deterministic, stratified hash split: in every stratum, the
  ``round(dev_fraction * n)`` distinct keys of lowest ``rank`` (n: the stratum's distinct keys).

  Keyed by ``keys`` (use :func:`text_key`), so every copy of a repeated text falls on the same side; a
  key seen in two strata counts in the first. Independent of file order; a row added to a stratum
  moves at most one boundary key."""
  stratum_of: dict[str, str] = {}
  for key, stratum in zip(keys, strata, strict=True):
    stratum_of.setdefault(key, stratum)
  by_stratum: dict[str, list[str]] = {}
  for key, stratum in stratum_of.items():
    by_stratum.setdefault(stratum, []).append(key)
  dev: set[str] = set()
  for members in by_stratum.values():
    members.sort(key=lambda k: (rank(k), k))
    dev.update(members[:round(dev_fraction * len(members))])
  return dev


@dataclasses.dataclass(frozen=True)
class LabelledText:
  """A real labelled text for evaluation: ``labels`` are the topics that count as a right top-1,
  ``main`` the one it is mainly about (None when the label is a set without a main one, AG World),
  ``group`` its source class."""

  text: str
  labels: tuple[str, ...]
  main: str | None
  group: str


# --- AG News ---------------------------------------------------------------------------------------

#: Share of every AG class held out as dev. The shipped head was trained without the former 10% split
#: (:func:`is_dev`), whose classes hold 9.6-10.2% of their rows: 9.5% of each class fits inside it.
AG_DEV_FRACTION = 0.095


def read_ag(path: Path) -> list[tuple[str, int, set[str]]]:
  """AG News rows (``label,label_name,text``) grouped by :func:`text_key`: (first cleaned text, label,
  every cleaned text of the group); a group whose copies carry different labels gets label 0."""
  groups: dict[str, tuple[str, int, set[str]]] = {}
  with open(path, newline="", encoding="utf-8") as handle:
    for row in csv.DictReader(handle):
      text = clean_ag_text(row["text"])
      if not text:
        continue
      label = int(row["label"])
      key = text_key(text)
      if key in groups:
        first, seen_label, texts = groups[key]
        texts.add(text)
        if seen_label != label:
          groups[key] = (first, 0, texts)
      else:
        groups[key] = (text, label, {text})
  return list(groups.values())


def split_ag(path: Path, dev_fraction: float = AG_DEV_FRACTION
             ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
  """AG News -> (train, dev) as (text, label), one row per repeat group, stratified by class.

  A group ranks by the former split's bucket of its most train-like copy, so the dev part only holds
  groups all of whose copies the shipped head never trained on; groups with conflicting labels train.
  """
  groups = read_ag(path)
  rank = {text_key(first): max((_legacy_bucket(t), key_rank(t)) for t in texts)
          for first, _, texts in groups}
  keys = [text_key(first) for first, _, _ in groups]
  dev_keys = stratified_split(keys, [str(label) for _, label, _ in groups], dev_fraction, rank.__getitem__)
  dev_keys = {k for k in dev_keys if rank[k][0] < 10}
  train, dev = [], []
  for key, (first, label, _) in zip(keys, groups, strict=True):
    if label == 0:
      continue
    (dev if key in dev_keys else train).append((first, label))
  return train, dev


def ag_labelled(rows: Iterable[tuple[str, int]]) -> list[LabelledText]:
  """AG (text, label) rows as evaluation rows (World: any of its 12 allowed topics, no main one)."""
  return [LabelledText(text, ag_allowed(label), None if label == 1 else AG_TOPIC[label], AG_NAMES[label])
          for text, label in rows]


def load_ag(path: Path, dev_fraction: float = AG_DEV_FRACTION) -> tuple[list[Example], list[Example]]:
  """AG News rows (``label,label_name,text``) -> (train, dev) training examples (:func:`split_ag`)."""
  def examples(rows):
    return [Example(text, *ag_target(label), "ag", AG_NAMES[label]) for text, label in rows]

  train, dev = split_ag(path, dev_fraction)
  return examples(train), examples(dev)


# --- HuffPost headlines ----------------------------------------------------------------------------

#: HuffPost category -> IPTC root, reviewed against the IPTC concept tree (None: no single root; such
#: rows are left out). Where this differs from the file's ``iptc_proposed``, HUFFPOST_CHANGES says why.
HUFFPOST_TOPICS: dict[str, str | None] = {
    "POLITICS": medtop(11), "WELLNESS": medtop(7), "ENTERTAINMENT": medtop(1), "TRAVEL": medtop(10),
    "STYLE & BEAUTY": medtop(1), "PARENTING": medtop(14), "HEALTHY LIVING": medtop(7), "QUEER VOICES": None,
    "FOOD & DRINK": medtop(10), "BUSINESS": medtop(4), "COMEDY": medtop(1), "SPORTS": medtop(15),
    "BLACK VOICES": None, "HOME & LIVING": medtop(10), "PARENTS": medtop(14), "THE WORLDPOST": None,
    "WEDDINGS": medtop(8), "WOMEN": None, "IMPACT": medtop(14), "DIVORCE": medtop(14), "CRIME": medtop(2),
    "MEDIA": medtop(1), "WEIRD NEWS": medtop(8), "GREEN": medtop(6), "WORLDPOST": None,
    "RELIGION": medtop(12), "STYLE": medtop(1), "SCIENCE": medtop(13), "WORLD NEWS": None,
    "TASTE": medtop(10), "TECH": medtop(13), "MONEY": medtop(4), "ARTS": medtop(1), "FIFTY": None,
    "GOOD NEWS": medtop(8), "ARTS & CULTURE": medtop(1), "ENVIRONMENT": medtop(6), "COLLEGE": medtop(5),
    "LATINO VOICES": None, "CULTURE & ARTS": medtop(1), "EDUCATION": medtop(5),
}
#: Why HUFFPOST_TOPICS differs from the proposed mapping.
HUFFPOST_CHANGES: dict[str, str] = {
    "STYLE & BEAUTY": "proposed 10; IPTC files fashion (medtop:20000011) and cosmetics (medtop:20001248) "
                      "under 01, and the rows are fashion, beauty and red-carpet looks",
    "STYLE": "proposed 10; fashion and cosmetics are IPTC 01 concepts (as STYLE & BEAUTY)",
    "WEDDINGS": "proposed 10; IPTC's wedding concept (medtop:20001236: ceremony, receptions, engagement "
                "parties) sits under 08 human interest, and lifestyle has no wedding concept",
    "IMPACT": "proposed none; the rows are charity, poverty, welfare and volunteering, IPTC 14 concepts "
              "(charity medtop:20000818, poverty, homelessness)",
}
#: Share of every HuffPost category held out as dev.
HUFFPOST_DEV_FRACTION = 0.12


def split_huffpost(path: Path, dev_fraction: float = HUFFPOST_DEV_FRACTION,
                   mapping: dict[str, str | None] | None = None
                   ) -> tuple[list[LabelledText], list[LabelledText]]:
  """HuffPost headlines (JSONL: ``text``, ``source_category``) -> (train, dev), one row per repeat
  (:func:`text_key`), stratified by source category over all categories (so a change of the mapping
  never moves a headline across sides); then rows whose category maps to no root are left out."""
  mapping = HUFFPOST_TOPICS if mapping is None else mapping
  rows: dict[str, tuple[str, str]] = {}
  with open(path, encoding="utf-8") as handle:
    for number, line in enumerate(handle, 1):
      if not line.strip():
        continue
      row = json.loads(line)
      category = row["source_category"]
      if category not in mapping:
        raise ValueError(f"{path}:{number}: category {category!r} is not in the mapping")
      rows.setdefault(text_key(row["text"]), (row["text"], category))
  keys = list(rows)
  dev_keys = stratified_split(keys, [rows[k][1] for k in keys], dev_fraction)
  train, dev = [], []
  for key in keys:
    text, category = rows[key]
    code = mapping[category]
    if code is not None:
      (dev if key in dev_keys else train).append(LabelledText(text, (code,), code, category))
  return train, dev


def huffpost_examples(rows: Iterable[LabelledText], skipped: Iterable[str] = ()) -> list[Example]:
  """HuffPost train rows as training examples: the mapped root a positive, the rest weak negatives;
  rows whose root is in ``skipped`` are left out."""
  skipped = set(skipped)
  return [Example(row.text, *single_topic_target(row.main, []), "huffpost", row.group) for row in rows
          if row.main not in skipped]


def load_iptc(path: Path) -> list[Example]:
  """Every active IPTC concept's "label. definition" as a positive example of its top-level root."""
  with open(path, newline="", encoding="utf-8") as handle:
    rows = list(csv.DictReader(handle))
  broader = {row["qcode"]: row["broader"] for row in rows}
  examples = []
  for row in rows:
    if row.get("retired") or not row.get("label_en_GB"):
      continue
    root = row["qcode"]
    hops = 0
    while broader.get(root) and hops < 10:
      root = broader[root]
      hops += 1
    if root not in INDEX:
      continue
    text = row["label_en_GB"].strip()
    definition = (row.get("definition_en_GB") or "").strip()
    if definition:
      text = f"{text[:1].upper()}{text[1:]}. {definition}"
    target, weight, any_of = single_topic_target(root, [])
    weight[weight < 1.0] = 0.5  # concepts of one root may touch another (e.g. sport business)
    examples.append(Example(text, target, weight, any_of, "iptc", root))
  return examples


_REUTERS = re.compile(r"<REUTERS\b[^>]*>(.*?)</REUTERS>", re.S)


def _field(block: str, tag: str) -> str:
  match = re.search(rf"<{tag}>(.*?)</{tag}>", block, re.S)
  return match.group(1) if match else ""


def load_reuters(directory: Path, per_tag: int = 150, limit: int = 1500, seed: int = 0,
                 files: Iterable[Path] | None = None) -> list[Example]:
  """Reuters-21578 stories with TOPICS tags, all economic -> 04 (``jobs`` -> 04 + 09).

  At most ``per_tag`` stories per first tag (so ``earn``/``acq`` do not dominate) and ``limit`` in all.
  """
  by_tag: dict[str, list[tuple[str, list[str]]]] = {}
  for path in sorted(files or directory.glob("reut2-*.sgm")):
    raw = path.read_bytes().decode("latin-1")
    for block in _REUTERS.findall(raw):
      tags = re.findall(r"<D>(.*?)</D>", _field(block, "TOPICS"))
      body = _field(block, "BODY")
      if not tags or len(body) < 200:
        continue
      title = html.unescape(_field(block, "TITLE")).strip()
      body = html.unescape(body).replace("\x03", "").strip()
      body = re.sub(r"\s*Reuter\s*$", "", body)
      text = (title.title() + ". " if title else "") + re.sub(r"\s+", " ", body)
      by_tag.setdefault(tags[0], []).append((text, tags))
  rng = np.random.default_rng(seed)
  picked: list[tuple[str, list[str]]] = []
  for tag in sorted(by_tag):
    items = by_tag[tag]
    order = rng.permutation(len(items))[:per_tag]
    picked.extend(items[i] for i in sorted(order))
  if len(picked) > limit:
    picked = [picked[i] for i in sorted(rng.permutation(len(picked))[:limit])]
  examples = []
  for text, tags in picked:
    target, weight, any_of = single_topic_target(medtop(4), [medtop(1), medtop(10), medtop(15), medtop(17)])
    for tag in tags:
      extra = REUTERS_EXTRA.get(tag)
      if extra:
        target[INDEX[extra]] = 1.0
        weight[INDEX[extra]] = 1.0
    examples.append(Example(text, target, weight, any_of, "reuters", ",".join(tags)))
  return examples


#: Topics a seed text is surely not about unless it names them (the desks news copy is most often
#: confused between).
SEED_NEGATIVES = (medtop(4), medtop(13), medtop(15))


def load_seed(path: Path, secondary_target: float = 0.6, negatives: Iterable[str] = SEED_NEGATIVES
              ) -> list[Example]:
  """News-style examples written for this project (JSONL ``{"text", "labels"}``): each names the
  topic(s) it is about, the main one first; ``negatives`` (by default economy, science/technology and
  sport) are sure negatives unless named. Topics after the first get ``secondary_target`` (below 1: the
  main topic should rank first)."""
  examples = []
  with open(path, encoding="utf-8") as handle:
    for line in handle:
      if not line.strip():
        continue
      row = json.loads(line)
      codes = [code for code in row["labels"] if code in INDEX]
      target, weight, any_of = single_topic_target(codes[0], [c for c in negatives if c not in codes])
      for code in codes[1:]:
        target[INDEX[code]] = secondary_target
        weight[INDEX[code]] = 1.0
      examples.append(Example(row["text"], target, weight, any_of, "seed", ",".join(codes)))
  return examples


def concept_teacher(concept_vectors: np.ndarray, concept_roots: np.ndarray, vectors: np.ndarray, k: int = 3
                    ) -> np.ndarray:
  """Zero-shot topic affinities: for each root, the mean cosine similarity of a text to its ``k`` nearest
  IPTC concepts of that root ([n, 17])."""
  concepts = concept_vectors / np.linalg.norm(concept_vectors, axis=1, keepdims=True)
  texts = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
  sim = texts @ concepts.T
  out = np.full((len(texts), N_TOPICS), -1.0, np.float32)
  for root in range(N_TOPICS):
    columns = sim[:, concept_roots == root]
    if columns.shape[1]:
      top = np.sort(columns, axis=1)[:, -k:]
      out[:, root] = top.mean(axis=1)
  return out


def add_world_pseudo_labels(examples: list[Example], affinities: np.ndarray, weight: float = 1.0
                            ) -> dict[str, int]:
  """Give every set-valued (World) example a positive for its allowed topic the teacher likes best.

  Without it the noisy-OR lets one topic (e.g. conflict) soak up all World stories; the teacher spreads
  them over politics, conflict, crime, disaster, ... as their content says."""
  counts: dict[str, int] = {}
  for example, row in zip(examples, affinities, strict=True):
    if not example.any_of.any():
      continue
    allowed = np.flatnonzero(example.any_of)
    best = int(allowed[np.argmax(row[allowed])])
    example.target[best] = 1.0
    example.weight[best] = weight
    counts[CODES[best]] = counts.get(CODES[best], 0) + 1
  return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
