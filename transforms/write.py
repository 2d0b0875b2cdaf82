"""Writing the ``events``, ``entities`` and ``errors`` tables as hive-partitioned Parquet.

Layout: ``OUTPUT/<table>/date=YYYY-MM-DD/part-<name>.parquet``. Rows are grouped by
(table, date, shard) inside the current window, so the same transform serves batch
(one global window) and streaming (one set of files per window).

No row can stop a write: each story's rows (its event and its mentions) and each error
row are checked against the table schema as they are keyed. A story whose rows Arrow
cannot take (text that is not valid Unicode, a number out of range...) becomes an error
row of stage ``write`` instead, holding the story as ASCII JSON (every character that is
not plain ASCII escaped, lone surrogates included); an error row that cannot be written
as it is has its text fields escaped the same way.

A process stopped while it writes leaves no partial file where readers look: files are
written under hidden temporary names (``.tmp-*``, which the ``*.parquet`` globs never
match) and renamed when complete; ``remove_unfinished_files()`` deletes this process's
temporary files (the batch command calls it when it is stopped by a signal).

Writes are idempotent: a file's name is derived from the ids of the rows it holds
(and, in streaming, from the window bounds), and it is written under a temporary
name and then renamed. Running the same input again replaces the same files
instead of adding duplicates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import threading
import uuid
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow

from schemas import TABLES, DeadLetter, Story, entity_rows, error_row, event_row
from schemas.tables import ROW_ID, SCHEMA_VERSION

#: Temporary files this process is writing (removed by ``remove_unfinished_files``).
_UNFINISHED: set[str] = set()
_UNFINISHED_LOCK = threading.Lock()

DEFAULT_ROWS_PER_FILE = 250_000
DEFAULT_ROW_GROUP_ROWS = 20_000


def _shard(row_id: str, shards: int) -> int:
  if shards <= 1:
    return 0
  return int(hashlib.md5(row_id.encode("utf-8")).hexdigest()[:8], 16) % shards


def _window_tag(window) -> str:
  if isinstance(window, GlobalWindow) or not hasattr(window, "start"):
    return ""

  def fmt(ts) -> str:
    return ts.to_utc_datetime().strftime("%Y%m%dT%H%M%SZ")

  return f"{fmt(window.start)}-{fmt(window.end)}-"


WRITE_STAGE = "write"


#: Each table's columns as one struct type: converting rows to it is Arrow's own check, and quicker
#: than building a table.
_ROW_TYPES = {table: pa.struct(list(schema)) for table, schema in TABLES.items()}


def _check(table: str, rows: list[dict[str, Any]]) -> None:
  """Raises when Arrow cannot take ``rows`` into ``table``'s schema."""
  pa.array(rows, type=_ROW_TYPES[table])


def _escaped(text: str) -> str:
  """``text`` with what UTF-8 cannot hold (lone surrogates) as backslash escapes."""
  return text.encode("utf-8", "backslashreplace").decode("utf-8")


def story_rows(story: Story) -> dict[str, list[dict[str, Any]]]:
  """The rows of a story by table, checked against the schemas (raises when they do not fit)."""
  rows = {"events": [event_row(story)], "entities": list(entity_rows(story))}
  for table, table_rows in rows.items():
    if table_rows:
      _check(table, table_rows)
  return rows


def story_dead_letter(story: Story, error: BaseException) -> DeadLetter:
  """A story that cannot be written -> a ``write`` dead letter holding it as ASCII JSON."""
  raw = json.dumps(dataclasses.asdict(story), ensure_ascii=True, sort_keys=True, default=str).encode("ascii")
  return DeadLetter.from_raw(raw, uri=_escaped(story.input_uri), locator=_escaped(story.locator),
                             stage=WRITE_STAGE, error=error, message_id=story.message_id,
                             story_id=_escaped(story.story_id))


def checked_error_row(letter: DeadLetter) -> dict[str, Any]:
  """The ``errors`` row of a dead letter; its text fields escaped when it cannot be written as it is."""
  try:
    row = error_row(letter)
    _check("errors", [row])
    return row
  except (UnicodeError, pa.ArrowException, ValueError, TypeError, OverflowError):
    pass
  escaped = dataclasses.replace(
      letter, **{field.name: _escaped(getattr(letter, field.name)) for field in dataclasses.fields(letter)
                 if isinstance(getattr(letter, field.name), str)},
      attributes={_escaped(str(k)): _escaped(str(v)) for k, v in letter.attributes.items()})
  row = error_row(escaped)
  _check("errors", [row])
  return row


class _KeyRows(beam.DoFn):
  """Story/DeadLetter -> ((table, date, shard), row) pairs; a story that does not fit -> an error row."""

  def __init__(self, shards: int):
    self._shards = shards
    self._unwritable = Metrics.counter("wirestream.write", "stories_unwritable")

  def process(self, element: Story | DeadLetter) -> Iterable[tuple[tuple[str, str, int], dict[str, Any]]]:
    if isinstance(element, Story):
      try:
        rows = story_rows(element)
        date = element.partition_date
      except Exception as error:  # noqa: BLE001 - the story goes to errors instead
        self._unwritable.inc()
        element = story_dead_letter(element, error)
      else:
        for table, table_rows in rows.items():
          for row in table_rows:
            yield (table, date, _shard(row[ROW_ID[table]], self._shards)), row
        return
    row = checked_error_row(element)
    yield ("errors", element.partition_date, _shard(row["error_id"], self._shards)), row


