"""``wirestream train ner-average``: one NER model from the mean of the weights of several runs.

The runs must be fine-tuned from the same base encoder with the same labels and settings (seeds may
differ): each stored tensor of the output is the plain mean of that tensor over the runs, so the
result has the architecture, size and speed of one model. The word embeddings are frozen during
training and never stored, so they are the base package's in every run and in the mean.
``training.json`` of the output names the runs and their own dev scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.common import add_output_argument
from pipelines.training.command import command
from transforms import ner_model as nm

#: Config keys that may differ between runs that can be averaged (none of them changes the network).
_FREE_CONFIG_KEYS = ("transformers_version", "_name_or_path")


def _config(model_dir: Path) -> dict:
  config = json.loads((model_dir / nm.CONFIG_FILE).read_text())
  return {k: v for k, v in config.items() if k not in _FREE_CONFIG_KEYS}


def average_weights(model_dirs: Sequence[str | Path]) -> dict:
  """The mean (fp32) of each stored tensor over ``model_dirs``; ValueError when they do not fit together."""
  import torch
  from safetensors.torch import load_file

  if len(model_dirs) < 2:
    raise ValueError("averaging needs two models or more")
  dirs = [Path(d) for d in model_dirs]
  first_config = _config(dirs[0])
  total: dict[str, torch.Tensor] = {}
  for d in dirs:
    if _config(d) != first_config:
      raise ValueError(f"{d}: config differs from {dirs[0]} (labels, architecture or settings)")
    state = load_file(str(d / nm.WEIGHTS_FILE))
    if total and set(state) != set(total):
      raise ValueError(f"{d}: stores other tensors than {dirs[0]}")
    for key, tensor in state.items():
      if key in total and total[key].shape != tensor.shape:
        raise ValueError(f"{d}: {key} has shape {tuple(tensor.shape)}, expected {tuple(total[key].shape)}")
      total[key] = total[key] + tensor.float() if key in total else tensor.float().clone()
  return {key: tensor / len(dirs) for key, tensor in total.items()}


def average(model_dirs: Sequence[str | Path], out: str | Path, dtype: str = "float16") -> dict:
  """Write the averaged model to ``out`` (weights, config, training.json); return the summary."""
  out = nm.save_weights(average_weights(model_dirs), out, dtype)
  (out / nm.CONFIG_FILE).write_text((Path(model_dirs[0]) / nm.CONFIG_FILE).read_text())
  runs = []
  for d in model_dirs:
    summary_file = Path(d) / "training.json"
    run = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    runs.append({"model": str(d), "command": run.get("command"), "seed": run.get("seed"),
                 "best_epoch": run.get("best_epoch"),
                 "dev_f1": (run.get("dev") or {}).get("f1")})
  summary = {"command": " ".join(["wirestream", "train", "ner-average", "--models", *map(str, model_dirs),
                                  "--output", str(out)]),
             "averaged": runs, "dtype": dtype}
  (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
  return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--models", nargs="+", required=True,
                      help="Directories of `wirestream train ner` runs (two or more).")
  add_output_argument(parser, "Directory for the averaged model.", dest="out", required=True)
  parser.add_argument("--save-dtype", choices=("float16", "float32"), default="float16")


def _run(args: argparse.Namespace) -> int:
  for d in args.models:
    if not (Path(d) / nm.WEIGHTS_FILE).is_file():
      print(f"error: no model in {d} (missing {nm.WEIGHTS_FILE})", file=sys.stderr)
      return 2
  try:
    summary = average(args.models, args.out, args.save_dtype)
  except ValueError as exc:
    print(f"error: {exc}", file=sys.stderr)
    return 2
  print(json.dumps({"out": str(args.out), "models": len(summary["averaged"]),
                    "dev_f1": [r["dev_f1"] for r in summary["averaged"]]}))
  return 0


register, main = command(
    "ner-average", "Average the weights of several NER runs into one model.", __doc__, add_arguments, _run,
    prog="wirestream train ner-average")


if __name__ == "__main__":
  sys.exit(main())
