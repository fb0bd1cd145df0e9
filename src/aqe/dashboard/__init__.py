"""The live dashboard: the report's views and the fleet, pushed to the page by SSE.

:class:`LiveView` folds the log in memory while following it; :func:`create_app` is
the Starlette app that serves the page, the event stream and ``/metrics``;
:func:`serve` runs both under uvicorn (``aqe serve``).
"""

from aqe.dashboard.app import create_app
from aqe.dashboard.live import FOLLOWED, LiveView
from aqe.dashboard.serve import serve

__all__ = ["FOLLOWED", "LiveView", "create_app", "serve"]
