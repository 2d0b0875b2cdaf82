"""The Beam stage of story clusters (:mod:`transforms.cluster`): ``ClusterStories``, for batch (every story of
a key at once, linked clusters merged) and stream (keyed state with an expiry timer)."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Duration

from transforms.cluster import (
  ALIAS,
  DEFAULT_CAP,
  DEFAULT_EXACT_TTL_SECONDS,
  DEFAULT_TTL_SECONDS,
  EXACT,
  LINKS,
  METRICS_NAMESPACE,
  Link,
  Proposal,
  Signature,
  _arrival_order,
  assign,
  bridged,
  can_bridge,
  chosen,
  exact_copies,
  joins,
  keys,
  merged_ids,
  proposal_links,
  resolve_alias,
  signature,
)


def _keyed(element: tuple[str, tuple[object, Signature]]) -> list[tuple[str, bytes]]:
  """(event id, (story, signature)) -> (key, signature as bytes) per candidate key: the signature is
  serialised once per story, not once per key, and a key's group is read only when it has two stories."""
  sig = element[1][1]
  blob = pickle.dumps(sig, protocol=pickle.HIGHEST_PROTOCOL)
  return [(key, blob) for key in keys(sig)]


def _signatures(blobs: Iterable[bytes]) -> list[Signature]:
  """A key's signatures in event-time order."""
  return sorted(map(pickle.loads, blobs), key=_arrival_order)


def _joined(proposals: Iterable[tuple[str, Proposal]]) -> Iterator[tuple[str, Proposal]]:
  """The proposals to join an earlier cluster: a story that joins none keeps its own root, which
  :class:`_Attach` knows without them."""
  return (proposal for proposal in proposals if joins(proposal[1]))


class _AssignBatch(beam.DoFn):
  """(key, signatures) -> (event_id, proposal) per signature that joins an earlier member's cluster, members
  in event-time order (a key of one story proposes nothing); ``LINKS``: (event_id, link) per other cluster a
  signature nearly copies a member of."""

  def __init__(self, ttl_us: int, cap: int):
    self._ttl_us = ttl_us
    self._cap = cap

  def process(self, element):
    _, blobs = element
    blobs = list(blobs)
    if len(blobs) < 2:
      return
    _, proposals, links = assign([], _signatures(blobs), ttl_us=self._ttl_us, cap=self._cap)
    yield from _joined(proposals)
    for link in links:
      yield beam.pvalue.TaggedOutput(LINKS, link)


_MEMBERS = ReadModifyWriteStateSpec("members", PickleCoder())
_EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)
_MEMBERS_PARAM = beam.DoFn.StateParam(_MEMBERS)
_EXPIRY_PARAM = beam.DoFn.TimerParam(_EXPIRY)


class _AssignStateful(beam.DoFn):
  """Stateful: a key's members live across windows; the key expires ``ttl`` after its newest member."""

  def __init__(self, ttl_us: int, cap: int):
    self._ttl_us = ttl_us
    self._cap = cap
    self._keys = Metrics.counter(METRICS_NAMESPACE, "key_groups")

  def process(self, element, timestamp=beam.DoFn.TimestampParam, members=_MEMBERS_PARAM,
              expiry=_EXPIRY_PARAM) -> Iterator:
    _, blobs = element
    self._keys.inc()
    state, proposals, links = assign(members.read() or [], _signatures(blobs), ttl_us=self._ttl_us, cap=self._cap)
    members.write(state)
    expiry.set(timestamp + Duration(micros=self._ttl_us))
    for proposal in _joined(proposals):
      yield TimestampedValue(proposal, timestamp)
    for link in links:
      yield beam.pvalue.TaggedOutput(LINKS, TimestampedValue(link, timestamp))

  @on_timer(_EXPIRY)
  def expire(self, members=_MEMBERS_PARAM) -> None:
    members.clear()


