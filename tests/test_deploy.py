"""deploy/: pinned requirements, Flex Template metadata, the template entry point and the image recipe."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from google.cloud.dataflow_v1beta3 import types as dataflow_types
from google.protobuf import json_format
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from pipelines import flex_template
from pipelines.devtools import lock

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
METADATA = json.loads((DEPLOY / "metadata.json").read_text(encoding="utf-8"))
DOCKERFILE = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
PARAMETERS = {parameter["name"]: parameter for parameter in METADATA["parameters"]}
DEV_TOOLS = ("pytest", "hypothesis", "ruff")


LOCK_TEXT = (REPO / "requirements.lock").read_text(encoding="utf-8")


def _pins(roles: tuple[str, ...] = ("runtime",)) -> dict[str, Version]:
  return {name: Version(version) for name, (version, role) in lock.pins(LOCK_TEXT).items() if role in roles}


def _requirements() -> list[Requirement]:
  project = PYPROJECT["project"]
  lines = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
  return [Requirement(line) for line in lines]


def test_lock_lines_are_exact_pins_each_named_once():
  names = []
  for raw in LOCK_TEXT.splitlines():
    line = raw.partition("#")[0].strip()
    if line:
      match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
      assert match, f"not an exact pin: {raw!r}"
      names.append(canonicalize_name(match.group(1)))
  assert len(names) == len(set(names)), "a package pinned twice"
  assert lock.recorded_digest(LOCK_TEXT), "the lock records no digest of its inputs"


def test_lock_was_made_from_this_pyproject():
  assert lock.check() is None, lock.check()


def test_lock_check_names_the_fix_when_pyproject_changes(tmp_path):
  changed = (REPO / "pyproject.toml").read_text(encoding="utf-8").replace(
      '"defusedxml>=0.7",', '"defusedxml>=0.7",\n  "rich>=13",')
  assert changed != (REPO / "pyproject.toml").read_text(encoding="utf-8")
  (tmp_path / "pyproject.toml").write_text(changed, encoding="utf-8")
  (tmp_path / "requirements.lock").write_text(LOCK_TEXT, encoding="utf-8")
  problem = lock.check(tmp_path / "requirements.lock", tmp_path / "pyproject.toml")
  assert problem and "make lock" in problem
  result = subprocess.run([sys.executable, "-m", "pipelines.devtools.lock", "--check"], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
  assert result.returncode == 0, result.stderr


def test_every_pyproject_requirement_has_a_pin_that_satisfies_it():
  pins = _pins(("runtime", "dev"))
  for requirement in _requirements():
    name = canonicalize_name(requirement.name)
    assert name in pins, f"{requirement} has no pin in requirements.lock"
    assert requirement.specifier.contains(pins[name], prereleases=True), (
        f"pin {name}=={pins[name]} does not satisfy {requirement}")


def test_this_environment_runs_exactly_the_locked_versions():
  """What `make setup` installed is the lock: every package of the runtime and dev closure, same version,
  and the dev tools are not runtime pins (the worker image leaves them out)."""
  installed = lock.classify(lock.installed_metadata(), "wirestream")
  locked = lock.pins(LOCK_TEXT)
  closure = {name: value for name, value in installed.items() if value[1] != "build"}
  assert {name: version for name, (version, _) in closure.items()} == {
      name: locked[name][0] for name in closure if name in locked}, "installed versions differ from the lock"
  missing = sorted(set(closure) - set(locked))
  assert not missing, f"installed dependencies missing from requirements.lock (run make lock): {missing}"
  for name, (_, role) in closure.items():
    assert locked[name][1] == role, (name, role, locked[name][1])
  for tool in DEV_TOOLS:
    assert locked[tool][1] == "dev"


def test_lock_renders_sorted_exact_pins_with_roles():
  text = lock.render({"b-pkg": ("1.0", "runtime"), "a-pkg": ("2.0+cpu", "runtime"), "c": ("3", "dev")}, "abc")
  assert lock.recorded_digest(text) == "abc"
  lines = [line for line in text.splitlines() if not line.startswith("#")]
  assert lines == ["a-pkg==2.0+cpu", "b-pkg==1.0", "c==3  # dev"]
  assert lock.pins(text) == {"a-pkg": ("2.0+cpu", "runtime"), "b-pkg": ("1.0", "runtime"), "c": ("3", "dev")}


def test_torch_is_the_cpu_build_the_dockerfile_installs():
  torch = _pins()["torch"]
  assert torch.local == "cpu"
  assert "--extra-index-url https://download.pytorch.org/whl/cpu" in DOCKERFILE


# --- Dockerfile -----------------------------------------------------------------------------------


def test_dockerfile_builds_on_the_beam_sdk_of_the_pinned_version():
  beam = _pins()["apache-beam"]
  assert f"ARG BEAM_VERSION={beam}" in DOCKERFILE
  assert "FROM apache/beam_python3.11_sdk:${BEAM_VERSION}" in DOCKERFILE
  assert "python311-template-launcher-base" in DOCKERFILE
  assert PYPROJECT["project"]["requires-python"].startswith(">=3.11")
  assert re.search(r'^ENTRYPOINT \["/opt/apache/beam/boot"\]$', DOCKERFILE, re.M)


def test_dockerfile_copies_existing_paths_and_points_the_template_at_the_entry_file():
  for source in re.findall(r"^COPY (?!--from)(\S+) ", DOCKERFILE, re.M):
    assert (REPO / source).exists(), f"COPY source {source} is missing"
  workdir = re.search(r"^ARG WORKDIR=(\S+)$", DOCKERFILE, re.M).group(1)
  py_file = re.search(r'^ENV FLEX_TEMPLATE_PYTHON_PY_FILE="\$\{WORKDIR\}/(\S+)"$', DOCKERFILE, re.M).group(1)
  assert workdir == "/template"
  assert (REPO / py_file).is_file()
  assert "HF_HUB_OFFLINE=1" in DOCKERFILE


def test_image_installs_the_wheel_with_the_lock_as_constraints():
  assert re.search(r"^RUN pip wheel --no-deps .*--wheel-dir /dist \.$", DOCKERFILE, re.M)
  assert "--constraint /tmp/requirements.lock /tmp/dist/wirestream-*.whl" in DOCKERFILE
  assert not re.search(r"pip install[^\n]* -e ", DOCKERFILE), "the image must not use an editable install"
  assert "COPY models" not in DOCKERFILE and "COPY transforms/assets" not in DOCKERFILE


def test_entry_file_is_a_thin_call_into_the_package():
  source = (DEPLOY / "main.py").read_text(encoding="utf-8")
  code = [line for line in source.splitlines() if line.strip() and not line.lstrip().startswith(("#", '"""'))]
  assert "from pipelines.flex_template import main" in code
  assert len(code) <= 5


