"""Parse stage over the real sample files in ../shared/data (skipped when absent).

The shared data is read in place and never copied into the repository.
"""

from __future__ import annotations

import collections
import datetime as dt
from pathlib import Path

import pytest

from schemas.records import DeadLetter, RawRecord, Story
from transforms.parse import parse_record

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FORMATS = SHARED / "data" / "formats"
REUTERS = SHARED / "data" / "reuters21578"
NOW = dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc)

S = "Story"

#: What each sample yields: one entry per story-level record, a Story or a dead letter's error type.
EXPECTED = {
    "nitf/NTB_nitf_sample.xml": [S],
    "nitf/ap-nitf.xml": [S],
    "nitf/efe_nitf.xml": [S],
    "nitf/nitf-fishing.xml": [S],
    "newsml-g2/LISTING_1_A_NewsML-G2_News_Item.xml": [S],  # headline-only text item
    "newsml-g2/LISTING_2_NewsML-G2_Text_Document.xml": [S],
    "newsml-g2/LISTING_3_Photo_in_NewsML-G2.xml": [S],  # picture with a caption
    "newsml-g2/LISTING_6_Simple_NewsML-G2_Package.xml": ["NotAStory"],
    "newsml-g2/LISTING_10_Abstract_Concept_conveyed_in_a_NewsML-G2_Concept_Item.xml": ["NotAStory"],
    "newsml-g2/LISTING_11_Person_Concept_conveyed_in_a_NewsML-G2_Concept_Item.xml": ["NotAStory"],
    "newsml-g2/LISTING_14_Event_sent_as_a_Concept_Item.xml": ["NotAStory"],
    "newsml-g2/LISTING_15_Two_Related_Events_in_a_Knowledge_Item.xml": ["NotAStory"],
    "newsml-g2/LISTING_16_A_Set_of_Events_carried_in_a_News_Item.xml": ["NoTextContent"],
    "newsml-g2/LISTING_22_Sports_story_in_NewsML-G2NITF.xml": [S],
    "newsml-g2/LISTING_24_News_Message_conveying_a_complete_News_Package.xml":
        ["NotAStory"] + ["NoTextContent"] * 4,
    "newsml-g2/LISTING_25_An_NITF_marked-up_article_conveyed_in_inlineXML.xml": [S],
    "newsml-g2/LISTING_27_Company_Financial_Information.xml": [S],
    "newsml-g2/LISTING_28_Illustrating_Located_Subject_and_Dateline.xml": ["NoTextContent"],
    "newsml-g2/LISTING_29_Hop_History.xml": ["NoTextContent"],
    "newsml-g2/ap_metadata_example.xml": ["NoTextContent"],  # video item without a caption
    "ninjs/20231004-UEFA-ChampionLeague.json": [S],
    "ninjs/20231005-65-addb-event.json": [S],
    "ninjs/20231008-anti-doping-measures-at-the-tour-down-under-will-be-the-toughest-ever-addb-ninjs-nitf.json":
        [S],
    "ninjs/20231016-event-timeline-sample.json": [S] * 14,
    "ninjs/SIPA_image_3.json": [S],
    "ninjs/ap_audio.json": [S],
    "ninjs/ap_image.json": [S],
    "ninjs/ap_video.json": [S],
    "ninjs/businesswire-newsml-20130605006126.json": [S],
    "ninjs/businesswire-newsml-20130731006140.json": [S],
    "ninjs/imageEncodedRights.json": [S],
    "ninjs/imageLinkedRights.json": [S],
    "ninjs/ninjsExSimpleText_3.json": [S],
    "ninjs/simpleEvent.json": [S],
    "ninjs/tt_event_pressconference_3.0.json": [S],
}

needs_formats = pytest.mark.skipif(not FORMATS.is_dir(), reason="shared format samples are absent")
needs_reuters = pytest.mark.skipif(not REUTERS.is_dir(), reason="shared Reuters-21578 files are absent")


def parse_sample(relative: str) -> list:
  path = FORMATS / relative
  if not path.exists():
    pytest.skip(f"{relative} is absent")
  return list(parse_record(RawRecord(uri=str(path), data=path.read_bytes()), now=NOW))


def outcome(out) -> str:
  return S if isinstance(out, Story) else out.error_type


@needs_formats
@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_sample_yields_what_we_expect(relative):
  outs = parse_sample(relative)
  assert [outcome(o) for o in outs] == EXPECTED[relative], [
      (o.locator, o.error_type, o.message) if isinstance(o, DeadLetter) else o.locator for o in outs]
  for out in outs:
    if isinstance(out, Story):
      assert out.source_format in ("nitf", "newsml", "ninjs")
      assert out.headline or out.body


