"""Fleet coordination over the log: membership, task dispatch under four topologies with
adaptive selection, leader election with fencing tokens, and quorum / Byzantine voting.

Every decision is an event in ``AQE_COORD`` (``aqe.agents.>`` for membership), and every
rule that turns events into a decision is a pure fold, so any reader of the same prefix of
the log derives the same leader, task owner, topology and verdict. See
:mod:`aqe.events.coordination` for how stream sequences order them.
"""