# --- metadata.json --------------------------------------------------------------------------------


def test_metadata_is_a_valid_dataflow_template_metadata():
  message = dataflow_types.TemplateMetadata.pb()()
  json_format.ParseDict(METADATA, message)  # raises on unknown fields or bad enum values
  assert message.name and message.description
  for parameter in message.parameters:
    assert parameter.label and parameter.help_text and parameter.regexes, parameter.name
    for regex in parameter.regexes:
      re.compile(regex)


def test_metadata_and_cli_parsers_agree():
  parsers = flex_template.command_parsers()
  cli_options = {dest for parser in parsers.values() for dest in flex_template.command_options(parser)}
  template = set(PARAMETERS) - {flex_template.PIPELINE_PARAMETER}
  assert sorted(cli_options - template) == [], "CLI options missing from deploy/metadata.json"
  assert sorted(template - cli_options) == [], "metadata.json parameters that no CLI command has"
  assert flex_template.PIPELINE_PARAMETER in PARAMETERS
  for dest in template:
    required = [parser for parser in parsers.values()
                if dest in flex_template.command_options(parser)
                and flex_template.command_options(parser)[dest].required]
    # Required by every command: required by the template; else optional (the command checks it).
    assert PARAMETERS[dest].get("isOptional", False) == (len(required) < len(parsers)), dest


