"""Subject grammar and the reversible, subject-safe id token encoding."""

from __future__ import annotations

import re

import pytest

from aqe.events import AgentHeartbeat, Event, PatternAdded, TestCaseExecuted, TestRunStarted
from aqe.log.subjects import (
    MAX_TOKEN,
    SUBJECT_PREFIX,
    decode_token,
    encode_token,
    is_hashed_token,
    parse_subject,
    subject_for,
    subject_matches,
)

TOKEN_RE = re.compile(r"^[A-Za-z0-9_~-]+$")

NASTY_IDS = [
    "tests/api/test_login.py::TestLogin::test_redirect[admin user]",
    "tests/test_a.py::test_x[1.5-None]",
    "tests/test_b.py::test_y[a]b]",
    "tests/test_c.py::test_z[ leading and trailing ]  ",
    "test_params[\tTab\nnewline\r]",
    "..",
    ".",
    "a.b.c",
    "*",
    ">",
    "aqe.>",
    "foo.*.bar",
    "~",
    "~~7E",
    "~2F",
    "100%",
    "ümlaut-ß-é",
    "日本語テスト::test[値]",
    "emoji 🧪 test",
    "$JS.API",
    "null\x00byte",
    "back\\slash",
    'quote"s',
    "x",
    "-",
    "_",
    "already_safe-ID_123",
]


@pytest.mark.parametrize("value", NASTY_IDS)
def test_encode_decode_round_trip(value: str) -> None:
    token = encode_token(value)
    assert decode_token(token) == value


@pytest.mark.parametrize("value", NASTY_IDS)
def test_encoded_token_uses_only_safe_characters(value: str) -> None:
    token = encode_token(value)
    assert TOKEN_RE.match(token), token
    assert "." not in token
    assert "*" not in token
    assert ">" not in token


def test_safe_ids_are_their_own_token() -> None:
    assert encode_token("already_safe-ID_123") == "already_safe-ID_123"


def test_escapes_are_upper_case_hex_of_utf8_bytes() -> None:
    assert encode_token("a.b") == "a~2Eb"
    assert encode_token("a/b c") == "a~2Fb~20c"
    assert encode_token("~") == "~7E"
    assert encode_token("é") == "~C3~A9"
    assert encode_token("::[]") == "~3A~3A~5B~5D"


def test_encoding_is_injective_for_lookalikes() -> None:
    values = ["a.b", "a~2Eb", "a_b", "a-b", "a b", "A.B"]
    tokens = {encode_token(v) for v in values}
    assert len(tokens) == len(values)


def test_empty_id_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        encode_token("")


