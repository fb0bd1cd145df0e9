"""The machine a benchmark ran on, and the class of machines whose numbers compare.

Numbers from different machines are different series: a series is keyed by benchmark,
metric and *machine class*, a readable slug of the CPU model, core count, architecture
and Python minor version (host names and clock speeds are kept, not keyed on).
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import socket

from aqe.events.perf import MachineFingerprint

__all__ = ["local_fingerprint", "machine_class", "make_fingerprint", "series_id"]

_SLUG = re.compile(r"[^a-z0-9]+")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_class(cpu: str, cores: int, arch: str, python: str) -> str:
    """A readable class id: ``<arch>-<cpu slug>-<cores>c-py<major.minor>``."""
    slug = _SLUG.sub("-", cpu.lower()).strip("-")[:40] or "cpu"
    minor = ".".join(python.split(".")[:2]) if python else "?"
    return f"{arch or '?'}-{slug}-{cores}c-py{minor}"


def make_fingerprint(
    *,
    cpu: str,
    cores: int,
    arch: str = "",
    system: str = "",
    python: str = "",
    host: str = "",
    override_class: str | None = None,
) -> MachineFingerprint:
    """A fingerprint with its class derived (or ``override_class``)."""
    return MachineFingerprint(
        machine_class=override_class or machine_class(cpu, cores, arch, python),
        cpu=cpu,
        cores=cores,
        arch=arch,
        system=system,
        python=python,
        host=host,
    )


def local_fingerprint(override_class: str | None = None) -> MachineFingerprint:
    """This machine's fingerprint."""
    return make_fingerprint(
        cpu=_cpu_model(),
        cores=os.cpu_count() or 0,
        arch=platform.machine(),
        system=platform.system(),
        python=platform.python_version(),
        host=socket.gethostname(),
        override_class=override_class,
    )


def series_id(benchmark: str, metric: str, machine_class: str) -> str:
    """The id of a series: the same benchmark, metric and machine class, the same id."""
    digest = hashlib.sha256(f"{benchmark}|{metric}|{machine_class}".encode()).hexdigest()
    return f"s-{digest[:20]}"
