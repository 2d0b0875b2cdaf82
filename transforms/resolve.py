"""Resolve stage: from mentions to entities, places and the countries a story is about.

Runs after NER on every story whose NER applied (no network; the gazetteer is built once per process).

**In-story resolution.** Mentions of one entity in one story get one ``entity_key`` and ``canonical``:

- PER: titles ("President", "Secretary of State", "Mr"...) and possessives are stripped; a mention of
  one word ("Tillerson") joins the person of the story whose surname it is (the one named last before
  it, else the first after it); the canonical name is the fullest form used ("Rex Tillerson").
- ORG: names from the maintained list (``data/knowledge.json``: "EC", "European Community", "Common
  Market") take the list's name; an acronym the story spells out ("Securities and Exchange Commission
  (SEC)") or whose letters are the initials of another organisation of the story joins it; company
  suffixes ("Corp", "Inc") do not make a new organisation, and a one-word short form ("Chrysler") joins
  the one organisation of the story it starts.
- LOC: geocoded (below); mentions of one place share its key, the canonical name is the gazetteer's.
- MISC: one entity per normalised name; a MISC mention that is a country's name ("U.S. officials") takes
  the country's key and name (not its place columns).

**Headline mentions** (``Entity.field == "headline"``, offsets into the headline) take part like the
body's: the story reads headline first, then body, so "BAKER" in a headline joins the body's "James
Baker", and a headline mention tagged ORG or MISC whose words are the name or surname of exactly one
person of the story is that person (relabelled PER: a headline is read without context, often in
capitals). A name is shown as a reader writes it: forms not in capitals are preferred, and a person named
in capitals only is title-cased ("YEUTTER" -> "Yeutter"); keys do not depend on case. Nothing links
stories: a person only ever named by surname, as in a headline-only brief, keeps ``per:<surname>``.

**Keys** are deterministic, the same in every story and every run:

- ``geo:<geonameid>`` for a geocoded place ("U.S.", "US", "United States", "America" ->
  ``geo:6252001``); ``loc:<name>`` for a place not geocoded;
- ``org:<name>`` from the maintained name, else the fullest form without company suffixes
  ("SEC" -> ``org:securities-and-exchange-commission``);
- ``per:<name>`` from the canonical name: accents stripped, lower case, titles, initials and suffixes
  ("Jr") dropped ("James A. Baker" -> ``per:james-baker``); a person only ever named by surname in a
  story gets ``per:<surname>``;
- ``misc:<name>``.

``<name>`` is :func:`slug`: the normalised name's words joined by ``-``.

**Geocoding** (LOC mentions and the dateline place) against :mod:`transforms.gazetteer`: candidates of the
normalised name are scored by population (log10), a bonus for a country and for a name that is the
place's own (not one of GeoNames' alternate names), and the story's context: the countries of its
dateline and of its unambiguous places, and the dateline's state or province ("Paris" in a story
datelined Texas is Paris, Texas). A maintained preference ("Washington" -> the city) settles a few
well-known names. A mention is left ungeocoded rather than guessed, with ``geo_status``:
``not_in_gazetteer``, ``ambiguous`` (two candidates in different countries score alike and the
story does not tell them apart) or ``organisation`` (the name is a maintained organisation's, such as
"European Community": the mention takes the organisation's key).

**Countries of the story** (``Story.countries``), from the story's text only: each country scores
:data:`WEIGHTS` for the dateline, the headline, the first sentence and each mention of the body (a place
counts for its country; the headline's places count as the headline); countries reaching
:data:`MIN_COUNTRY_SCORE` are kept, most salient first. The source's own place tags (``Story.places``) are
never read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Sequence

import apache_beam as beam

from schemas.records import FIELD_HEADLINE, STATUS_APPLIED, STATUS_FAILED, DeadLetter, Entity, GeoPlace, Story
from transforms import gazetteer as gz
from transforms import spec as sp

STAGE = "resolve"
METRICS_NAMESPACE = "wirestream.resolve"

GEO_RESOLVED = "resolved"
GEO_NOT_FOUND = "not_in_gazetteer"
GEO_AMBIGUOUS = "ambiguous"
#: A LOC mention that names an organisation of the maintained list ("European Community"): keyed as one.
GEO_ORGANISATION = "organisation"

#: Salience of a country: where it is named.
WEIGHTS = {"dateline": 3.0, "headline": 2.0, "lead": 1.0, "mention": 1.0}
#: A country is one the story is about from this score on.
MIN_COUNTRY_SCORE = 2.0
#: Cities named in a headline count from this population on (the headline's words are matched against
#: the gazetteer, besides its NER mentions, without context).
HEADLINE_CITY_POPULATION = 1_000_000
#: Score bonuses of the geocoder.
COUNTRY_BONUS = 1.0
ALTERNATE_PENALTY = 1.5
CONTEXT_COUNTRY_BONUS = 1.0
CONTEXT_ADMIN_BONUS = 1.0
#: Two candidates in different countries closer than this are ambiguous (without context).
AMBIGUITY_MARGIN = 0.5

_POSSESSIVE = re.compile(r"(?:['\u2019]s|s['\u2019])$", re.I)
_WORD = re.compile(r"[^\W_]+(?:[.'\u2019&-][^\W_]+)*\.?", re.U)
_GENERIC_ORG_WORDS = frozenset("""bank national first general international federal united american new world
british japanese european central state chinese""".split())


def slug(text: str) -> str:
  """Key form of a name: normalised, words joined by ``-`` (a name in another script keeps its letters,
  case folded; one without letters or digits becomes a short hash)."""
  out = re.sub(r"[^0-9a-z]+", "-", gz.normalize_name(text).replace("'", "")).strip("-")
  if not out:
    out = re.sub(r"[\W_]+", "-", text.casefold()).strip("-")
  return out or "h" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


@dataclasses.dataclass
class Knowledge:
  """The maintained lists of ``data/knowledge.json`` in lookup form."""

  titles: tuple[tuple[str, ...], ...]
  name_suffixes: frozenset[str]
  company_suffixes: frozenset[str]
  stopwords: frozenset[str]
  #: normalised name or alias -> the organisation's name
  organizations: dict[str, str]
  #: normalised demonym -> country code
  demonyms: dict[str, str]
  #: normalised name -> geonameid (well-known ambiguous names, landmarks such as "White House")
  preferences: dict[str, int]

  @classmethod
  def from_json(cls, data: dict) -> Knowledge:
    orgs: dict[str, str] = {}
    for org in data.get("organizations", []):
      for name in [org["name"], *org.get("aliases", [])]:
        orgs.setdefault(gz.normalize_name(name), org["name"])
    titles = sorted({tuple(gz.normalize_name(t).split()) for t in data.get("titles", [])}, key=len, reverse=True)
    return cls(
        titles=tuple(titles),
        name_suffixes=frozenset(data.get("name_suffixes", [])),
        company_suffixes=frozenset(data.get("company_suffixes", [])),
        stopwords=frozenset(data.get("stopwords", [])),
        organizations=orgs,
        demonyms={gz.normalize_name(d): code for code, names in data.get("demonyms", {}).items() for d in names},
        preferences={gz.normalize_name(k): int(v) for section in ("place_preferences", "landmarks")
                     for k, v in data.get(section, {}).items()},
    )


@dataclasses.dataclass
class Resolver:
  """The gazetteer and the maintained lists (one per process)."""

  gazetteer: gz.Gazetteer
  knowledge: Knowledge


def load_resolver() -> Resolver:
  """The process-wide resolver: the gazetteer and the lists are built on first use, then shared like
  the models (:mod:`transforms.model_cache`, keyed by the fingerprint of the files they come from)."""
  from transforms import model_cache

  def build() -> Resolver:
    knowledge = gz.load_knowledge()
    return Resolver(gz.build_gazetteer(knowledge=knowledge), Knowledge.from_json(knowledge))

  return model_cache.load_once(("resolver", sp.fingerprint(gz.source_files())), build)


# --- Names ---------------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
  return _WORD.findall(text)


def all_caps(text: str) -> bool:
  """True for a name written in capitals only ("TREASURY'S BAKER"), as wire headlines are."""
  letters = [c for c in text if c.isalpha()]
  return len(letters) > 1 and all(c.isupper() for c in letters)


def display_name(name: str) -> str:
  """A person's name as a reader writes it: an all-capitals name in title case ("HOWARD BAKER" ->
  "Howard Baker", "O'NEILL" -> "O'Neill"); any other name unchanged."""
  if not all_caps(name):
    return name
  return re.sub(r"[^\W\d_]+", lambda m: m.group(0)[0] + m.group(0)[1:].lower(), name)


def position(entity: Entity) -> tuple[int, int]:
  """Where a mention is in the story read as headline then body (for ordering mentions)."""
  return (0 if entity.field == FIELD_HEADLINE else 1, entity.start_char)


def strip_possessive(text: str) -> str:
  """``text`` without a final "'s" (or "s'"); unchanged when nothing else would remain."""
  return _POSSESSIVE.sub("", text.strip()).strip() or text.strip()


def clean_person(text: str, knowledge: Knowledge) -> str:
  """A person's name without possessive and leading titles: "President Donald Trump's" -> "Donald Trump"."""
  tokens = words(strip_possessive(text))
  changed = True
  while changed and len(tokens) > 1:
    changed = False
    folded = [gz.normalize_name(t) for t in tokens]
    for title in knowledge.titles:
      if len(title) < len(tokens) and tuple(folded[:len(title)]) == title:
        tokens = tokens[len(title):]
        changed = True
        break
  return " ".join(tokens) or text.strip()


