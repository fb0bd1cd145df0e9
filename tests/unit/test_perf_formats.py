"""Benchmark files in: pytest-benchmark, pyperf, Google Benchmark; errors name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aqe.errors import ConfigError, ReportError
from aqe.perf.formats import parse_bench_file
from aqe.perf.harness import CLOCKS, clock_of, harness_argv, metric_of, parse_samples

PYTEST_BENCHMARK = {
    "machine_info": {
        "node": "ci-7",
        "machine": "x86_64",
        "system": "Linux",
        "python_version": "3.12.3",
        "cpu": {"brand_raw": "AMD EPYC 7B13", "count": 8},
    },
    "commit_info": {"id": "abc123", "time": "2026-12-01T10:00:00+00:00", "dirty": False},
    "benchmarks": [
        {
            "group": None,
            "name": "test_parse",
            "fullname": "tests/test_b.py::test_parse",
            "stats": {"min": 0.001, "median": 0.0012, "rounds": 3, "data": [0.001, 0.0012, 0.0013]},
        },
        {
            "name": "test_dump",
            "fullname": "tests/test_b.py::test_dump",
            "stats": {"min": 0.002, "median": 0.0025, "rounds": 5},
        },
    ],
    "datetime": "2026-12-01T10:00:01",
    "version": "4.0.0",
}

PYPERF = {
    "version": "1.0",
    "metadata": {
        "cpu_count": 4,
        "cpu_model_name": "Intel Xeon",
        "python_version": "3.12.3 (64-bit)",
    },
    "benchmarks": [
        {
            "metadata": {"name": "json_dumps", "unit": "second"},
            "runs": [
                {"metadata": {"calibrate_loops": 8}, "warmups": [[8, 0.5]]},
                {"warmups": [[8, 0.01]], "values": [0.010, 0.011, 0.012]},
                {"warmups": [[8, 0.01]], "values": [0.013]},
            ],
        }
    ],
}

GOOGLE = {
    "context": {"host_name": "box", "num_cpus": 16, "mhz_per_cpu": 3000},
    "benchmarks": [
        {"name": "BM_Sort/1024", "run_name": "BM_Sort/1024", "run_type": "iteration",
         "repetitions": 2, "real_time": 1500.0, "cpu_time": 1490.0, "time_unit": "ns"},
        {"name": "BM_Sort/1024", "run_name": "BM_Sort/1024", "run_type": "iteration",
         "repetitions": 2, "real_time": 1600.0, "cpu_time": 1590.0, "time_unit": "ns"},
        {"name": "BM_Sort/1024_mean", "run_name": "BM_Sort/1024", "run_type": "aggregate",
         "aggregate_name": "mean", "real_time": 1550.0, "time_unit": "ns"},
        {"name": "BM_Hash_median", "run_name": "BM_Hash", "run_type": "aggregate",
         "aggregate_name": "median", "real_time": 2.0, "time_unit": "us"},
    ],
}  # fmt: skip


def write(tmp_path: Path, doc: object, name: str = "b.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_pytest_benchmark_keeps_every_sample_and_the_machine(tmp_path: Path) -> None:
    parsed = parse_bench_file(write(tmp_path, PYTEST_BENCHMARK))
    assert parsed.format == "pytest-benchmark"
    assert [r.benchmark for r in parsed.results] == [
        "tests/test_b.py::test_parse",
        "tests/test_b.py::test_dump",
    ]
    assert parsed.results[0].samples == (0.001, 0.0012, 0.0013)
    assert parsed.results[1].samples == (0.0025,)  # summaries only: the median
    assert parsed.commit == "abc123"
    assert parsed.machine is not None
    assert parsed.machine.machine_class == "x86_64-amd-epyc-7b13-8c-py3.12"


def test_pyperf_reads_values_of_every_run_not_warmups(tmp_path: Path) -> None:
    parsed = parse_bench_file(write(tmp_path, PYPERF))
    assert parsed.format == "pyperf"
    (result,) = parsed.results
    assert result.benchmark == "json_dumps"
    assert result.samples == (0.010, 0.011, 0.012, 0.013)
    assert parsed.machine is not None
    assert parsed.machine.cores == 4


def test_google_benchmark_iterations_in_seconds_and_median_aggregates(tmp_path: Path) -> None:
    parsed = parse_bench_file(write(tmp_path, GOOGLE))
    assert parsed.format == "google-benchmark"
    by_name = {r.benchmark: r for r in parsed.results}
    assert by_name["BM_Sort/1024"].samples == pytest.approx((1.5e-6, 1.6e-6))
    assert by_name["BM_Hash"].samples == pytest.approx((2e-6,))
    assert {r.unit for r in parsed.results} == {"s"}


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"benchmarks": [{"name": "x", "stats": {"median": "fast"}}]},
         "benchmarks[0].stats.median"),
        ({"benchmarks": [{"stats": {"median": 1.0}}]}, "benchmarks[0].name: missing"),
        ({"benchmarks": [{"runs": [{"values": [1.0, None]}], "metadata": {"name": "a"}}]},
         "benchmarks[0].runs[0].values[1]"),
        ({"context": {}, "benchmarks": [{"name": "BM", "time_unit": "ns"}]},
         "benchmarks[0].real_time: missing"),
        ({"results": []}, "cannot tell the benchmark format"),
    ],
)  # fmt: skip
def test_bad_files_name_the_file_and_field(tmp_path: Path, doc: object, needle: str) -> None:
    path = write(tmp_path, doc)
    with pytest.raises(ReportError) as info:
        parse_bench_file(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_broken_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{\n  "benchmarks": [\n  oops\n]}')
    with pytest.raises(ReportError, match=r"x\.json:3: not valid JSON"):
        parse_bench_file(path)


def test_harness_line_round_trip() -> None:
    argv = harness_argv(["true"], warmup=1, repeat=2, python="python3")
    assert argv[:2] == ("python3", "-c")
    assert argv[-3:] == ("wall", "--", "true")
    samples, code = parse_samples('noise\nAQE-BENCH {"samples": [0.5, 0.25], "exit": 0}\n')
    assert samples == (0.5, 0.25)
    assert code == 0


def test_a_clock_names_its_metric_and_back() -> None:
    assert [metric_of(c) for c in CLOCKS] == ["time", "cpu-time"]
    assert [clock_of(metric_of(c)) for c in CLOCKS] == list(CLOCKS)
    assert clock_of("rss") == "wall"
    argv = harness_argv(["true"], warmup=0, repeat=1, python="python3", clock="cpu")
    assert argv[-4:] == ("1", "cpu", "--", "true")
    with pytest.raises(ConfigError, match="clock 'sundial' is not one of wall, cpu"):
        harness_argv(["true"], warmup=0, repeat=1, clock="sundial")
