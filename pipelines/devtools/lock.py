"""The dependency lock: every package of the runtime, dev and build closure at one exact version.

    python -m pipelines.devtools.lock            # re-resolve and rewrite requirements.lock (`make lock`)
    python -m pipelines.devtools.lock --check    # exit 1 when pyproject.toml changed since the lock was made

``requirements.lock`` is made by pip's own resolver (``pip install --dry-run --ignore-installed --report``)
from ``pyproject.toml``: the package with its ``dev`` extra, plus pip and the build backend. Its header
holds a digest of the dependency tables it was resolved from, so ``--check`` (run by ``make setup``, which
CI calls) needs nothing beyond the standard library and fails with a clear message when
``pyproject.toml`` and the lock disagree. Each line is one exact pin; runtime pins carry no marker, the
others end in ``# dev`` or ``# build``. ``make setup`` installs the file with ``--no-deps``, so nothing
outside it is installed; the worker image installs the package's wheel with the file as constraints, so
it gets the runtime closure at the same versions.

The lock is resolved for the interpreter and platform it is made on: CPython 3.11 on Linux x86-64, the
platform of CI and of the Dataflow image.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
DIGEST_PREFIX = "# inputs-sha256: "
#: Installers, resolved with the rest so `make setup` uses the same pip and build backend every time.
TOOLS = ("pip",)
HEADER = """\
# wirestream's dependency lock: the runtime, dev and build closure, one exact version each.
# Made by `make lock` (python -m pipelines.devtools.lock) with pip's resolver from pyproject.toml,
# for CPython 3.11 on Linux x86-64. Do not edit by hand: change pyproject.toml, then run `make lock`.
# Lines without a marker are the runtime closure; `# dev` and `# build` lines are for development.
"""


def inputs(pyproject: dict) -> dict:
  """The parts of ``pyproject.toml`` that decide what the lock holds."""
  project = pyproject["project"]
  return {
      "requires-python": project.get("requires-python", ""),
      "dependencies": sorted(project.get("dependencies", [])),
      "optional-dependencies": {name: sorted(requirements)
                                for name, requirements in sorted(project.get("optional-dependencies", {}).items())},
      "build-system": sorted(pyproject.get("build-system", {}).get("requires", [])),
  }


def digest(pyproject: dict) -> str:
  return hashlib.sha256(json.dumps(inputs(pyproject), sort_keys=True).encode()).hexdigest()


def read_pyproject(path: Path = PYPROJECT) -> dict:
  return tomllib.loads(path.read_text(encoding="utf-8"))


def recorded_digest(lock_text: str) -> str | None:
  for line in lock_text.splitlines():
    if line.startswith(DIGEST_PREFIX):
      return line[len(DIGEST_PREFIX):].strip()
  return None


def pins(lock_text: str) -> dict[str, tuple[str, str]]:
  """Canonical name -> (version, role) for each pin of a lock; role is runtime, dev or build."""
  result = {}
  for raw in lock_text.splitlines():
    line, _, comment = raw.partition("#")
    line = line.strip()
    if not line:
      continue
    name, separator, version = line.partition("==")
    if not separator:
      raise ValueError(f"not an exact pin: {raw!r}")
    role = comment.strip() or "runtime"
    result[_canonical(name)] = (version.strip(), role)
  return result


def _canonical(name: str) -> str:
  return "-".join(name.replace("_", "-").replace(".", "-").lower().split("-"))


def check(lock_path: Path = LOCK, pyproject_path: Path = PYPROJECT) -> str | None:
  """None when the lock was made from this ``pyproject.toml``; else what is wrong and what to do."""
  if not lock_path.is_file():
    return f"{lock_path.name} is missing: run `make lock`"
  recorded = recorded_digest(lock_path.read_text(encoding="utf-8"))
  if recorded != digest(read_pyproject(pyproject_path)):
    return (f"pyproject.toml's dependencies changed since {lock_path.name} was made: run `make lock`, "
            f"review the new pins and commit both files")
  return None


# --------------------------------------------------------------------------- resolving


def resolve(root: Path = ROOT, python: str = sys.executable, constraints: list[Path] = ()) -> list[dict]:
  """pip's resolution of the package with its dev extra, pip itself and the build backend, within
  ``constraints`` (pip constraint files, e.g. the current lock to change as little as possible): the
  report's ``install`` entries (each with ``metadata``: name, version, requires_dist)."""
  pyproject = read_pyproject(root / "pyproject.toml")
  with tempfile.TemporaryDirectory() as tmp:
    report = Path(tmp) / "report.json"
    command = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), *(f"--constraint={path}" for path in constraints),
               f"{root}[dev]", *TOOLS, *pyproject["build-system"]["requires"]]
    subprocess.run(command, check=True, cwd=root, stdout=subprocess.DEVNULL)
    return json.loads(report.read_text(encoding="utf-8"))["install"]