def person_tokens(name: str, knowledge: Knowledge) -> list[str]:
  """Key words of a person's name: folded, initials and suffixes dropped."""
  out = [gz.normalize_name(t) for t in words(name)]
  out = [t for t in out if t and len(t.replace(".", "")) > 1 and t not in knowledge.name_suffixes]
  return out or [slug(name)]


def org_core(name: str, knowledge: Knowledge) -> str:
  """An organisation's name without company suffixes, normalised."""
  tokens = gz.normalize_name(name).replace(",", " ").split()
  while len(tokens) > 1 and tokens[-1] in knowledge.company_suffixes:
    tokens.pop()
  return " ".join(tokens)


def initials(name: str, knowledge: Knowledge) -> str:
  return "".join(t[0] for t in gz.normalize_name(name).split() if t not in knowledge.stopwords and t[0].isalnum())


def _is_acronym(text: str) -> bool:
  letters = text.replace(".", "").replace("&", "")
  return 2 <= len(letters) <= 8 and letters.isalpha() and sum(c.isupper() for c in letters) >= len(letters) - 1 \
      and letters[0].isupper()


# --- Geocoding -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Context:
  countries: set[str]
  dateline: gz.Place | None = None


def _score(candidate: gz.Candidate, context: _Context) -> float:
  place = candidate.place
  score = gz.log_population(place)
  if place.feature == gz.FEATURE_COUNTRY and candidate.primary:
    score += COUNTRY_BONUS
  if not candidate.primary:
    score -= ALTERNATE_PENALTY
  return score + _context_score(place, context)


