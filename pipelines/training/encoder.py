"""Encoders as topic-model development reads them: fixed overlapping windows, hidden states of one layer;
and the one seeding of model development's random generators."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from transforms.spec import BASE_ENCODER
from transforms.topics_model import base_model_dir


def masked_hidden_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  maskf = mask.to(hidden.dtype).unsqueeze(-1)
  return (hidden * maskf).sum(1) / maskf.sum(1).clamp(min=1.0)




@dataclasses.dataclass
class Window:
  """One encoder window of a text: word-piece ids with [CLS]/[SEP], token types, and its char span."""

  ids: list[int]
  types: list[int]
  start_char: int
  end_char: int

  @property
  def length(self) -> int:
    return len(self.ids)


class Encoder:
  """A BERT encoder (the base package's, or our casing NER model's) with its tokenizer.

  ``hidden_states(windows, layer)`` runs the encoder up to ``layer`` only (layers after it are not
  needed by the topic head) and returns the padded hidden states and the attention mask.
  """

  def __init__(self, spec: str = BASE_ENCODER, relative_to: Path | None = None):
    from tokenizers import Tokenizer

    self.spec = spec
    if spec == BASE_ENCODER:
      from transformers import BertModel

      directory = base_model_dir()
      self.bert = BertModel.from_pretrained(str(directory))
      self.casing = False
    else:
      from transforms import ner_model

      directory = Path(spec)
      if not directory.is_absolute() and relative_to is not None:
        directory = (relative_to / directory).resolve()
      model = ner_model.load_casing_model(directory)
      self.bert = model.bert
      self.casing = True
      self._casing_class = ner_model.casing_class
    self.bert.eval()
    self.directory = directory
    tokenizer_dir = directory if (directory / "tokenizer.json").is_file() else base_model_dir()
    self.tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    self.tokenizer.no_truncation()
    self.tokenizer.no_padding()
    self.cls_id = self.tokenizer.token_to_id("[CLS]")
    self.sep_id = self.tokenizer.token_to_id("[SEP]")
    self.hidden_size = self.bert.config.hidden_size
    self.num_layers = self.bert.config.num_hidden_layers

  def layer_state(self, index: int) -> dict[str, torch.Tensor]:
    """The weights (BertLayer names) of encoder layer ``index`` (0-based), to initialise a head layer."""
    layer = self.bert.encoder.layer[index]
    return {k: v.detach().clone() for k, v in layer.state_dict().items()}

  def windows(self, text: str, max_length: int = 128, stride: int = 32, max_windows: int | None = None
              ) -> list[Window]:
    """Split ``text`` into windows of at most ``max_length`` pieces (with [CLS]/[SEP]), overlapping by
    ``stride`` pieces. Only the first ``max_windows`` windows are kept when it is set."""
    enc = self.tokenizer.encode(text, add_special_tokens=False)
    ids, offsets = enc.ids, enc.offsets
    if self.casing:
      types = [self._casing_class(text[a:b]) for a, b in offsets]
    else:
      types = [0] * len(ids)
    room = max_length - 2
    step = max(1, room - stride)
    out: list[Window] = []
    start = 0
    while True:
      end = min(len(ids), start + room)
      span = (offsets[start][0], offsets[end - 1][1]) if end > start else (0, 0)
      out.append(Window([self.cls_id, *ids[start:end], self.sep_id], [0, *types[start:end], 0], *span))
      if end >= len(ids) or (max_windows and len(out) >= max_windows):
        break
      start += step
    return out

  @staticmethod
  def batch(windows: Sequence[Window]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Word-piece ids, token types and attention mask of ``windows``, padded to the longest."""
    length = max(w.length for w in windows)
    ids = torch.zeros(len(windows), length, dtype=torch.long)
    types = torch.zeros(len(windows), length, dtype=torch.long)
    mask = torch.zeros(len(windows), length, dtype=torch.long)
    for i, w in enumerate(windows):
      ids[i, :w.length] = torch.tensor(w.ids)
      types[i, :w.length] = torch.tensor(w.types)
      mask[i, :w.length] = 1
    return ids, types, mask

  @torch.inference_mode()
  def hidden_states(self, windows: Sequence[Window], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states after ``layer`` encoder layers (0 = embeddings) for a batch of windows."""
    ids, types, mask = self.batch(windows)
    hidden = self.bert.embeddings(input_ids=ids, token_type_ids=types)
    bias = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
    for block in self.bert.encoder.layer[:layer]:
      out = block(hidden, attention_mask=bias)
      hidden = out[0] if isinstance(out, tuple) else out
    return hidden, mask


def sentence_embeddings(encoder: Encoder, texts: Sequence[str], max_length: int = 128, batch_size: int = 64
                        ) -> Any:
  """Mean-pooled last-layer states of the first window of every text (the base package is a sentence
  embedding model: these are its sentence vectors). Used as a training-time teacher."""
  import numpy as np

  windows = [encoder.windows(t, max_length=max_length, max_windows=1)[0] for t in texts]
  order = sorted(range(len(windows)), key=lambda i: windows[i].length)
  out = np.zeros((len(texts), encoder.hidden_size), np.float32)
  for b in range(0, len(order), batch_size):
    index = order[b:b + batch_size]
    hidden, mask = encoder.hidden_states([windows[i] for i in index], encoder.num_layers)
    out[index] = masked_hidden_mean(hidden, mask).numpy()
  return out


def seed_everything(seed: int) -> None:
  """Seed Python's, numpy's and torch's random generators."""
  import random

  import numpy as np

  random.seed(seed)
  np.random.seed(seed)
  torch.manual_seed(seed)
