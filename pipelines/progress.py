"""The batch run's progress line (with totals and ETA) and its end-of-run summary."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas import DeadLetter, RawRecord

METRICS_NAMESPACE = "wirestream.run"


def human_bytes(size: float) -> str:
  for unit in ("B", "KB", "MB", "GB"):
    if size < 1024 or unit == "GB":
      return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
    size /= 1024
  return f"{size:.1f} GB"


def human_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  minutes, seconds = divmod(seconds, 60)
  if minutes < 60:
    return f"{minutes}m{seconds:02d}s"
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m"


class Progress:
  """The counts of one run in this process, and its progress line: printed as elements pass and, once one
  has passed here, every ``every_seconds`` while none does (a step that hands its output on only at its
  end, writing). A process that counts nothing (the runner's workers are elsewhere) prints nothing.

  The DirectRunner runs the pipeline in this process; with several worker processes each one
  prints its own share. Stories count as enriched as the enrichment stage reads them
  (:func:`transforms.enrich.add_listener`), not when its output reaches the next step.
  """

  def __init__(self, files: int, size: int, enriching: bool, every_seconds: float,
               printer: Callable[[str], None]):
    self.files = files
    self.size = size
    self.enriching = enriching
    self.every = every_seconds
    self.printer = printer
    self.counts: dict[str, int] = {}
    self.start = time.monotonic()
    self.last = self.start
    self.lock = threading.Lock()
    self._stop = threading.Event()
    self._beat: threading.Thread | None = None

  def add(self, what: str, amount: int = 1) -> None:
    with self.lock:
      self.counts[what] = self.counts.get(what, 0) + amount
      line = self._due_line()
    if line:
      self.printer(line)

  def enriched(self, amount: int) -> None:
    self.add("enriched", amount)

  def _due_line(self) -> str | None:
    """The progress line when one is due, else None (called with the lock held)."""
    now = time.monotonic()
    if now - self.last < self.every:
      return None
    self.last = now
    return self.line(now - self.start)

  def begin(self, heartbeat: bool = True) -> None:
    """Starts listening to the enrichment stage and, with ``heartbeat``, printing while no element passes."""
    from transforms import enrich

    enrich.add_listener(self.enriched)
    if heartbeat:
      self._beat = threading.Thread(target=self._heartbeat, name="wirestream-progress", daemon=True)
      self._beat.start()

  def end(self) -> None:
    from transforms import enrich

    enrich.remove_listener(self.enriched)
    self._stop.set()
    if self._beat is not None:
      self._beat.join()

  def _heartbeat(self) -> None:
    while not self._stop.wait(max(0.05, min(1.0, self.every / 2))):
      with self.lock:
        line = self._due_line() if self.counts else None
      if line:
        self.printer(line)

  def fraction(self) -> float:
    """Share of the work done: bytes read, times the share of parsed stories enriched."""
    done = self.counts.get("bytes", 0) / self.size if self.size else 0.0
    if self.enriching:
      parsed = self.counts.get("stories", 0)
      done *= self.counts.get("enriched", 0) / parsed if parsed else 0.0
    return min(done, 1.0)

  def line(self, elapsed: float) -> str:
    c = self.counts
    files = c.get("files", 0)
    parts = [f"{files}/{self.files} files ({100 * files / max(self.files, 1):.0f}%, "
             f"{human_bytes(c.get('bytes', 0))} of {human_bytes(self.size)})",
             f"{c.get('stories', 0)} stories parsed"]
    if self.enriching:
      parts.append(f"{c.get('enriched', 0)} enriched")
    parts.append(f"{c.get('errors', 0)} errors")
    done = self.fraction()
    eta = human_seconds(elapsed * (1 - done) / done) if done > 0 else "unknown"
    return f"progress: {', '.join(parts)}; {human_seconds(elapsed)} elapsed, ETA {eta}"


_RUNS: dict[str, Progress] = {}
_RUNS_LOCK = threading.Lock()


def register(run_id: str, progress: Progress) -> None:
  with _RUNS_LOCK:
    _RUNS[run_id] = progress
  progress.begin()


def unregister(run_id: str) -> None:
  with _RUNS_LOCK:
    progress = _RUNS.pop(run_id, None)
  if progress is not None:
    progress.end()


class Tick(beam.DoFn):
  """Counts the elements passing by into the run's progress (``what``: files, stories, errors)."""

  def __init__(self, run_id: str, what: str, files: int, size: int, enriching: bool, every_seconds: float):
    self._run_id = run_id
    self._what = what
    self._settings = (files, size, enriching, every_seconds)

  def _progress(self) -> Progress:
    with _RUNS_LOCK:
      progress = _RUNS.get(self._run_id)
      if progress is None:  # a worker process: its own progress, printed from here
        import sys
        progress = _RUNS[self._run_id] = Progress(
            *self._settings, printer=lambda line: print(line, file=sys.stderr, flush=True))
        progress.begin(heartbeat=False)  # a worker lives on after the run: lines as elements pass only
    return progress

  def process(self, element):
    progress = self._progress()
    if isinstance(element, RawRecord):
      progress.add("bytes", len(element.data or b""))
    progress.add(self._what)
    yield element


class CountErrors(beam.DoFn):
  """Counts dead letters by stage and type (``wirestream.run.errors:<stage>:<type>``)."""

  def process(self, letter: DeadLetter):
    Metrics.counter(METRICS_NAMESPACE, f"errors:{letter.stage}:{letter.error_type}").inc()
    yield letter


def summary(counters: Mapping[str, int], elapsed: float, lake: str, prog: str) -> list[str]:
  """The end-of-run summary, from the pipeline's counters."""
  def get(name: str) -> int:
    return int(counters.get(name, 0))

  errors = {name.split(":", 1)[1].replace(":", "/"): value for name, value in counters.items()
            if name.startswith(f"{METRICS_NAMESPACE}.errors:") and value}
  total_errors = sum(errors.values())
  repeats = get("wirestream.dedup.stories_repeats") + get("wirestream.dedup.errors_repeats")
  lines = [
      f"{prog}: done in {human_seconds(elapsed)}",
      f"  files     {get('wirestream.read.files_read')} read ({human_bytes(get('wirestream.read.bytes_read'))})",
      f"  stories   {get('wirestream.parse.stories_parsed')} parsed"
      + (f", {repeats} repeated an id already in this run (one row kept)" if repeats else ""),
      f"  events    {get('wirestream.write.events_rows')} rows",
      f"  entities  {get('wirestream.write.entities_rows')} rows",
      f"  errors    {total_errors}" + (": " + ", ".join(f"{kind} {n}" for kind, n in sorted(errors.items()))
                                       if errors else ""),
      f"  lake      {lake}",
  ]
  if total_errors:
    lines.append(f"{prog}: see the errors with: wirestream query --lake {lake} "
                 f"\"SELECT stage, error_type, input_uri, locator, message FROM errors\"")
  return lines