def _context_score(place: gz.Place, context: _Context) -> float:
  """What the story says for ``place``: its country is the story's, its state the dateline's."""
  score = 0.0
  if place.country_code and place.country_code in context.countries:
    score += CONTEXT_COUNTRY_BONUS
  line = context.dateline
  if line is not None and place.feature == gz.FEATURE_CITY and line.country_code == place.country_code \
      and line.admin1 and line.admin1 == place.admin1:
    score += CONTEXT_ADMIN_BONUS
  if line is not None and place.feature == gz.FEATURE_ADMIN and line.country_code == place.country_code \
      and line.admin1 == place.admin1:
    score += CONTEXT_ADMIN_BONUS
  return score


def geocode(name: str, resolver: Resolver, context: _Context) -> tuple[gz.Place | None, str]:
  """The place ``name`` refers to in this context, or ``(None, reason)``."""
  key = gz.normalize_name(strip_possessive(name))
  preferred = resolver.knowledge.preferences.get(key)
  if preferred is not None and preferred in resolver.gazetteer.by_id:
    return resolver.gazetteer.by_id[preferred], GEO_RESOLVED
  candidates = [c for c in resolver.gazetteer.lookup_normalized(key)
                if c.place.feature != gz.FEATURE_CONTINENT or c.primary]
  if not candidates or key in resolver.knowledge.stopwords:
    return None, GEO_NOT_FOUND
  ranked = sorted(candidates, key=lambda c: (-_score(c, context), c.place.geonameid))
  best = ranked[0]
  for other in ranked[1:]:
    if other.place.country_code != best.place.country_code:
      told_apart = _context_score(best.place, context) != _context_score(other.place, context)
      if not told_apart and _score(best, context) - _score(other, context) < AMBIGUITY_MARGIN:
        return None, GEO_AMBIGUOUS
      break
  return best.place, GEO_RESOLVED


