"""The flaky workflow as a pure machine, driven in memory against a model of the sample project."""

from __future__ import annotations

import json

import pytest

from aqe.events import WorkflowStarted, WorkflowStepFinished
from aqe.workflows.flaky import FlakyWorkflow, rerun_seed, shuffled_order
from support.flaky_sim import (
    BRITTLES,
    BROKEN,
    RATES,
    SUITE,
    VICTIMS,
    sample_behaviour,
    sim_payload,
    simulate,
)


def _params(test: str, **extra: str) -> dict[str, str]:
    return {"test": test, "order": json.dumps(SUITE), "watch_rounds": "0", **extra}


@pytest.mark.parametrize("test", sorted(RATES))
def test_random_failures_are_flaky_with_their_seeds(test: str) -> None:
    sim = simulate(_params(test), sample_behaviour, instance_id=f"wf-{test}")
    verdict = sim.decisions["verdict"]
    assert verdict.decision == "flaky"
    data = verdict.data
    assert int(data["failures_alone"]) >= 1
    assert len(data["failing_seeds"].split(",")) == int(data["failures_alone"])
    low, high = json.loads(data["interval"])
    assert low <= float(data["failure_rate"]) <= high
    # A flaky verdict never reached the order phase.
    assert set(sim.state.scheduled) == {"alone"}
    assert sim.decisions["quarantine"].data["verdict"] == "flaky"
    assert sim.finished is not None
    assert sim.finished.status == "succeeded"


@pytest.mark.parametrize(("victim", "polluter"), sorted(VICTIMS.items()))
def test_victims_are_order_dependent_with_their_polluter(victim: str, polluter: str) -> None:
    sim = simulate(_params(victim), sample_behaviour)
    data = sim.decisions["verdict"].data
    assert sim.decisions["verdict"].decision == "order-dependent"
    assert (data["kind"], data["polluter"]) == ("victim", polluter)
    assert json.loads(data["failing_order"])[-1] == victim
    assert data["failures_alone"] == "0"
    assert "quarantine" in sim.decisions


def test_a_brittle_test_is_order_dependent_with_its_state_setter() -> None:
    ((brittle, setter),) = BRITTLES.items()
    sim = simulate(_params(brittle), sample_behaviour)
    data = sim.decisions["verdict"].data
    assert sim.decisions["verdict"].decision == "order-dependent"
    assert (data["kind"], data["state_setter"]) == ("brittle", setter)


def test_a_broken_test_is_broken_and_not_quarantined() -> None:
    (broken,) = BROKEN
    sim = simulate(_params(broken), sample_behaviour)
    assert sim.decisions["verdict"].decision == "broken"
    assert "quarantine" not in sim.decisions
    assert sim.decisions["verdict"].data["failure_rate"] == "1.000"
    assert sim.finished is not None
    assert sim.finished.result["verdict"] == "broken"


@pytest.mark.parametrize(
    "test", [t for t in SUITE if t not in RATES | VICTIMS | BRITTLES and t not in BROKEN]
)
def test_fine_tests_are_fixed_after_alone_order_and_shuffles(test: str) -> None:
    sim = simulate(_params(test), sample_behaviour)
    assert sim.decisions["verdict"].decision == "fixed"
    assert "quarantine" not in sim.decisions
    # 11 alone, one in its order (when something ran before it), three shuffles.
    assert sim.state.scheduled["alone"] == 11
    assert sim.state.scheduled["shuffle"] == 3


def test_a_victim_found_only_by_a_shuffle_is_bisected_in_that_shuffle() -> None:
    order = ("a", "victim", "polluter", "b", "c")

    def behaviour(tests: tuple[str, ...], seed: int) -> dict[str, str]:
        run = tests or order
        return {
            t: "failed" if t == "victim" and "polluter" in run[: run.index(t)] else "passed"
            for t in run
        }

    sim = simulate(
        {"test": "victim", "order": json.dumps(order), "shuffles": "10", "watch_rounds": "0"},
        behaviour,
    )
    data = sim.decisions["verdict"].data
    assert sim.decisions["verdict"].decision == "order-dependent"
    assert data["polluter"] == "polluter"
    assert int(data["shuffles_failed"]) == 1


def test_the_test_and_the_order_are_found_by_a_suite_run_from_a_test_id() -> None:
    victim = "check_state.py::test_registry_starts_empty"
    sim = simulate(
        {"test_id": "check_state.test_registry_starts_empty", "watch_rounds": "0"}, sample_behaviour
    )
    assert sim.state.target == victim
    assert sim.state.order == SUITE
    assert sim.decisions["verdict"].data["polluter"] == "check_state.py::test_register_user"
    # The suite run is the original-order observation: no separate "original" run.
    assert "original" not in sim.state.scheduled