class _WriteGroup(beam.DoFn):
  """Writes one (table, date, shard) group of rows to Parquet file(s); yields the paths."""

  def __init__(self, output: str, rows_per_file: int, row_group_rows: int, compression: str):
    self._output = output.rstrip("/")
    self._rows_per_file = rows_per_file
    self._row_group_rows = row_group_rows
    self._compression = compression
    self._rows = {name: Metrics.counter("wirestream.write", f"{name}_rows") for name in TABLES}
    self._files = Metrics.counter("wirestream.write", "files_written")

  def process(self, element, window=beam.DoFn.WindowParam) -> Iterable[str]:
    (table, date, shard), rows = element
    schema = TABLES[table]
    id_column = ROW_ID[table]
    folder = f"{self._output}/{table}/date={date}"
    temps: list[str] = []
    ids: list[str] = []
    chunk: list[dict[str, Any]] = []
    writer = None
    handle = None
    rows_in_file = 0

    def open_file():
      nonlocal writer, handle, rows_in_file
      temp = f"{folder}/.tmp-{uuid.uuid4().hex}"
      temps.append(temp)
      with _UNFINISHED_LOCK:
        _UNFINISHED.add(temp)
      handle = FileSystems.create(temp)
      writer = pq.ParquetWriter(handle, schema, compression=self._compression)
      rows_in_file = 0

    def close_file():
      nonlocal writer, handle
      if writer is not None:
        writer.close()
        handle.close()
        writer = None
        handle = None

    def flush():
      nonlocal rows_in_file
      if not chunk:
        return
      if writer is None or rows_in_file >= self._rows_per_file:
        close_file()
        open_file()
      writer.write_table(pa.Table.from_pylist(chunk, schema=schema), row_group_size=self._row_group_rows)
      rows_in_file += len(chunk)
      chunk.clear()

    for row in rows:
      ids.append(row[id_column])
      chunk.append(row)
      if len(chunk) >= self._row_group_rows:
        flush()
    flush()
    close_file()
    if not temps:
      return
    digest = hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()[:20]
    stem = f"part-{_window_tag(window)}{shard:03d}-{digest}"
    finals = [f"{folder}/{stem}.parquet" if len(temps) == 1 else f"{folder}/{stem}-{i:04d}.parquet"
              for i in range(len(temps))]
    existing = [path for path in finals if FileSystems.exists(path)]
    if existing:
      FileSystems.delete(existing)
    FileSystems.rename(temps, finals)
    with _UNFINISHED_LOCK:
      _UNFINISHED.difference_update(temps)
    self._rows[table].inc(len(ids))
    self._files.inc(len(finals))
    yield from finals


class WriteTables(beam.PTransform):
  """Writes ``(stories, errors)`` PCollections to the lake under ``output``.

  Returns a PCollection of the written file paths.
  """

  def __init__(self, output: str, *, shards_per_partition: int = 1,
               rows_per_file: int = DEFAULT_ROWS_PER_FILE, row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
               compression: str = "zstd"):
    super().__init__()
    self._output = output
    self._shards = shards_per_partition
    self._rows_per_file = rows_per_file
    self._row_group_rows = row_group_rows
    self._compression = compression

  def expand(self, pcolls):
    stories, errors = pcolls
    return (
        (stories, errors)
        | "Merge" >> beam.Flatten()
        | "KeyRows" >> beam.ParDo(_KeyRows(self._shards))
        | "Group" >> beam.GroupByKey()
        | "WriteFiles" >> beam.ParDo(
            _WriteGroup(self._output, self._rows_per_file, self._row_group_rows, self._compression)))


def remove_unfinished_files() -> int:
  """Deletes the temporary files this process has not finished writing; returns how many it deleted."""
  with _UNFINISHED_LOCK:
    paths = sorted(_UNFINISHED)
    _UNFINISHED.clear()
  removed = 0
  for path in paths:
    try:
      FileSystems.delete([path])
      removed += 1
    except Exception:  # noqa: BLE001 - renamed or never created meanwhile
      pass
  return removed


def output_is_writable(output: str) -> str | None:
  """Returns None when ``output`` can be written, else the reason (checked for local paths only)."""
  if "://" in output:
    return None
  probe = posixpath.join(output, f".probe-{uuid.uuid4().hex}")
  try:
    with FileSystems.create(probe) as handle:
      handle.write(b"")
    FileSystems.delete([probe])
  except Exception as error:  # noqa: BLE001
    cause = error
    while getattr(cause, "__cause__", None) is not None:
      cause = cause.__cause__
    return f"output {output!r} is not writable: {cause}"
  return None


def schema_file(output: str, table: str, date: str) -> str:
  """The empty file of ``table`` that carries the current schema (see :func:`ensure_tables`)."""
  return f"{output.rstrip('/')}/{table}/date={date}/part-schema-{SCHEMA_VERSION}.parquet"


def ensure_tables(output: str, today: str) -> list[str]:
  """Writes, for each table without one, an empty file of the current schema version; returns them.

  Every table then exists from a run's first second, with or without rows (``errors`` too), and a
  reader that lines files up by column name (``union_by_name``, BigQuery's schema from the newest
  file) sees every column of the current version even when no row has one yet.
  """
  written = []
  for table, schema in TABLES.items():
    if FileSystems.match([schema_file(output, table, "*")])[0].metadata_list:
      continue
    path = schema_file(output, table, today)
    with FileSystems.create(path) as handle:
      pq.write_table(pa.Table.from_pylist([], schema=schema), handle, compression="zstd")
    written.append(path)
  return written
