"""A per-process cache of loaded models, beneath ``RunInference``'s shared handle.

``RunInference`` shares one model among the threads of a worker through ``apache_beam.utils.shared``,
which holds it by a weak reference only: once every DoFn instance using it is torn down, the model is
freed, and the next DoFn instance loads it again. Runners may tear DoFns down while the process lives
on (the DirectRunner does when a stream ends and its last windows fire), so our handlers keep their
models here as well: at most :data:`MAX_MODELS` of them a process, the most recently used kept.

A model is keyed by the handler's settings and a fingerprint of the files it is loaded from (their
paths, sizes and modification times), so a model rewritten on disk is loaded anew.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Models kept a process (a worker runs one or two: the fused model, or the NER and topic models; and
#: the resolve stage's gazetteer).
MAX_MODELS = 4

_LOCK = threading.Lock()
_MODELS: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()


def fingerprint(paths: Iterable[str | Path | None]) -> tuple:
  """Path, size and modification time of each file (a directory: of the files directly in it)."""
  out = []
  for path in paths:
    if path is None:
      out.append(None)
      continue
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
      try:
        stat = os.stat(file)
      except OSError:  # a hub id, not a local path: its name is the key
        out.append((str(file), None))
        continue
      out.append((str(file.resolve()), stat.st_size, stat.st_mtime_ns))
  return tuple(out)


def load_for(owner: object, paths: Iterable[str | Path | None], settings: tuple, loader: Callable[[], T]) -> T:
  """:func:`load_once` keyed by the owner's class, its ``settings`` and the :func:`fingerprint` of
  ``paths`` (the model files the loader reads)."""
  return load_once((type(owner).__qualname__, settings, fingerprint(paths)), loader)


def load_once(key: Hashable, loader: Callable[[], T]) -> T:
  """The model cached under ``key``, loaded by ``loader()`` the first time (one load at a time)."""
  with _LOCK:
    if key in _MODELS:
      _MODELS.move_to_end(key)
      return _MODELS[key]
    model = loader()
    _MODELS[key] = model
    while len(_MODELS) > MAX_MODELS:
      _MODELS.popitem(last=False)
    return model


def clear() -> None:
  """Forget every cached model (they are freed once nothing else holds them)."""
  with _LOCK:
    _MODELS.clear()
