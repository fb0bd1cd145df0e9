"""The HTML report: the projections' data as charts, one self-contained file.

:func:`gather` loads the projections and reads what a few figures need from the log;
:func:`build_sections` turns that into :class:`Section` objects of Plotly figures and
tables, each stating the events and sequence range it came from (pure functions, shared
with the live dashboard); :func:`write_report` renders them into one HTML file with
Plotly.js embedded, so it opens with no network.
"""

from aqe.report.build import ReportInputs, build_sections, gather, write_report
from aqe.report.model import Figure, Section, Source, Table

__all__ = [
    "Figure",
    "ReportInputs",
    "Section",
    "Source",
    "Table",
    "build_sections",
    "gather",
    "write_report",
]
