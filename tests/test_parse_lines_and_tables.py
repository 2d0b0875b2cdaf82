"""Parse stage: an undecodable line in JSON Lines fails alone; delimited tables (CSV/TSV) are not stories."""

from __future__ import annotations

import codecs
import datetime as dt
import gzip
import hashlib
import json

import pytest

from schemas.records import DeadLetter, RawRecord, Story
from transforms.parse import parse_record

NOW = dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc)


def parse(data: bytes, uri: str = "mem://in", **kwargs) -> list:
  return list(parse_record(RawRecord(uri=uri, data=data, **kwargs), now=NOW))


def kinds(outs: list) -> list[tuple[str, str]]:
  return [(type(o).__name__, o.locator) for o in outs]


# --------------------------------------------------------------------------- undecodable lines

GOOD_1 = b'{"headline":"A","body":"WASHINGTON (Reuters) - One."}'
BAD_2 = b'{"headline":"caf\xe9","body":"PARIS (Reuters) - Two."}'
GOOD_3 = b'{"headline":"C","body":"BERLIN (Reuters) - Three."}'
MIXED = GOOD_1 + b"\n" + BAD_2 + b"\n" + GOOD_3 + b"\n"


def _check_mixed(outs: list, prefix: str = "") -> None:
  assert kinds(outs) == [("Story", f"{prefix}line:1"), ("DeadLetter", f"{prefix}line:2"),
                         ("Story", f"{prefix}line:3")]
  assert [o.headline for o in outs if isinstance(o, Story)] == ["A", "C"]
  dead = outs[1]
  assert dead.stage == "parse" and dead.error_type == "UnicodeDecodeError"
  assert "0xe9" in dead.message and "utf-8" in dead.message
  assert dead.raw_excerpt == BAD_2 and dead.raw_size == len(BAD_2)  # the line's own bytes, to replay
  assert dead.raw_sha256 == hashlib.sha256(BAD_2).hexdigest()


@pytest.mark.parametrize("uri, hint", [("/in/mix.jsonl", None), ("/in/mix.ndjson", None), ("mem://in", "jsonl")])
def test_an_undecodable_jsonl_line_fails_alone(uri, hint):
  _check_mixed(parse(MIXED, uri=uri, format_hint=hint))


def test_an_undecodable_line_fails_alone_in_json_lines_not_named_jsonl():
  # No .jsonl extension: JSON Lines is recognised from its first line, as for valid UTF-8.
  _check_mixed(parse(MIXED, uri="/in/mix.json"))
  _check_mixed(parse(MIXED))


def test_an_undecodable_first_line_fails_alone():
  outs = parse(BAD_2 + b"\n" + GOOD_1 + b"\n" + GOOD_3 + b"\n", uri="/in/feed.json")
  assert kinds(outs) == [("DeadLetter", "line:1"), ("Story", "line:2"), ("Story", "line:3")]
  assert outs[0].error_type == "UnicodeDecodeError" and outs[0].raw_excerpt == BAD_2


def test_undecodable_jsonl_line_keeps_crlf_bytes_and_the_bom_is_not_a_line_byte():
  data = b"\xef\xbb\xbf" + GOOD_1 + b"\r\n" + BAD_2 + b"\r\n" + GOOD_3 + b"\r\n"
  outs = parse(data, uri="/in/feed.jsonl")
  assert kinds(outs) == [("Story", "line:1"), ("DeadLetter", "line:2"), ("Story", "line:3")]
  assert outs[0].raw_sha256 == hashlib.sha256(GOOD_1 + b"\r").hexdigest()
  assert outs[1].raw_excerpt == BAD_2 + b"\r"


def test_lone_surrogate_bytes_and_bad_json_fail_their_own_lines_only():
  surrogate = b'{"headline":"x\xed\xa0\x80","body":"Text."}'  # U+D800 written as UTF-8 bytes
  data = b"\n".join([GOOD_1, surrogate, b"{not json", BAD_2, GOOD_3])
  outs = parse(data, uri="/in/feed.jsonl")
  assert kinds(outs) == [("Story", "line:1"), ("DeadLetter", "line:2"), ("DeadLetter", "line:3"),
                         ("DeadLetter", "line:4"), ("Story", "line:5")]
  assert [o.error_type for o in outs[1:4]] == ["UnicodeDecodeError", "JSONDecodeError", "UnicodeDecodeError"]
  assert [o.raw_excerpt for o in outs[1:4]] == [surrogate, b"{not json", BAD_2]