class _Attach(beam.DoFn):
  """(event_id, {(story, signature), proposals to join, links its keys saw}) -> the story with the closest root
  proposed strongly, else weakly (:func:`transforms.cluster.chosen`), else its own; in the stream (``carry``),
  the other clusters it nearly copies in ``cluster_links`` (:func:`transforms.cluster.bridged`); in batch,
  links between the clusters proposed as near copies;
  ``(text hash, (event time, event id, root, story or None))`` for the exact-copy stage (stories with text;
  ``carry``: the story goes there, not to the main output, to meet its text's state). A story that joined
  a cluster goes to the alias stage, keyed by the root it joined (``(root id, (event time, 1, event id,
  root, story, text hash or None))``; with ``carry`` instead of the other outputs, else without the story),
  and when that is not its own root, its alias too (``(own id, (event time, 0, event id, root, None, None))``)."""

  def __init__(self, carry: bool):
    self._carry = carry
    self._stories = Metrics.counter(METRICS_NAMESPACE, "stories")
    self._joined = Metrics.counter(METRICS_NAMESPACE, "joined_earlier_story")
    self._bridging = Metrics.counter(METRICS_NAMESPACE, "bridging_stories")

  def process(self, element):
    _, grouped = element
    proposals = list(grouped["root"])
    key_links = list(grouped.get("links", ()))
    for story, sig in grouped["story"]:
      best = chosen(proposals, sig)
      joined = (best[1], best[2])
      if not self._carry and can_bridge(sig.n_tokens):
        for link in proposal_links(proposals, joined):
          yield beam.pvalue.TaggedOutput(LINKS, link)
      self._stories.inc()
      if joins(best) and best[2] != story.story_id:
        self._joined.inc()
      others = bridged(proposals, key_links, sig, joined) if self._carry else []
      if others:
        self._bridging.inc()
      story = dataclasses.replace(story, cluster_id=best[2], cluster_links=others)
      if joins(best):
        text = sig.exact if sig.n_tokens else None
        yield beam.pvalue.TaggedOutput(ALIAS, (joined[1], (sig.time_us, 1, story.event_id, joined,
                                                           *((story, text) if self._carry else (None, None)))))
        if joined != sig.root:
          yield beam.pvalue.TaggedOutput(ALIAS, (sig.story_id, (sig.time_us, 0, story.event_id, joined, None, None)))
        if self._carry:
          continue
      carried = self._carry and sig.n_tokens > 0
      if sig.n_tokens:
        yield beam.pvalue.TaggedOutput(
            EXACT, (sig.exact, (sig.time_us, story.event_id, joined, story if carried else None)))
      if not carried:
        yield story


_ALIAS_ENTRY = ReadModifyWriteStateSpec("alias", PickleCoder())
_ALIAS_EXPIRY = TimerSpec("alias_expiry", TimeDomain.WATERMARK)
_ALIAS_ENTRY_PARAM = beam.DoFn.StateParam(_ALIAS_ENTRY)
_ALIAS_EXPIRY_PARAM = beam.DoFn.TimerParam(_ALIAS_EXPIRY)


class _AliasStateful(beam.DoFn):
  """Stateful, per story id (the stream): the alias of a story that joined another story's cluster, kept
  ``ttl`` after it; the stories whose keys proposed that story's own root join the cluster it names
  (:func:`transforms.cluster.resolve_alias`), then go on to the exact-copy stage (stories with text) or out."""

  def __init__(self, ttl_us: int):
    self._ttl_us = ttl_us
    self._resolved = Metrics.counter(METRICS_NAMESPACE, "joined_through_alias")

  def process(self, element, timestamp=beam.DoFn.TimestampParam, entry=_ALIAS_ENTRY_PARAM,
              expiry=_ALIAS_EXPIRY_PARAM) -> Iterator:
    _, arrivals = element
    state = entry.read()
    for time_us, kind, _, root, story, text in sorted(arrivals, key=lambda arrival: arrival[:3]):
      if kind == 0:
        state = (time_us, tuple(root))
        continue
      resolved = resolve_alias(state, tuple(root), now_us=time_us, ttl_us=self._ttl_us)
      if resolved[1] != story.cluster_id:
        self._resolved.inc()
        story = dataclasses.replace(story, cluster_id=resolved[1])
      if text is None:
        yield TimestampedValue(story, timestamp)
      else:
        yield beam.pvalue.TaggedOutput(EXACT, TimestampedValue((text, (time_us, story.event_id, resolved, story)),
                                                               timestamp))
    if state is not None:
      entry.write(state)
      expiry.set(timestamp + Duration(micros=self._ttl_us))

  @on_timer(_ALIAS_EXPIRY)
  def expire(self, entry=_ALIAS_ENTRY_PARAM) -> None:
    entry.clear()


