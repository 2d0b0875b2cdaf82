"""Builds the Dataflow jobs of the batch and streaming pipelines offline and writes their specs.

    wirestream dataflow-dry-run [--out-dir build/dataflow] [--sdk-container-image IMAGE] [Beam options]

Each pipeline is built with ``--runner=DataflowRunner --dry_run=True``: Beam translates it for Dataflow
(overrides, Runner v2 portable pipeline, worker environment) and stops before contacting the service.
The job's environment (worker pool, SDK container image, pipeline options), which Beam fills in only
while submitting, is completed here the same way, without staging anything. Network access is refused
for the whole build, so the command fails loudly instead of hanging if anything tries to reach Google
Cloud.

Each output file holds ``{"job": <Dataflow Job>, "pipeline": <Beam portable pipeline>}``: the job as it
would be sent to ``projects.locations.jobs.create`` and the pipeline proto it would stage, with large
serialized payloads (pickled DoFns, coders) abbreviated.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.common import add_output_argument

if TYPE_CHECKING:
  import apache_beam as beam
  from apache_beam.portability.api import beam_runner_api_pb2

DEFAULT_OUT_DIR = "build/dataflow"
DRY_RUN_PROJECT = "wirestream-dry-run"
DRY_RUN_REGION = "us-central1"
DRY_RUN_BUCKET = f"gs://{DRY_RUN_PROJECT}"
DEFAULT_SDK_CONTAINER_IMAGE = f"{DRY_RUN_REGION}-docker.pkg.dev/{DRY_RUN_PROJECT}/wirestream/wirestream:dry-run"
#: Serialized payloads longer than this (base64 characters) are replaced by their size in the spec.
MAX_PAYLOAD_CHARS = 160


class NetworkAccessError(RuntimeError):
  """Raised when something tries to open a network connection during an offline build."""


@contextlib.contextmanager
def no_network() -> Iterator[list[str]]:
  """Refuses every outbound connection and name lookup inside the block; yields the refused attempts."""
  attempts: list[str] = []

  def refuse(what: str):
    def refused(*args, **kwargs):
      target = args[1] if what == "connect" and len(args) > 1 else (args[0] if args else kwargs)
      attempts.append(f"{what} {target!r}")
      raise NetworkAccessError(f"offline build: refused {what} to {target!r}")
    return refused

  saved = (socket.socket.connect, socket.socket.connect_ex, socket.create_connection, socket.getaddrinfo)
  socket.socket.connect = refuse("connect")
  socket.socket.connect_ex = refuse("connect")
  socket.create_connection = refuse("create_connection")
  socket.getaddrinfo = refuse("getaddrinfo")
  try:
    yield attempts
  finally:
    socket.socket.connect, socket.socket.connect_ex, socket.create_connection, socket.getaddrinfo = saved


def dry_run_options(job_name: str, sdk_container_image: str, beam_args: Sequence[str] = ()) -> list[str]:
  """Beam arguments of an offline Dataflow build: fake project, region and bucket; ``beam_args`` win."""
  defaults = {
      "runner": "DataflowRunner",
      "dry_run": "True",
      "project": DRY_RUN_PROJECT,
      "region": DRY_RUN_REGION,
      "temp_location": f"{DRY_RUN_BUCKET}/temp",
      "staging_location": f"{DRY_RUN_BUCKET}/staging",
      "job_name": job_name,
      "sdk_container_image": sdk_container_image,
  }
  given = {arg[2:].split("=", 1)[0] for arg in beam_args if arg.startswith("--")}
  return [f"--{key}={value}" for key, value in defaults.items() if key not in given] + list(beam_args)


def _staged_names(proto_pipeline: beam_runner_api_pb2.Pipeline) -> list[str]:
  from apache_beam.portability import common_urns
  from apache_beam.portability.api import beam_runner_api_pb2

  """Names of the artifacts the environments would stage (nothing is read or uploaded)."""
  names = []
  for environment in proto_pipeline.components.environments.values():
    for dependency in environment.dependencies:
      if dependency.role_urn == common_urns.artifact_roles.STAGING_TO.urn:
        names.append(beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
            dependency.role_payload).staged_name)
  return sorted(set(names))


def complete_job_environment(job) -> None:
  """Fills ``job.proto.environment`` as ``DataflowApplicationClient.create_job_description`` does.

  Same ``apiclient.Environment`` (worker pool, SDK harness container images, experiments, pipeline
  options), minus staging: the pipeline URL points where Beam would have uploaded the proto.
  """
  from apache_beam.io.filesystems import FileSystems
  from apache_beam.options.pipeline_options import GoogleCloudOptions
  from apache_beam.runners.dataflow.internal import apiclient
  from apache_beam.runners.internal import names

  serialized = job.proto_pipeline.SerializeToString()
  staging = job.options.view_as(GoogleCloudOptions).staging_location
  job.proto.environment = apiclient.Environment(
      packages=_staged_names(job.proto_pipeline),
      options=job.options,
      environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
      proto_pipeline_staged_url=FileSystems.join(staging, names.STAGED_PIPELINE_FILENAME),
      proto_pipeline=job.proto_pipeline,
      pipeline_proto_hash=hashlib.sha256(serialized).hexdigest()).proto


def _abbreviate(value: Any) -> Any:
  if isinstance(value, dict):
    return {key: _abbreviate(item) for key, item in value.items()}
  if isinstance(value, list):
    return [_abbreviate(item) for item in value]
  if isinstance(value, str) and len(value) > MAX_PAYLOAD_CHARS:
    try:
      size = len(base64.b64decode(value, validate=True))
    except ValueError:
      return value
    return f"<{size} bytes>"
  return value


def pipeline_spec(proto_pipeline: beam_runner_api_pb2.Pipeline) -> dict[str, Any]:
  from apache_beam.portability import common_urns
  from apache_beam.portability.api import beam_runner_api_pb2
  from google.protobuf import json_format

  """The portable pipeline as JSON: payloads abbreviated, Docker environments decoded."""
  spec = _abbreviate(json_format.MessageToDict(proto_pipeline))
  for env_id, environment in proto_pipeline.components.environments.items():
    if environment.urn == common_urns.environments.DOCKER.urn:
      docker = beam_runner_api_pb2.DockerPayload.FromString(environment.payload)
      spec["components"]["environments"][env_id]["docker"] = {"containerImage": docker.container_image}
  return spec


def job_spec(job) -> dict[str, Any]:
  """``{"job": ..., "pipeline": ...}`` for a dry-run ``apiclient.Job``."""
  complete_job_environment(job)
  return {"job": json.loads(job.json()), "pipeline": pipeline_spec(job.proto_pipeline)}


def build_job(build: Callable[[beam.Pipeline, argparse.Namespace], Any], args: argparse.Namespace,
              beam_args: Sequence[str]) -> dict[str, Any]:
  """Builds one pipeline with ``build(pipeline, args)`` on the DataflowRunner in dry-run mode; returns its spec."""
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions

  options = PipelineOptions(list(beam_args))
  with no_network() as attempts:
    pipeline = beam.Pipeline(options=options)
    build(pipeline, args)
    result = pipeline.run()
    job = getattr(result, "job", None)
    if job is None:
      raise RuntimeError("the runner returned no job: is --runner=DataflowRunner --dry_run=True set?")
    spec = job_spec(job)
  if attempts:  # refused, even if whoever tried swallowed the error
    raise NetworkAccessError(f"the offline build tried to reach the network: {attempts}")
  return spec


def _pipeline_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable]]:
  """Parser of the ``run`` and ``stream`` commands, and each command's ``build`` function."""
  from pipelines import batch, stream

  parser = argparse.ArgumentParser(prog="wirestream")
  commands = parser.add_subparsers(dest="command", required=True)
  batch.register(commands)
  stream.register(commands)
  return parser, {"run": batch.build, "stream": stream.build}