EVENTS = [
    TestCaseExecuted(test_id=NASTY_IDS[0], run_id="r1", outcome="passed"),
    TestCaseExecuted(test_id="日本語テスト::test[値]", run_id="r1", outcome="skipped"),
    TestRunStarted(run_id="gh 1.2/3"),
    PatternAdded(pattern_id="p.1", name="n", code="c"),
    AgentHeartbeat(agent_id="agent>1*", beat=1),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_subject_for_and_parse_subject_agree(event: Event) -> None:
    subject = subject_for(event)
    tokens = subject.split(".")
    assert len(tokens) == 5
    assert tokens[0] == SUBJECT_PREFIX
    parts = event.tag_parts()
    assert parse_subject(subject) == (
        parts.domain,
        parts.aggregate,
        event.aggregate_id(),
        parts.action,
    )
    assert all(TOKEN_RE.match(t) for t in tokens)


def test_subject_for_a_pytest_node_id() -> None:
    event = TestCaseExecuted(test_id="t/a.py::T::t[x y]", run_id="r", outcome="passed")
    assert subject_for(event) == "aqe.tests.case.t~2Fa~2Epy~3A~3AT~3A~3At~5Bx~20y~5D.executed"


def test_subject_with_an_empty_id_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        subject_for(TestRunStarted(run_id=""))


@pytest.mark.parametrize(
    "subject",
    [
        "aqe.tests.case.executed",
        "aqe.tests.case.a.b.executed",
        "nats.tests.case.a.executed",
        "",
        "aqe",
    ],
)
def test_parse_subject_rejects_other_shapes(subject: str) -> None:
    with pytest.raises(ValueError, match="not aqe"):
        parse_subject(subject)


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("aqe.tests.case.x.executed", "aqe.tests.case.x.executed", True),
        ("aqe.tests.case.x.executed", "aqe.tests.case.y.executed", False),
        ("aqe.tests.case.*.executed", "aqe.tests.case.x.executed", True),
        ("aqe.tests.case.*.executed", "aqe.tests.case.x.started", False),
        ("aqe.tests.*", "aqe.tests.case", True),
        ("aqe.tests.*", "aqe.tests.case.x", False),
        ("aqe.tests.*", "aqe.tests", False),
        ("aqe.*.*.*.*", "aqe.tests.case.x.executed", True),
        ("aqe.tests.>", "aqe.tests.case.x.executed", True),
        ("aqe.tests.>", "aqe.tests.case", True),
        ("aqe.tests.>", "aqe.tests", False),
        ("aqe.tests.>", "aqe.patterns.pattern.p.added", False),
        ("aqe.>", "aqe.dlq.x", True),
        (">", "anything.at.all", True),
        ("*", "one", True),
        ("*", "one.two", False),
        ("aqe.*.case.>", "aqe.tests.case.x.executed", True),
        ("aqe.*.case.>", "aqe.tests.run.x.started", False),
        ("aqe.tests.case.x", "aqe.tests.case.x.executed", False),
        ("aqe.tests.case.x.executed.more", "aqe.tests.case.x.executed", False),
    ],
)
def test_subject_matches_wildcards(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


def test_encoded_ids_never_act_as_wildcards() -> None:
    star = subject_for(AgentHeartbeat(agent_id="*", beat=1))
    other = subject_for(AgentHeartbeat(agent_id="a", beat=1))
    assert not subject_matches(star, other)
    assert subject_matches("aqe.agents.agent.*.heartbeat", star)


# -- bounded tokens (issue 21 item 1) ------------------------------------------------------

CJK_600 = "tests.test_i18n.test_i18n[" + "漢" * 600 + "]"
LONG_ASCII = "tests.test_long.test_" + "x" * 6000


@pytest.mark.parametrize("value", [CJK_600, LONG_ASCII, "é" * 200, "a.b" * 100])
def test_long_ids_are_hashed_into_a_bounded_safe_token(value: str) -> None:
    token = encode_token(value)
    assert len(token) <= MAX_TOKEN
    assert TOKEN_RE.match(token), token
    assert is_hashed_token(token)
    assert encode_token(value) == token  # stable
    # The readable prefix is whole escapes of the id's start.
    prefix = token[: token.rindex("~h")]
    assert value.startswith(decode_token(prefix))


def test_hashed_tokens_differ_where_only_the_tail_differs() -> None:
    a, b = "t" * 5000 + "a", "t" * 5000 + "b"
    assert encode_token(a) != encode_token(b)


def test_ids_up_to_the_bound_keep_their_reversible_encoding() -> None:
    at_bound = "a" * MAX_TOKEN
    assert encode_token(at_bound) == at_bound
    assert not is_hashed_token(at_bound)
    assert is_hashed_token(encode_token("a" * (MAX_TOKEN + 1)))
    # 28 CJK characters encode to 252 characters: still reversible, as before.
    short_cjk = "漢" * 28
    assert decode_token(encode_token(short_cjk)) == short_cjk


@pytest.mark.parametrize("value", NASTY_IDS)
def test_nasty_ids_are_not_taken_for_hashed_tokens(value: str) -> None:
    assert not is_hashed_token(encode_token(value))


def test_a_hashed_token_does_not_decode() -> None:
    with pytest.raises(ValueError, match="payload"):
        decode_token(encode_token(LONG_ASCII))


def test_subject_of_a_huge_test_name_stays_far_below_the_control_line() -> None:
    event = TestCaseExecuted(test_id=CJK_600, run_id="r", outcome="passed")
    subject = subject_for(event)
    # nats-server's default max_control_line is 4 KiB; the subject must leave room for
    # the reply inbox and the JetStream ack subject on the same line.
    assert len(subject.encode()) < 1024
    assert subject.startswith("aqe.tests.case.tests~2Etest_i18n")
    assert subject_matches("aqe.tests.case.*.executed", subject)
