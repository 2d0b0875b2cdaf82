"""``wirestream query``: SQL over the lake with DuckDB.

The views ``events``, ``entities`` and ``errors`` are the lake's one truth; every reader
uses the same definitions (``wirestream query --print-views --lake LAKE`` prints them, to
run in DuckDB or to port to BigQuery). They read every Parquet file of a table with hive
partitioning (column ``date``) and ``union_by_name`` (files of older minor schema versions
line up), and keep:

* ``events``: one row per ``event_id``, the most recently ingested (a story re-run into
  the lake, or delivered twice to a stream, counts once), its ``cluster_id`` merged with the
  clusters that a story bridged (``cluster_links``: the stream writes a row once, so a story
  that links two earlier clusters records it; batch has merged them already);
* ``entities``: the mentions of each event's current row only (a re-run with other
  stages, or with ``--stages none``, replaces the earlier mentions; none are left over);
* ``errors``: one row per ``error_id``, the most recent;
* ``story_entities``: one row per distinct entity of a story (``events.story_entities``
  unnested, with ``event_id``, ``story_id``, ``published_at`` and ``date``): "the people most
  written about this week" is
  ``SELECT canonical, count(*) FROM story_entities WHERE label = 'PER' AND date >= ... GROUP BY ALL``;
* ``latest``: the latest version of each ``story_id`` (the current state of each story);
* ``stories``: one row per story cluster (every copy, version and rewrite of one story):
  ``cluster_id``, ``first_seen``, ``last_seen``, ``size`` in events rows, ``story_ids``, the
  latest ``headline`` and ``event_id``, ``agencies``, ``revisions`` such as update or
  correction, and ``status``, the latest publication status. Rows written before clustering
  existed count as their own cluster.

``wirestream query`` also gives files of an older minor schema version the columns they lack
(null), even in a lake that no current version has written to yet.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipelines.common import OUTPUT_OPTIONS

TABLE_NAMES = ("events", "entities", "errors")
_ID = {"events": "event_id", "entities": "mention_id", "errors": "error_id"}
_ORDER = {"events": "ingested_at", "entities": "ingested_at", "errors": "error_time"}


class NoLake(ValueError):
  """The path holds none of the lake's tables."""


def _source(lake: str, table: str) -> str:
  return (f"read_parquet('{lake}/{table}/*/*.parquet', hive_partitioning = true, union_by_name = true, "
          f"hive_types = {{'date': DATE}})")


_SEEN = "COALESCE(published_at, ingested_at)"
# Clusters that a story bridged (events.cluster_links: the stream never rewrites a row) are one cluster: a link
# names a cluster by the story that heads it (a row of that story carries its own id); connected components
# over the links, each named after the cluster seen first (transforms.cluster.view_ids).
_MERGED_CLUSTERS = (
    "heads AS (SELECT DISTINCT story_id FROM ev WHERE cluster_id = story_id),\n"
    "first_seen AS (\n"
    f"  SELECT cluster_id, min({_SEEN}) AS seen FROM ev WHERE cluster_id IS NOT NULL GROUP BY cluster_id),\n"
    "edges AS (\n"
    "  SELECT DISTINCT l.cluster_id AS a, l.linked AS b\n"
    "  FROM (SELECT cluster_id, unnest(cluster_links) AS linked FROM ev WHERE len(cluster_links) > 0) AS l\n"
    "  JOIN heads AS h ON h.story_id = l.linked\n"
    "  WHERE l.cluster_id <> l.linked),\n"
    "pairs AS (SELECT a, b FROM edges UNION SELECT b, a FROM edges),\n"
    "reach(node, other) AS (\n"
    "  SELECT a, a FROM pairs\n"
    "  UNION\n"
    "  SELECT reach.node, pairs.b FROM reach JOIN pairs ON pairs.a = reach.other),\n"
    "merged AS (\n"
    "  SELECT reach.node, arg_min(reach.other, (f.seen, reach.other)) AS cluster_id\n"
    "  FROM reach JOIN first_seen AS f ON f.cluster_id = reach.other\n"
    "  GROUP BY reach.node)")


