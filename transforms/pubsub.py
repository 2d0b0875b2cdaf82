"""Pub/Sub messages -> ``RawRecord``s.

Each message holds one story in any supported format; its ``format`` attribute, when
present, names the format (otherwise the parser detects it). Lineage: ``uri`` is the
subscription, ``locator`` is ``msg:<message id>``.

Message ids: the DirectRunner fills ``PubsubMessage.message_id`` from the pull
response; a runner that leaves it empty gets a stable stand-in, ``sha256:<hash>`` of
the data and attributes (counted in ``wirestream.pubsub.message_id_missing``), so redeliveries
of the same message keep the same id.

Acknowledgement: a runner that acknowledges a message as soon as it pulls it loses the
message when the process dies before its story is written. ``Leases`` holds pulled
messages instead: it extends their ack deadlines until their rows are written, then
acknowledges them, and hands back (``nack``) whatever it still holds when it is
released, so Pub/Sub delivers those again at once.

Timestamps: every record is stamped with the time the pipeline received it. Windows
then group messages by arrival, which only decides when files are written (the
tables are partitioned by publication date, not by window), and a backlog of old
messages is never late data that a window would drop.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import ReadFromPubSub
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from schemas import RawRecord

_LOG = logging.getLogger(__name__)

METRICS_NAMESPACE = "wirestream.pubsub"

#: Longest ack deadline Pub/Sub accepts.
MAX_LEASE_SECONDS = 600
#: Most ack ids a single acknowledge or modify-deadline request carries.
_ACK_BATCH = 1000

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


class Leases:
  """Pulled messages not yet acknowledged: held, their ack deadlines extended, until ``ack``.

  ``hold(received_messages)`` takes a pull response's messages and at once sets their ack
  deadline to ``lease_seconds``; a thread extends every held message's deadline again each
  ``lease_seconds / 3``. ``ack(message_ids)`` acknowledges the messages with those ids (every
  delivery of them held so far). ``release()`` stops the extensions and hands the messages
  still held back to Pub/Sub (deadline 0), which delivers them again at once. When the
  process dies instead, their deadlines run out within ``lease_seconds`` and Pub/Sub
  delivers them again then.

  ``client`` is a ``google.cloud.pubsub_v1.SubscriberClient`` (thread-safe).
  """

  def __init__(self, client, subscription: str, lease_seconds: float = 60.0):
    if not 10 <= lease_seconds <= MAX_LEASE_SECONDS:
      raise ValueError(f"lease_seconds must be within 10..{MAX_LEASE_SECONDS}")
    self._client = client
    self._subscription = subscription
    self._lease = int(lease_seconds)
    self._lock = threading.Lock()
    self._held: dict[str, set[str]] = {}
    self._closed = threading.Event()
    self._thread: threading.Thread | None = None
    #: Messages acknowledged so far (by id).
    self.acked = 0

  def start(self) -> Leases:
    self._thread = threading.Thread(target=self._extend_loop, name="wirestream-pubsub-leases", daemon=True)
    self._thread.start()
    return self

  @property
  def held(self) -> int:
    with self._lock:
      return len(self._held)

  def hold(self, received_messages) -> None:
    """Holds the messages of a pull response (``ReceivedMessage``s) until they are acknowledged."""
    ack_ids = []
    with self._lock:
      for received in received_messages:
        self._held.setdefault(received.message.message_id, set()).add(received.ack_id)
        ack_ids.append(received.ack_id)
    self._modify(ack_ids, self._lease)

  def ack(self, message_ids: Iterable[str]) -> int:
    """Acknowledges every held delivery of these messages; returns how many messages were held."""
    ack_ids: list[str] = []
    count = 0
    with self._lock:
      for message_id in message_ids:
        held = self._held.pop(message_id, None)
        if held:
          ack_ids.extend(held)
          count += 1
      self.acked += count
    for start in range(0, len(ack_ids), _ACK_BATCH):
      self._client.acknowledge(subscription=self._subscription, ack_ids=ack_ids[start:start + _ACK_BATCH])
    return count

  def release(self) -> int:
    """Stops extending; hands every message still held back for redelivery. Returns how many."""
    self._closed.set()
    if self._thread is not None:
      self._thread.join(10)
    with self._lock:
      held, self._held = self._held, {}
    ack_ids = [ack_id for ids in held.values() for ack_id in ids]
    try:
      self._modify(ack_ids, 0)
    except Exception as error:  # noqa: BLE001 - their deadlines run out anyway
      _LOG.warning("could not hand %d message(s) back to Pub/Sub (%s); they return when their "
                   "deadlines run out", len(held), error)
    return len(held)

  def _extend_loop(self) -> None:
    while not self._closed.wait(self._lease / 3):
      with self._lock:
        ack_ids = [ack_id for ids in self._held.values() for ack_id in ids]
      try:
        self._modify(ack_ids, self._lease)
      except Exception as error:  # noqa: BLE001 - tried again on the next round
        _LOG.warning("could not extend the ack deadlines of %d message(s): %s", len(ack_ids), error)

  def _modify(self, ack_ids: list[str], seconds: int) -> None:
    for start in range(0, len(ack_ids), _ACK_BATCH):
      self._client.modify_ack_deadline(subscription=self._subscription, ack_ids=ack_ids[start:start + _ACK_BATCH],
                                       ack_deadline_seconds=seconds)