def test_gzipped_jsonl_from_pubsub_keeps_the_message_locator():
  outs = parse(gzip.compress(MIXED, mtime=0), uri="gs://b/feed.jsonl.gz", locator="msg:7", message_id="7")
  _check_mixed(outs, prefix="msg:7/")
  assert outs[1].message_id == "7"


def test_utf16_jsonl_is_still_decoded_as_a_whole():
  text = "\n".join(json.dumps({"headline": h, "body": "PARIS (AFP) - Texte."}, ensure_ascii=False)
                   for h in ("Café", "Thé"))
  outs = parse(codecs.BOM_UTF16_LE + text.encode("utf-16-le"), uri="/in/feed.jsonl")
  assert kinds(outs) == [("Story", "line:1"), ("Story", "line:2")]
  assert [o.headline for o in outs] == ["Café", "Thé"]
  broken = codecs.BOM_UTF16_LE + text.encode("utf-16-le")[:-1]  # an odd byte count: the whole file fails
  [dead] = parse(broken, uri="/in/feed.jsonl")
  assert dead.error_type == "UnicodeDecodeError" and dead.locator == "" and dead.raw_excerpt == broken


@pytest.mark.parametrize("data", [
    b'{\n  "headline": "caf\xe9",\n  "body": "PARIS (Reuters) - Two."\n}\n',  # one document, several lines
    b'[\n{"headline": "A", "body": "One."},\n{"headline": "caf\xe9", "body": "Two."}\n]\n',
    b'{"headline": "caf\xe9", "body": "Two."}\n',
])
def test_an_undecodable_json_document_still_fails_whole(data):
  [dead] = parse(data, uri="/in/doc.json")
  assert isinstance(dead, DeadLetter) and dead.error_type == "UnicodeDecodeError"
  assert dead.locator == "" and dead.raw_excerpt == data


def test_an_undecodable_plain_text_or_xml_document_still_fails_whole():
  for data in (b"WASHINGTON (Reuters) - Caf\xe9 prices rose.\nSecond line.\n",
               b"<nitf><body><body.content><p>Caf\xe9</p></body.content></body></nitf>"):
    [dead] = parse(data)
    assert isinstance(dead, DeadLetter) and dead.locator == "" and dead.raw_excerpt == data


# --------------------------------------------------------------------------- tables are not stories

AG_NEWS_LIKE = (
    'label,label_name,text,sources\n'
    '3,Business,"Wall St. Bears Claw Back (Reuters) Reuters - Short-sellers, Wall Street\'s dwindling\\band,'
    ' are seeing green again.",feed/A\n'
    '3,Business,Oil and Economy Cloud Stocks\' Outlook (Reuters) Reuters - Soaring crude prices plus worries'
    ' about the economy.,feed/A\n'
    '2,Sports,"Phelps Wins Again (AP) AP - Michael Phelps won, again, on Saturday.",feed/B;feed/C\n'
    '1,World,"Talks Resume (AFP) AFP - Talks resumed, officials said, ""at last"".",feed/B\n'
)

