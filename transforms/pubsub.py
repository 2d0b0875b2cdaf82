"""Pub/Sub messages -> ``RawRecord``s.

Each message holds one story in any supported format; its ``format`` attribute, when
present, names the format (otherwise the parser detects it). Lineage: ``uri`` is the
subscription, ``locator`` is ``msg:<message id>``.

Message ids: the DirectRunner fills ``PubsubMessage.message_id`` from the pull
response; a runner that leaves it empty gets a stable stand-in, ``sha256:<hash>`` of
the data and attributes (counted in ``wirestream.pubsub.message_id_missing``), so redeliveries
of the same message keep the same id.

Timestamps: every record is stamped with the time the pipeline received it. Windows
then group messages by arrival, which only decides when files are written (the
tables are partitioned by publication date, not by window), and a backlog of old
messages is never late data that a window would drop.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import ReadFromPubSub
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from schemas import RawRecord

METRICS_NAMESPACE = "wirestream.pubsub"

#: Attribute that names the story format of a message (see ``RawRecord.format_hint``).
FORMAT_ATTRIBUTE = "format"


def fallback_message_id(data: bytes, attributes: dict[str, str]) -> str:
  """A stable id for a message whose runner does not expose the Pub/Sub message id."""
  digest = hashlib.sha256(data)
  for key in sorted(attributes):
    digest.update(b"\x1f" + key.encode("utf-8") + b"\x1e" + attributes[key].encode("utf-8"))
  return "sha256:" + digest.hexdigest()[:32]


def message_to_raw(message: Any, subscription: str, now: dt.datetime | None = None) -> RawRecord:
  """One ``PubsubMessage`` (or plain ``bytes``) -> ``RawRecord``."""
  if isinstance(message, (bytes, bytearray)):
    data, attributes, message_id = bytes(message), {}, None
  else:
    data = bytes(message.data or b"")
    attributes = {str(k): str(v) for k, v in (message.attributes or {}).items()}
    message_id = getattr(message, "message_id", None) or None
  if not message_id:
    message_id = fallback_message_id(data, attributes)
  format_hint = (attributes.get(FORMAT_ATTRIBUTE) or "").strip().lower() or None
  return RawRecord(
      uri=subscription, data=data, locator=f"msg:{message_id}", format_hint=format_hint,
      message_id=message_id, attributes=attributes, received_at=now or dt.datetime.now(dt.timezone.utc))


class MessagesToRawRecords(beam.DoFn):
  """``PubsubMessage`` -> ``RawRecord`` stamped with its arrival time."""

  def __init__(self, subscription: str):
    self._subscription = subscription
    self._messages = Metrics.counter(METRICS_NAMESPACE, "messages")
    self._bytes = Metrics.counter(METRICS_NAMESPACE, "bytes")
    self._missing_ids = Metrics.counter(METRICS_NAMESPACE, "message_id_missing")

  def process(self, message: Any) -> Iterable[TimestampedValue]:
    record = message_to_raw(message, self._subscription)
    self._messages.inc()
    self._bytes.inc(len(record.data))
    if record.message_id.startswith("sha256:"):
      self._missing_ids.inc()
    yield TimestampedValue(record, record.received_at.timestamp())


class ReadRawRecordsFromPubSub(beam.PTransform):
  """Reads a subscription with Beam's ``ReadFromPubSub``; returns a PCollection of ``RawRecord``.

  Records are timestamped with their arrival time and still in the global window:
  apply the streaming windows next.
  """

  def __init__(self, subscription: str):
    super().__init__()
    self._subscription = subscription

  def expand(self, pbegin):
    return (
        pbegin
        | "ReadFromPubSub" >> ReadFromPubSub(subscription=self._subscription, with_attributes=True)
        | "ToRawRecords" >> beam.ParDo(MessagesToRawRecords(self._subscription)))