def example_arguments(bucket: str = DRY_RUN_BUCKET) -> dict[str, list[str]]:
  """Command lines of the example jobs: the batch pipeline over story files, the stream from Pub/Sub."""
  return {
      "batch": ["run", "--input", f"{bucket}/stories/*", "--output", f"{bucket}/lake"],
      "streaming": ["stream", "--subscription", f"projects/{DRY_RUN_PROJECT}/subscriptions/wirestream-stories",
                    "--output", f"{bucket}/lake"],
  }


def build_specs(sdk_container_image: str = DEFAULT_SDK_CONTAINER_IMAGE, beam_args: Sequence[str] = (),
                pipeline_args: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
  """Dry-run Dataflow specs of the example batch and streaming jobs, by name.

  ``pipeline_args`` are added to both command lines (e.g. ``["--inference-backend", "torch"]``).
  """
  parser, builders = _pipeline_parser()
  specs = {}
  for name, argv in example_arguments().items():
    args, extra = parser.parse_known_args([*argv, *pipeline_args])
    options = dry_run_options(f"wirestream-{name}-dry-run", sdk_container_image, [*extra, *beam_args])
    specs[name] = build_job(builders[args.command], args, options)
  return specs


def write_specs(out_dir: str | Path, sdk_container_image: str = DEFAULT_SDK_CONTAINER_IMAGE,
                beam_args: Sequence[str] = (), pipeline_args: Sequence[str] = ()) -> dict[str, Path]:
  """Writes ``<out_dir>/batch-job.json`` and ``<out_dir>/streaming-job.json``; returns their paths."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths = {}
  for name, spec in build_specs(sdk_container_image, beam_args, pipeline_args).items():
    path = out / f"{name}-job.json"
    path.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    paths[name] = path
  return paths


def run(args: argparse.Namespace, beam_args: Sequence[str]) -> int:
  for name, path in write_specs(args.out_dir, args.sdk_container_image, beam_args).items():
    spec = json.loads(path.read_text(encoding="utf-8"))
    transforms = spec["pipeline"]["components"]["transforms"]
    print(f"{name}: {path} ({path.stat().st_size} bytes, {spec['job']['type']}, "
          f"{len(transforms)} transforms)")
  return 0


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "dataflow-dry-run", help="Build the Dataflow batch and streaming jobs offline and write their specs.",
      description="Build both pipelines with --runner=DataflowRunner --dry_run=True (nothing is submitted "
                  "or staged; network access is refused) and write the job specs as JSON. "
                  "Beam's own pipeline options pass through to Beam (e.g. --machine_type, --experiments); "
                  "any other unknown option is an error.")
  add_output_argument(parser, f"Directory for batch-job.json and streaming-job.json (default: {DEFAULT_OUT_DIR}).",
                      dest="out_dir", default=DEFAULT_OUT_DIR)
  parser.add_argument("--sdk-container-image", default=DEFAULT_SDK_CONTAINER_IMAGE, metavar="IMAGE",
                      help="Worker image written into the jobs (default: a placeholder).")
  parser.set_defaults(func=run, accepts_beam_args=True)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m pipelines.dataflow_dry_run")
  commands = parser.add_subparsers(dest="command")
  register(commands)
  args, extra = parser.parse_known_args(["dataflow-dry-run", *(sys.argv[1:] if argv is None else argv)])
  return args.func(args, extra)


if __name__ == "__main__":
  sys.exit(main())
