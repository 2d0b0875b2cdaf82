"""Pytest fixtures for the Pub/Sub emulator (see ``pipelines.emulator``).

The emulator is a real component of the streaming tests: when it cannot start, the
tests that use it FAIL with the reason (they are never skipped silently).

    from tests.pubsub_emulator import pubsub_emulator, pubsub_channel  # noqa: F401

``StreamProcess`` runs ``python -m pipelines.stream`` in a subprocess and collects its lines.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.emulator import EmulatorUnavailable, PubSubEmulator

_COUNTER = itertools.count(1)
REPO = Path(__file__).resolve().parents[1]


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


_EXEC_WITH_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.Handlers(int(sys.argv[1]))); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")


class StreamProcess:
  """``python -m pipelines.stream`` in a subprocess; its output lines collected as they come.

  ``sigint`` sets the SIGINT disposition the process inherits (``signal.SIG_IGN`` as in a
  background job of a non-interactive shell, ``signal.SIG_DFL``); None keeps this process's.
  """

  def __init__(self, args: list[str], env: dict[str, str], sigint=None):
    self.lines: list[str] = []
    self.running = threading.Event()
    command = [sys.executable, "-m", "pipelines.stream", *args]
    if sigint is not None:
      # Set in a small launcher that then execs the stream (a disposition survives exec): a
      # preexec_fn would run Python in a forked copy of this threaded (gRPC) process.
      command = [sys.executable, "-c", _EXEC_WITH_SIGINT, str(int(sigint)), *command[1:]]
    self.proc = subprocess.Popen(
        command, cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True)
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self) -> None:
    assert self.proc.stdout is not None
    for line in self.proc.stdout:
      self.lines.append(line.rstrip("\n"))
      if line.startswith("wirestream stream: running"):
        self.running.set()

  def wait_for(self, text: str, timeout: float) -> bool:
    """Waits until an output line contains ``text``; False on timeout or exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if any(text in line for line in list(self.lines)):
        return True
      if self.proc.poll() is not None:
        self._reader.join(5)
        return any(text in line for line in list(self.lines))
      time.sleep(0.1)
    return False

  def wait(self, timeout: float) -> int:
    try:
      return self.proc.wait(timeout)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait(10)
      pytest.fail("the stream did not stop in time:\n" + "\n".join(self.lines[-40:]))
    finally:
      self._reader.join(5)

  def output(self) -> str:
    return "\n".join(self.lines)
