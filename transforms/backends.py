"""Backends: small adapters that run a network on padded arrays, behind one contract::

    backend.run(input_ids, token_type_ids, attention_mask) -> (ner_logits | None, topic_logits | None)

``ner_logits`` is [batch, length, labels], ``topic_logits`` [batch, topics] (calibrated, before the
sigmoid). Everything around (tokenising, windows, batching, decoding, pooling) is
:mod:`transforms.core`'s, the same for every backend:

* :class:`TorchBackend`: our fused module (:mod:`transforms.fused`) in torch, fp32;
* ``transforms.onnx_backend.OnnxBackend``: the same module exported to ONNX Runtime, int8;
* :class:`HFBackend`: any Hugging Face token-classification and/or sequence-classification model.

Every backend runs each row by itself, without padding, on one thread, ``threads`` rows at a time
(:class:`RowBackend`): a row's result never depends on what it is batched with, the batch size or the
number of threads (dynamic int8 quantisation scales each row by its own range; kernels sum in one order).
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np


def default_threads() -> int:
  """Threads for one process: ``$OMP_NUM_THREADS`` when set, else the cores this process may use."""
  env = os.environ.get("OMP_NUM_THREADS", "")
  if env.isdigit() and int(env) > 0:
    return int(env)
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:
    return max(1, os.cpu_count() or 1)


class RowBackend:
  """Runs :meth:`forward_row` on every row of a batch, ``threads`` rows at a time."""

  def __init__(self, threads: int | None = None):
    self.threads = threads or default_threads()
    self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="wirestream-rows") \
        if self.threads > 1 else None

  def forward_row(self, input_ids: np.ndarray, token_type_ids: np.ndarray, attention_mask: np.ndarray):
    """``(ner_logits [1, n, labels] | None, topic_logits [1, topics] | None)`` of one unpadded row."""
    raise NotImplementedError

  def run(self, input_ids: np.ndarray, token_type_ids: np.ndarray, attention_mask: np.ndarray):
    def row(r: int):
      n = int(attention_mask[r].sum())
      return self.forward_row(*(np.ascontiguousarray(a[r:r + 1, :n])
                                for a in (input_ids, token_type_ids, attention_mask)))

    rows = range(len(input_ids))
    outs = list(self._pool.map(row, rows) if self._pool else map(row, rows))
    ner = topics = None
    if outs[0][0] is not None:
      ner = np.zeros((*input_ids.shape, outs[0][0].shape[-1]), dtype=np.float32)
      for r, (logits, _) in enumerate(outs):
        ner[r, :logits.shape[1]] = logits[0]
    if outs[0][1] is not None:
      topics = np.concatenate([logits for _, logits in outs]).astype(np.float32, copy=False)
    return ner, topics


class _TorchRows(RowBackend):
  def __init__(self, threads: int | None = None):
    import torch

    torch.set_num_threads(1)  # one thread a row, rows in parallel
    super().__init__(threads)

  def forward(self, input_ids, token_type_ids, attention_mask):
    raise NotImplementedError

  def forward_row(self, input_ids, token_type_ids, attention_mask):
    import torch

    with torch.inference_mode():
      ner, topics = self.forward(*map(torch.from_numpy, (input_ids, token_type_ids, attention_mask)))
    return (None if ner is None else ner.float().numpy(), None if topics is None else topics.float().numpy())


class TorchBackend(_TorchRows):
  """Our fused module in torch (fp32)."""

  def __init__(self, module, threads: int | None = None):
    super().__init__(threads)
    self.module = module

  def forward(self, input_ids, token_type_ids, attention_mask):
    return self.module(input_ids, token_type_ids, attention_mask)


class HFBackend(_TorchRows):
  """A Hugging Face token classifier (``ner``) and/or sequence classifier (``topics``), sharing one
  tokenizer."""

  def __init__(self, ner=None, topics=None, threads: int | None = None):
    super().__init__(threads)
    self.ner, self.topics = ner, topics

  def forward(self, input_ids, token_type_ids, attention_mask):
    def call(model):
      if model is None:
        return None
      inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
      if getattr(model.config, "type_vocab_size", 0) > 1:
        inputs["token_type_ids"] = token_type_ids
      return model(**inputs).logits

    return call(self.ner), call(self.topics)
