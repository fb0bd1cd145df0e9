"""QUIC links between clusters: replicate event streams with resume, dedup and no loops.

* :mod:`aqe.bridge.frames` — the wire protocol (frames on QUIC streams);
* :mod:`aqe.bridge.channel` — what replication needs from a transport;
* :mod:`aqe.bridge.quic` — that transport over aioquic, with mutual TLS and 0-RTT;
* :mod:`aqe.bridge.certs` — a development CA and per-cluster certificates;
* :mod:`aqe.bridge.replication` — source and target sides of a link over JetStream;
* :mod:`aqe.bridge.config` / :mod:`aqe.bridge.node` — ``ops/bridge/*.toml`` and the
  process ``aqe bridge run`` starts.
"""