def roles(install: list[dict], root_name: str) -> dict[str, tuple[str, str]]:
  """Canonical name -> (version, role) for pip's report entries (see :func:`classify`)."""
  return classify({_canonical(item["metadata"]["name"]): item["metadata"] for item in install}, root_name)


def installed_metadata() -> dict[str, dict]:
  """The current environment's distributions in the report's shape: canonical name -> metadata."""
  from importlib import metadata

  return {_canonical(dist.metadata["Name"]): {"name": dist.metadata["Name"], "version": dist.version,
                                              "requires_dist": dist.requires or []}
          for dist in metadata.distributions()}


def classify(metadata: dict[str, dict], root_name: str) -> dict[str, tuple[str, str]]:
  """Canonical name -> (version, role): runtime for the closure of the package's own requirements, dev for
  what its dev extra adds, build for the rest (pip, the build backend). ``metadata`` maps canonical names
  to ``{"version", "requires_dist"}``; a requirement of the closure that it lacks raises KeyError."""
  try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
  except ImportError:  # pip carries its own copy, so a lock can be made before anything is installed
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement

  environment = default_environment()

  def closure(name: str, extras: frozenset[str]) -> set[str]:
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    stack = [(name, extras)]
    while stack:
      current, current_extras = stack.pop()
      if (current, current_extras) in seen:
        continue
      seen.add((current, current_extras))
      names.add(current)
      for line in metadata[current].get("requires_dist") or ():
        requirement = Requirement(line)
        if requirement.marker is None or any(
            requirement.marker.evaluate({**environment, "extra": extra}) for extra in (*current_extras, "")):
          stack.append((_canonical(requirement.name), frozenset(requirement.extras)))
    return names

  root = _canonical(root_name)
  runtime = closure(root, frozenset())
  dev = closure(root, frozenset({"dev"})) - runtime
  result = {}
  for name, meta in metadata.items():
    if name == root:
      continue
    role = "runtime" if name in runtime else "dev" if name in dev else "build"
    result[name] = (meta["version"], role)
  return result


def render(pinned: dict[str, tuple[str, str]], inputs_digest: str) -> str:
  lines = [HEADER, f"{DIGEST_PREFIX}{inputs_digest}\n"]
  for name in sorted(pinned):
    version, role = pinned[name]
    lines.append(f"{name}=={version}" + ("" if role == "runtime" else f"  # {role}") + "\n")
  return "".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m pipelines.devtools.lock", description=__doc__.split("\n")[0])
  parser.add_argument("--check", action="store_true",
                      help="Only check that requirements.lock was made from this pyproject.toml.")
  parser.add_argument("--constraint", type=Path, action="append", default=[], metavar="FILE",
                      help="Resolve within these pins (a pip constraints file; repeatable), e.g. "
                           "`--constraint requirements.lock` to move only what pyproject.toml's change needs.")
  args = parser.parse_args(argv)
  if args.check:
    problem = check()
    if problem:
      print(f"lock check failed: {problem}", file=sys.stderr)
      return 1
    print(f"{LOCK.name} matches pyproject.toml")
    return 0
  pyproject = read_pyproject()
  pinned = roles(resolve(constraints=args.constraint), pyproject["project"]["name"])
  LOCK.write_text(render(pinned, digest(pyproject)), encoding="utf-8")
  counts = {role: sum(1 for _, r in pinned.values() if r == role) for role in ("runtime", "dev", "build")}
  print(f"wrote {LOCK.name}: " + ", ".join(f"{n} {role}" for role, n in counts.items()))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
