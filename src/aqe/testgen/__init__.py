"""Test generation: generators run in sandboxes, a keep rule, kept tests as events.

* :mod:`aqe.testgen.generators`: the :class:`Generator` interface and its two backends
  (Hypothesis ghostwriter, Pynguin);
* :mod:`aqe.testgen.keep`: the keep rule (passes N times in a fresh sandbox AND adds
  line or branch coverage over the existing suite and the tests kept before);
* :mod:`aqe.testgen.pipeline`: one batch, baseline → generate → judge, as events;
* :mod:`aqe.testgen.store`: kept tests read back from the log, written out as files or
  a patch; :mod:`aqe.testgen.report`: Markdown and HTML reports.
"""

from aqe.testgen.generators import (
    GENERATORS,
    Candidate,
    Generator,
    GhostwriterGenerator,
    PynguinGenerator,
    make_generator,
    pynguin_venv,
)
from aqe.testgen.keep import Evaluated, Verdict, judge
from aqe.testgen.pipeline import BatchResult, GenerationJob, batch_events, run_batch

__all__ = [
    "GENERATORS",
    "BatchResult",
    "Candidate",
    "Evaluated",
    "GenerationJob",
    "Generator",
    "GhostwriterGenerator",
    "PynguinGenerator",
    "Verdict",
    "batch_events",
    "judge",
    "make_generator",
    "pynguin_venv",
    "run_batch",
]
