"""``wirestream eval resolve``: the resolve stage against the editors' tags of Reuters-21578.

Each story is parsed, its source tags are hidden (``places`` and ``source_subjects`` emptied), NER and
the resolve stage run on it as in the pipeline, and the result is compared with the story's ``PLACES``,
``PEOPLE`` and ``ORGS`` tags, mapped by the tables below (written from the collection's category lists,
not fitted to any file):

- countries: ``Story.countries`` against ``PLACES`` (ISO codes), precision, recall and F1 over the
  (story, country) pairs of the stories that have places;
- people: share of (story, ``PEOPLE`` code) pairs for which the story has a PER entity whose canonical
  name matches the code (the code's words end the name's, or the name's words end the code's: ``volcker``
  matches "Paul Volcker", "Baker" matches ``james-baker``; initials dropped);
- organisations: share of (story, ``ORGS`` code) pairs for which the story has an entity whose key or
  canonical name is one of the code's names (:data:`ORG_NAMES`, keyed like the stage keys them).

People and organisations are scored over all tagged stories and over those with a body
(``*_with_body``); ``people_recall_headline_only`` is the people's recall over the stories that are a
headline alone (a Reuters BRIEF), which NER reads from the headline only.

It also scores the plain baseline (NER LOC mentions and the dateline, matched exactly against country
names and cities of 100,000 people or more, no context) and times NER and the resolve stage. The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipelines.training.command import command

#: Reuters-21578 PLACES codes -> ISO 3166-1 alpha-2 (today's countries: both Germanies are DE, the
#: USSR is RU, Czechoslovakia CZ, Yugoslavia RS, both Yemens YE, Zaire CD, Kampuchea KH, Burma MM).
PLACE_CODES = {
    "afghanistan": "AF", "albania": "AL", "algeria": "DZ", "american-samoa": "AS", "andorra": "AD",
    "angola": "AO", "anguilla": "AI", "antigua": "AG", "argentina": "AR", "aruba": "AW", "australia": "AU",
    "austria": "AT", "bahamas": "BS", "bahrain": "BH", "bangladesh": "BD", "barbados": "BB",
    "belgium": "BE", "belize": "BZ", "benin": "BJ", "bermuda": "BM", "bhutan": "BT", "bolivia": "BO",
    "botswana": "BW", "brazil": "BR", "british-virgin-islands": "VG", "brunei": "BN", "bulgaria": "BG",
    "burkina-faso": "BF", "burma": "MM", "burundi": "BI", "cameroon": "CM", "canada": "CA",
    "cape-verde": "CV", "cayman-islands": "KY", "central-african-republic": "CF", "chad": "TD",
    "chile": "CL", "china": "CN", "colombia": "CO", "congo": "CG", "costa-rica": "CR", "cuba": "CU",
    "cyprus": "CY", "czechoslovakia": "CZ", "denmark": "DK", "djibouti": "DJ", "dominica": "DM",
    "dominican-republic": "DO", "east-germany": "DE", "ecuador": "EC", "egypt": "EG", "el-salvador": "SV",
    "equatorial-guinea": "GQ", "ethiopia": "ET", "fiji": "FJ", "finland": "FI", "france": "FR",
    "french-guiana": "GF", "gabon": "GA", "gambia": "GM", "ghana": "GH", "gibraltar": "GI", "greece": "GR",
    "grenada": "GD", "guadeloupe": "GP", "guam": "GU", "guatemala": "GT", "guinea": "GN",
    "guinea-bissau": "GW", "guyana": "GY", "haiti": "HT", "honduras": "HN", "hong-kong": "HK",
    "hungary": "HU", "iceland": "IS", "india": "IN", "indonesia": "ID", "iran": "IR", "iraq": "IQ",
    "ireland": "IE", "israel": "IL", "italy": "IT", "ivory-coast": "CI", "jamaica": "JM", "japan": "JP",
    "jordan": "JO", "kampuchea": "KH", "kenya": "KE", "kiribati": "KI", "kuwait": "KW", "laos": "LA",
    "lebanon": "LB", "lesotho": "LS", "liberia": "LR", "libya": "LY", "liechtenstein": "LI",
    "luxembourg": "LU", "macau": "MO", "madagascar": "MG", "malawi": "MW", "malaysia": "MY",
    "maldives": "MV", "mali": "ML", "malta": "MT", "martinique": "MQ", "mauritania": "MR",
    "mauritius": "MU", "mexico": "MX", "monaco": "MC", "mongolia": "MN", "montserrat": "MS",
    "morocco": "MA", "mozambique": "MZ", "namibia": "NA", "nauru": "NR", "nepal": "NP",
    "netherlands": "NL", "netherlands-antilles": "AN", "new-caledonia": "NC", "new-zealand": "NZ",
    "nicaragua": "NI", "niger": "NE", "nigeria": "NG", "north-korea": "KP", "norway": "NO", "oman": "OM",
    "pakistan": "PK", "panama": "PA", "papua-new-guinea": "PG", "paraguay": "PY", "peru": "PE",
    "philippines": "PH", "poland": "PL", "portugal": "PT", "qatar": "QA", "romania": "RO",
    "rwanda": "RW", "saudi-arabia": "SA", "senegal": "SN", "seychelles": "SC", "sierra-leone": "SL",
    "singapore": "SG", "solomon-islands": "SB", "somalia": "SO", "south-africa": "ZA",
    "south-korea": "KR", "spain": "ES", "sri-lanka": "LK", "st-lucia": "LC", "st-vincent": "VC",
    "sudan": "SD", "suriname": "SR", "swaziland": "SZ", "sweden": "SE", "switzerland": "CH",
    "syria": "SY", "taiwan": "TW", "tanzania": "TZ", "thailand": "TH", "togo": "TG", "tonga": "TO",
    "trinidad-tobago": "TT", "tunisia": "TN", "turkey": "TR", "uae": "AE", "uganda": "UG", "uk": "GB",
    "uruguay": "UY", "us-virgin-islands": "VI", "usa": "US", "ussr": "RU", "vanuatu": "VU",
    "vatican": "VA", "venezuela": "VE", "vietnam": "VN", "west-germany": "DE", "western-samoa": "WS",
    "yemen-arab-republic": "YE", "yemen-demo-republic": "YE", "yugoslavia": "RS", "zaire": "CD",
    "zambia": "ZM", "zimbabwe": "ZW",
}

#: Reuters-21578 ORGS codes -> the organisation's names (the first is its name, then other forms).
ORG_NAMES = {
    "adb-africa": ["African Development Bank", "AfDB", "ADB"],
    "adb-asia": ["Asian Development Bank", "AsDB", "ADB"],
    "aibd": ["Association of International Bond Dealers", "AIBD"],
    "asean": ["Association of Southeast Asian Nations", "ASEAN"],
    "atpc": ["Association of Tin Producing Countries", "ATPC"],
    "bis": ["Bank for International Settlements", "BIS"],
    "cipec": ["Intergovernmental Council of Copper Exporting Countries", "CIPEC"],
    "comecon": ["Council for Mutual Economic Assistance", "Comecon", "CMEA"],
    "ec": ["European Community", "EC", "European Economic Community", "EEC", "Common Market",
           "European Commission", "EC Commission"],
    "efta": ["European Free Trade Association", "EFTA"],
    "eib": ["European Investment Bank", "EIB"],
    "euratom": ["European Atomic Energy Community", "Euratom"],
    "fao": ["Food and Agriculture Organization", "FAO"],
    "gatt": ["General Agreement on Tariffs and Trade", "GATT"],
    "gcc": ["Gulf Cooperation Council", "GCC"],
    "iaea": ["International Atomic Energy Agency", "IAEA"],
    "icco": ["International Cocoa Organization", "ICCO"],
    "ico-coffee": ["International Coffee Organization", "ICO"],
    "ida": ["International Development Association", "IDA"],
    "iea": ["International Energy Agency", "IEA"],
    "imco": ["International Maritime Organization", "IMO", "IMCO"],
    "imf": ["International Monetary Fund", "IMF"],
    "inro": ["International Natural Rubber Organization", "INRO"],
    "isa": ["International Sugar Organization", "ISO", "International Sugar Agreement", "ISA"],
    "itc": ["International Tin Council", "ITC"],
    "iwc-wheat": ["International Wheat Council", "IWC"],
    "iwcc": ["International Wrought Copper Council", "IWCC"],
    "oapec": ["Organization of Arab Petroleum Exporting Countries", "OAPEC"],
    "oecd": ["Organization for Economic Cooperation and Development", "OECD"],
    "opec": ["Organization of Petroleum Exporting Countries", "OPEC"],
    "un": ["United Nations", "UN"],
    "unctad": ["United Nations Conference on Trade and Development", "UNCTAD"],
    "worldbank": ["World Bank", "International Bank for Reconstruction and Development", "IBRD"],
}

_TAG = {name: re.compile(rf"<{name}>(.*?)</{name}>", re.S) for name in ("PLACES", "PEOPLE", "ORGS")}
_D = re.compile(r"<D>(.*?)</D>", re.S)
_REUTERS = re.compile(r"<REUTERS\b([^>]*)>(.*?)</REUTERS>", re.S)
_NEWID = re.compile(r'NEWID="(\d+)"')


def read_tags(paths: Iterable[str | Path]) -> dict[str, dict[str, list[str]]]:
  """NEWID -> {"places", "people", "orgs"} codes of every story of the files."""
  out: dict[str, dict[str, list[str]]] = {}
  for path in paths:
    text = Path(path).read_text(encoding="latin-1")
    for attrs, body in _REUTERS.findall(text):
      newid = _NEWID.search(attrs)
      if not newid:
        continue
      tags = {}
      for name, pattern in _TAG.items():
        found = pattern.search(body)
        tags[name.lower()] = _D.findall(found.group(1)) if found else []
      out[newid.group(1)] = tags
  return out


def _name_words(name: str) -> list[str]:
  from transforms.gazetteer import normalize_name

  return [w for w in normalize_name(name).replace(".", " ").split() if len(w) > 1]


def person_matches(code: str, name: str) -> bool:
  """True when a PEOPLE code and a person's name agree (one's words end the other's)."""
  a, b = code.split("-"), _name_words(name)
  if not a or not b:
    return False
  n = min(len(a), len(b))
  return a[-n:] == b[-n:]


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
  p = tp / (tp + fp) if tp + fp else 0.0
  r = tp / (tp + fn) if tp + fn else 0.0
  f = 2 * p * r / (p + r) if p + r else 0.0
  return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4)}


