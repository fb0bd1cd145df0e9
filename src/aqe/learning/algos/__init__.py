"""The learning algorithms, one module per family, all on :class:`aqe.learning.base.Policy`."""
