# aqe: every routine task. `just --list` shows them grouped.
set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
py := venv / "bin/python"
bin := venv / "bin"

# Show the recipes.
default:
    @just --list --unsorted

# Create the virtualenv and install aqe with its dev tools (the only setup step).
[group('setup')]
setup:
    test -x {{py}} || python3 -m venv {{venv}}
    {{bin}}/pip install -q -e '.[dev]'

# The default suite: unit, contract, integration and end-to-end (what CI and README run).
[group('test')]
test *ARGS:
    {{bin}}/pytest {{ARGS}}

# Fault-injection tests: kill -9 consumers and servers mid-stream (slower).
[group('test')]
test-faults *ARGS:
    {{bin}}/pytest -m faults tests/faults {{ARGS}}

# Slow evaluations on real packages and data sets (minutes each).
[group('test')]
test-slow *ARGS:
    {{bin}}/pytest -m slow {{ARGS}}

# Everything: the default suite, then the fault suite, then the slow evaluations.
[group('test')]
test-all: test test-faults test-slow

# ruff (lint + format check) and mypy --strict on src/.
[group('lint')]
lint:
    {{bin}}/ruff check src tests
    {{bin}}/ruff format --check src tests
    {{bin}}/mypy

# Format the code.
[group('lint')]
fmt:
    {{bin}}/ruff format src tests
    {{bin}}/ruff check --fix src tests

# Throughput benchmarks; each prints ratios against a baseline measured in the same run.
[group('bench')]
bench:
    {{py}} tests/benchmarks/bench_log.py
    {{py}} tests/benchmarks/bench_replay.py
    {{py}} tests/benchmarks/bench_ingest.py
    {{py}} tests/benchmarks/bench_search.py
    {{py}} tests/benchmarks/bench_embed.py
    {{py}} tests/benchmarks/bench_ann.py
    {{py}} tests/benchmarks/bench_learning.py
    {{py}} tests/benchmarks/bench_membership.py
    {{py}} tests/benchmarks/bench_election.py
    {{py}} tests/benchmarks/bench_voting.py
    {{py}} tests/benchmarks/bench_dispatch.py
    {{py}} tests/benchmarks/bench_runners.py
    {{py}} tests/benchmarks/bench_bridge_transport.py
    {{py}} tests/benchmarks/bench_bridge.py
    {{py}} tests/benchmarks/bench_cli.py
    {{py}} tests/benchmarks/bench_sandbox.py
    {{py}} tests/benchmarks/bench_flaky.py
    {{py}} tests/benchmarks/bench_flakemodel.py
    {{py}} tests/benchmarks/bench_perf.py
    {{py}} tests/benchmarks/bench_clock.py
    {{py}} tests/benchmarks/bench_coverage.py
    {{py}} tests/benchmarks/bench_audit.py
    {{py}} tests/benchmarks/bench_report.py
    {{py}} tests/benchmarks/bench_skills.py
    {{py}} tests/benchmarks/bench_testgen.py

# Regenerate schemas/ from the event Structs.
[group('schemas')]
schemas:
    {{py}} -m aqe.events.schema

# Fail when schemas/ and the event Structs disagree.
[group('schemas')]
schemas-check:
    {{py}} -m aqe.events.schema --check

# Start the embedded nats-server (under $AQE_DATA_DIR, default ./.aqe).
[group('server')]
up:
    {{bin}}/aqe server start

# Stop the embedded nats-server.
[group('server')]
down:
    {{bin}}/aqe server stop

# Start a 3-node JetStream cluster on loopback (ops/cluster/*.conf).
[group('server')]
cluster-up DIR=".aqe/cluster":
    PATH="{{bin}}:$PATH" ops/cluster.sh up {{DIR}}

# Stop the 3-node cluster.
[group('server')]
cluster-down DIR=".aqe/cluster":
    PATH="{{bin}}:$PATH" ops/cluster.sh down {{DIR}}

# A 3-cluster bridge mesh on loopback: three nats-servers and three `aqe bridge run` nodes.
[group('server')]
mesh-up:
    PATH="{{bin}}:$PATH" ops/bridge/mesh.sh start

# Stop the bridge mesh.
[group('server')]
mesh-down:
    PATH="{{bin}}:$PATH" ops/bridge/mesh.sh stop

# The main job: simulate a fleet, fold projections, show what they know.
[group('run')]
demo *ARGS:
    {{bin}}/aqe demo {{ARGS}}