def baseline_countries(story, gazetteer) -> list[str]:
  """The plain baseline: LOC mentions and the dateline matched exactly against country names and
  cities of 100,000 people or more, no context."""
  from transforms import gazetteer as gz

  found: list[str] = []
  names = [e.text for e in story.entities or () if e.label == "LOC"]
  for name in ([story.dateline_place] if story.dateline_place else []) + names:
    best = None
    for c in gazetteer.lookup(name):
      if not c.primary:
        continue
      if c.place.feature == gz.FEATURE_COUNTRY:
        best = c.place
        break
      if c.place.feature == gz.FEATURE_CITY and c.place.population >= 100_000 and (
          best is None or c.place.population > best.population):
        best = c.place
    if best is not None and best.country_code and best.country_code not in found:
      found.append(best.country_code)
  return found


def score(stories: Sequence, tags: dict[str, dict[str, list[str]]], resolver) -> dict:
  """Scores of resolved ``stories`` against their ``tags`` (see the module's doc)."""
  from transforms.resolve import Knowledge, org_core, slug

  knowledge: Knowledge = resolver.knowledge
  org_keys: dict[str, set[str]] = {}
  for code, names in ORG_NAMES.items():
    keys = set()
    for name in names:
      known = knowledge.organizations.get(_normal(name))
      keys.add("org:" + slug(org_core(known or name, knowledge)))
      keys.add(_normal(name))
    org_keys[code] = keys
  counts = {"countries": [0, 0, 0], "baseline": [0, 0, 0]}
  # [found, tags] over all stories, and over the stories with a body (NER has text to read)
  people = [0, 0, 0, 0]
  orgs = [0, 0, 0, 0]
  unmapped: set[str] = set()
  stories_with_places = 0
  for story in stories:
    gold = tags.get(story.guid or "")
    if gold is None:
      continue
    truth = set()
    for code in gold["places"]:
      if code in PLACE_CODES:
        truth.add(PLACE_CODES[code])
      else:
        unmapped.add(code)
        truth.add(code)
    if truth:
      stories_with_places += 1
      for name, predicted in (("countries", set(story.countries or ())),
                              ("baseline", set(baseline_countries(story, resolver.gazetteer)))):
        counts[name][0] += len(predicted & truth)
        counts[name][1] += len(predicted - truth)
        counts[name][2] += len(truth - predicted)
    entities = story.entities or ()
    persons = {e.canonical for e in entities if e.entity_key and e.entity_key.startswith("per:")}
    has_body = bool(story.body.strip())
    for code in gold["people"]:
      found = any(person_matches(code, name) for name in persons)
      people[0] += found
      people[1] += 1
      people[2] += found and has_body
      people[3] += has_body
    forms = {e.entity_key for e in entities} | {_normal(e.canonical or "") for e in entities}
    for code in gold["orgs"]:
      found = bool(org_keys.get(code, {code}) & forms)
      orgs[0] += found
      orgs[1] += 1
      orgs[2] += found and has_body
      orgs[3] += has_body
  return {
      "stories": len(stories),
      "stories_with_places": stories_with_places,
      "countries": _prf(*counts["countries"]),
      "baseline_countries": _prf(*counts["baseline"]),
      "people_recall": _ratio(people[0], people[1]),
      "people_tags": people[1],
      "people_recall_with_body": _ratio(people[2], people[3]),
      "people_tags_with_body": people[3],
      "people_recall_headline_only": _ratio(people[0] - people[2], people[1] - people[3]),
      "orgs_recall": _ratio(orgs[0], orgs[1]),
      "orgs_tags": orgs[1],
      "orgs_recall_with_body": _ratio(orgs[2], orgs[3]),
      "orgs_tags_with_body": orgs[3],
      "unmapped_places": sorted(unmapped),
  }


