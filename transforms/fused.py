"""The fused module: our NER model and topic head as one network (torch; the architecture, no Beam).

::

    input_ids, token_type_ids, attention_mask  [batch, length] int64
        -> ner_logits [batch, length, labels], topic_logits [batch, topics]

When the topic head reads the hidden states of the NER model's own encoder (its ``encoder`` names the
NER model directory, or a copy of its weights), the encoder runs once: layers ``1..feature_layer`` feed
both the rest of the NER encoder and the topic head. A topic head over another encoder (e.g. the plain
base package) gets that encoder's first layers inside the same module (token types 0). Either model may
be absent: its output then has width 0. The torch backend runs this module as it is; the ONNX backend
runs its exported graph.
"""

from __future__ import annotations

import logging

import torch

from transforms import ner_model as nm
from transforms import spec as sp
from transforms import topics_model as tm


def _run_layers(bert, ids, types, bias, upto: int | None = None, tap: int | None = None):
  hidden = bert.embeddings(input_ids=ids, token_type_ids=types)
  tapped = hidden if tap == 0 else None
  layers = bert.encoder.layer if upto is None else bert.encoder.layer[:upto]
  for i, block in enumerate(layers):
    out = block(hidden, attention_mask=bias)
    hidden = out[0] if isinstance(out, tuple) else out
    if tap is not None and i + 1 == tap:
      tapped = hidden
  return hidden, tapped


class Fused(torch.nn.Module):
  """See the module docstring. ``share=False`` gives the topic head its own copy of the encoder even
  when it could share the NER model's (two encoder passes; for measurements only)."""

  def __init__(self, ner: sp.NerSpec | None, topics: sp.TopicSpec | None, share: bool = True):
    super().__init__()
    self.ner = nm.load_casing_model(ner.path) if ner is not None else None
    self.head = self.topic_bert = None
    self.shared = share and sp.shares_encoder(ner, topics)
    self.topic_casing = False
    self.feature_layer = topics.feature_layer if topics is not None else None
    if topics is not None:
      self.head, config = tm.load_head(topics.path)
      expected = config.get("encoder_sha1")
      if expected and sp.fingerprint([topics.encoder / sp.NER_WEIGHTS], algorithm="sha1") != expected:
        logging.getLogger(__name__).warning(
            "topic head %s was trained on another version of encoder %s: its scores are not reliable; "
            "retrain it (wirestream train topics --encoder ...)", topics.path, topics.encoder)
      if not self.shared:
        self.topic_casing = topics.encoder != sp.BASE_ENCODER
        if self.topic_casing:
          self.topic_bert = nm.load_casing_model(topics.encoder).bert
        else:
          from transformers import BertModel

          self.topic_bert = BertModel.from_pretrained(str(nm.base_model_dir()))
        self.topic_bert.encoder.layer = self.topic_bert.encoder.layer[:self.feature_layer]
    for bert in (self.ner, self.topic_bert):
      if bert is not None:
        bert.config._attn_implementation = "eager"
    self.eval()

  def forward(self, input_ids, token_type_ids, attention_mask):
    bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
    batch, length = input_ids.shape
    ner_logits, tapped = torch.zeros(batch, length, 0), None
    if self.ner is not None:
      hidden, tapped = _run_layers(self.ner.bert, input_ids, token_type_ids, bias,
                                   tap=self.feature_layer if self.shared else None)
      ner_logits = self.ner.classifier(hidden)
    if self.head is None:
      return ner_logits, torch.zeros(batch, 0)
    if not self.shared:
      types = token_type_ids if self.topic_casing else torch.zeros_like(token_type_ids)
      tapped, _ = _run_layers(self.topic_bert, input_ids, types, bias)
    return ner_logits, self.head(tapped, attention_mask)
