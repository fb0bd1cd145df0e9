"""Performance regressions: benchmark results in, change points, confirmation, alerts.

* :mod:`aqe.perf.formats`: pytest-benchmark, pyperf and Google Benchmark JSON;
  :mod:`aqe.perf.harness`: measuring a command (warm-up, repetitions, every sample);
* :mod:`aqe.perf.series`: the projection (series per benchmark, metric and machine class);
* :mod:`aqe.perf.detect`: change points (ruptures) checked by Mann-Whitney U and a
  minimum effect; the fixed-threshold rule it replaces; the confirm step's test;
* :mod:`aqe.perf.alerts` and :mod:`aqe.perf.sinks`: alerts due, and where they go;
* :mod:`aqe.perf.pipeline`: the stages against the log;
* :mod:`aqe.perf.quality`: labelled series and detection scores.

The confirm workflow itself is :mod:`aqe.workflows.perf`.
"""