def _ratio(found: int, total: int) -> float | None:
  return round(found / total, 4) if total else None


def _normal(name: str) -> str:
  from transforms.gazetteer import normalize_name

  return normalize_name(name)


def hide_tags(story):
  """The story as the stage must see it: without the source's own tags."""
  return dataclasses.replace(story, places=[], source_subjects=[])


def run_stages(stories: Sequence, threads: int | None = None) -> tuple[list, dict[str, float]]:
  """NER and topics (the fused ONNX path, the headline read as the pipeline reads it, in the batches
  ``RunInference`` forms) and the resolve stage over ``stories``; the resolved stories and the seconds
  each took. A story with nothing to read is skipped as the pipeline skips it."""
  from pipelines.training.bench import story_batches
  from schemas.records import STATUS_APPLIED, STATUS_SKIPPED_EMPTY
  from transforms import core, enrich, resolve

  enrichment = core.load(threads=threads)
  started = time.perf_counter()
  tagged = []
  for batch in story_batches([s for s in stories if enrich.has_text(s)]):
    for story, result in zip(batch, enrich.enrich_stories(enrichment, batch), strict=True):
      tagged.append(dataclasses.replace(story, entities=result.entities, topics=result.topics,
                                        ner_status=STATUS_APPLIED, topics_status=STATUS_APPLIED))
  tagged += [dataclasses.replace(s, ner_status=STATUS_SKIPPED_EMPTY, topics_status=STATUS_SKIPPED_EMPTY)
             for s in stories if not enrich.has_text(s)]
  enrich_seconds = time.perf_counter() - started
  started = time.perf_counter()
  resolver = resolve.load_resolver()
  load_seconds = time.perf_counter() - started
  started = time.perf_counter()
  resolved = [resolve.resolve_story(story, resolver) if story.ner_status == STATUS_APPLIED else story
              for story in tagged]
  resolve_seconds = time.perf_counter() - started
  return resolved, {"enrich_seconds": round(enrich_seconds, 2), "gazetteer_load_seconds": round(load_seconds, 2),
                    "resolve_seconds": round(resolve_seconds, 3)}


