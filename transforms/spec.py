"""What a model directory declares, read in one place: kind, name, languages, labels, fingerprint.

Reading a spec loads no weights (the Beam graph is built from specs; workers load the models). Our NER
model is a directory whose ``config.json`` has a ``wirestream`` entry with ``casing_channel``; our topic
model is a directory with ``topic_head.json``. Anything else is a Hugging Face token-classification
(NER) or sequence-classification (topics) model, by directory or hub id.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from transforms import assets

NER_CONFIG = "config.json"
NER_WEIGHTS = "model.safetensors"
HEAD_CONFIG = "topic_head.json"
HEAD_WEIGHTS = "topic_head.safetensors"
#: Key of our own settings inside ``config.json``.
WIRESTREAM_KEY = "wirestream"
#: A topic head's ``encoder`` naming the base package's encoder (uncased MiniLM-L6, token types all 0).
BASE_ENCODER = "base"


#: The 17 IPTC Media Topics top-level concepts (qcode, en-GB label). IPTC NewsCodes, CC BY 4.0.
IPTC_ROOTS: tuple[tuple[str, str], ...] = (
    ("medtop:01000000", "arts, culture, entertainment and media"),
    ("medtop:02000000", "crime, law and justice"),
    ("medtop:03000000", "disaster, accident and emergency incident"),
    ("medtop:04000000", "economy, business and finance"),
    ("medtop:05000000", "education"),
    ("medtop:06000000", "environment"),
    ("medtop:07000000", "health"),
    ("medtop:08000000", "human interest"),
    ("medtop:09000000", "labour"),
    ("medtop:10000000", "lifestyle and leisure"),
    ("medtop:11000000", "politics"),
    ("medtop:12000000", "religion"),
    ("medtop:13000000", "science and technology"),
    ("medtop:14000000", "society"),
    ("medtop:15000000", "sport"),
    ("medtop:16000000", "conflict, war and peace"),
    ("medtop:17000000", "weather"),
)


def accepts_language(languages: Sequence[str] | None, language: str | None) -> bool:
  """The language rule of every stage: a story without a language, or a model that declares none, is
  read; otherwise the story's primary subtag must be one the model declares."""
  if not language or not languages:
    return True
  return language.split("-")[0].lower() in languages


def fingerprint(paths: Iterable[Path | None], salt: str = "", algorithm: str = "sha256") -> str:
  """Hash of ``salt`` and of the contents of ``paths`` (``None`` entries count as such): the one fingerprint
  of model files (caches, the check that a topic head fits its encoder). Files are read once per process
  while their size and modification time stay the same."""
  stats = tuple(None if path is None else (str(path), *_stat(path)) for path in paths)
  return _fingerprint(stats, salt, algorithm)


def _stat(path: Path) -> tuple[int, int]:
  stat = os.stat(path)
  return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _fingerprint(stats: tuple, salt: str, algorithm: str) -> str:
  digest = hashlib.new(algorithm, salt.encode())
  for entry in stats:
    if entry is None:
      digest.update(b"\0none")
      continue
    with open(entry[0], "rb") as handle:
      for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
  return digest.hexdigest()


def local_files_only() -> bool:
  return os.environ.get("HF_HUB_OFFLINE", "1") != "0"


def _languages(value) -> tuple[str, ...]:
  value = value or ("en",)
  return tuple(str(x).lower() for x in ([value] if isinstance(value, str) else value))


def _hub_config(ref: str, what: str) -> dict:
  looks_like_path = ref.startswith((".", "/", "~")) or os.sep in ref.strip("/").replace("/", "", 1)
  if looks_like_path or ref.count("/") > 1:
    raise FileNotFoundError(f"{what} model directory not found: {ref}")
  try:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(ref, local_files_only=local_files_only()).to_dict()
  except Exception as error:  # noqa: BLE001 - any failure means: no such model here
    raise FileNotFoundError(
        f"{what} model {ref!r} is neither a local directory nor a Hugging Face model available "
        f"offline ({type(error).__name__}: {error})") from error


@dataclasses.dataclass(frozen=True)
class NerSpec:
  """A token-classification model: ours (``casing``) or a Hugging Face one."""

  ref: str
  #: The directory (None: a hub id).
  path: Path | None
  name: str
  languages: tuple[str, ...]
  labels: tuple[str, ...]
  #: Our model: a casing channel in the token types, weights completed from the base package.
  casing: bool
  #: Labels are BIO as trained: decode under BIO constraints.
  bio: bool
  max_window: int

  def files(self) -> list[Path]:
    return [self.path / NER_CONFIG, self.path / NER_WEIGHTS] if self.casing else []


