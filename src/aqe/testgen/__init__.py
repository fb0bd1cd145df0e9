"""Test generation: generators run in sandboxes, a keep rule, kept tests as events.

* :mod:`aqe.testgen.generators`: the :class:`~aqe.testgen.generators.Generator`
  interface and its two backends (Hypothesis ghostwriter, Pynguin);
* :mod:`aqe.testgen.keep`: the keep rule (passes N times in a fresh sandbox AND adds
  line or branch coverage over the existing suite and the tests kept before);
* :mod:`aqe.testgen.measure`: coverage as sets (unions, gains, totals);
* :mod:`aqe.testgen.pipeline`: one batch, baseline → generate → judge, as events;
* :mod:`aqe.testgen.store`: kept tests read back from the log, written out as files or
  a patch; :mod:`aqe.testgen.report`: Markdown and HTML reports;
* :mod:`aqe.testgen.task`: the ``testgen`` runner capability the workflow's steps use.

The package imports nothing itself: :mod:`aqe.testgen._measure` and
:mod:`aqe.testgen._ghostwrite` run as ``python -m`` inside sandboxes, once per
candidate run, and start faster without it.
"""