def test_lost_reruns_are_asked_again_and_counted() -> None:
    test = "check_plain.py::test_dict_merge"
    calls = {"n": 0}

    def sometimes_lost(tests: tuple[str, ...], seed: int) -> dict[str, str] | None:
        calls["n"] += 1
        return None if calls["n"] % 3 == 0 else sample_behaviour(tests, seed)

    sim = simulate(_params(test), sometimes_lost)
    assert sim.decisions["verdict"].decision == "fixed"
    assert sim.state.alone.runs == 11
    assert sim.state.scheduled["alone"] > 11
    assert int(sim.decisions["verdict"].data["reruns"]) == sim.state.reruns


def test_quarantine_is_lifted_after_k_clean_passes_once_fixed() -> None:
    test = "check_random.py::test_fails_half_of_runs"
    fixed = {"yes": False}

    def behaviour(tests: tuple[str, ...], seed: int) -> dict[str, str]:
        if fixed["yes"]:
            return dict.fromkeys(tests, "passed")
        return sample_behaviour(tests, seed)

    # The test is fixed as soon as it is quarantined: the first watch round is clean.
    sim = simulate(
        {"test": test, "order": json.dumps(SUITE), "clean_passes": "4", "watch_rounds": "3"},
        behaviour,
        on_decision=lambda d: fixed.update(yes=d.key == "quarantine" or fixed["yes"]),
    )
    assert sim.decisions["quarantine"].decision == "quarantine"
    assert sim.decisions["unquarantine"].data["clean_passes"] == "4"
    assert sim.state.scheduled["watch1"] == 4
    assert sim.finished is not None
    assert sim.finished.reasons == ("unquarantined",)


def test_a_still_flaky_test_stays_quarantined_after_its_watch_rounds() -> None:
    test = "check_random.py::test_fails_most_runs"
    sim = simulate(
        {"test": test, "order": json.dumps(SUITE), "clean_passes": "5", "watch_rounds": "2"},
        sample_behaviour,
    )
    assert "unquarantine" not in sim.decisions
    assert sim.finished is not None
    assert "stays quarantined" in sim.finished.reasons[0]
    assert sim.state.watch_round == 2


def test_decide_is_pure_and_a_replay_folds_to_the_same_state() -> None:
    test = "check_state.py::test_price_in_currency"
    sim = simulate(_params(test), sample_behaviour)
    wf = FlakyWorkflow(sim_payload)
    started = sim.facts[0].event
    assert isinstance(started, WorkflowStarted)
    state = wf.initial(started)
    for fact in sim.facts[1:12]:
        state = wf.apply(state, fact)
    first = wf.decide(state, 5)
    assert wf.decide(state, 5) == first
    replayed = wf.initial(started)
    for fact in sim.facts[1:]:
        replayed = wf.apply(replayed, fact)
    assert replayed == sim.state
    # A step result delivered twice changes nothing.
    finished = next(f for f in sim.facts if isinstance(f.event, WorkflowStepFinished))
    before = (replayed.alone, dict(replayed.finished))
    again = wf.apply(replayed, finished)
    assert (again.alone, again.finished) == before


def test_parallel_reruns_reach_the_same_verdicts() -> None:
    for test, verdict in [
        ("check_random.py::test_fails_half_of_runs", "flaky"),
        ("check_state.py::test_registry_starts_empty", "order-dependent"),
        ("check_plain.py::test_dict_merge", "fixed"),
    ]:
        sim = simulate(_params(test, parallel="3"), sample_behaviour)
        assert sim.decisions["verdict"].decision == verdict
        if verdict == "fixed":
            # No more in flight than the rule still needs: nothing spent past the answer.
            assert sim.state.scheduled["alone"] == 11
            assert sim.state.scheduled["shuffle"] == 3


def test_seeds_and_shuffles_are_deterministic() -> None:
    assert rerun_seed("i", "alone-1") == rerun_seed("i", "alone-1")
    assert rerun_seed("i", "alone-1") != rerun_seed("i", "alone-2")
    assert shuffled_order(SUITE, 7) == shuffled_order(SUITE, 7)
    assert sorted(shuffled_order(SUITE, 7)) == sorted(SUITE)


def test_bad_params_finish_the_instance_as_failed() -> None:
    sim = simulate({"source": "."}, sample_behaviour)
    assert sim.finished is not None
    assert sim.finished.status == "failed"
    assert "test" in sim.finished.reasons[0]


def test_the_pytest_payload_runs_the_tests_in_order_with_the_seed() -> None:
    from aqe.runners import runner_task
    from aqe.workflows.flaky import SEED_ENV, FlakyParams, pytest_payload

    params = FlakyParams(test="t.py::b", source="/p", python="/venv/bin/python", wall_s=30)
    task = runner_task(pytest_payload(params, ("t.py::a", "t.py::b"), 42))
    assert task.argv[0] == "/venv/bin/python"
    assert task.argv[-2:] == ("t.py::a", "t.py::b")
    assert "no:randomly" in task.argv
    assert task.spec.env == {SEED_ENV: "42"}
    assert (task.spec.source, task.spec.limits.wall_s) == ("/p", 30)