TABLES = {
    "ag_news.csv": AG_NEWS_LIKE,
    "quoted_summaries.csv": (
        'id,title,summary\n'
        '1,Fed holds rates,"The Fed held rates steady, as expected."\n'
        '2,Oil climbs,"Oil rose 2%, its biggest gain in a month."\n'
        '3,"Stocks, bonds slip","WASHINGTON (Reuters) - Stocks slipped on Monday."\n'),
    "unquoted_prose.csv": (
        'id,title,summary\n'
        '1,Fed holds rates,The Fed held rates steady.\n'
        '2,Oil climbs,Oil rose on Tuesday.\n'
        '3,Stocks slip,LONDON (Reuters) - Stocks slipped on Monday.\n'),
    "multiline_fields.csv": (
        'headline,body\n'
        '"Fed holds","WASHINGTON (Reuters) - The Fed held rates.\n\nIt said so, too."\n'
        '"Oil climbs","LONDON (Reuters) - Oil rose.\nTraders, bankers said ""up""."\n'),
    "stories.tsv": (
        'id\theadline\tbody\n'
        '1\tFed holds\tWASHINGTON (Reuters) - The Fed held rates, as expected.\n'
        '2\tOil climbs\tLONDON (Reuters) - Oil rose on Tuesday.\n'),
    "semicolons.csv": (
        'datum;titel;text\n'
        '2024-01-02;Zinsen;"BERLIN (dpa) - Die EZB hielt die Zinsen; wie erwartet."\n'
        '2024-01-03;Öl;"HAMBURG (dpa) - Öl wurde teurer."\n'),
    "one_ragged_row.csv": (
        'id,title,summary\n'
        '1,Fed holds rates,"The Fed held rates, as expected."\n'
        '2,Oil climbs,"Oil rose, traders said."\n'
        '3,Gold,"Gold fell."\n'
        '4,Copper,"Copper rose.",extra\n'
        '5,Tin,"Tin rose, too."\n'),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_delimited_tables_with_prose_fields_are_not_stories(name):
  data = TABLES[name].encode()
  [out] = parse(data, uri=f"/in/{name}")
  assert isinstance(out, DeadLetter), out
  assert out.error_type == "NotAStory" and "table" in out.message and "columns" in out.message
  assert out.locator == "" and out.raw_excerpt == data


def test_a_table_is_one_dead_letter_with_its_shape():
  [out] = parse(AG_NEWS_LIKE.encode(), uri="/in/train.csv")
  assert out.message == "the text is a table (','-separated values, 4 columns), not a story"


PROSE = [
    # A quotation that opens a paragraph, commas everywhere.
    'Smith vows to fight on, aides say\n"We will win, and we will win big," Smith said, on Monday.\n'
    'LONDON (Reuters) - Smith, 45, said so, twice.\n',
    # A headline, then every paragraph a quotation.
    'Smith, Jones speak\n"We will win."\n"We will win, again."\n"And again, and again."\n',
    # Equal comma counts, no full stops, a dateline.
    'Oil rises, traders say\nLONDON (Reuters) - Oil rose on Monday, traders said\n',
    # A list with commas in a story.
    'Results, Sunday\nLONDON (Reuters) - Results of English league matches on Sunday:\n'
    'Arsenal 2, Chelsea 1\nLiverpool 3, Everton 0\nLeeds 1, Hull 1\n',
    # Tab-indented paragraphs, one of them a quotation.
    '\tFed holds rates\n\tWASHINGTON (Reuters) - The Fed held rates.\n\t"We are patient."\n\tIt said so.\n',
    # Semicolons and quotes.
    'BERLIN (dpa) - Die EZB hielt die Zinsen; Analysten sagten: "wie erwartet"; Anleger; Banken.\n'
    'Die Zinsen bleiben; sagte "Lagarde"; am Montag.\n',
    # A headline and a Reuters lead written like the AG News rows, as prose.
    'Wall St. Bears Claw Back Into the Black\nNEW YORK (Reuters) - Short-sellers, Wall Street\'s dwindling '
    'band of ultra-cynics, are seeing green again.\n',
    # Two lines with one comma each and no full stop: long fields are prose, not table cells.
    'Senate passes the budget late at night, and markets rally\n'
    "The governor's not running, but his party is raising money anyway\n",
    # Quotations closed before the comma (British style) on every line.
    'Smith, Jones clash\n"We will win", Smith said.\n"We will not", Jones said.\n"Never", she said.\n',
    # A story with an unbalanced quote.
    'Fed holds, "for now\nWASHINGTON (Reuters) - The Fed held, "patiently," it said.\n',
]


@pytest.mark.parametrize("text", PROSE)
def test_prose_with_commas_and_quotes_is_still_a_story(text):
  [out] = parse(text.encode(), uri="/in/story.txt")
  assert isinstance(out, Story), out


def test_a_format_hint_still_reads_a_table_as_plain_text():
  [out] = parse(TABLES["quoted_summaries.csv"].encode(), format_hint="plain")
  assert isinstance(out, Story)