def dateline_geocode(story: Story, resolver: Resolver) -> gz.Place | None:
  """The dateline's place: "PORTLAND, Ore., Feb 26" is the Portland of Oregon; a place not in the
  gazetteer falls back to its state or country ("BRANCHVILLE, N.J." -> New Jersey)."""
  if not story.dateline_place:
    return None
  parts = [p.strip() for p in (story.dateline or "").split(",")]
  region = None
  if len(parts) > 1 and gz.normalize_name(parts[0]) == gz.normalize_name(story.dateline_place):
    found, _ = geocode(parts[1], resolver, _Context(set()))
    if found is not None and found.feature in (gz.FEATURE_ADMIN, gz.FEATURE_COUNTRY):
      region = found
  if region is None:
    return geocode(story.dateline_place, resolver, _Context(set()))[0]
  context = _Context({region.country_code} if region.country_code else set(),
                     region if region.feature == gz.FEATURE_ADMIN else None)
  place, _ = geocode(story.dateline_place, resolver, context)
  if place is None or place.country_code != region.country_code or (
      region.feature == gz.FEATURE_ADMIN and place.feature == gz.FEATURE_CITY and place.admin1 != region.admin1):
    return region
  return place


def _unambiguous_country(name: str, resolver: Resolver) -> str | None:
  """The country of ``name`` when every primary candidate lies in one country (or it names a country)."""
  candidates = resolver.gazetteer.lookup(strip_possessive(name))
  for c in candidates:
    if c.primary and c.place.feature == gz.FEATURE_COUNTRY:
      return c.place.country_code
  codes = {c.place.country_code for c in candidates if c.primary}
  return codes.pop() if len(codes) == 1 else None


def _country_named(entity: Entity, resolver: Resolver) -> gz.Place | None:
  """The country a MISC mention names outright ("U.S." in "U.S. officials"), else None: it takes the
  country's key, though not its place columns, which stay the LOC mentions' (and the story countries')."""
  if entity.label != "MISC":
    return None
  return next((c.place for c in resolver.gazetteer.lookup(strip_possessive(entity.text))
               if c.primary and c.place.feature == gz.FEATURE_COUNTRY), None)


def _geo(place: gz.Place) -> GeoPlace:
  return GeoPlace(place.geonameid, place.name, place.country_code, place.latitude, place.longitude, place.feature)


# --- The story ---------------------------------------------------------------------------------------------


