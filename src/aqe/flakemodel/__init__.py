"""Predict flaky tests from their code (and history): a MiniLM + code-signal model.

* :mod:`.data` reads labelled test code (FlakeFlagger's JSON lines).
* :mod:`.features` the code signals, the keyword rule, the token features, history.
* :mod:`.inputs` embeddings (head + tail for long methods) and the input matrix.
* :mod:`.model` :class:`FlakeModel`: a torch head, threshold by inner folds, digest-named bytes.
* :mod:`.evaluate` per-project and cross-validation tables against the baselines.
* :mod:`.service` train and serve through the log (artefacts go to the object store,
  :mod:`aqe.log.objectstore`); :mod:`.projection` models and the newest prediction per test.
"""

from aqe.flakemodel.data import TestCode, load_tests
from aqe.flakemodel.model import FlakeModel, HeadConfig

__all__ = ["FlakeModel", "HeadConfig", "TestCode", "load_tests"]
