"""Reading input files into ``RawRecord``s, through Beam's filesystems (local, ``gs://``...)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import posixpath
from collections.abc import Iterable, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas import DeadLetter, RawRecord

_LOG = logging.getLogger(__name__)

#: Files larger than this are not read into memory; they land in ``errors``.
DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024


def expand_input(pattern: str) -> str:
  """A local directory stands for the files directly inside it."""
  if "://" not in pattern and os.path.isdir(pattern):
    return os.path.join(pattern, "*")
  return pattern


def match_input_files(patterns: Sequence[str]) -> dict[str, dict[str, int]]:
  """Matches each pattern; returns pattern -> {file path: size in bytes}, in path order.

  Raises ValueError when a pattern matches nothing.
  """
  matched: dict[str, dict[str, int]] = {}
  for pattern in patterns:
    expanded = expand_input(pattern)
    try:
      results = FileSystems.match([expanded])[0].metadata_list
    except Exception as error:  # noqa: BLE001 - any filesystem error is a "no match" for the user
      raise ValueError(f"cannot list input {pattern!r}: {error}") from error
    files = {m.path: int(m.size_in_bytes or 0) for m in sorted(results, key=lambda m: m.path)
             if not _hidden(m.path)}
    if not files:
      raise ValueError(f"input {pattern!r} matches no files")
    matched[pattern] = files
  return matched


def match_inputs(patterns: Sequence[str]) -> dict[str, list[str]]:
  """Matches each pattern; returns pattern -> file paths. Raises ValueError when one matches nothing."""
  return {pattern: list(files) for pattern, files in match_input_files(patterns).items()}


def _hidden(path: str) -> bool:
  return posixpath.basename(path.rstrip("/")).startswith(".")


class _ReadFile(beam.DoFn):
  """Reads one matched file into a RawRecord; unreadable or oversized files become dead letters."""

  ERRORS = "errors"

  def __init__(self, max_file_bytes: int):
    self._max_file_bytes = max_file_bytes
    self._files = Metrics.counter("wirestream.read", "files_read")
    self._bytes = Metrics.counter("wirestream.read", "bytes_read")
    self._errors = Metrics.counter("wirestream.read", "read_errors")

  def process(self, readable: fileio.ReadableFile) -> Iterable:
    path = readable.metadata.path
    size = readable.metadata.size_in_bytes
    now = dt.datetime.now(dt.timezone.utc)
    if _hidden(path):
      return
    if size is not None and size > self._max_file_bytes:
      self._errors.inc()
      yield beam.pvalue.TaggedOutput(self.ERRORS, DeadLetter(
          input_uri=path, locator="", stage="read", error_type="OversizeFile",
          message=f"file of {size} bytes exceeds the {self._max_file_bytes}-byte read limit",
          raw_excerpt=b"", raw_sha256="", raw_size=size, error_time=now, raw_truncated=True))
      return
    try:
      # Raw bytes: gzip is detected from content by the parser, not from the extension.
      with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        data = handle.read()
    except Exception as error:  # noqa: BLE001 - a file that cannot be read is a dead letter
      self._errors.inc()
      yield beam.pvalue.TaggedOutput(
          self.ERRORS, DeadLetter.from_raw(b"", uri=path, locator="", stage="read", error=error, now=now))
      return
    self._files.inc()
    self._bytes.inc(len(data))
    yield RawRecord(uri=path, data=data, received_at=now)


class ReadRawRecords(beam.PTransform):
  """Matches file patterns and reads every file as one ``RawRecord`` (once, whatever patterns match it).

  Returns a tuple ``(records, errors)`` of PCollections of RawRecord and DeadLetter.
  """

  def __init__(self, patterns: Sequence[str], max_file_bytes: int = DEFAULT_MAX_FILE_BYTES):
    super().__init__()
    self._patterns = [expand_input(p) for p in patterns]
    self._max_file_bytes = max_file_bytes

  def expand(self, pbegin):
    outputs = (
        pbegin
        | "Patterns" >> beam.Create(self._patterns)
        | "Match" >> fileio.MatchAll(empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
        | "ByPath" >> beam.Map(lambda metadata: (metadata.path, metadata))
        | "OncePerPath" >> beam.GroupByKey()  # also spreads the files over the workers, as a reshuffle
        | "First" >> beam.Map(lambda path_metadata: next(iter(path_metadata[1])))
        | "Open" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
        | "Read" >> beam.ParDo(_ReadFile(self._max_file_bytes)).with_outputs(_ReadFile.ERRORS, main="records"))
    return outputs.records, outputs[_ReadFile.ERRORS]