def resolve_story(story: Story, resolver: Resolver) -> Story:
  """``story`` with its entities resolved and its countries set (a new Story; the input is unchanged)."""
  knowledge = resolver.knowledge
  entities = [dataclasses.replace(e) for e in story.entities or ()]
  order = sorted(range(len(entities)), key=lambda i: position(entities[i]))

  # Context for geocoding: the dateline place, then the countries of unambiguous places.
  context = _Context(set())
  dateline_place = dateline_geocode(story, resolver)
  if dateline_place is not None:
    context.dateline = dateline_place
    if dateline_place.country_code:
      context.countries.add(dateline_place.country_code)
  for e in entities:
    if e.label == "LOC" and gz.normalize_name(strip_possessive(e.text)) not in knowledge.organizations:
      code = _unambiguous_country(e.text, resolver)
      if code:
        context.countries.add(code)

  persons: list[dict] = []  # {"tokens", "names", "offsets" (positions of its full-name mentions, ascending)}
  orgs: dict[str, dict] = {}  # core name -> {"forms", "maintained" (the list's name or None)}
  acronyms: dict[str, str] = {}  # acronym -> core
  places: dict[str, tuple[gz.Place | None, str]] = {}

  def person_for(tokens: list[str], start: tuple[int, int]) -> dict:
    if len(tokens) >= 2:
      for p in persons:
        if p["tokens"] == tokens or (len(p["tokens"]) >= 2 and p["tokens"][-len(tokens):] == tokens):
          return p
    else:
      matches = [p for p in persons if len(p["tokens"]) >= 2 and tokens[0] in (p["tokens"][-1], p["tokens"][0])]
      surname = [p for p in matches if p["tokens"][-1] == tokens[0]] or matches
      if surname:
        before = [p for p in surname if p["offsets"][0] < start]
        return max(before, key=lambda p: max(o for o in p["offsets"] if o < start)) if before else surname[0]
      for p in persons:
        if p["tokens"] == tokens:
          return p
    person = {"tokens": tokens, "names": [], "offsets": []}
    persons.append(person)
    return person

  # Persons: full names first (so that a surname seen before the full name still joins it).
  person_of: dict[int, dict] = {}
  per = [i for i in order if entities[i].label == "PER"]
  cleaned = {i: clean_person(entities[i].text, knowledge) for i in per}
  for i in sorted(per, key=lambda i: (len(person_tokens(cleaned[i], knowledge)) < 2, position(entities[i]))):
    tokens = person_tokens(cleaned[i], knowledge)
    person = person_for(tokens, position(entities[i]))
    person["names"].append(cleaned[i])
    if len(tokens) >= 2 or len(person["tokens"]) < 2:
      person["offsets"].append(position(entities[i]))
      person["offsets"].sort()
    person_of[i] = person
  # A headline mention tagged ORG or MISC that names a person of the story ("TREASURY'S BAKER", with
  # "James Baker" in the body) is that person: a headline is read without context, often in capitals.
  # Not when an organisation of the body starts with the name ("FORD" with "Ford Motor Co" in the body).
  body_orgs = {org_core(strip_possessive(e.text), knowledge).split()[0] for e in entities
               if e.label == "ORG" and e.field != FIELD_HEADLINE and org_core(strip_possessive(e.text), knowledge)}
  for i in order:
    e = entities[i]
    if e.field != FIELD_HEADLINE or e.label not in ("ORG", "MISC") \
        or gz.normalize_name(strip_possessive(e.text)) in knowledge.organizations:
      continue
    name = clean_person(e.text, knowledge)
    tokens = person_tokens(name, knowledge)
    if tokens[0] in body_orgs:
      continue
    named = [p for p in persons if len(p["tokens"]) >= 2 and (
        p["tokens"] == tokens or (len(tokens) == 1 and p["tokens"][-1] == tokens[0]))]
    if len(named) == 1:
      e.label = "PER"
      named[0]["names"].append(name)
      person_of[i] = named[0]
  for person in persons:
    names = person["names"]
    best = max(names, key=lambda n: (len(words(n)), not all_caps(n), len(n), -names.index(n)))
    person["canonical"] = display_name(best)
    full = max((person_tokens(n, knowledge) for n in names), key=len)
    person["key"] = "per:" + slug(" ".join(full))

  # Organisations: maintained names, spelled-out acronyms, company suffixes, initials, short forms.
  org_idx = [i for i in order if entities[i].label != "PER"
             and (entities[i].label == "ORG" or gz.normalize_name(strip_possessive(entities[i].text))
                  in knowledge.organizations)]
  org_core_of: dict[int, str] = {}
  for i in org_idx:
    e = entities[i]
    text = strip_possessive(e.text)
    known = knowledge.organizations.get(gz.normalize_name(text))
    core = org_core(known or text, knowledge)
    org = orgs.setdefault(core, {"forms": [], "maintained": known})
    org["forms"].append(text)
    org_core_of[i] = core
    after = story.text_of(e)[e.end_char:e.end_char + 16]
    spelled = re.match(r"\s*\(([A-Z][A-Za-z&.]{1,9})\)", after)
    if spelled and not known and len(words(text)) >= 2:
      acronyms.setdefault(spelled.group(1).replace(".", ""), core)
  for i in org_idx:
    core = org_core_of[i]
    org = orgs[core]
    text = strip_possessive(entities[i].text)
    target = None
    acronym = _is_acronym(text)
    if acronym and not org["maintained"]:
      letters = text.replace(".", "")
      target = acronyms.get(letters)
      if target is None:
        matches = {c for c in orgs if c != core and len(c.split()) >= 2 and initials(c, knowledge) == letters.lower()}
        target = matches.pop() if len(matches) == 1 else None
    # a word in a capitals-only headline ("CHRYSLER") may be a short form as well as an acronym
    capitals = entities[i].field == FIELD_HEADLINE and all_caps(story.headline or "")
    if target is None and (not acronym or capitals) and not org["maintained"] and len(core.split()) == 1 \
        and len(core) >= 4 and core not in _GENERIC_ORG_WORDS:
      matches = {c for c in orgs if c != core and len(c.split()) >= 2 and c.split()[0] == core}
      target = matches.pop() if len(matches) == 1 else None
    if target is not None and target != core:
      org["forms"].remove(text)
      orgs[target]["forms"].append(text)
      org_core_of[i] = target
  for org in orgs.values():
    if not org["forms"]:  # every mention joined another organisation
      continue
    if org["maintained"]:
      org["canonical"] = org["maintained"]
    else:
      forms = [f for f in org["forms"] if not _is_acronym(f)] or org["forms"]
      org["canonical"] = max(forms, key=lambda f: (not all_caps(f), len(words(f)), len(f)))
    org["key"] = "org:" + slug(org_core(org["canonical"], knowledge))

  for i in order:
    e = entities[i]
    if i in person_of:
      person = person_of[i]
      e.entity_key, e.canonical = person["key"], person["canonical"]
    elif i in org_core_of:
      org = orgs[org_core_of[i]]
      e.entity_key, e.canonical = org["key"], org["canonical"]
      if e.label == "LOC":
        e.geo_status = GEO_ORGANISATION
    elif e.label == "LOC":
      name = gz.normalize_name(strip_possessive(e.text))
      if name not in places:
        places[name] = geocode(e.text, resolver, context)
      place, status = places[name]
      e.geo_status = status
      if place is not None:
        e.place = _geo(place)
        e.entity_key, e.canonical = f"geo:{place.geonameid}", place.name
      else:
        e.entity_key, e.canonical = "loc:" + slug(e.text), strip_possessive(e.text)
    elif (country := _country_named(e, resolver)) is not None:
      e.entity_key, e.canonical = f"geo:{country.geonameid}", country.name
    else:
      e.entity_key, e.canonical = f"{e.label.lower()}:" + slug(strip_possessive(e.text)), strip_possessive(e.text)
  # A name kept as written (MISC, a place not geocoded): the first form not in capitals names the entity.
  written: dict[str, str] = {}
  for i in order:
    e = entities[i]
    if e.entity_key and e.entity_key.split(":")[0] in ("misc", "loc") and e.canonical:
      if e.entity_key not in written or (all_caps(written[e.entity_key]) and not all_caps(e.canonical)):
        written[e.entity_key] = e.canonical
  for e in entities:
    if e.entity_key in written:
      e.canonical = written[e.entity_key]

  countries = story_countries(story, entities, dateline_place, resolver)
  return dataclasses.replace(story, entities=entities, countries=countries, resolve_status=STATUS_APPLIED)


