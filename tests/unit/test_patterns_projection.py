"""The pattern-library projection's fold (pure; the search set is tested with real indexes)."""

from __future__ import annotations

import pytest

from aqe.events import (
    Envelope,
    Event,
    PatternAdded,
    PatternDeprecated,
    PatternUpdated,
    PatternUsed,
)
from aqe.log.subjects import subject_for
from aqe.search.projection import (
    LibraryState,
    PatternsProjection,
    active_ids,
    embedding_text,
)


def fold(*events: Event) -> LibraryState:
    projection = PatternsProjection()
    state = projection.initial()
    for seq, event in enumerate(events, start=1):
        env = Envelope(
            stream="AQE_PATTERNS",
            seq=seq,
            subject=subject_for(event),
            event_id=event.default_id(),
            event_type=event.type_tag(),
            recorded_at_ns=seq,
            data=event.to_json(),
            headers={},
        )
        state = projection.apply(state, env, event)
    return state


ADDED = PatternAdded(
    pattern_id="poll",
    name="Poll with a deadline",
    code="def wait_for(cond): ...",
    description="Instead of sleep.",
    category="flakiness",
    framework="pytest",
    tags=("async", "timing"),
)


def test_added_updated_used_deprecated() -> None:
    state = fold(
        ADDED,
        PatternUpdated(pattern_id="poll", description="Bounded polling.", tags=("timing",)),
        PatternUsed(pattern_id="poll", outcome="success"),
        PatternUsed(pattern_id="poll", outcome="failure"),
    )
    doc = state.patterns["poll"]
    assert (doc.description, doc.tags, doc.name) == ("Bounded polling.", ("timing",), ADDED.name)
    assert (doc.revisions, doc.uses, doc.successes, doc.failures) == (2, 2, 1, 1)
    assert (doc.added_seq, doc.updated_seq) == (1, 2)
    assert active_ids(state) == ["poll"]
    state = fold(ADDED, PatternDeprecated(pattern_id="poll", replaced_by="poll2"))
    assert state.patterns["poll"].deprecated
    assert state.patterns["poll"].replaced_by == "poll2"
    assert active_ids(state) == []


def test_re_adding_replaces_content_and_keeps_usage() -> None:
    state = fold(
        ADDED,
        PatternUsed(pattern_id="poll"),
        PatternAdded(pattern_id="poll", name="Poll v2", code="pass"),
    )
    doc = state.patterns["poll"]
    assert (doc.name, doc.code, doc.revisions, doc.uses, doc.added_seq) == (
        "Poll v2",
        "pass",
        2,
        1,
        1,
    )


def test_events_about_unknown_patterns_are_refused() -> None:
    with pytest.raises(ValueError, match="never added"):
        fold(PatternUsed(pattern_id="ghost"))


def test_embedding_text_puts_prose_before_code() -> None:
    text = embedding_text(fold(ADDED).patterns["poll"])
    assert text.index("Instead of sleep.") < text.index("def wait_for")
    assert "async timing" in text


def test_state_round_trips() -> None:
    projection = PatternsProjection()
    state = fold(ADDED, PatternUsed(pattern_id="poll"))
    data = projection.encode(state)
    assert projection.encode(projection.decode(data)) == data
