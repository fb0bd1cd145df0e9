"""Benchmark result files in: pytest-benchmark, pyperf and Google Benchmark JSON.

Each file becomes a list of :class:`BenchResult` (one benchmark's metric with every
sample the file holds), with the machine the file says it ran on when it says so.
The format is told from the content (:func:`detect_bench_format`); every problem is a
:class:`~aqe.errors.ReportError` naming the file and the field, e.g.
``bench.json: benchmarks[2].stats.median: expected a number, got 'fast'``.

Times are converted to seconds (unit ``s``) so series from different tools compare.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from aqe.errors import ReportError
from aqe.events.perf import MachineFingerprint
from aqe.ingest.files import MAX_REPORT_BYTES, read_report
from aqe.perf._fingerprint import make_fingerprint

__all__ = ["BENCH_FORMATS", "BenchFile", "BenchResult", "detect_bench_format", "parse_bench_file"]

BENCH_FORMATS = ("pytest-benchmark", "pyperf", "google-benchmark")

_TIME_UNITS = {"s": 1.0, "second": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


class BenchResult(msgspec.Struct, frozen=True, kw_only=True):
    """One benchmark's metric from a file, with every sample."""

    benchmark: str
    metric: str
    unit: str
    samples: tuple[float, ...]
    higher_is_better: bool = False


class BenchFile(msgspec.Struct, frozen=True, kw_only=True):
    """What one file held."""

    path: str
    format: str
    results: tuple[BenchResult, ...]
    machine: MachineFingerprint | None = None
    commit: str = ""
    commit_time: str = ""
    digest: str = ""


def detect_bench_format(doc: object, path: str) -> str:
    """The format of a decoded JSON document.

    Raises:
        ReportError: it is none of :data:`BENCH_FORMATS`.
    """
    if isinstance(doc, dict):
        benches = doc.get("benchmarks")
        first = benches[0] if isinstance(benches, list) and benches else None
        if isinstance(first, dict):
            if "stats" in first:
                return "pytest-benchmark"
            if "runs" in first:
                return "pyperf"
            if "real_time" in first or "run_name" in first:
                return "google-benchmark"
        if "context" in doc and isinstance(benches, list):
            return "google-benchmark"
    raise ReportError(
        path,
        "cannot tell the benchmark format (want pytest-benchmark, pyperf or Google "
        "Benchmark JSON); pass --format",
    )


def parse_bench_file(
    path: Path, fmt: str = "auto", *, max_bytes: int = MAX_REPORT_BYTES
) -> BenchFile:
    """Read one benchmark file.

    Raises:
        ReportError: unreadable, not JSON, an unknown format, or a field missing or of
            the wrong type (the message names the field).
    """
    import hashlib

    name = str(path)
    data = read_report(path, max_bytes)
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ReportError(
            name, f"not valid JSON (column {exc.colno}): {exc.msg}", exc.lineno
        ) from exc
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ReportError(name, f"not readable JSON: {exc}") from exc
    if fmt == "auto":
        fmt = detect_bench_format(doc, name)
    if fmt not in BENCH_FORMATS:
        raise ReportError(
            name, f"unknown benchmark format {fmt!r}; known: {', '.join(BENCH_FORMATS)}"
        )
    if not isinstance(doc, dict):
        raise ReportError(name, "expected a JSON object at the top")
    parser = {
        "pytest-benchmark": _pytest_benchmark,
        "pyperf": _pyperf,
        "google-benchmark": _google,
    }[fmt]
    parsed = parser(doc, name)
    if not parsed.results:
        raise ReportError(name, "benchmarks: no benchmark with samples in this file")
    return msgspec.structs.replace(parsed, format=fmt, digest=hashlib.sha256(data).hexdigest())


# -- field access that names the field ----------------------------------------------------


def _get(obj: Mapping[str, Any], key: str, where: str, path: str) -> Any:
    if key not in obj:
        raise ReportError(path, f"{where}.{key}: missing" if where else f"{key}: missing")
    return obj[key]


