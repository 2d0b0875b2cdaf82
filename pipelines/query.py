"""``wirestream query``: SQL over the lake with DuckDB.

Views ``events``, ``entities`` and ``errors`` read every Parquet file of the lake with
hive partitioning (column ``date``) and ``union_by_name`` (files of older minor schema
versions line up). Each view keeps one row per id (``event_id``, ``mention_id``,
``error_id``), the most recently ingested, so a duplicate that slips through (a
stream restarted over the same messages, a backfill re-run into a new partition)
never counts twice.

Two more views follow from ``events``: ``stories``, one row per story cluster (every copy, version
and rewrite of one story: ``cluster_id``, ``first_seen``, ``last_seen``, ``size`` in events rows,
``story_ids``, the latest ``headline`` and ``event_id``, ``agencies``, ``revisions`` such as
update or correction, and ``status``, the latest publication status), and ``latest``, the latest
version of each ``story_id`` (the current state of each story). Rows written before clustering
existed count as their own cluster.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from typing import Any

import duckdb
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from schemas import TABLES
from schemas.tables import ROW_ID

_ORDER = {"events": "ingested_at", "entities": "published_at", "errors": "error_time"}


def _has_files(lake: str, table: str) -> bool:
  try:
    result = FileSystems.match([f"{lake.rstrip('/')}/{table}/*/*.parquet"])[0]
  except Exception:  # noqa: BLE001
    return False
  return bool(result.metadata_list)


def connect(lake: str) -> duckdb.DuckDBPyConnection:
  """A DuckDB connection with the lake's views."""
  con = duckdb.connect()
  lake = lake.rstrip("/")
  if lake.startswith("gs://"):
    con.execute("INSTALL httpfs; LOAD httpfs;")
  for table, schema in TABLES.items():
    row_id = ROW_ID[table]
    if _has_files(lake, table):
      source = (f"read_parquet('{lake}/{table}/*/*.parquet', hive_partitioning = true, "
                f"union_by_name = true, hive_types = {{'date': DATE}})")
    else:
      empty = pa.Table.from_batches([], schema=schema)
      con.register(f"_empty_{table}", empty)
      source = f"(SELECT *, NULL::DATE AS date FROM _empty_{table})"
    con.execute(
        f"CREATE VIEW {table} AS SELECT * FROM {source} "
        f"QUALIFY row_number() OVER (PARTITION BY {row_id} ORDER BY {_ORDER[table]} DESC NULLS LAST) = 1")
  _story_views(con)
  return con


def _story_views(con: duckdb.DuckDBPyConnection) -> None:
  """Views ``stories`` (one row per story cluster) and ``latest`` (the latest version of each story)."""
  present = {row[0] for row in con.execute("DESCRIBE events").fetchall()}
  col = lambda name: name if name in present else "NULL::VARCHAR"  # noqa: E731 - files of older schemas
  seen = "COALESCE(published_at, ingested_at)"
  newest = f"{seen} DESC, version DESC, event_id DESC"
  con.execute(
      f"CREATE VIEW latest AS SELECT * FROM events "
      f"QUALIFY row_number() OVER (PARTITION BY story_id ORDER BY version DESC, {seen} DESC, ingested_at DESC) = 1")
  con.execute(
      f"CREATE VIEW stories AS SELECT COALESCE({col('cluster_id')}, story_id) AS cluster_id, "
      f"min({seen}) AS first_seen, max({seen}) AS last_seen, count(*) AS size, "
      f"count(DISTINCT story_id) AS story_ids, "
      f"list(headline ORDER BY {newest})[1] AS headline, list(event_id ORDER BY {newest})[1] AS event_id, "
      f"list(DISTINCT agency ORDER BY agency) FILTER (WHERE agency IS NOT NULL) AS agencies, "
      f"list(DISTINCT {col('revision')} ORDER BY {col('revision')}) "
      f"FILTER (WHERE {col('revision')} IS NOT NULL) AS revisions, "
      f"list({col('pub_status')} ORDER BY {newest})[1] AS status "
      f"FROM events GROUP BY 1")


def _cell(value: Any, width: int = 60) -> str:
  if value is None:
    return "NULL"
  if isinstance(value, bytes):
    value = f"<{len(value)} bytes>"
  text = str(value).replace("\n", " ")
  return text if len(text) <= width else text[: width - 1] + "…"


def _json_default(value: Any):
  if isinstance(value, (dt.datetime, dt.date)):
    return value.isoformat()
  if isinstance(value, bytes):
    return value.decode("latin-1")
  return str(value)


def print_result(cursor: duckdb.DuckDBPyConnection, fmt: str, stream=sys.stdout) -> int:
  columns = [d[0] for d in cursor.description or []]
  rows = cursor.fetchall()
  if fmt == "csv":
    writer = csv.writer(stream)
    writer.writerow(columns)
    writer.writerows(rows)
  elif fmt == "json":
    for row in rows:
      stream.write(json.dumps(dict(zip(columns, row, strict=False)), default=_json_default, ensure_ascii=False) + "\n")
  else:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "+".join("-" * (w + 2) for w in widths)
    stream.write(" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=False)) + "\n")
    stream.write(line + "\n")
    for row in cells:
      stream.write(" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)) + "\n")
    stream.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
  return len(rows)


def run(args: argparse.Namespace) -> int:
  lake = args.lake
  if "://" not in lake and not FileSystems.exists(lake):
    print(f"wirestream query: error: lake {lake!r} does not exist", file=sys.stderr)
    return 2
  con = connect(lake)
  try:
    cursor = con.execute(args.sql)
  except duckdb.Error as error:
    print(f"wirestream query: error: {error}", file=sys.stderr)
    return 1
  print_result(cursor, args.format)
  return 0


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "query", help="Run SQL over the lake with DuckDB (views events, entities, errors, stories, latest).",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--lake", required=True, help="Lake directory written by run/stream.")
  parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                      help="Output format; json prints one object per line.")
  parser.add_argument("sql", help="SQL statement.")
  parser.set_defaults(func=run)
