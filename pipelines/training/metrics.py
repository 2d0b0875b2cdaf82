"""The scorers of model development: entity-level BIO scores (seqeval) and top-1 topic reports."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from transforms.spec import IPTC_ROOTS


def score_bio(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
  """seqeval entity-level precision/recall/F1 (default mode, as conlleval), overall and per type."""
  from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

  report = classification_report(gold, predicted, output_dict=True, zero_division=0)
  per_type = {
      k: {"precision": round(float(v["precision"]), 4), "recall": round(float(v["recall"]), 4),
          "f1": round(float(v["f1-score"]), 4), "support": int(v["support"])}
      for k, v in sorted(report.items()) if " avg" not in k
  }
  return {
      "precision": round(float(precision_score(gold, predicted, zero_division=0)), 4),
      "recall": round(float(recall_score(gold, predicted, zero_division=0)), 4),
      "f1": round(float(f1_score(gold, predicted, zero_division=0)), 4),
      "per_type": per_type,
      "sentences": len(gold),
  }


def top1_report(scores: np.ndarray, allowed: Sequence[Sequence[str]], codes: Sequence[str] | None = None
                ) -> dict:
  """Top-1 accuracy (correct when the top topic is one of the allowed ones) and per-label precision and
  recall of the top-1 prediction (support: rows that allow the label). ``codes`` names the score columns
  (default: the 17 IPTC roots)."""
  if codes is None:
    codes = tuple(code for code, _ in IPTC_ROOTS)
  top = [codes[i] for i in np.argmax(scores, axis=1)]
  correct = [t in ok for t, ok in zip(top, allowed, strict=True)]
  per_label = {}
  for code in sorted(set(top) | {c for ok in allowed for c in ok}):
    predicted = sum(1 for t in top if t == code)
    hits = sum(1 for t, ok in zip(top, allowed, strict=True) if t == code and code in ok)
    support = sum(1 for ok in allowed if code in ok)
    per_label[code] = {"precision": round(hits / predicted, 4) if predicted else None,
                       "recall": round(hits / support, 4) if support else None,
                       "support": support, "predicted": predicted}
  return {"top1_accuracy": round(float(np.mean(correct)), 4) if correct else None, "n": len(correct),
          "per_label": per_label}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
  """ECE with equal-width bins."""
  confidence = np.asarray(confidence, float)
  correct = np.asarray(correct, float)
  edges = np.linspace(0, 1, bins + 1)
  ece = 0.0
  for lo, hi in zip(edges[:-1], edges[1:], strict=True):
    inside = (confidence > lo) & (confidence <= hi) if lo > 0 else (confidence <= hi)
    if inside.any():
      ece += inside.mean() * abs(confidence[inside].mean() - correct[inside].mean())
  return float(ece)
