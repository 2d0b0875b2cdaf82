"""Pytest fixtures for the Pub/Sub emulator (see ``pipelines.emulator``).

The emulator is a real component of the streaming tests: when it cannot start, the
tests that use it FAIL with the reason (they are never skipped silently).

    from tests.pubsub_emulator import pubsub_emulator, pubsub_channel  # noqa: F401
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import pytest

from pipelines.emulator import EmulatorUnavailable, PubSubEmulator

_COUNTER = itertools.count(1)


@pytest.fixture(scope="module")
def pubsub_emulator() -> Iterator[PubSubEmulator]:
  """A running emulator for the test module; stopped (by process group) afterwards."""
  emulator = PubSubEmulator()
  try:
    emulator.start()
  except EmulatorUnavailable as error:
    pytest.fail(f"Pub/Sub emulator unavailable, the streaming tests cannot run: {error}", pytrace=False)
  try:
    yield emulator
  finally:
    emulator.stop()


@dataclasses.dataclass
class Channel:
  """A fresh topic and pull subscription on the emulator."""

  emulator: PubSubEmulator
  topic: str
  subscription: str


@pytest.fixture
def pubsub_channel(pubsub_emulator: PubSubEmulator, monkeypatch) -> Channel:
  """A new topic + subscription; this process's Pub/Sub clients point at the emulator."""
  n = next(_COUNTER)
  topic = pubsub_emulator.create_topic(f"stories-{n}")
  subscription = pubsub_emulator.create_subscription(topic, f"stream-{n}")
  for key, value in pubsub_emulator.env().items():
    monkeypatch.setenv(key, value)
  return Channel(pubsub_emulator, topic, subscription)