def view_sql(lake: str, table: str, source: str | None = None) -> str:
  """The ``CREATE VIEW`` statement of ``table`` (reading ``source``, by default the lake's files)."""
  lake = lake.rstrip("/")
  source = source or _source(lake, table)
  latest = f"row_number() OVER (PARTITION BY {_ID[table]} ORDER BY {_ORDER[table]} DESC NULLS LAST) = 1"
  if table == "entities":
    return (f"CREATE OR REPLACE VIEW entities AS\n"
            f"SELECT m.* FROM {source} AS m\n"
            f"JOIN events AS e ON e.event_id = m.event_id\n"
            f"  AND (m.ingested_at = e.ingested_at OR (m.ingested_at IS NULL AND e.entity_count IS NOT NULL))\n"
            f"WHERE true\n"
            f"QUALIFY row_number() OVER (PARTITION BY m.mention_id ORDER BY m.ingested_at DESC NULLS LAST) = 1;")
  if table == "events":
    return (f"CREATE OR REPLACE VIEW events AS\n"
            f"WITH RECURSIVE ev AS MATERIALIZED (\n"
            f"  SELECT * FROM {source}\n"
            f"  WHERE true\n"
            f"  QUALIFY {latest}),\n"
            f"{_MERGED_CLUSTERS}\n"
            f"SELECT ev.* REPLACE (COALESCE(merged.cluster_id, ev.cluster_id) AS cluster_id)\n"
            f"FROM ev LEFT JOIN merged ON merged.node = ev.cluster_id;")
  return (f"CREATE OR REPLACE VIEW {table} AS\n"
          f"SELECT * FROM {source}\n"
          f"WHERE true\n"
          f"QUALIFY {latest};")


STORY_ENTITIES_VIEW = (
    "CREATE OR REPLACE VIEW story_entities AS\n"
    "SELECT event_id, story_id, published_at, date, e.entity_key, e.canonical, e.label, e.mentions, e.first_char,\n"
    "  e.first_field\n"
    "FROM (SELECT *, unnest(story_entities) AS e FROM events);")

_NEWEST = f"{_SEEN} DESC, version DESC, event_id DESC"
LATEST_VIEW = (
    "CREATE OR REPLACE VIEW latest AS\n"
    "SELECT * FROM events\n"
    "WHERE true\n"
    f"QUALIFY row_number() OVER (PARTITION BY story_id ORDER BY version DESC, {_SEEN} DESC, "
    "ingested_at DESC) = 1;")
# Rows written before clustering existed (cluster_id null) count as their own cluster.
STORIES_VIEW = (
    "CREATE OR REPLACE VIEW stories AS\n"
    f"SELECT COALESCE(cluster_id, story_id) AS cluster_id, min({_SEEN}) AS first_seen, "
    f"max({_SEEN}) AS last_seen,\n"
    "  count(*) AS size, count(DISTINCT story_id) AS story_ids,\n"
    f"  list(headline ORDER BY {_NEWEST})[1] AS headline,\n"
    f"  list(event_id ORDER BY {_NEWEST})[1] AS event_id,\n"
    "  list(DISTINCT agency ORDER BY agency) FILTER (WHERE agency IS NOT NULL) AS agencies,\n"
    "  list(DISTINCT revision ORDER BY revision) FILTER (WHERE revision IS NOT NULL) AS revisions,\n"
    f"  list(pub_status ORDER BY {_NEWEST})[1] AS status\n"
    "FROM events\n"
    "GROUP BY 1;")
#: The views computed from ``events``, after the tables' views.
DERIVED_VIEWS = (STORY_ENTITIES_VIEW, LATEST_VIEW, STORIES_VIEW)


def views_sql(lake: str) -> str:
  """Every view of the lake, in the order they depend on each other (what ``--print-views`` prints)."""
  return "\n\n".join([*(view_sql(lake, table) for table in TABLE_NAMES), *DERIVED_VIEWS])


def lake_tables(lake: str) -> dict[str, bool]:
  """table -> whether it has Parquet files under ``lake``."""
  from apache_beam.io.filesystems import FileSystems

  found = {}
  for table in TABLE_NAMES:
    try:
      result = FileSystems.match([f"{lake.rstrip('/')}/{table}/*/*.parquet"])[0]
    except Exception:  # noqa: BLE001 - an unreadable path holds no table
      found[table] = False
    else:
      found[table] = bool(result.metadata_list)
  return found


