"""A local Pub/Sub emulator for demos and tests.

Starts Google's Pub/Sub emulator on a free loopback port, in its own process group,
waits until it listens, and stops it by its process id. Two launchers are tried in
order:

1. ``gcloud beta emulators pubsub start --host-port=127.0.0.1:PORT`` when gcloud and
   its ``pubsub-emulator`` component are installed;
2. the emulator's own launcher, ``cloud-pubsub-emulator --host=127.0.0.1 --port=PORT``
   (needs Java 17), found through ``$WIRESTREAM_PUBSUB_EMULATOR`` or in
   ``../shared/tools/pubsub-emulator`` beside the repository.

Clients reach it through ``PUBSUB_EMULATOR_HOST`` (google-cloud-pubsub and Beam's
``ReadFromPubSub`` both honour it); ``PubSubEmulator.env()`` gives that variable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

DEFAULT_PROJECT = "wirestream-test"
_READY = "Server started, listening on"
_REPO = Path(__file__).resolve().parents[1]


class EmulatorUnavailable(RuntimeError):
  """Neither launcher of the Pub/Sub emulator is installed or could start."""


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on right now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _gcloud_command(port: int, data_dir: str) -> list[str] | None:
  gcloud = shutil.which("gcloud")
  if not gcloud:
    return None
  sdk_root = Path(os.path.realpath(gcloud)).parents[1]
  if not (sdk_root / "platform" / "pubsub-emulator").is_dir():
    return None
  return [gcloud, "--quiet", "beta", "emulators", "pubsub", "start",
          f"--host-port=127.0.0.1:{port}", f"--data-dir={data_dir}"]


def _standalone_launcher() -> Path | None:
  candidates = []
  if os.environ.get("WIRESTREAM_PUBSUB_EMULATOR"):
    candidates.append(Path(os.environ["WIRESTREAM_PUBSUB_EMULATOR"]))
  candidates.append(_REPO.parent / "shared" / "tools" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator")
  for candidate in candidates:
    if candidate.is_dir():
      candidate = candidate / "bin" / "cloud-pubsub-emulator"
    if candidate.is_file():
      return candidate
  return None


def _standalone_command(port: int) -> list[str] | None:
  launcher = _standalone_launcher()
  if launcher is None or not shutil.which("java"):
    return None
  command = [str(launcher)] if os.access(launcher, os.X_OK) else ["sh", str(launcher)]
  return [*command, "--host=127.0.0.1", f"--port={port}"]


class PubSubEmulator:
  """One running Pub/Sub emulator process (group).

      with PubSubEmulator() as emulator:
        topic = emulator.create_topic("stories")
        subscription = emulator.create_subscription(topic, "stream")
        subprocess.run([...], env={**os.environ, **emulator.env()})
  """

  def __init__(self, project: str = DEFAULT_PROJECT, port: int | None = None,
               startup_timeout: float = 90.0):
    self.project = project
    self.port = port or free_port()
    self.startup_timeout = startup_timeout
    self.launcher: str | None = None
    self._process: subprocess.Popen | None = None
    self._workdir: tempfile.TemporaryDirectory | None = None
    self._log_path: Path | None = None

  @property
  def host(self) -> str:
    return f"127.0.0.1:{self.port}"

  @property
  def pid(self) -> int | None:
    return self._process.pid if self._process else None

  def env(self) -> dict[str, str]:
    """Environment variables that point Pub/Sub clients at this emulator."""
    return {"PUBSUB_EMULATOR_HOST": self.host, "PUBSUB_PROJECT_ID": self.project}

  def log(self) -> str:
    if self._log_path is None or not self._log_path.exists():
      return ""
    return self._log_path.read_text(errors="replace")

  def start(self) -> PubSubEmulator:
    """Starts the emulator and waits until it listens. Raises EmulatorUnavailable."""
    self._workdir = tempfile.TemporaryDirectory(prefix="pubsub-emulator-")
    attempts = []
    for name, command in (("gcloud", _gcloud_command(self.port, self._workdir.name)),
                          ("cloud-pubsub-emulator", _standalone_command(self.port))):
      if command is None:
        attempts.append(f"{name}: not installed")
        continue
      problem = self._launch(name, command)
      if problem is None:
        self.launcher = name
        return self
      attempts.append(f"{name}: {problem}")
    self._workdir.cleanup()
    self._workdir = None
    raise EmulatorUnavailable(
        "the Pub/Sub emulator could not start (" + "; ".join(attempts) + "). Install gcloud with the "
        "pubsub-emulator component (apt: google-cloud-cli-pubsub-emulator), or Java 17 and the emulator "
        "launcher in ../shared/tools/pubsub-emulator (or set WIRESTREAM_PUBSUB_EMULATOR to it).")

  def _launch(self, name: str, command: list[str]) -> str | None:
    assert self._workdir is not None
    self._log_path = Path(self._workdir.name) / f"{name}.log"
    env = {**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    env.pop("PUBSUB_EMULATOR_HOST", None)
    with open(self._log_path, "wb") as log:
      self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, start_new_session=True)
    deadline = time.monotonic() + self.startup_timeout
    ready = f"{_READY} {self.port}"
    while time.monotonic() < deadline:
      if ready in self.log() and _listening(self.port):
        return None
      if self._process.poll() is not None:
        status = self._process.returncode
        self._kill()
        tail = self.log().strip().splitlines()[-3:]
        return f"exited with status {status}: " + (" / ".join(tail) if tail else "no output")
      time.sleep(0.1)
    self._kill()
    return f"not listening after {self.startup_timeout:.0f}s"

  def stop(self, timeout: float = 10.0) -> None:
    """Stops the emulator's whole process group and removes its data directory."""
    self._kill(timeout)
    if self._workdir is not None:
      self._workdir.cleanup()
      self._workdir = None

  def _kill(self, timeout: float = 10.0) -> None:
    """Ends the process group (gcloud runs Java as a child, which may outlive it)."""
    process, self._process = self._process, None
    if process is not None:
      with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
      try:
        process.wait(timeout)
      except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
          os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)
      # The group may outlive its leader (gcloud exits before its Java child).
      with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)

  def __enter__(self) -> PubSubEmulator:
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()

  @contextlib.contextmanager
  def environment(self) -> Iterator[None]:
    """Points this process's Pub/Sub clients at the emulator while the block runs."""
    saved = {key: os.environ.get(key) for key in self.env()}
    os.environ.update(self.env())
    try:
      yield
    finally:
      for key, value in saved.items():
        if value is None:
          os.environ.pop(key, None)
        else:
          os.environ[key] = value

  def create_topic(self, name: str) -> str:
    """Creates ``projects/<project>/topics/<name>``; returns its path."""
    from google.cloud import pubsub_v1
    with self.environment():
      publisher = pubsub_v1.PublisherClient()
      return publisher.create_topic(name=publisher.topic_path(self.project, name)).name

  def create_subscription(self, topic: str, name: str, ack_deadline_seconds: int = 60) -> str:
    """Creates a pull subscription ``projects/<project>/subscriptions/<name>`` on ``topic``."""
    from google.cloud import pubsub_v1
    with self.environment():
      subscriber = pubsub_v1.SubscriberClient()
      with subscriber:
        return subscriber.create_subscription(
            name=subscriber.subscription_path(self.project, name), topic=topic,
            ack_deadline_seconds=ack_deadline_seconds).name


def _listening(port: int) -> bool:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.settimeout(0.5)
    return sock.connect_ex(("127.0.0.1", port)) == 0
