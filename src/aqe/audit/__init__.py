"""Audits you can prove: Merkle seals over the log, verification, proofs and exports.

* :mod:`~aqe.audit.merkle`: RFC 6962/9162 trees, inclusion and consistency proofs (pure);
* :mod:`~aqe.audit.leaf`: the bytes one message contributes (its leaf);
* :mod:`~aqe.audit.seal`: signed seals (tree heads) appended to ``AQE_AUDIT``;
* :mod:`~aqe.audit.verify`: recompute and name the first divergence per seal;
* :mod:`~aqe.audit.proof`: inclusion proofs as JSON, checked with no server;
* :mod:`~aqe.audit.export`: Parquet exports with seals and proofs, checked offline.
"""

__all__: list[str] = []
