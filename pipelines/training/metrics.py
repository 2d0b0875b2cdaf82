"""The scorers of model development: entity-level BIO scores (seqeval) and top-1 topic reports."""

from __future__ import annotations

from collections.abc import Collection, Sequence

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
  """:func:`top1_topic_report` of the top topics of ``scores`` (columns named by ``codes``, default the 17
  IPTC roots): ``top1_accuracy`` is top-1 in the allowed set; a row that allows one topic is mainly about
  it, a row that allows several (AG World) has no main topic."""
  if codes is None:
    codes = tuple(code for code, _ in IPTC_ROOTS)
  top = [codes[i] for i in np.argmax(scores, axis=1)]
  report = top1_topic_report(top, allowed, [ok[0] if len(ok) == 1 else None for ok in allowed], confusions=0)
  return {"top1_accuracy": report["top1_in_gold"], "n": report["n"], "per_label": report["per_label"]}


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


def top1_topic_report(top: Sequence[str], gold: Sequence[Sequence[str]], main: Sequence[str | None],
                      groups: Sequence[str] | None = None, confusions: int = 15,
                      topics: Sequence[Collection[str]] | None = None) -> dict:
  """Scores of top-1 topics ``top`` against real labels.

  ``gold[i]``: the topics that count as a right top-1 for row i; ``main[i]``: the one it is mainly about
  (None for a set without a main one, such as AG World). Reports

  * ``top1_accuracy``: top-1 == main, over the rows with a main topic (``n_main``);
  * ``top1_in_gold``: top-1 is one of the gold topics, over all rows (``n``);
  * ``per_label``: per topic, ``recall`` (rows mainly about it whose top-1 is it; ``support`` such
    rows) and ``precision`` (rows whose top-1 is it, ``predicted``, for which it is a gold topic);
  * ``confusions``: the largest ``[gold, predicted, count]`` of wrong top-1s (gold: the main topic, else
    the row's group);
  * ``by_group`` (with ``groups``): per source class, n, top-1 in gold and its 3 commonest top-1s;
  * with ``topics`` (the topics each row gets: the top one and every other above the threshold):
    ``main_in_topics`` (the main topic is among them, over ``n_main``), ``mean_topics_per_text``, and per
    topic ``in_topics_recall`` (rows mainly about it that get it) and ``in_topics_precision`` (rows that
    get it, ``in_topics``, for which it is a gold topic).
  """
  n = len(top)
  if not (len(gold) == len(main) == n and all(x is None or len(x) == n for x in (groups, topics))):
    raise ValueError("top, gold, main, groups and topics must have one entry a row")
  right = [t in g for t, g in zip(top, gold, strict=True)]
  with_main = [(t, m) for t, m in zip(top, main, strict=True) if m is not None]
  per_label = {}
  chosen = [set(row) for row in topics] if topics is not None else None
  for code in sorted(set(top) | {m for _, m in with_main} | set().union(*(chosen or []))):
    predicted = [ok for t, ok in zip(top, right, strict=True) if t == code]
    support = [t == code for t, m in with_main if m == code]
    per_label[code] = {"precision": _share(predicted), "recall": _share(support),
                       "support": len(support), "predicted": len(predicted)}
    if chosen is not None:
      got = [code in g for c, g in zip(chosen, gold, strict=True) if code in c]
      per_label[code].update(in_topics_recall=_share([code in c for c, m in zip(chosen, main, strict=True)
                                                      if m == code]),
                             in_topics_precision=_share(got), in_topics=len(got))
  pairs: dict[tuple[str, str], int] = {}
  for i, (t, ok) in enumerate(zip(top, right, strict=True)):
    if not ok:
      source = main[i] if main[i] is not None else (groups[i] if groups is not None else "|".join(gold[i]))
      pairs[(source, t)] = pairs.get((source, t), 0) + 1
  report = {
      "n": n, "n_main": len(with_main),
      "top1_accuracy": _share([t == m for t, m in with_main]),
      "top1_in_gold": _share(right),
      "per_label": per_label,
      "confusions": [[g, p, c] for (g, p), c in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
                     ][:confusions],
  }
  if chosen is not None:
    report["main_in_topics"] = _share([m in c for c, m in zip(chosen, main, strict=True) if m is not None])
    report["mean_topics_per_text"] = round(sum(map(len, chosen)) / n, 3) if n else None
  if groups is not None:
    by_group = {}
    for name in sorted(set(groups)):
      rows = [i for i, g in enumerate(groups) if g == name]
      tops: dict[str, int] = {}
      for i in rows:
        tops[top[i]] = tops.get(top[i], 0) + 1
      by_group[name] = {"n": len(rows), "top1_in_gold": _share([right[i] for i in rows]),
                        "top": sorted(tops.items(), key=lambda kv: (-kv[1], kv[0]))[:3]}
    report["by_group"] = by_group
  return report


def _share(flags: Sequence[bool]) -> float | None:
  """The share of true flags, rounded to 4 places; None for no flags."""
  return round(sum(flags) / len(flags), 4) if flags else None
