"""A per-process cache of loaded models, beneath ``RunInference``'s shared handle.

``RunInference`` shares one model among the threads of a worker through ``apache_beam.utils.shared``,
which holds it by a weak reference only: once every DoFn instance using it is torn down, the model is
freed, and the next DoFn instance loads it again. Runners may tear DoFns down while the process lives
on (the DirectRunner does when a stream ends and its last windows fire), so our handlers keep their
models here as well: at most :data:`MAX_MODELS` of them a process, the most recently used kept.

A model is keyed by its handler's settings and :func:`transforms.spec.fingerprint` of the files it is
loaded from, so a model rewritten on disk is loaded anew.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

#: Models kept a process (a worker runs one or two: the fused model, or the NER and topic models; and
#: the resolve stage's gazetteer).
MAX_MODELS = 4

_LOCK = threading.Lock()
_MODELS: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()


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
