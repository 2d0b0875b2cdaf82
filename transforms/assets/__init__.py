"""The default models, shipped as package data: the NER model and the topic head, with their configs and
cards (``README.md``). Found through :mod:`importlib.resources`, so a wheel installed anywhere finds them
as a checkout does.
"""

from __future__ import annotations

import atexit
import contextlib
from importlib import resources
from pathlib import Path

_FILES = contextlib.ExitStack()
atexit.register(_FILES.close)


def _directory(name: str) -> Path:
  """A real directory for the bundled model ``name`` (extracted once if the package is not on disk)."""
  return _FILES.enter_context(resources.as_file(resources.files(__name__) / name))


#: The bundled NER model (casing BERT token classifier).
NER_DIR: Path = _directory("ner")
#: The bundled topic head; its ``topic_head.json`` names the NER model as its encoder (``../ner``).
TOPICS_DIR: Path = _directory("topics")
