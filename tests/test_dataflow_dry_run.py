"""Both pipelines build as Dataflow jobs offline (``--runner=DataflowRunner --dry_run=True``)."""

from __future__ import annotations

import json
import socket

import pytest

from pipelines import dataflow_dry_run as dry

IMAGE = "europe-west1-docker.pkg.dev/test-project/wirestream/wirestream:test"
#: NER and topics run in one ``Enrich`` step, whatever the backend.
ENRICH = ("Enrich",)


def _write(tmp_path_factory, pipeline_args=()):
  out = tmp_path_factory.mktemp("dataflow")
  paths = dry.write_specs(out, sdk_container_image=IMAGE, pipeline_args=pipeline_args)
  assert set(paths) == {"batch", "streaming"}
  assert {path.name for path in paths.values()} == {"batch-job.json", "streaming-job.json"}
  return {name: json.loads(path.read_text(encoding="utf-8")) for name, path in paths.items()}


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
  """The jobs ``make dataflow-dry-run`` writes (default settings)."""
  return _write(tmp_path_factory)


@pytest.fixture(scope="module")
def torch_specs(tmp_path_factory):
  """The jobs with the torch backend."""
  return _write(tmp_path_factory, ["--inference-backend", "torch"])


def _transforms(spec) -> dict:
  return spec["pipeline"]["components"]["transforms"]


def _top_level_steps(spec) -> list[str]:
  """Unique names of the pipeline's top-level steps (the children of the root transforms)."""
  transforms = _transforms(spec)
  names = []
  for root in spec["pipeline"]["rootTransformIds"]:
    children = transforms[root].get("subtransforms") or [root]
    names += [transforms[child]["uniqueName"] for child in children]
  return names


def _urns(spec) -> set[str]:
  return {t.get("spec", {}).get("urn", "") for t in _transforms(spec).values()}


def _enrichment_steps(steps: list[str]) -> tuple[str, ...]:
  assert all(step in steps for step in ENRICH), f"no Enrich step in {steps}"
  return ENRICH


@pytest.mark.parametrize("name", ["batch", "streaming"])
def test_job_carries_the_steps(specs, torch_specs, name):
  for spec in (specs[name], torch_specs[name]):
    steps = _top_level_steps(spec)
    for step in ("Read", "Parse", "Write"):
      assert step in steps, f"{name}: no {step} step in {steps}"
    order = [steps.index(step) for step in ("Parse", *_enrichment_steps(steps), "Write")]
    assert order == sorted(order), steps


@pytest.mark.parametrize("name", ["batch", "streaming"])
def test_job_runs_on_the_sdk_container_image(specs, name):
  job = specs[name]["job"]
  pools = job["environment"]["workerPools"]
  assert len(pools) == 1
  images = {image["containerImage"] for image in pools[0]["sdkHarnessContainerImages"]}
  assert images == {IMAGE}
  assert pools[0]["workerHarnessContainerImage"] == IMAGE
  environments = specs[name]["pipeline"]["components"]["environments"]
  assert {env["docker"]["containerImage"] for env in environments.values()} == {IMAGE}
  assert job["environment"]["sdkPipelineOptions"]["options"]["sdk_container_image"] == IMAGE
  assert "use_runner_v2" in job["environment"]["experiments"]


def test_batch_job_is_a_batch_job_reading_files(specs):
  spec = specs["batch"]
  assert spec["job"]["type"] == "JOB_TYPE_BATCH"
  assert spec["job"]["environment"]["version"]["job_type"] == "FNAPI_BATCH"
  assert spec["job"]["environment"]["sdkPipelineOptions"]["options"]["streaming"] is False
  assert "beam:transform:pubsub_read:v1" not in _urns(spec)
  names = {t["uniqueName"] for t in _transforms(spec).values()}
  assert "Read/Match" in names


def test_streaming_job_is_a_streaming_job_reading_pubsub(specs):
  spec = specs["streaming"]
  job = spec["job"]
  assert job["type"] == "JOB_TYPE_STREAMING"
  assert job["environment"]["version"]["job_type"] == "FNAPI_STREAMING"
  assert job["environment"]["sdkPipelineOptions"]["options"]["streaming"] is True
  assert "enable_streaming_engine" in job["environment"]["experiments"]
  reads = [t for t in _transforms(spec).values() if t.get("spec", {}).get("urn") == "beam:transform:pubsub_read:v1"]
  assert len(reads) == 1 and reads[0]["uniqueName"].startswith("Read/")
  assert "beam:transform:window_into:v1" in _urns(spec)


def test_specs_abbreviate_serialized_payloads(specs):
  for name, spec in specs.items():
    text = json.dumps(spec)
    assert len(text) < 2_000_000, name
    assert "bytes>" in text


def test_build_refuses_network_access():
  with dry.no_network() as attempts:
    with pytest.raises(dry.NetworkAccessError):
      socket.create_connection(("dataflow.googleapis.com", 443), timeout=1)
    with pytest.raises(dry.NetworkAccessError):
      socket.getaddrinfo("storage.googleapis.com", 443)
  assert len(attempts) == 2
  assert socket.getaddrinfo is not None and socket.create_connection.__name__ == "create_connection"


def test_dry_run_options_keep_user_overrides():
  options = dry.dry_run_options("job", IMAGE, ["--region=europe-west4", "--machine_type=n2-standard-8"])
  assert "--region=europe-west4" in options and f"--region={dry.DRY_RUN_REGION}" not in options
  assert "--dry_run=True" in options and "--runner=DataflowRunner" in options
  assert "--machine_type=n2-standard-8" in options


@pytest.mark.parametrize(("name", "batching"), [("batch", "_GlobalWindowsBatchingDoFn"),
                                                ("streaming", "_WindowAwareBatchingDoFn")])
def test_models_run_through_run_inference_in_the_right_windows(specs, torch_specs, name, batching):
  for spec in (specs[name], torch_specs[name]):
    names = {t["uniqueName"] for t in _transforms(spec).values()}
    for stage in _enrichment_steps(_top_level_steps(spec)):
      inference = [n for n in names
                   if n.startswith(f"{stage}/") and n.split("/")[-1].startswith("BeamML_RunInference")]
      assert inference, f"{name}: {stage} does not run through RunInference"
      # Streaming: windowed before inference, so Beam batches per window (the stage does not re-window).
      assert any(n.startswith(f"{stage}/") and batching in n for n in names), (name, stage)
