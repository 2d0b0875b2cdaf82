"""``wirestream train topics``: train the IPTC Media Topics head.

Data (see ``pipelines/topics_data.py`` for the label mapping):

* AG News rows: Sports -> sport (15), Business -> economy, business and finance (04), Sci/Tech -> science
  and technology (13), World -> "at least one of" the twelve topics other than 01/04/10/13/15 (a
  noisy-OR loss; 01/04/10/13/15 are negatives). A fixed, stratified 9.5% of AG (by a hash of the text,
  repeats on one side: ``topics_data.split_ag``) is the dev split and never trains.
* Optionally (``--huffpost``) the train part of the HuffPost headlines (``topics_data.split_huffpost``,
  categories mapped by ``HUFFPOST_TOPICS``); its dev part never trains (``wirestream eval topics
  --huffpost`` scores it).
* Every active IPTC Media Topics concept: "label. definition" is a positive example of its top-level topic
  (the only data for arts, culture, entertainment and media; extra data for politics and the rest).
* Optionally Reuters-21578 stories with TOPICS tags (all economic -> 04; ``jobs`` also -> labour 09).
* ``pipelines/training/data/topics_seed_en.jsonl``: short news-style texts written for this project, each with its
  main topic first (further topics get ``--seed-secondary-target``): arts/entertainment (AG News has no
  such class, and definitions alone do not carry over to news text), politics told through a policy
  area, business, technology and the weather (5 IPTC concepts only); and
  ``pipelines/training/data/topics_articles_en.jsonl``: whole articles in the BBC News desks' style (business,
  entertainment, politics, sport, technology), also written for this project, read in up to
  ``--seed-windows`` windows each. Topics in ``--seed-negatives`` are sure negatives of a seed text unless
  it names them; ``transforms/assets/topics/README.md`` has the counts.
* World pseudo-labels: a zero-shot teacher (the base package's sentence vectors; for each topic the mean
  cosine similarity to its 3 nearest IPTC concepts) picks the likeliest allowed topic of every World row,
  which becomes an extra positive target. Without it the noisy-OR lets one topic soak up all of World.

The encoder is frozen. Its hidden states after ``--feature-layer`` layers are computed once (the first
window of every text, or the first ``--seed-windows`` of a seed text; cached as fp16) and the head
(``--head-layers`` transformer layers initialised from the encoder layers after the feature layer, mean
+ attention pooling, 17 sigmoids) trains on them. After training a temperature is fitted on the dev
split (calibration). The artifact is the head only (fp16) plus a config naming the encoder: by default
the bundled NER model, read after its third layer, so that the pipeline runs one encoder pass for both
stages.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pipelines.common import add_output_argument
from pipelines.training import topics_data as td
from pipelines.training.command import command
from pipelines.training.metrics import expected_calibration_error, top1_report
from transforms import assets
from transforms import spec as sp

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
DEFAULT_OUT = assets.TOPICS_DIR
#: The NER model whose encoder pass the head shares, and the layer it reads (see transforms/assets/topics/README.md).
DEFAULT_ENCODER = assets.NER_DIR
DEFAULT_NER_FEATURE_LAYER = 3
#: Texts written for this project: short news-style texts, and whole BBC-style articles.
SEED_DATA = tuple(Path(__file__).resolve().parent / "data" / name
                  for name in ("topics_seed_en.jsonl", "topics_articles_en.jsonl"))


# --- Features ---------------------------------------------------------------------------------------


class Features:
  """Cached hidden states of many windows: ``toks[offsets[i]:offsets[i+1]]`` are window i's token states,
  and ``owner[i]`` is the index of the text it comes from (one window a text unless ``max_windows`` > 1)."""

  def __init__(self, lens: np.ndarray, toks: np.ndarray, owner: np.ndarray | None = None):
    self.lens = lens.astype(np.int64)
    self.toks = toks
    self.offsets = np.concatenate([[0], np.cumsum(self.lens)])
    self.owner = np.arange(len(self.lens)) if owner is None else owner.astype(np.int64)

  def __len__(self) -> int:
    return len(self.lens)

  def batch(self, index: Sequence[int]):
    import torch

    length = int(max(self.lens[i] for i in index))
    hidden = torch.zeros(len(index), length, self.toks.shape[1])
    mask = torch.zeros(len(index), length, dtype=torch.long)
    for row, i in enumerate(index):
      n = int(self.lens[i])
      hidden[row, :n] = torch.from_numpy(self.toks[self.offsets[i]:self.offsets[i + 1]].astype(np.float32))
      mask[row, :n] = 1
    return hidden, mask


def extract_features(encoder, texts: Sequence[str], layer: int, max_length: int, batch_size: int = 64,
                     log: Callable[[str], None] = print, name: str = "", max_windows: int = 1) -> Features:
  """Hidden states after ``layer`` layers of the first ``max_windows`` windows of every text (fp16)."""
  per_text = [encoder.windows(text, max_length=max_length, max_windows=max_windows) for text in texts]
  windows = [w for ws in per_text for w in ws]
  owner = np.repeat(np.arange(len(texts)), [len(ws) for ws in per_text])
  lens = np.array([w.length for w in windows], np.int64)
  offsets = np.concatenate([[0], np.cumsum(lens)])
  toks = np.zeros((int(offsets[-1]), encoder.hidden_size), np.float16)
  order = sorted(range(len(windows)), key=lambda i: lens[i])
  start = time.time()
  for b in range(0, len(order), batch_size):
    index = order[b:b + batch_size]
    hidden, _ = encoder.hidden_states([windows[i] for i in index], layer)
    hidden = hidden.numpy()
    for row, i in enumerate(index):
      toks[offsets[i]:offsets[i + 1]] = hidden[row, :lens[i]]
    if b // batch_size % 100 == 0 or b + batch_size >= len(order):
      log(f"  features {name}: {min(b + batch_size, len(order))}/{len(order)} ({time.time() - start:.0f}s)")
  return Features(lens, toks, owner)


def cached_sentences(encoder, texts: Sequence[str], cache_dir: Path | None, name: str,
                     log: Callable[[str], None] = print) -> np.ndarray:
  """Sentence vectors (:func:`transforms.te.sentence_embeddings`), cached like the features."""

  digest = hashlib.sha1("\x1e".join(texts).encode("utf-8")).hexdigest()[:12]
  path = cache_dir / f"{encoder.cache_key}-sent-{name}-{digest}.npy" if cache_dir else None
  if path is not None and path.is_file():
    log(f"  sentence vectors {name}: cached {path.name}")
    return np.load(path)
  log(f"  sentence vectors {name}: {len(texts)} texts")
  from pipelines.training import encoder as te  # torch: loaded when training, not for --help

  vectors = te.sentence_embeddings(encoder, texts)
  if path is not None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
  return vectors


def cached_features(encoder, texts: Sequence[str], layer: int, max_length: int, cache_dir: Path | None,
                    name: str, log: Callable[[str], None] = print, max_windows: int = 1) -> Features:
  """:func:`extract_features`, stored in ``cache_dir`` under a key of encoder, layer, windows and texts."""
  if cache_dir is None:
    return extract_features(encoder, texts, layer, max_length, log=log, name=name, max_windows=max_windows)
  digest = hashlib.sha1("\x1e".join(texts).encode("utf-8")).hexdigest()[:12]
  windows = f"W{max_windows}-" if max_windows != 1 else ""
  path = cache_dir / f"{encoder.cache_key}-L{layer}-M{max_length}-{windows}{name}-{digest}.npz"
  if path.is_file():
    data = np.load(path)
    log(f"  features {name}: cached {path.name}")
    return Features(data["lens"], data["toks"], data["owner"] if "owner" in data else None)
  feats = extract_features(encoder, texts, layer, max_length, log=log, name=name, max_windows=max_windows)
  cache_dir.mkdir(parents=True, exist_ok=True)
  np.savez(path, lens=feats.lens, toks=feats.toks, owner=feats.owner)
  return feats


# --- Loss, training, calibration --------------------------------------------------------------------


def partial_label_loss(logits, target, weight, any_of):
  """Per-example loss: weighted BCE on the known topics + noisy-OR "at least one of ``any_of``"."""
  import torch
  from torch.nn import functional as F

  bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum(-1)
  log_none = -(F.softplus(logits) * any_of).sum(-1)  # log P(none of the set applies)
  has_set = any_of.sum(-1) > 0
  any_loss = -torch.log(-torch.expm1(log_none.clamp(max=-1e-6)))
  return bce + torch.where(has_set, any_loss, torch.zeros_like(any_loss))


def _stack(examples: Sequence[td.Example]):
  import torch

  return (torch.tensor(np.stack([e.target for e in examples])),
          torch.tensor(np.stack([e.weight for e in examples])),
          torch.tensor(np.stack([e.any_of for e in examples])))


def length_batches(lens: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
  """Shuffled batches of similar length (sorted within pools of 50 batches)."""
  order = rng.permutation(len(lens))
  pool = batch_size * 50
  batches = []
  for p in range(0, len(order), pool):
    chunk = order[p:p + pool]
    chunk = chunk[np.argsort(lens[chunk], kind="stable")]
    batches.extend(chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size))
  return [batches[i] for i in rng.permutation(len(batches))]


def train_head(head, feats: Features, examples: Sequence[td.Example], example_weight: np.ndarray, *,
               epochs: int, lr: float, batch_size: int, seed: int, log: Callable[[str], None] = print,
               dev: Callable[[], str] | None = None):
  """Train ``head`` (AdamW, linear warm-up and decay) on cached features."""
  import torch

  torch.manual_seed(seed)
  rng = np.random.default_rng(seed)
  target, weight, any_of = _stack(examples)
  ex_weight = torch.tensor(example_weight, dtype=torch.float32)
  layer_params = list(head.layers.parameters())
  layer_ids = {id(p) for p in layer_params}
  other = [p for p in head.parameters() if id(p) not in layer_ids]
  optimizer = torch.optim.AdamW([{"params": layer_params, "lr": lr}, {"params": other, "lr": lr * 10}],
                                weight_decay=0.01)
  steps = epochs * math.ceil(len(feats) / batch_size)
  warmup = max(1, steps // 20)
  scheduler = torch.optim.lr_scheduler.LambdaLR(
      optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
  step = 0
  for epoch in range(epochs):
    head.train()
    start, total, count = time.time(), 0.0, 0
    for index in length_batches(feats.lens, batch_size, rng):
      hidden, mask = feats.batch(index)
      logits = head(hidden, mask)
      idx = torch.from_numpy(index)
      loss = (partial_label_loss(logits, target[idx], weight[idx], any_of[idx]) * ex_weight[idx]).sum()
      loss = loss / ex_weight[idx].sum()
      optimizer.zero_grad()
      loss.backward()
      torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
      optimizer.step()
      scheduler.step()
      step += 1
      total += loss.item() * len(index)
      count += len(index)
      if step % 100 == 0:
        log(f"  epoch {epoch + 1} step {step}/{steps} loss {total / count:.4f} ({time.time() - start:.0f}s)")
    head.eval()
    log(f"epoch {epoch + 1}/{epochs}: train loss {total / max(1, count):.4f} ({time.time() - start:.0f}s)"
        + (f"; dev {dev()}" if dev else ""))
  head.eval()
  return head


def predict_logits(head, feats: Features, batch_size: int = 128):
  """Raw (uncalibrated: temperature 1) logits of cached features."""
  import torch

  temperature = head.temperature.clone()
  head.temperature.fill_(1.0)
  out = torch.zeros(len(feats), head.classifier.out_features)
  order = np.argsort(feats.lens, kind="stable")
  with torch.inference_mode():
    for b in range(0, len(order), batch_size):
      index = order[b:b + batch_size]
      hidden, mask = feats.batch(index)
      out[torch.from_numpy(index)] = head(hidden, mask)
  head.temperature.copy_(temperature)
  return out


def fit_temperature(logits, examples: Sequence[td.Example]) -> float:
  """The temperature minimising the partial-label loss of ``examples`` (a 1-D search on log T)."""
  import torch

  target, weight, any_of = _stack(examples)

  def loss(t: float) -> float:
    return float(partial_label_loss(logits / t, target, weight, any_of).mean())

  grid = np.exp(np.linspace(np.log(0.25), np.log(4.0), 81))
  best = min(grid, key=loss)
  lo, hi = best / 1.04, best * 1.04
  for _ in range(30):  # golden-section refinement
    a, b = lo + (hi - lo) * 0.382, lo + (hi - lo) * 0.618
    if loss(a) < loss(b):
      hi = b
    else:
      lo = a
  with torch.no_grad():
    return float((lo + hi) / 2)


def calibration_report(scores: np.ndarray, examples: Sequence[td.Example]) -> dict:
  """Top-1 ECE (score of the top topic vs. it being right) and label ECE over the sure targets
  (weight 1: e.g. sport on a Sports row, or any excluded topic on a World row)."""
  allowed = [tuple(td.CODES[i] for i in np.flatnonzero(e.target + e.any_of)) for e in examples]
  top = np.argmax(scores, axis=1)
  conf = scores[np.arange(len(top)), top]
  right = np.array([td.CODES[t] in ok for t, ok in zip(top, allowed, strict=True)])
  sure = np.stack([e.weight for e in examples]) >= 1.0
  target = np.stack([e.target for e in examples])
  return {"top1_ece": round(expected_calibration_error(conf, right), 4),
          "top1_mean_confidence": round(float(conf.mean()), 4), "top1_accuracy": round(float(right.mean()), 4),
          "label_ece": round(expected_calibration_error(scores[sure], target[sure]), 4),
          "labels_per_story_at_0.5": round(float((scores >= 0.5).sum(1).mean()), 3)}


def ag_dev_report(scores: np.ndarray, examples: Sequence[td.Example]) -> dict:
  allowed = [tuple(td.CODES[i] for i in np.flatnonzero(e.target + e.any_of)) for e in examples]
  report = top1_report(scores, allowed)
  by_class = {}
  for name in td.AG_NAMES.values():
    rows = [i for i, e in enumerate(examples) if e.label == name]
    if rows:
      tops = [td.CODES[i] for i in np.argmax(scores[rows], axis=1)]
      by_class[name] = {"n": len(rows), "top1_accuracy": round(float(np.mean(
          [t in allowed[r] for t, r in zip(tops, rows, strict=True)])), 4),
          "top_codes": dict(sorted(((c, tops.count(c)) for c in set(tops)), key=lambda x: -x[1])[:5])}
  report["by_ag_class"] = by_class
  return report


# --- The command ------------------------------------------------------------------------------------


def new_head(encoder, layer: int, head_args: dict):
  """A head whose transformer layers start as the encoder layers they stand in for: those after
  ``layer`` (repeating the encoder's last layer when the head has more layers than follow it)."""
  from transforms import topics_model as tm

  head = tm.TopicHead(**head_args)
  for i, block in enumerate(head.layers):
    block.load_bert_layer(encoder.layer_state(min(layer + i, encoder.num_layers - 1)), prefix="")
  return head


def topic_codes(spec: str) -> list[str]:
  """Comma-separated top-level topics, as numbers (``4``) or codes (``medtop:04000000``) -> codes."""
  return [td.medtop(int(n)) if n.isdigit() else n for n in spec.split(",") if n]


def lowered_copies(rows: Sequence[td.Example], share: float, seed: int) -> list[td.Example]:
  """Lower-cased copies of a seeded ``share`` of ``rows`` (same targets and source): cased wire copy and
  lower-cased headlines then teach the same topics, rather than casing telling the sources apart."""
  if share <= 0 or not rows:
    return []
  picked = random.Random(seed).sample(range(len(rows)), round(min(share, 1.0) * len(rows)))
  return [dataclasses.replace(rows[i], text=rows[i].text.lower()) for i in sorted(picked)]


def train(args: argparse.Namespace) -> dict:
  import torch

  from pipelines.training import encoder as te  # torch: loaded when training, not for --help
  from transforms import topics_model as tm

  log = print
  started = time.time()
  te.seed_everything(args.seed)
  if args.threads:
    torch.set_num_threads(args.threads)
  ag_train, ag_dev = td.load_ag(Path(args.ag))
  if args.limit:
    ag_train, ag_dev = ag_train[:args.limit], ag_dev[:max(20, args.limit // 9)]
  iptc = td.load_iptc(Path(args.iptc))
  reuters = td.load_reuters(Path(args.reuters), limit=args.reuters_limit) if args.reuters else []
  seed_negatives = topic_codes(args.seed_negatives)
  skipped = topic_codes(args.huffpost_skip)
  huffpost = td.huffpost_examples(td.split_huffpost(Path(args.huffpost))[0], skipped) if args.huffpost else []
  seed_rows = [row for path in args.seed_data if path
               for row in td.load_seed(Path(path), args.seed_secondary_target, seed_negatives)]
  log(f"data: AG train {len(ag_train)}, AG dev {len(ag_dev)} (fixed stratified hash split), "
      f"IPTC definitions {len(iptc)}, Reuters {len(reuters)}, HuffPost train {len(huffpost)}, "
      f"seed texts {len(seed_rows)}")
  cache = Path(args.cache_dir) if args.cache_dir else None
  base = args.encoder == te.BASE_ENCODER
  encoder = te.Encoder(args.encoder)
  # the head fits this encoder only: its weights' sha1 goes into the config (None for the base)
  fingerprint = None if base else sp.fingerprint([encoder.directory / sp.NER_WEIGHTS], algorithm="sha1")
  encoder.cache_key = "base" if base else "enc-" + fingerprint[:10]
  if args.pseudo_weight > 0:
    teacher = encoder if not encoder.casing else te.Encoder(te.BASE_ENCODER)
    teacher.cache_key = "base"
    world = [e for e in ag_train if e.any_of.any()]
    concepts = cached_sentences(teacher, [e.text for e in iptc], cache, "iptc", log)
    vectors = cached_sentences(teacher, [e.text for e in world], cache, "agworld", log)
    roots = np.array([td.INDEX[e.label] for e in iptc])
    counts = td.add_world_pseudo_labels(world, td.concept_teacher(concepts, roots, vectors), args.pseudo_weight)
    log(f"World pseudo-labels (IPTC concept teacher): {counts}")
  layer = args.feature_layer if args.feature_layer is not None else (
      encoder.num_layers - 1 if base else DEFAULT_NER_FEATURE_LAYER)
  lowered = lowered_copies(ag_train + reuters, args.lowercase_share, args.seed)
  sources = [("agtrain", ag_train), ("iptc", iptc), ("reuters", reuters), ("huffpost", huffpost),
             ("seed", seed_rows), ("lowered", lowered)]
  if lowered:
    log(f"lower-cased copies of AG and Reuters training rows: {len(lowered)}")
  feats = {}
  for name, rows in [("agdev", ag_dev)] + sources:
    if rows:
      feats[name] = cached_features(encoder, [e.text for e in rows], layer, args.max_length, cache, name, log,
                                    max_windows=args.seed_windows if name == "seed" else 1)
  used = [(name, rows) for name, rows in sources if rows]
  # one example a window: a seed text read in several windows trains on each of them
  train_rows = [rows[i] for name, rows in used for i in feats[name].owner]
  train_feats = Features(np.concatenate([feats[name].lens for name, _ in used]),
                         np.concatenate([feats[name].toks for name, _ in used]))
  per_source = {"ag": 1.0, "iptc": args.iptc_weight, "reuters": args.reuters_weight,
                "huffpost": args.huffpost_weight, "seed": args.seed_weight}
  weights = np.array([per_source[e.source] for e in train_rows], np.float32)
  # every top-level topic's definitions weigh the same in all (sport has 209 concepts, weather 5)
  per_root = {code: sum(1 for e in iptc if e.label == code) for code in {e.label for e in iptc}}
  mean_root = float(np.mean(list(per_root.values()))) if per_root else 1.0
  for i, e in enumerate(train_rows):
    if e.source == "iptc":
      weights[i] *= mean_root / per_root[e.label]
  head_args = {"hidden": encoder.hidden_size, "heads": encoder.bert.config.num_attention_heads,
               "intermediate": encoder.bert.config.intermediate_size, "n_labels": td.N_TOPICS,
               "use_layer": not args.no_layer, "layers": args.head_layers}
  head = new_head(encoder, layer, head_args)

  def dev_score() -> str:
    scores = torch.sigmoid(predict_logits(head, feats["agdev"])).numpy()
    return f"AG top-1 {ag_dev_report(scores, ag_dev)['top1_accuracy']}"

  log(f"training the head on {len(train_rows)} rows, layer {layer} features, seed {args.seed}")
  train_head(head, train_feats, train_rows, weights, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
             seed=args.seed, log=log, dev=dev_score)
  dev_logits = predict_logits(head, feats["agdev"])
  raw = torch.sigmoid(dev_logits).numpy()
  temperature = fit_temperature(dev_logits, ag_dev)
  head.temperature.fill_(temperature)
  scores = torch.sigmoid(dev_logits / temperature).numpy()
  metrics = {
      "ag_dev": ag_dev_report(scores, ag_dev),
      "calibration": {"temperature": round(temperature, 4), "before": calibration_report(raw, ag_dev),
                      "after": calibration_report(scores, ag_dev)},
  }
  config = {
      "format": "wirestream-topic-head/1",
      "encoder": te.BASE_ENCODER if base else (
          args.encoder_ref or os.path.relpath(encoder.directory.resolve(), Path(args.out).resolve())),
      "feature_layer": layer,
      "casing_token_types": encoder.casing,
      "encoder_sha1": fingerprint,
      "head": head_args,
      "labels": [list(pair) for pair in tm.IPTC_ROOTS],
      "languages": ["en"],
      "max_length": args.max_length,
      "stride": 32,
      "threshold": 0.5,
      "temperature": temperature,
      "training": {"seed": args.seed, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                   "iptc_weight": args.iptc_weight, "reuters_weight": args.reuters_weight,
                   "huffpost_weight": args.huffpost_weight, "huffpost_skip": skipped,
                   "lowercase_share": args.lowercase_share,
                   "seed_weight": args.seed_weight, "seed_secondary_target": args.seed_secondary_target,
                   "seed_windows": args.seed_windows, "seed_negatives": seed_negatives,
                   "pseudo_weight": args.pseudo_weight,
                   "rows": {"ag_train": len(ag_train), "ag_dev": len(ag_dev), "iptc": len(iptc),
                            "reuters": len(reuters), "huffpost": len(huffpost), "seed": len(seed_rows),
                            "lowered": len(lowered),
                            "seed_windows": len(feats["seed"]) if seed_rows else 0},
                   "seconds": round(time.time() - started, 1)},
  }
  out = Path(args.out)
  tm.save_head(head, out, config)
  if args.eval_jsonl:
    from pipelines.training import eval_topics
    from transforms import core

    model = core.load(topics_ref=str(out), stages=("topics",), backend="torch")
    for path in args.eval_jsonl:
      metrics[f"eval:{Path(path).name}"] = eval_topics.evaluate_jsonl(model, Path(path))
  metrics["seconds"] = round(time.time() - started, 1)
  (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
  log(f"AG dev top-1 {metrics['ag_dev']['top1_accuracy']} (n={metrics['ag_dev']['n']}); temperature "
      f"{temperature:.3f}; top-1 ECE {metrics['calibration']['after']['top1_ece']}; wrote {out}")
  return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--ag", default=str(SHARED / "ag_news" / "train_union.csv"),
                      help="AG News CSV (label,label_name,text); 9.5%% of every class is held out as dev.")
  parser.add_argument("--iptc", default=str(SHARED / "iptc_mediatopics" / "mediatopic_en-GB_flat.csv"),
                      help="IPTC Media Topics flat CSV (qcode, broader, label_en_GB, definition_en_GB, retired).")
  parser.add_argument("--reuters", default=None, help="Directory of Reuters-21578 reut2-*.sgm files (optional).")
  parser.add_argument("--reuters-limit", type=int, default=1500)
  parser.add_argument("--huffpost", default=None,
                      help="HuffPost headlines JSONL (optional): its train part trains, its dev part never.")
  parser.add_argument("--huffpost-weight", type=float, default=1.0)
  parser.add_argument("--huffpost-skip", default="",
                      help="Top-level topics (numbers or codes) whose HuffPost train rows are left out.")
  parser.add_argument("--lowercase-share", type=float, default=0.0,
                      help="Share of the AG and Reuters training rows that also train lower-cased (0: none).")
  parser.add_argument("--seed-data", nargs="*", default=[str(path) for path in SEED_DATA],
                      help="Our own news-style examples (JSONL files of {text, labels}); none with no file.")
  parser.add_argument("--seed-weight", type=float, default=2.0)
  parser.add_argument("--seed-negatives", default="4,13,15",
                      help="Top-level topics (numbers or codes) a seed text is surely not about unless it "
                           "names them.")
  parser.add_argument("--seed-windows", type=int, default=3,
                      help="Train on up to this many windows of every seed text (each window an example).")
  parser.add_argument("--seed-secondary-target", type=float, default=0.6,
                      help="Target of a seed text's topics after its first (below 1: the first should rank first).")
  parser.add_argument("--pseudo-weight", type=float, default=1.0,
                      help="Weight of the World pseudo-labels from the IPTC concept teacher (0: noisy-OR only).")
  add_output_argument(parser, "Output directory of the topic head.", dest="out", default=str(DEFAULT_OUT))
  parser.add_argument("--encoder", default=str(DEFAULT_ENCODER),
                      help="Encoder: a casing NER model directory whose pass the head shares (default: the "
                           "bundled transforms/assets/ner), or 'base' for the base MiniLM package's own encoder.")
  parser.add_argument("--encoder-ref", default=None,
                      help="How the artifact names the encoder (default: its path relative to --out, e.g. ../ner).")
  parser.add_argument("--feature-layer", type=int, default=None,
                      help=f"Hidden states after this many encoder layers feed the head (default: "
                           f"{DEFAULT_NER_FEATURE_LAYER} for a NER model, all but the last for 'base').")
  parser.add_argument("--no-layer", action="store_true", help="Head without its own transformer layers.")
  parser.add_argument("--head-layers", type=int, default=1,
                      help="Transformer layers of the head, initialised from the encoder layers after "
                           "--feature-layer (default 1).")
  parser.add_argument("--max-length", type=int, default=128, help="Window size in word pieces.")
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--lr", type=float, default=1e-4)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--iptc-weight", type=float, default=2.0)
  parser.add_argument("--reuters-weight", type=float, default=1.0)
  parser.add_argument("--seed", type=int, default=13)
  parser.add_argument("--limit", type=int, default=0, help="Use only this many AG training rows (smoke runs).")
  parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice).")
  parser.add_argument("--cache-dir", default=None, help="Cache the encoder features here (reused across runs).")
  parser.add_argument("--eval-jsonl", action="append", default=[],
                      help="Also evaluate the trained model on this JSONL ({text, labels}); repeatable.")


def _run(args: argparse.Namespace) -> int:
  if args.eval_jsonl and args.encoder_ref and args.encoder != sp.BASE_ENCODER:
    named = (Path(args.out) / args.encoder_ref).resolve()
    if named != Path(args.encoder).resolve():
      print(f"error: --eval-jsonl loads the trained head from --out, where --encoder-ref {args.encoder_ref} "
            f"names {named}, not the --encoder {args.encoder}: write the head beside its encoder or drop "
            "--eval-jsonl", file=sys.stderr)
      return 2
  train(args)
  return 0


register, main = command(
    "topics", "Train the IPTC topic model.", __doc__, add_arguments, _run,
    prog="wirestream train topics")


if __name__ == "__main__":
  sys.exit(main())
