"""Parse stage: one test group per input format, on fixtures we wrote (tests/fixtures, seeds/)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from pathlib import Path

import pytest

from schemas.records import DeadLetter, RawRecord, Story
from transforms.parse import parse_record, story_id_for

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SEEDS = REPO / "seeds"
NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def parse(data: bytes, uri: str = "mem://story", **kwargs) -> list:
  raw = RawRecord(uri=uri, data=data, **kwargs)
  return list(parse_record(raw, now=NOW))


def parse_file(path: Path, **kwargs) -> list:
  return parse(path.read_bytes(), uri=str(path), **kwargs)


def only_story(outs: list) -> Story:
  assert len(outs) == 1, outs
  assert isinstance(outs[0], Story), outs[0]
  return outs[0]


def stories(outs: list) -> list[Story]:
  return [o for o in outs if isinstance(o, Story)]


def errors(outs: list) -> list[DeadLetter]:
  return [o for o in outs if isinstance(o, DeadLetter)]


def assert_clean_body(story: Story) -> None:
  assert story.body == story.body.strip()
  assert not re.search(r"</?[a-zA-Z][\w.-]*[^<>]*>", story.body)  # no markup left
  assert "\n\n\n" not in story.body
  for paragraph in story.body.split("\n\n"):
    assert paragraph and paragraph == " ".join(paragraph.split())


# --------------------------------------------------------------------------- plain text


def test_seed_story_dateline_and_paragraphs():
  story = only_story(parse_file(SEEDS / "000_2caeb3c1602a667c.txt"))
  assert story.source_format == "plain"
  assert story.dateline == "WASHINGTON (Reuters)"
  assert story.dateline_place == "WASHINGTON"
  assert story.agency == "Reuters"
  assert story.headline is None
  assert story.body.startswith("WASHINGTON (Reuters) - U.S. and Chinese diplomatic")
  assert story.body.count("\n\n") == 12  # 13 lines -> 13 paragraphs
  assert story.language == "en" and story.language_source == "detected"
  assert story.version == 1
  assert story.ingested_at == NOW
  assert story.locator == ""
  assert len(story.story_id) == 32
  assert_clean_body(story)


def test_plain_headline_and_byline_are_taken_out_of_the_body():
  story = only_story(parse_file(FIXTURES / "plain_headline.txt"))
  assert story.headline == "Port of Rotterdam container volumes slip as Red Sea detours persist"
  assert story.byline == "Anna Kuiper"
  assert story.dateline == "ROTTERDAM (Reuters)" and story.agency == "Reuters"
  assert story.body.startswith("ROTTERDAM (Reuters) - Container throughput")
  assert "Anna Kuiper" not in story.body
  assert story.body.count("\n\n") == 2


def test_plain_blank_line_paragraphs_join_hard_wraps():
  text = b"Headline here\n\nLONDON (Reuters) - First line\nwraps here.\n\nSecond paragraph.\n"
  story = only_story(parse(text))
  assert story.headline == "Headline here"
  assert story.body == "LONDON (Reuters) - First line wraps here.\n\nSecond paragraph."


def test_story_ids_are_deterministic_and_content_based_without_guid():
  data = (SEEDS / "000_2caeb3c1602a667c.txt").read_bytes()
  first = only_story(parse(data, uri="a.txt"))
  second = only_story(parse(data, uri="b.txt"))
  assert first.story_id == second.story_id
  assert first.story_id == story_id_for("plain", None, first.headline, first.body)
  # whitespace and case do not change the content hash
  assert story_id_for("x", None, "A  Title", "Body  text") == story_id_for("y", None, "a title", "body text")
  assert first.raw_sha256 == __import__("hashlib").sha256(data).hexdigest()


def test_body_is_nfc_normalised():
  decomposed = "Cafe\u0301 owners in Montreal (Reuters) - Le cafe\u0301 ferme.".encode()
  story = only_story(parse(b"MONTREAL (Reuters) - " + decomposed))
  assert "caf\u00e9" in story.body and "\u0301" not in story.body


# --------------------------------------------------------------------------- gzip


def test_gzip_plain_seed():
  story = only_story(parse_file(SEEDS / "005_plain_tea_auction.txt.gz"))
  assert story.source_format == "plain"
  assert story.headline.startswith("Kenyan tea auction prices")
  assert story.byline == "David Mwangi"
  assert story.dateline_place == "MOMBASA"


def test_gzip_keeps_inner_locators_and_pubsub_prefix():
  data = gzip.compress((FIXTURES / "multi.jsonl").read_bytes(), mtime=0)
  outs = parse(data, uri="gs://bucket/feed.jsonl.gz", locator="msg:77", message_id="77",
               attributes={"feed": "wx"})
  assert [o.locator for o in outs] == ["msg:77/line:1", "msg:77/line:2", "msg:77/line:4", "msg:77/line:5"]
  assert all(o.message_id == "77" for o in outs)
  assert errors(outs)[0].attributes == {"feed": "wx"}


# --------------------------------------------------------------------------- JSON / JSON Lines


def test_jsonl_many_stories_and_a_bad_line():
  outs = parse_file(FIXTURES / "multi.jsonl")
  assert len(outs) == 4  # the blank line 3 is not a record
  good, bad = stories(outs), errors(outs)
  assert [s.locator for s in good] == ["line:1", "line:2", "line:4"]
  assert bad[0].locator == "line:5" and bad[0].error_type == "JSONDecodeError"
  assert bad[0].raw_excerpt == b'{"id": "wx-1004", "headline": "truncated'
  first, second = good[0], good[1]
  assert first.source_format == "jsonl"
  assert first.guid == "wx-1001" and first.version == 2
  assert first.language == "en" and first.language_source == "metadata"
  assert first.published_at == dt.datetime(2024, 3, 4, 7, 15, tzinfo=dt.timezone.utc)
  assert first.body.split("\n\n")[1].startswith("Operator CalMac")
  assert first.story_id == story_id_for("Reuters", "wx-1001", None, "")
  assert second.headline == "Rail freight volumes rise in Poland"
  assert second.source == "Reuters"
  assert second.body.count("\n\n") == 1  # list of paragraphs
  assert second.source_subjects == ["transport", "rail"]
  assert second.published_at == dt.datetime(2024, 3, 5, 9, 30, tzinfo=dt.timezone.utc)  # naive -> UTC
  assert good[2].guid == "wx-1003"


def test_json_array_records_and_epoch_dates():
  outs = parse_file(FIXTURES / "array.json")
  assert [o.locator for o in outs] == ["record:1", "record:2"]
  assert all(isinstance(o, Story) and o.source_format == "json" for o in outs)
  assert outs[1].published_at == dt.datetime.fromtimestamp(1717400000, dt.timezone.utc)
  # each record keeps its own bytes for lineage
  assert outs[0].raw_sha256 != outs[1].raw_sha256


def test_jsonl_seed_two_stories():
  outs = parse_file(SEEDS / "001_transport_markets.jsonl")
  assert len(stories(outs)) == 2
  assert {s.dateline_place for s in outs} == {"ROTTERDAM", "LONDON"}


def test_json_hint_overrides_detection():
  data = json.dumps({"title": "T", "body": "Plain body text here."}).encode()
  story = only_story(parse(data, format_hint="plain"))
  assert story.source_format == "plain"
  assert story.body.startswith("{")


# --------------------------------------------------------------------------- ninjs


def test_ninjs_1x_fields():
  story = only_story(parse_file(FIXTURES / "ninjs1.json"))
  assert story.source_format == "ninjs"
  assert story.headline == "Iceland lava flow cuts hot water pipeline"
  assert story.byline == "Lars Holm"
  assert story.version == 3
  assert story.published_at == dt.datetime(2024, 2, 12, 9, 0, tzinfo=dt.timezone.utc)
  assert story.language == "en" and story.language_source == "metadata"
  assert story.dateline == "REYKJAVIK (AP)" and story.agency == "AP"
  assert story.body.count("\n\n") == 1
  assert "Reykjavik, Iceland" in story.places
  assert story.source_subjects == ["06000000"]
  assert story.guid == "http://example.com/ninjs/1/ice-2024"


def test_ninjs_2x_fields_norwegian_xhtml_body():
  story = only_story(parse_file(FIXTURES / "ninjs2.json"))
  assert story.headline == "Rekordår for norsk sjømateksport"
  assert story.language == "no" and story.language_source == "metadata"
  assert story.source == "NTB" and story.byline == "NTB"
  assert story.body == ("Norge eksporterte sjømat for rekordhøye beløp i fjor, viser nye tall fra Sjømatrådet."
                        "\n\nLaks sto for over to tredjedeler av verdien.")
  assert story.published_at == dt.datetime(2024, 1, 4, 8, 30, tzinfo=dt.timezone.utc)
  assert story.source_subjects == ["medtop:04000000"]
  assert story.places == ["Norge"]


def test_ninjs_3x_camel_case_prefers_plain_body_and_main_headline():
  story = only_story(parse_file(FIXTURES / "ninjs3.json"))
  assert story.headline == "Harbour bridge reopens after repairs"
  assert story.version == 4
  assert story.published_at == dt.datetime(2024, 5, 20, 13, 45, tzinfo=dt.timezone.utc)
  assert story.source == "Example Wire"
  assert story.dateline == "BALTIMORE (AP)"
  assert story.body.endswith("Engineers replaced two expansion joints.")
  assert story.story_id == story_id_for("Example Wire", "urn:example:agency:2024:bridge-reopens", None, "")


def test_ninjs_versions_branch_on_declared_version():
  from transforms.formats import ninjs_version
  assert ninjs_version(json.loads((FIXTURES / "ninjs1.json").read_text())) == 1
  assert ninjs_version(json.loads((FIXTURES / "ninjs2.json").read_text())) == 2
  assert ninjs_version(json.loads((FIXTURES / "ninjs3.json").read_text())) == 3
  assert ninjs_version({"standard": {"name": "ninjs", "version": "2.1"}, "headline": "x"}) == 2


def test_ninjs_seed_spanish_heatwave():
  story = only_story(parse_file(SEEDS / "002_ninjs2_heatwave.json"))
  assert story.language == "en" and story.version == 2
  assert story.dateline_place == "SEVILLE" and story.agency == "AP"
  assert story.byline == "Elena Ruiz"


def test_ninjs_picture_without_caption_is_a_dead_letter():
  data = json.dumps({"uri": "urn:pic:1", "type": "picture", "versionCreated": "2024-01-01T00:00:00Z",
                     "headlines": [{"role": "main", "value": "Sunset"}]}).encode()
  (dead,) = parse(data)
  assert isinstance(dead, DeadLetter) and dead.error_type == "NoTextContent"
  assert "picture" in dead.message


# --------------------------------------------------------------------------- NITF


def test_nitf_german_fixture():
  story = only_story(parse_file(FIXTURES / "nitf_de.xml"))
  assert story.source_format == "nitf"
  assert story.headline == "Bahnstreik legt Fernverkehr lahm"
  assert story.language == "de" and story.language_source == "metadata"
  assert story.byline == "Petra Lange"
  assert story.dateline == "Berlin (dpa)" and story.dateline_place == "Berlin" and story.agency == "dpa"
  assert story.source == "DPA" and story.guid == "dpa-2024-0311-streik"
  assert story.version == 2
  assert story.published_at == dt.datetime(2024, 3, 11, 5, 30, tzinfo=dt.timezone.utc)
  paragraphs = story.body.split("\n\n")
  assert paragraphs[1] == "Die Bahn rief Reisende auf, nicht notwendige Fahrten zu verschieben."
  assert "Verhandlungen stocken" in paragraphs  # subheads are kept as paragraphs
  assert "Ein leerer Bahnsteig." not in story.body  # media captions are not body text
  assert_clean_body(story)
  assert story.source_subjects == ["subj:09000000"]
  assert story.places == ["Berlin", "DEU"]


def test_nitf_seed_german():
  story = only_story(parse_file(SEEDS / "003_nitf_de_hochwasser.xml"))
  assert story.language == "de" and story.version == 3
  assert story.headline.startswith("Hochwasser an der Elbe")


def test_nitf_language_detected_without_metadata():
  data = (b"<nitf><body><body.head><hedline><hl1>Regjeringen legger fram budsjettet</hl1></hedline>"
          b"</body.head><body.content><p>Regjeringen la mandag fram forslaget til statsbudsjett for neste "
          b"\xc3\xa5r, og finansministeren varslet kutt i flere offentlige utgifter.</p>"
          b"<p>Opposisjonen kritiserte forslaget og sa det ville ramme kommunene hardt.</p>"
          b"</body.content></body></nitf>")
  story = only_story(parse(data))
  assert story.language == "no" and story.language_source == "detected"


# --------------------------------------------------------------------------- NewsML-G2


def test_newsml_package_two_items():
  outs = parse_file(FIXTURES / "newsml_package.xml")
  assert [o.locator for o in outs] == ["item:1", "item:2"]
  first, second = stories(outs)
  assert first.source_format == "newsml"
  assert first.guid == "urn:newsml:example.com:20240601:grain-1" and first.version == 3
  assert first.headline == "Wheat futures climb on dry weather"
  assert first.dateline == "CHICAGO, June 1 (Reuters)" and first.dateline_place == "CHICAGO"
  assert first.agency == "Reuters" and first.source == "EXAMPLE"
  assert first.language == "en" and first.language_source == "metadata"
  assert first.published_at == dt.datetime(2024, 6, 1, 11, 50, tzinfo=dt.timezone.utc)
  assert first.source_subjects == ["medtop:20000209"]
  assert first.body.count("\n\n") == 1
  assert second.body == ("NEW YORK (Reuters) - Arabica coffee futures eased on Friday as harvest pressure built "
                         "in Brazil.\n\nRobusta also fell.")
  assert first.story_id != second.story_id
  assert first.raw_sha256 != second.raw_sha256


def test_newsml_seed_item():
  story = only_story(parse_file(SEEDS / "004_newsml_g2_rates.xml"))
  assert story.headline.startswith("ECB cuts deposit rate")
  assert story.byline == "Martin Schulz"
  assert story.dateline == "FRANKFURT (Reuters)" and story.dateline_place == "FRANKFURT"
  assert story.version == 2
  assert story.body.count("\n\n") == 3
  assert_clean_body(story)


def test_newsml_non_text_items_are_accounted_for():
  message = b"""<newsMessage xmlns="http://iptc.org/std/nar/2006-10-01/"><itemSet>
    <packageItem guid="p1"><groupSet/></packageItem>
    <newsItem guid="pic1"><itemMeta><itemClass qcode="ninat:picture"/></itemMeta>
      <contentMeta><headline>Harbour at dusk</headline></contentMeta></newsItem>
    <newsItem guid="pic2"><itemMeta><itemClass qcode="ninat:picture"/></itemMeta>
      <contentMeta><headline>Harbour</headline><description role="drol:caption">Boats moored in the
      harbour of Bergen, Norway, on Monday.</description></contentMeta></newsItem>
    <conceptItem guid="c1"/>
  </itemSet></newsMessage>"""
  outs = parse(message)
  assert [type(o).__name__ for o in outs] == ["DeadLetter", "DeadLetter", "Story", "DeadLetter"]
  assert [o.error_type for o in errors(outs)] == ["NotAStory", "NoTextContent", "NotAStory"]
  caption = stories(outs)[0]
  assert caption.body.startswith("Boats moored in the harbour of Bergen")
  assert [o.locator for o in outs] == ["item:1", "item:2", "item:3", "item:4"]


# --------------------------------------------------------------------------- Reuters SGML


def test_reuters_sgml_fixture_latin1():
  outs = parse_file(FIXTURES / "reuters_sample.sgm")
  assert [o.locator for o in outs] == ["newid:901", "newid:902", "newid:903"]
  first, brief = stories(outs)
  assert first.source_format == "reuters-sgml"
  assert first.headline == "BRAZIL COFFEE EXPORTS <IBC> SEEN STEADY"
  assert first.dateline == "SÃO PAULO, March 2" and first.dateline_place == "SÃO PAULO"
  assert first.agency == "Reuters" and first.source == "Reuters"
  assert first.guid == "901"
  assert first.body == ("Brazilian coffee exports should hold steady this month, trade sources said.\n\n"
                        "The Instituto Brasileiro do Café said registrations were in line with last year.")
  assert first.published_at == dt.datetime(1987, 3, 2, 10, 4, 11, 220000, tzinfo=dt.timezone.utc)
  assert first.source_subjects == ["coffee"] and first.places == ["brazil"]
  assert first.language == "en"
  assert brief.headline == "U.S. TREASURY BALANCE ROSE IN LATEST WEEK" and brief.body == ""
  (empty,) = errors(outs)
  assert empty.error_type == "NoTextContent" and empty.locator == "newid:903"
  assert empty.raw_excerpt.startswith(b"<REUTERS") and empty.raw_excerpt.endswith(b"</REUTERS>")


# --------------------------------------------------------------------------- the seeds directory


def test_every_seed_parses_into_stories():
  for path in sorted(SEEDS.iterdir()):
    outs = parse_file(path)
    assert outs and all(isinstance(o, Story) for o in outs), (path, outs)
  langs = {s.language for p in SEEDS.iterdir() for s in parse_file(p)}
  assert {"en", "de"} <= langs


@pytest.mark.parametrize("name", ["plain_headline.txt", "multi.jsonl", "ninjs2.json", "nitf_de.xml"])
def test_received_at_is_used_as_ingest_time(name):
  received = dt.datetime(2024, 1, 1, 12, 0)
  outs = parse((FIXTURES / name).read_bytes(), received_at=received)
  assert all(s.ingested_at == received.replace(tzinfo=dt.timezone.utc) for s in stories(outs))


# --------------------------------------------------------------------------- odds and ends


@pytest.mark.parametrize("lead, expected", [
    ("WASHINGTON (Reuters) - U.S. officials said", ("WASHINGTON (Reuters)", "WASHINGTON", "Reuters")),
    ("GROSSETO, Italy (AP) -- The trial", ("GROSSETO, Italy (AP)", "GROSSETO", "AP")),
    ("NEW YORK (AP) — The gas", ("NEW YORK (AP)", "NEW YORK", "AP")),
    ("Tegucigalpa, Jan 2 (EFE).- Test body.", ("Tegucigalpa, Jan 2 (EFE)", "Tegucigalpa", "EFE")),
    ("Frankfurt am Main (dpa) - Die Börse", ("Frankfurt am Main (dpa)", "Frankfurt am Main", "dpa")),
    ("OSLO (NTB): Regjeringen", ("OSLO (NTB)", "OSLO", "NTB")),
    ("Shares of Acme (ACME) - rose", None),
    ("(Sports Network) - A pair of teams", None),
    ("The company said on Monday it would", None),
])
def test_parse_dateline(lead, expected):
  from transforms.formats import parse_dateline
  assert parse_dateline(lead) == expected


def test_crlf_and_bom_plain_text():
  data = "\ufeffHeadline\r\nBy Jo Smith\r\nPARIS (AFP) - Texte.\r\nSecond.\r\n".encode()
  story = only_story(parse(data))
  assert story.headline == "Headline" and story.byline == "Jo Smith" and story.agency == "AFP"
  assert story.body == "PARIS (AFP) - Texte.\n\nSecond."


def test_multi_member_gzip():
  one = gzip.compress(b'{"id": "1", "title": "One", "body": "First story."}\n', mtime=0)
  two = gzip.compress(b'{"id": "2", "title": "Two", "body": "Second story."}\n', mtime=0)
  outs = parse(one + two, uri="feed.jsonl.gz")
  assert [(s.source_format, s.locator, s.guid) for s in outs] == [("jsonl", "line:1", "1"), ("jsonl", "line:2", "2")]


def test_versions_of_one_story_share_the_story_id():
  doc = json.loads((FIXTURES / "ninjs3.json").read_text())
  first = only_story(parse(json.dumps(doc).encode()))
  doc["version"] = "5"
  doc["bodies"][1]["value"] += "\n\nA correction was appended."
  second = only_story(parse(json.dumps(doc).encode()))
  assert first.story_id == second.story_id
  assert (first.version, second.version) == (4, 5)
  assert first.event_id != second.event_id


def test_json_items_container():
  data = json.dumps({"items": [{"id": "i1", "title": "A", "body": "Alpha text."},
                               {"id": "i2", "title": "B", "body": "Beta text."}]}).encode()
  outs = parse(data)
  assert [(o.locator, o.guid) for o in outs] == [("record:1", "i1"), ("record:2", "i2")]


def test_format_hint_names_a_format_family():
  data = (FIXTURES / "reuters_sample.sgm").read_bytes()
  assert [o.source_format for o in stories(parse(data, format_hint="reuters"))] == ["reuters-sgml"] * 2
  outs = parse(b"<nitf><body><body.content><p>Hi there.</p></body.content></body></nitf>", format_hint="NITF")
  assert only_story(outs).body == "Hi there."


def test_str_data_is_encoded_not_dropped():
  story = only_story(list(parse_record(RawRecord(uri="m", data="LIMA (Reuters) - Texto."), now=NOW)))
  assert story.dateline_place == "LIMA"