def _run(args: argparse.Namespace) -> int:
  from pipelines.training.bench import load_stories
  from transforms import resolve

  missing = [path for path in args.reuters if not Path(path).is_file()]
  if missing:
    print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
    return 2
  stories = []
  for path in args.reuters:
    parsed, _ = load_stories(path)
    stories.extend(hide_tags(story) for story in parsed)
  if args.limit:
    stories = stories[:args.limit]
  resolved, seconds = run_stages(stories, threads=args.threads)
  report = score(resolved, read_tags(args.reuters), resolve.load_resolver())
  report.update(seconds)
  stage = seconds["resolve_seconds"] + seconds["gazetteer_load_seconds"]
  report["resolve_share"] = round(stage / (stage + seconds["enrich_seconds"]), 4)
  report["files"] = [Path(path).name for path in args.reuters]
  print(json.dumps(report))
  return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--reuters", nargs="+", required=True, metavar="FILE", help="Reuters-21578 .sgm files.")
  parser.add_argument("--limit", type=int, default=0, help="Score only the first N stories.")
  parser.add_argument("--threads", type=int, default=None, help="Inference threads.")


register, main = command(
    "resolve", "Score the resolve stage on Reuters-21578 PLACES/PEOPLE/ORGS.", __doc__, add_arguments, _run,
    prog="wirestream eval resolve")


if __name__ == "__main__":
  sys.exit(main())