def _alias_batch(element, ttl_us: int) -> Iterator[Link]:
  """(root id, aliases and stories that joined it) -> a link from each story's root to the cluster the
  alias names, where one does (batch)."""
  _, arrivals = element
  state = None
  for time_us, kind, _, root, _, _ in sorted(arrivals, key=lambda arrival: arrival[:3]):
    if kind == 0:
      state = (time_us, tuple(root))
    else:
      resolved = resolve_alias(state, tuple(root), now_us=time_us, ttl_us=ttl_us)
      if resolved != tuple(root):
        yield (resolved, tuple(root))


def _exact_batch(element, ttl_us: int) -> list[Link]:
  """(text hash, copies) -> links between the clusters of copies within the exact-copy TTL (batch)."""
  _, copies = element
  ordered = sorted(copies, key=lambda copy: copy[:2])
  return exact_copies(None, [(time_us, tuple(root)) for time_us, _, root, _ in ordered], ttl_us=ttl_us)[2]


_EXACT_ENTRY = ReadModifyWriteStateSpec("exact", PickleCoder())
_EXACT_EXPIRY = TimerSpec("exact_expiry", TimeDomain.WATERMARK)
_EXACT_ENTRY_PARAM = beam.DoFn.StateParam(_EXACT_ENTRY)
_EXACT_EXPIRY_PARAM = beam.DoFn.TimerParam(_EXACT_EXPIRY)


class _ExactStateful(beam.DoFn):
  """Stateful, per text: copies join the cluster of the text's first copy while the entry lives (it
  expires ``exact_ttl`` after the text's latest copy)."""

  def __init__(self, ttl_us: int):
    self._ttl_us = ttl_us
    self._rejoined = Metrics.counter(METRICS_NAMESPACE, "exact_copies_rejoined")

  def process(self, element, timestamp=beam.DoFn.TimestampParam, entry=_EXACT_ENTRY_PARAM,
              expiry=_EXACT_EXPIRY_PARAM) -> Iterator:
    _, copies = element
    ordered = sorted(copies, key=lambda copy: copy[:2])
    state, roots, _ = exact_copies(entry.read(), [(time_us, tuple(root)) for time_us, _, root, _ in ordered],
                                   ttl_us=self._ttl_us)
    entry.write(state)
    expiry.set(timestamp + Duration(micros=self._ttl_us))
    for (_, _, _, story), root in zip(ordered, roots, strict=True):
      if root[1] != story.cluster_id:
        self._rejoined.inc()
        story = dataclasses.replace(story, cluster_id=root[1])
      yield TimestampedValue(story, timestamp)

  @on_timer(_EXACT_EXPIRY)
  def expire(self, entry=_EXACT_ENTRY_PARAM) -> None:
    entry.clear()


class _Relabel(beam.DoFn):
  """The story's cluster id after linked clusters are merged (batch)."""

  def __init__(self):
    self._merged = Metrics.counter(METRICS_NAMESPACE, "merged_by_link")

  def process(self, story, merged):
    cluster_id = merged.get(story.cluster_id, story.cluster_id)
    if cluster_id != story.cluster_id:
      self._merged.inc()
      story = dataclasses.replace(story, cluster_id=cluster_id)
    yield story


def _across_windows(grouped, windowing, name: str, dofn: beam.DoFn, tags: tuple[str, ...] = ()):
  """Runs a stateful ``dofn`` on each window's groups in one global window (a key's state outlives the
  windows), then puts its output (and its ``tags`` outputs, after it) back into the input's windows."""
  rewindow = not isinstance(windowing.windowfn, GlobalWindows)
  if rewindow:
    grouped = grouped | f"{name}AcrossWindows" >> beam.WindowInto(GlobalWindows())
  if tags:
    results = grouped | name >> beam.ParDo(dofn).with_outputs(*tags, main="main")
    outs = [results.main, *(results[tag] for tag in tags)]
  else:
    outs = [grouped | name >> beam.ParDo(dofn)]
  if rewindow:
    outs = [out | f"{name}RestoreWindows{i or ''}" >> beam.WindowInto(
        windowing.windowfn, trigger=windowing.triggerfn, accumulation_mode=windowing.accumulation_mode,
        timestamp_combiner=windowing.timestamp_combiner, allowed_lateness=windowing.allowed_lateness)
        for i, out in enumerate(outs)]
  return tuple(outs) if tags else outs[0]