def read_ner(ref: str | Path | None = None) -> NerSpec:
  """Spec of our bundled NER model (``None``), one of ours in a directory, or a Hugging Face model."""
  path = Path(ref) if ref else assets.NER_DIR
  if path.is_dir() and (path / NER_CONFIG).is_file():
    config = json.loads((path / NER_CONFIG).read_text())
    default_name = "wirestream-ner" if path.resolve() == assets.NER_DIR.resolve() else path.name
  else:
    config, path, default_name = _hub_config(str(ref), "NER"), None, str(ref)
  settings = config.get(WIRESTREAM_KEY) or {}
  casing = bool(settings.get("casing_channel"))
  if casing and not (path / NER_WEIGHTS).is_file():
    raise FileNotFoundError(f"NER model weights missing: {path / NER_WEIGHTS}")
  id2label = {int(k): v for k, v in config["id2label"].items()}
  return NerSpec(ref=str(ref or path), path=path, name=settings.get("name", default_name),
                 languages=_languages(settings.get("languages") or config.get("languages")
                                      or config.get("language")),
                 labels=tuple(id2label[i] for i in range(len(id2label))), casing=casing,
                 bio=settings.get("tag_scheme") == "BIO", max_window=int(settings.get("max_window", 128)))


@dataclasses.dataclass(frozen=True)
class TopicSpec:
  """A topic model: our head (over an encoder) or a Hugging Face sequence classifier."""

  ref: str
  path: Path | None
  name: str
  languages: tuple[str, ...]
  #: (code, label) of every output, in output order.
  labels: tuple[tuple[str, str], ...]
  #: Topics with at least this score are reported (and always the top one).
  threshold: float
  #: Sigmoids (multi-label) or a softmax over the outputs.
  multi_label: bool
  #: Our head: the encoder it reads (``"base"`` or the directory of one of our NER models), and its layer.
  encoder: str | Path | None = None
  feature_layer: int = 0

  @property
  def is_head(self) -> bool:
    return self.encoder is not None

  def files(self) -> list[Path]:
    if not self.is_head:
      return []
    files = [self.path / HEAD_CONFIG, self.path / HEAD_WEIGHTS]
    if self.encoder != BASE_ENCODER:
      files += [Path(self.encoder) / NER_CONFIG, Path(self.encoder) / NER_WEIGHTS]
    return files


def read_taxonomy(path: str | Path) -> dict[str, str]:
  """A CSV of ``code,label`` rows (a header row naming ``code``/``label`` is skipped) -> {code: label}."""
  import csv

  out: dict[str, str] = {}
  with open(path, newline="", encoding="utf-8") as handle:
    for row in csv.reader(handle):
      if len(row) < 2 or not row[0].strip() or row[0].strip().lower() in ("code", "qcode"):
        continue
      out[row[0].strip()] = row[1].strip()
  return out


def read_topics(ref: str | Path | None = None, taxonomy: str | Path | None = None) -> TopicSpec:
  """Spec of our bundled topic head (``None``), a head directory, or a Hugging Face sequence classifier.

  A taxonomy CSV (code,label) documents a Hugging Face model's labels: a model label that is a code gets
  the taxonomy's label, a label that is a taxonomy label gets its code.
  """
  path = Path(ref) if ref else assets.TOPICS_DIR
  if (path / HEAD_CONFIG).is_file():
    config = json.loads((path / HEAD_CONFIG).read_text())
    encoder = config.get("encoder", BASE_ENCODER)
    if encoder != BASE_ENCODER:
      encoder = Path(encoder) if Path(encoder).is_absolute() else (path / encoder).resolve()
    return TopicSpec(ref=str(ref or path), path=path, name=config.get("name") or f"wirestream-topics:{path.name}",
                     languages=_languages(config.get("languages")),
                     labels=tuple((code, label) for code, label in config["labels"]),
                     threshold=float(config.get("threshold", 0.5)), multi_label=True, encoder=encoder,
                     feature_layer=int(config["feature_layer"]))
  if path.is_dir() and (path / NER_CONFIG).is_file():
    config = json.loads((path / NER_CONFIG).read_text())
    name = path.name
  else:
    config, path, name = _hub_config(str(ref), "Topic"), None, str(ref)
  codes = read_taxonomy(taxonomy) if taxonomy else {}
  by_label = {label.lower(): code for code, label in codes.items()}
  labels = []
  for i in range(len(config["id2label"])):
    label = config["id2label"][str(i)] if str(i) in config["id2label"] else config["id2label"][i]
    if label in codes:
      labels.append((label, codes[label]))
    else:
      labels.append((by_label.get(label.lower(), label), label))
  settings = config.get(WIRESTREAM_KEY) or {}
  return TopicSpec(ref=str(ref), path=path, name=name,
                   languages=_languages(settings.get("languages") or config.get("languages")),
                   labels=tuple(labels), threshold=float(settings.get("threshold", 0.5)),
                   multi_label=config.get("problem_type") == "multi_label_classification")


def shares_encoder(ner: NerSpec | None, topics: TopicSpec | None) -> bool:
  """True when the topic head reads the NER model's own encoder (one encoder pass for both)."""
  if ner is None or topics is None or not topics.is_head or topics.encoder == BASE_ENCODER:
    return False
  if topics.encoder.resolve() == ner.path.resolve():
    return True
  ours, theirs = ner.path / NER_WEIGHTS, topics.encoder / NER_WEIGHTS
  return theirs.is_file() and fingerprint([ours]) == fingerprint([theirs])