def _no_lake_message(lake: str) -> str:
  import posixpath

  stripped = lake.rstrip("/")
  parent, name = posixpath.split(stripped)
  if name in TABLE_NAMES and parent and any(lake_tables(parent).values()):
    return f"{lake!r} is the {name} table of a lake, not a lake: use --lake {parent}"
  return (f"{lake!r} holds no lake tables (no events/, entities/ or errors/ folder with Parquet files); "
          f"give the directory that `wirestream run --output` wrote")


def connect(lake: str):
  """A DuckDB connection with the lake's views; raises :class:`NoLake` when ``lake`` holds no table.

  A table with no files at all (a lake written before every table had its schema file) reads as empty.
  """
  import duckdb
  import pyarrow as pa

  from schemas import TABLES

  lake = lake.rstrip("/")
  present = lake_tables(lake)
  if not any(present.values()):
    raise NoLake(_no_lake_message(lake))
  con = duckdb.connect()
  if lake.startswith("gs://"):
    con.execute("INSTALL httpfs; LOAD httpfs;")
  for table in TABLE_NAMES:
    # The current schema's empty table: a table without files reads as empty, and files of an older
    # minor version get the columns they lack.
    con.register(f"_empty_{table}", pa.Table.from_batches([], schema=TABLES[table]))
    empty = f"SELECT *, NULL::DATE AS date FROM _empty_{table}"
    source = f"(SELECT * FROM {_source(lake, table)} UNION ALL BY NAME {empty})" if present[table] else f"({empty})"
    con.execute(view_sql(lake, table, source))
  for view in DERIVED_VIEWS:
    con.execute(view)
  return con


def _cell(value: Any, width: int = 60) -> str:
  if value is None:
    return "NULL"
  if isinstance(value, bytes):
    value = f"<{len(value)} bytes>"
  text = str(value).replace("\n", " ")
  return text if len(text) <= width else text[: width - 1] + "…"


def _json_default(value: Any):
  import datetime as dt

  if isinstance(value, (dt.datetime, dt.date, dt.time)):
    return value.isoformat()
  if isinstance(value, bytes):
    return value.decode("latin-1")
  return str(value)


def _csv_cell(value: Any) -> Any:
  """A CSV cell: nested values (lists, structs, maps) and bytes as JSON, the rest as they are."""
  import json

  if isinstance(value, (list, dict, tuple, bytes)):
    return json.dumps(value, default=_json_default, ensure_ascii=False)
  return value


def print_result(cursor, fmt: str, stream=None) -> int:
  import csv
  import json

  stream = stream or sys.stdout
  columns = [d[0] for d in cursor.description or []]
  rows = cursor.fetchall()
  if fmt == "csv":
    writer = csv.writer(stream)
    writer.writerow(columns)
    writer.writerows([_csv_cell(v) for v in row] for row in rows)
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
  prog = "wirestream query"
  if args.print_views:
    print(views_sql(args.lake))
    return 0
  if not args.sql:
    print(f"{prog}: error: give a SQL statement (or --print-views)", file=sys.stderr)
    return 2
  import duckdb

  try:
    con = connect(args.lake)
  except NoLake as error:
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2
  try:
    cursor = con.execute(args.sql)
  except duckdb.Error as error:
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 1
  print_result(cursor, args.format)
  return 0


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "query", help="Run SQL over the lake with DuckDB (views events, entities, errors, story_entities, "
                    "latest, stories).",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--lake", *(name for name in OUTPUT_OPTIONS if name != "--lake"), dest="lake",
                      required=True, metavar="DIR", help="The lake directory (what run or stream wrote with --output).")
  parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                      help="Output format; csv writes nested values as JSON, json prints one object per line.")
  parser.add_argument("--print-views", action="store_true",
                      help="Print the SQL of the views (DuckDB) and exit: the one definition every reader uses.")
  parser.add_argument("sql", nargs="?", help="SQL statement.")
  parser.set_defaults(func=run)
