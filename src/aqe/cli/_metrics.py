"""``--metrics-port``: Prometheus metrics for the long-running commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from aqe.cli._context import console

if TYPE_CHECKING:
    from aqe.metrics import AqeMetrics


def metrics_port_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--metrics-port`` for a long-running command: Prometheus metrics on localhost."""
    return click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        envvar="AQE_METRICS_PORT",
        help="Serve Prometheus metrics at http://127.0.0.1:PORT/metrics (0 picks a port) "
        "[env AQE_METRICS_PORT].",
    )(func)


def start_metrics(port: int) -> AqeMetrics:
    """Start the exporter thread for ``--metrics-port`` and say where it listens."""
    from aqe.metrics import AqeMetrics, start_exporter

    metrics = AqeMetrics()
    host, bound = start_exporter(metrics, port)
    console(stderr=True).print(f"metrics at http://{host}:{bound}/metrics", markup=False)
    return metrics
