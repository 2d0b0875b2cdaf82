"""The batch pipeline: story files -> parse -> enrichment stages -> Parquet lake.

    wirestream run --input 'seeds/*' --output lake [--stages ner,topics|none] [Beam options]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import apache_beam as beam

from pipelines.common import (
  LogProgress,
  add_pipeline_arguments,
  apply_stages,
  pipeline_options,
  print_metrics,
)
from transforms.cluster import ClusterStories
from transforms.io import ReadRawRecords, match_inputs
from transforms.parse import ParseStories
from transforms.write import WriteTables, output_is_writable


def build(pipeline: beam.Pipeline, args: argparse.Namespace):
  """Adds the batch pipeline's steps to ``pipeline``; returns the PCollection of written files."""
  records, read_errors = pipeline | "Read" >> ReadRawRecords(args.input)
  stories, parse_errors = records | "Parse" >> ParseStories(max_story_bytes=args.max_story_bytes)
  stories = stories | "Progress" >> beam.ParDo(LogProgress())
  stories = stories | "Cluster" >> ClusterStories(ttl_seconds=args.cluster_ttl_seconds)
  stories, stage_errors = apply_stages(stories, args)
  errors = (read_errors, parse_errors, *stage_errors) | "AllErrors" >> beam.Flatten()
  return (stories, errors) | "Write" >> WriteTables(args.output, shards_per_partition=args.shards_per_partition)


def run(args: argparse.Namespace, beam_args: Sequence[str]) -> int:
  try:
    matched = match_inputs(args.input)
  except ValueError as error:
    print(f"wirestream run: error: {error}", file=sys.stderr)
    return 2
  problem = output_is_writable(args.output)
  if problem:
    print(f"wirestream run: error: {problem}", file=sys.stderr)
    return 2
  files = sum(len(paths) for paths in matched.values())
  print(f"wirestream run: {files} input file(s) -> {args.output} (stages: {','.join(args.stages) or 'none'})",
        file=sys.stderr)
  start = time.monotonic()
  pipeline = beam.Pipeline(options=pipeline_options(beam_args))
  build(pipeline, args)
  result = pipeline.run()
  result.wait_until_finish()
  print(f"wirestream run: done in {time.monotonic() - start:.1f}s, state {result.state}", file=sys.stderr)
  print_metrics(result)
  return 0


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "run", help="Run the batch pipeline over story files.",
      description="Parse story files, run the enrichment stages and write the Parquet lake. "
                  "Unrecognised --options are passed to Beam (e.g. --runner, --direct_num_workers).")
  parser.add_argument("--input", action="append", required=True, metavar="GLOB",
                      help="Input file, directory or glob (local or gs://); repeatable.")
  add_pipeline_arguments(parser)
  parser.set_defaults(func=run, accepts_beam_args=True)