def _obj(value: Any, where: str, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ReportError(path, f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str, path: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise ReportError(path, f"{where}: expected a list, got {type(value).__name__}")
    return value


def _num(value: Any, where: str, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ReportError(path, f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _sub(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """An optional nested object (an empty one when missing or not an object)."""
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _str(value: Any, where: str, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ReportError(path, f"{where}: expected a non-empty string, got {value!r}")
    return value


# -- pytest-benchmark ---------------------------------------------------------------------


def _pytest_benchmark(doc: Mapping[str, Any], path: str) -> BenchFile:
    results = []
    for i, raw in enumerate(_list(_get(doc, "benchmarks", "", path), "benchmarks", path)):
        where = f"benchmarks[{i}]"
        bench = _obj(raw, where, path)
        name = _str(
            bench.get("fullname") or _get(bench, "name", where, path), f"{where}.name", path
        )
        stats = _obj(_get(bench, "stats", where, path), f"{where}.stats", path)
        data = stats.get("data")
        if data is not None:
            values = tuple(
                _num(v, f"{where}.stats.data[{j}]", path)
                for j, v in enumerate(_list(data, f"{where}.stats.data", path))
            )
        else:
            # Without --benchmark-save-data the file keeps summaries only: the median
            # stands for the run (one point, one sample).
            values = (
                _num(_get(stats, "median", f"{where}.stats", path), f"{where}.stats.median", path),
            )
        if values:
            results.append(BenchResult(benchmark=name, metric="time", unit="s", samples=values))
    machine = None
    info = doc.get("machine_info")
    if isinstance(info, dict):
        cpu = _sub(info, "cpu")
        machine = make_fingerprint(
            cpu=str(cpu.get("brand_raw") or info.get("processor") or ""),
            cores=int(cpu.get("count") or 0),
            arch=str(info.get("machine") or ""),
            system=str(info.get("system") or ""),
            python=str(info.get("python_version") or ""),
            host=str(info.get("node") or ""),
        )
    commit_info = _sub(doc, "commit_info")
    return BenchFile(
        path=path,
        format="pytest-benchmark",
        results=tuple(results),
        machine=machine,
        commit=str(commit_info.get("id") or ""),
        commit_time=str(commit_info.get("time") or ""),
    )


# -- pyperf -------------------------------------------------------------------------------


def _pyperf(doc: Mapping[str, Any], path: str) -> BenchFile:
    top = _sub(doc, "metadata")
    results = []
    for i, raw in enumerate(_list(_get(doc, "benchmarks", "", path), "benchmarks", path)):
        where = f"benchmarks[{i}]"
        bench = _obj(raw, where, path)
        meta = _sub(bench, "metadata")
        name = meta.get("name") or top.get("name")
        name = _str(name, f"{where}.metadata.name", path)
        unit = str(meta.get("unit") or top.get("unit") or "second")
        scale = _TIME_UNITS.get(unit)
        values: list[float] = []
        for j, run in enumerate(_list(_get(bench, "runs", where, path), f"{where}.runs", path)):
            run_obj = _obj(run, f"{where}.runs[{j}]", path)
            for k, v in enumerate(run_obj.get("values") or ()):
                values.append(_num(v, f"{where}.runs[{j}].values[{k}]", path) * (scale or 1.0))
        if values:
            results.append(
                BenchResult(
                    benchmark=name,
                    metric="time" if scale is not None else "value",
                    unit="s" if scale is not None else unit,
                    samples=tuple(values),
                )
            )
    machine = None
    if top.get("cpu_model_name") or top.get("cpu_count"):
        machine = make_fingerprint(
            cpu=str(top.get("cpu_model_name") or ""),
            cores=int(top.get("cpu_count") or 0),
            system=str(top.get("platform") or ""),
            python=str(top.get("python_version") or "").partition(" ")[0],
            host=str(top.get("hostname") or ""),
        )
    return BenchFile(path=path, format="pyperf", results=tuple(results), machine=machine)


# -- Google Benchmark ---------------------------------------------------------------------


def _google(doc: Mapping[str, Any], path: str) -> BenchFile:
    iterations: dict[str, list[float]] = {}
    medians: dict[str, float] = {}
    for i, raw in enumerate(_list(_get(doc, "benchmarks", "", path), "benchmarks", path)):
        where = f"benchmarks[{i}]"
        bench = _obj(raw, where, path)
        if bench.get("error_occurred"):
            continue
        name = _str(
            bench.get("run_name") or _get(bench, "name", where, path), f"{where}.name", path
        )
        unit = str(bench.get("time_unit") or "ns")
        scale = _TIME_UNITS.get(unit)
        if scale is None:
            raise ReportError(path, f"{where}.time_unit: unknown unit {unit!r}")
        value = _num(_get(bench, "real_time", where, path), f"{where}.real_time", path) * scale
        kind = bench.get("run_type", "iteration")
        if kind == "iteration":
            iterations.setdefault(name, []).append(value)
        elif kind == "aggregate" and bench.get("aggregate_name") == "median":
            medians[name] = value
    results = [
        BenchResult(benchmark=name, metric="real_time", unit="s", samples=tuple(values))
        for name, values in iterations.items()
    ]
    results += [
        BenchResult(benchmark=name, metric="real_time", unit="s", samples=(value,))
        for name, value in medians.items()
        if name not in iterations
    ]
    context = _sub(doc, "context")
    machine = None
    if context.get("num_cpus"):
        machine = make_fingerprint(
            cpu=f"{context.get('mhz_per_cpu', '?')}MHz",
            cores=int(context.get("num_cpus") or 0),
            host=str(context.get("host_name") or ""),
        )
    return BenchFile(path=path, format="google-benchmark", results=tuple(results), machine=machine)