@needs_formats
def test_every_sample_file_is_covered():
  present = {str(p.relative_to(FORMATS)) for p in FORMATS.rglob("*") if p.is_file()}
  assert present <= set(EXPECTED), present - set(EXPECTED)


def one(relative: str) -> Story:
  outs = parse_sample(relative)
  assert len(outs) == 1 and isinstance(outs[0], Story)
  return outs[0]


@needs_formats
def test_ntb_nitf_is_norwegian():
  story = one("nitf/NTB_nitf_sample.xml")
  assert story.language == "no" and story.language_source == "metadata"
  assert story.headline == "Pandemien herjer på den legeløse indiske landsbygda"
  assert story.source == "NTB" and story.dateline == "Unnao"
  assert story.published_at == dt.datetime(2021, 5, 16, 9, 0, 4, tzinfo=dt.timezone.utc)
  assert story.body.startswith("Koronapandemien herjer også")
  assert "Kremasjonsbål" not in story.body  # the photo caption is not body text


@needs_formats
def test_ap_nitf_dateline_and_byline():
  story = one("nitf/ap-nitf.xml")
  assert story.dateline == "NEW YORK (AP)" and story.dateline_place == "NEW YORK" and story.agency == "AP"
  assert story.byline == "BERNARD CONDON"
  assert story.body.count("\n\n") >= 20
  assert story.language == "en" and story.language_source == "detected"


@needs_formats
def test_nitf_with_external_dtd_reference():
  story = one("nitf/nitf-fishing.xml")
  assert story.headline == "Weather and Tide Updates for Norfolk"
  assert story.byline == "Alan Karben"
  assert story.dateline == "Newport News, VA"
  assert "Acme Boat Company." in story.body


@needs_formats
def test_newsml_text_items():
  story = one("newsml-g2/LISTING_2_NewsML-G2_Text_Document.xml")
  assert story.guid == "urn:newsml:acmenews.com:20161121:US-FINANCE-FED" and story.version == 11
  assert story.headline == 'Fed to halt QE to avert "bubble"'
  assert story.language == "en" and story.byline == "Meredith Jameson"
  assert story.body.count("\n\n") == 1
  sports = one("newsml-g2/LISTING_22_Sports_story_in_NewsML-G2NITF.xml")
  assert sports.body.count("\n\n") == 5
  assert "medtop:20000849" in sports.source_subjects


@needs_formats
def test_ninjs_samples_languages_and_versions():
  assert one("ninjs/tt_event_pressconference_3.0.json").language == "sv"
  assert one("ninjs/businesswire-newsml-20130605006126.json").language == "zh"
  text = one("ninjs/ninjsExSimpleText_3.json")
  assert text.dateline == "GROSSETO, Italy (AP)" and text.dateline_place == "GROSSETO"
  assert text.byline == "Paulo Santalucia and Frances d'Emilio"
  doping = one("ninjs/20231008-anti-doping-measures-at-the-tour-down-under-will-be-the-toughest-ever-addb-ninjs-nitf.json")
  assert doping.version == 2 and "medtop:15000000" in doping.source_subjects
  timeline = parse_sample("ninjs/20231016-event-timeline-sample.json")
  assert [s.locator for s in timeline] == [f"record:{i}" for i in range(1, 15)]
  assert len({s.story_id for s in timeline}) == 14


# --------------------------------------------------------------------------- Reuters-21578 ledger


@needs_reuters
def test_reuters_ledger_balances_with_few_errors():
  files = sorted(REUTERS.glob("reut2-*.sgm"))
  assert files
  elements = stories = 0
  errors: collections.Counter[str] = collections.Counter()
  ids: set[tuple[str, int]] = set()
  for path in files:
    data = path.read_bytes()
    expected = data.count(b"<REUTERS ")
    outs = list(parse_record(RawRecord(uri=str(path), data=data), now=NOW))
    assert len(outs) == expected, path  # exactly one output per <REUTERS> element
    assert len({o.locator for o in outs}) == expected
    elements += expected
    for out in outs:
      if isinstance(out, Story):
        stories += 1
        ids.add(out.key)
      else:
        errors[out.error_type] += 1
  assert stories + sum(errors.values()) == elements
  assert len(ids) == stories  # NEWIDs give distinct story ids
  if len(files) == 14:
    assert elements == 14_000
  assert sum(errors.values()) < 0.02 * elements, errors