class ClusterStories(beam.PTransform):
  """PCollection[Story] -> the same stories with ``cluster_id`` set (see the module docstring).

  ``stateful=False`` (batch): each key's members are grouped and processed at once, in event-time
  order; then clusters that one story links (it matches members of both, or its keys proposed both,
  or it is an exact copy, within ``exact_ttl_seconds``, of a story of the other, or it joined the own
  root of a story that joined the other: an alias) are merged: connected
  components over the links, named after the earliest root. ``stateful=True`` (stream): each window's
  members of a key are grouped, then meet the key's members of earlier windows, kept in state that
  expires ``ttl_seconds`` after the key's newest member; a story that joined a cluster meets the alias
  kept under the root it joined (a story's own root, when that story joined an earlier cluster through
  its other keys: the story then joins that cluster), kept ``ttl_seconds``; then each window's copies of a text meet the
  text's entry (the cluster of its first copy), kept ``exact_ttl_seconds`` after its latest copy, and
  join that cluster. A row once written is never rewritten: a story that bridges two clusters records the
  other one in ``cluster_links``, and the lake's views merge them. The input's windowing is kept (merging
  windows are not supported).
  """

  def __init__(self, ttl_seconds: float = DEFAULT_TTL_SECONDS, cap: int = DEFAULT_CAP, stateful: bool = False,
               exact_ttl_seconds: float = DEFAULT_EXACT_TTL_SECONDS):
    super().__init__()
    if ttl_seconds <= 0 or cap <= 0 or exact_ttl_seconds <= 0:
      raise ValueError("ttl_seconds, exact_ttl_seconds and cap must be positive")
    self._ttl_us = int(ttl_seconds * 1_000_000)
    self._exact_ttl_us = int(exact_ttl_seconds * 1_000_000)
    self._cap = cap
    self._stateful = stateful

  def expand(self, stories):
    windowing = stories.windowing
    if windowing.windowfn.is_merging():
      raise ValueError("ClusterStories does not support merging windows (e.g. sessions)")
    signed = stories | "Signature" >> beam.Map(lambda story: (story.event_id, (story, signature(story))))
    grouped = (signed | "Keys" >> beam.FlatMap(_keyed).with_output_types(tuple[str, bytes])
               | "ByKey" >> beam.GroupByKey())
    if self._stateful:
      proposals, key_links = _across_windows(grouped, windowing, "Assign", _AssignStateful(self._ttl_us, self._cap),
                                             tags=(LINKS,))
    else:
      proposals, key_links = grouped | "Assign" >> beam.ParDo(
          _AssignBatch(self._ttl_us, self._cap)).with_outputs(LINKS, main="proposals")
    # the stream's stories record the clusters they bridge; batch merges them
    sources = {"story": signed, "root": proposals, **({"links": key_links} if self._stateful else {})}
    attached, story_links, texts, joined = (
        sources | "Join" >> beam.CoGroupByKey()
        | "Attach" >> beam.ParDo(_Attach(self._stateful)).with_outputs(LINKS, EXACT, ALIAS, main="stories"))
    if self._stateful:
      aliased, aliased_texts = _across_windows(joined | "ByRoot" >> beam.GroupByKey(), windowing, "Aliases",
                                               _AliasStateful(self._ttl_us), tags=(EXACT,))
      copies = (texts, aliased_texts) | "AllTexts" >> beam.Flatten() | "ByText" >> beam.GroupByKey()
      rejoined = _across_windows(copies, windowing, "ExactCopies", _ExactStateful(self._exact_ttl_us))
      return (attached, aliased, rejoined) | "AllStories" >> beam.Flatten()
    copies = texts | "ByText" >> beam.GroupByKey()
    exact_links = copies | "ExactCopies" >> beam.FlatMap(_exact_batch, ttl_us=self._exact_ttl_us)
    alias_links = (joined | "ByRoot" >> beam.GroupByKey()
                   | "Aliases" >> beam.FlatMap(_alias_batch, ttl_us=self._ttl_us))
    key_links = key_links | "KeyLinks" >> beam.Map(lambda story_link: story_link[1])
    merged = ((key_links, story_links, exact_links, alias_links) | "AllLinks" >> beam.Flatten()
              | "Links" >> beam.combiners.ToList()
              | "Merge" >> beam.Map(merged_ids))
    return attached | "Relabel" >> beam.ParDo(_Relabel(), merged=beam.pvalue.AsSingleton(merged))