def _headline_places(headline: str, entities: Sequence[Entity], resolver: Resolver) -> list[str]:
  """Country codes named in the headline: the story's geocoded places, names and adjectives of countries
  ("JAPANESE"), US states, and cities of :data:`HEADLINE_CITY_POPULATION` people or more."""
  known: dict[str, str] = {}
  for e in entities:
    if e.place is not None and e.place.country_code:
      known[gz.normalize_name(strip_possessive(e.text))] = e.place.country_code
  tokens = [gz.normalize_name(t) for t in words(headline)]
  tokens = [t for t in tokens if t]
  found: list[str] = []
  i = 0
  while i < len(tokens):
    for n in (4, 3, 2, 1):
      if i + n > len(tokens):
        continue
      name = " ".join(tokens[i:i + n])
      code = known.get(name) or resolver.knowledge.demonyms.get(name)
      if code is None:
        for c in resolver.gazetteer.lookup_normalized(name):
          if c.primary and (c.place.feature in (gz.FEATURE_COUNTRY, gz.FEATURE_ADMIN) or (
              c.place.feature == gz.FEATURE_CITY and c.place.population >= HEADLINE_CITY_POPULATION)):
            code = c.place.country_code
            break
      if code:
        found.append(code)
        i += n - 1
        break
    i += 1
  return found