def _matches(name: str, value: str) -> bool:
  return all(re.fullmatch(regex, value) for regex in PARAMETERS[name]["regexes"])


def test_metadata_regexes_accept_the_cli_defaults_and_choices():
  for parser in flex_template.command_parsers().values():
    for dest, action in flex_template.command_options(parser).items():
      values = list(action.choices or [])
      if isinstance(action.default, (int, float, str)) and not isinstance(action.default, bool):
        values.append(str(action.default))
      for value in values:
        assert _matches(dest, str(value)), (dest, value)
  assert all(_matches(flex_template.PIPELINE_PARAMETER, name) for name in flex_template.PIPELINES)


@pytest.mark.parametrize(("name", "good", "bad"), [
    ("pipeline", ["run", "stream"], ["query", "run "]),
    ("input", ["gs://b/stories/*", "gs://b/x.jsonl.gz"], ["/local/path", "gs://b/\nx"]),
    ("subscription", ["projects/p-1/subscriptions/wirestream-stories"], ["projects/p/topics/t", "s"]),
    ("output", ["gs://b/lake"], ["lake"]),
    ("stages", ["ner,topics", "ner", "topics", "none", "all"], ["ner,", "foo", "ner;topics"]),
    ("max_story_bytes", ["5242880"], ["0", "-1", "5MB"]),
    ("duration", ["30", "2.5", "600.0"], ["-1", "0", "forever"]),
    ("window_seconds", ["60", "60.0", "0.5"], ["0", "1m"]),
])
def test_metadata_regexes(name, good, bad):
  assert all(_matches(name, value) for value in good)
  assert not any(_matches(name, value) for value in bad)


# --- the template entry point ---------------------------------------------------------------------


def test_template_arguments_become_a_cli_command_line():
  argv = flex_template.to_cli_argv([
      "--input=gs://b/stories/*", "--output=gs://b/lake", "--max_story_bytes=1000", "--pipeline=run",
      "--stages=ner", "--project=p", "--temp_location=gs://b/tmp", "--sdk_container_image=img"])
  assert argv == ["run", "--input=gs://b/stories/*", "--output=gs://b/lake", "--max-story-bytes=1000",
                  "--stages=ner", "--project=p", "--temp_location=gs://b/tmp", "--sdk_container_image=img",
                  "--runner=DataflowRunner"]


def test_template_stream_arguments_and_explicit_runner():
  argv = flex_template.to_cli_argv(["--pipeline", "stream", "--subscription=projects/p/subscriptions/s",
                                    "--output=gs://b/lake", "--window_seconds=30", "--runner=DirectRunner"])
  assert argv == ["stream", "--subscription=projects/p/subscriptions/s", "--output=gs://b/lake",
                  "--window-seconds=30", "--runner=DirectRunner"]


def test_template_flags_take_true_or_false():
  for value, expected in (("true", ["--fail-on-errors"]), ("false", [])):
    argv = flex_template.to_cli_argv(["--pipeline=run", "--input=gs://b/x", "--output=gs://b/lake",
                                      f"--fail_on_errors={value}"])
    assert argv == ["run", "--input=gs://b/x", "--output=gs://b/lake", *expected, "--runner=DataflowRunner"]


def test_template_without_a_pipeline_is_a_clear_error():
  with pytest.raises(SystemExit, match="--pipeline=run"):
    flex_template.to_cli_argv(["--input=gs://b/x", "--output=gs://b/lake"])


def test_entry_file_runs_the_cli():
  result = subprocess.run([sys.executable, str(DEPLOY / "main.py"), "--pipeline=run", "--help"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
  assert result.returncode == 0, result.stderr
  assert "--max-story-bytes" in result.stdout and "--input" in result.stdout