def story_countries(story: Story, entities: Sequence[Entity], dateline_place: gz.Place | None,
                    resolver: Resolver) -> list[str]:
  """ISO codes of the countries the story is about, most salient first (see the module's doc)."""
  scores: dict[str, float] = {}
  first: dict[str, int] = {}

  def add(code: str | None, weight: float, at: int) -> None:
    if not code:
      return
    scores[code] = scores.get(code, 0.0) + weight
    first[code] = min(first.get(code, at), at)

  if dateline_place is not None:
    add(dateline_place.country_code, WEIGHTS["dateline"], -2)
  for code in _headline_places(story.headline or "", entities, resolver):
    add(code, WEIGHTS["headline"], -1)
  for e in entities:
    if e.place is not None and e.field != FIELD_HEADLINE:  # the headline is scored above
      weight = WEIGHTS["mention"] + (WEIGHTS["lead"] if e.sentence_index == 0 else 0.0)
      add(e.place.country_code, weight, e.start_char)
  kept = [code for code, score in scores.items() if score >= MIN_COUNTRY_SCORE]
  return sorted(kept, key=lambda code: (-scores[code], first[code], code))


# --- Beam ----------------------------------------------------------------------------------------------------


class _Resolve(beam.DoFn):
  """Resolves the entities of each story whose NER applied; other stories pass unchanged."""

  def __init__(self) -> None:
    self._resolver: Resolver | None = None
    self._applied = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "stories_applied")
    self._failed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "stories_failed")
    self._geocoded = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "places_geocoded")

  def setup(self) -> None:
    self._resolver = load_resolver()

  def process(self, story: Story) -> Iterable:
    if story.ner_status != STATUS_APPLIED or story.entities is None:
      yield story
      return
    try:
      resolved = resolve_story(story, self._resolver)
    except Exception as error:  # noqa: BLE001 - one bad story never stops the stage
      self._failed.inc()
      text = story.body if story.body.strip() else (story.headline or "")
      yield beam.pvalue.TaggedOutput("errors", DeadLetter.from_raw(
          text.encode("utf-8"), uri=story.input_uri, locator=story.locator, stage=STAGE, error=error,
          message_id=story.message_id, story_id=story.story_id))
      yield dataclasses.replace(story, resolve_status=STATUS_FAILED)
      return
    self._applied.inc()
    self._geocoded.inc(sum(1 for e in resolved.entities if e.place is not None))
    yield resolved


class ResolveEntities(beam.PTransform):
  """PCollection[Story] -> (PCollection[Story] with entity keys, places and ``countries``,
  PCollection[DeadLetter]). Every story comes out exactly once; windowing is left as it is."""

  def expand(self, stories):
    out = stories | "Resolve" >> beam.ParDo(_Resolve()).with_outputs("errors", main="stories")
    return out.stories, out.errors
