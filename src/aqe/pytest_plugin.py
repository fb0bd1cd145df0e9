"""The pytest plugin: publish a live test run to aqe as it happens.

Enable it with ``pytest --aqe`` (or ``aqe = true`` in the ini file); without that it
only adds its options. A session then produces ``TestRunStarted``, one
``TestCaseExecuted`` per attempt of each test as it finishes, and ``TestRunFinished``
with the totals. A daemon thread running its own asyncio loop owns the NATS
connection and publishes the events, so tests never wait on the network.

Every event is also appended to a spool file (:mod:`aqe.ingest.spool`) as it is
produced. When the server has acknowledged all of them the file is deleted; otherwise
it stays and one line says how to load it later (``aqe ingest <file>``). Event ids are
derived from the events' contents, so loading a file whose events were partly
published stores only the rest.

The plugin never changes a session's outcome: a server that cannot be reached only
means spooling, and any error of its own is reported once at the end.

It reads the log too, before the tests run: tests in quarantine (``aqe quarantine``)
still fail honestly in the log, but pytest reports them as expected failures
(``xfail``), so they do not fail the session; ``--aqe-subset[=BUDGET]`` runs only the
tests the history puts first within the budget (new tests always) and ``--aqe-order``
runs every test, most likely to fail first, each recording a ``TestRunSelected``. A
pytest-randomly or pytest-random-order seed is recorded with the run's start.

Options: ``--aqe``, ``--aqe-url``, ``--aqe-run-id``, ``--aqe-commit``, ``--aqe-branch``,
``--aqe-suite``, ``--aqe-spool``, ``--aqe-subset``, ``--aqe-order``, ``--aqe-policy``,
``--aqe-no-quarantine``, ``--aqe-changed-since`` (test impact analysis from the
coverage in the log, :mod:`aqe.coverage.tia`) and ``--aqe-coverage-contexts`` (one
coverage.py context per test, under ``coverage run``; :mod:`aqe.coverage.collect`).
Commit, branch and CI job URL default to what common
CI systems put in the environment (``GITHUB_SHA``, ``CI_COMMIT_SHA``, ``GIT_COMMIT``...).
Under pytest-xdist only the controller publishes; it sees every worker's reports.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sys
import threading
import time
import uuid
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import pytest

if TYPE_CHECKING:
    from aqe.config import Settings
    from aqe.events import Event, Outcome
    from aqe.ingest.spool import SpoolWriter
    from aqe.log.jetstream import JetStreamEventLog

__all__ = [
    "DEFAULT_SUBSET_BUDGET",
    "FINISH_TIMEOUT_S",
    "QUARANTINE_REASON",
    "AqeRecorder",
    "ci_defaults",
    "pytest_addoption",
    "pytest_configure",
    "random_seed",
]

SOURCE: Final = "pytest-plugin"
"""``TestRunStarted.source`` of live runs."""

FINISH_TIMEOUT_S: Final = 10.0
"""How long the end of a session waits for the server to acknowledge every event."""

CONNECT_TIMEOUT_S: Final = 2.0
"""Connection timeout unless ``AQE_NATS_CONNECT_TIMEOUT`` sets one."""

DEFAULT_SUBSET_BUDGET: Final = "50%"
"""The budget of a bare ``--aqe-subset``."""

QUARANTINE_REASON: Final = "quarantined by aqe"
"""The xfail reason pytest shows for a quarantined test's failure."""

_READ_TIMEOUT_S: Final = 30.0
_DESELECTED_KEPT: Final = 10_000
_ACK_TIMEOUT_S: Final = 10.0
_BATCH: Final = 100
_PLUGIN_NAME: Final = "aqe-recorder"

# Environment variables common CI systems set, most specific first.
_COMMIT_VARS: Final = (
    "GITHUB_SHA",
    "CI_COMMIT_SHA",
    "GIT_COMMIT",
    "BUILDKITE_COMMIT",
    "CIRCLE_SHA1",
    "TRAVIS_COMMIT",
    "BITBUCKET_COMMIT",
)
_BRANCH_VARS: Final = (
    "GITHUB_HEAD_REF",
    "GITHUB_REF_NAME",
    "CI_COMMIT_REF_NAME",
    "GIT_BRANCH",
    "BUILDKITE_BRANCH",
    "CIRCLE_BRANCH",
    "TRAVIS_BRANCH",
    "BITBUCKET_BRANCH",
)
_CI_URL_VARS: Final = ("CI_JOB_URL", "BUILD_URL", "BUILDKITE_BUILD_URL", "CIRCLE_BUILD_URL")


# --- hooks of the module: options and switching on ------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``--aqe*`` options and the ``aqe`` ini flag."""
    group = parser.getgroup("aqe", "publish test results to aqe (NATS JetStream)")
    group.addoption(
        "--aqe", action="store_true", default=False, help="Publish this run's results to aqe."
    )
    group.addoption(
        "--aqe-url",
        metavar="URL",
        default=None,
        help="NATS server URL(s); default AQE_NATS_URL, else aqe's embedded server.",
    )
    group.addoption(
        "--aqe-run-id", metavar="ID", default=None, help="Run id; default a new pytest-<hex>."
    )
    group.addoption(
        "--aqe-commit", metavar="SHA", default=None, help="Commit under test; default from CI env."
    )
    group.addoption(
        "--aqe-branch", metavar="NAME", default=None, help="Branch under test; default from CI env."
    )
    group.addoption(
        "--aqe-suite", metavar="NAME", default=None, help="Suite name; default the rootdir's name."
    )
    group.addoption(
        "--aqe-spool",
        metavar="PATH",
        default=None,
        help="Spool file; default <data_dir>/spool/<run id>.jsonl.",
    )
    group.addoption(
        "--aqe-subset",
        nargs="?",
        const=DEFAULT_SUBSET_BUDGET,
        default=None,
        metavar="BUDGET",
        help="Run only the tests aqe's history ranks first within BUDGET (30%%, 300s, 5m; "
        "bare: 50%%; write --aqe-subset=30%% before paths). New tests always run. "
        "Implies --aqe.",
    )
    group.addoption(
        "--aqe-order",
        action="store_true",
        default=False,
        help="Run the tests most likely to fail first (from aqe's history). Implies --aqe.",
    )
    group.addoption(
        "--aqe-policy",
        metavar="ALGO|ID",
        default=None,
        help="What ranks the tests for --aqe-subset/--aqe-order: an algorithm "
        "(default failure-count) or a saved policy id (aqe learn list).",
    )
    group.addoption(
        "--aqe-no-quarantine",
        action="store_true",
        default=False,
        help="Let tests in aqe's quarantine fail the session like any other.",
    )
    group.addoption(
        "--aqe-changed-since",
        metavar="REF",
        default=None,
        help="Test impact analysis: run only the tests whose coverage (in aqe's log) meets "
        "`git diff REF`, plus new and stale ones, ranked as --aqe-subset ranks them "
        "(and cut by its budget when --aqe-subset gives one). Implies --aqe.",
    )
    group.addoption(
        "--aqe-coverage-contexts",
        action="store_true",
        default=False,
        help="Under `coverage run` (aqe coverage collect): give each test its own coverage "
        "context (its node id), so coverage knows which test ran which line.",
    )
    parser.addini("aqe", "Publish every run's results to aqe (like --aqe).", type="bool")


def pytest_configure(config: pytest.Config) -> None:
    """Register the recorder when ``--aqe`` (or ``aqe = true``) asks for it."""
    if config.getoption("aqe_coverage_contexts"):
        from aqe.coverage.contexts import register_contexts

        register_contexts(config)
    selecting = (
        config.getoption("aqe_subset") is not None
        or config.getoption("aqe_order")
        or config.getoption("aqe_changed_since")
    )
    if not (config.getoption("aqe") or config.getini("aqe") or selecting):
        return
    if hasattr(config, "workerinput") or config.getoption("collectonly", False):
        return  # an xdist worker (its controller publishes) or nothing will run
    budget = config.getoption("aqe_subset")
    if budget is not None:
        from aqe.learning.selection import parse_budget

        try:
            parse_budget(budget, 1.0)
        except ValueError as exc:
            raise pytest.UsageError(f"--aqe-subset: {exc}") from None
    try:
        recorder = AqeRecorder.from_config(config)
    except Exception as exc:  # the plugin must not break the session
        sys.stderr.write(f"aqe: disabled: {_describe(exc)}\n")
        return
    config.pluginmanager.register(recorder, _PLUGIN_NAME)


# --- what the run records -------------------------------------------------------------


def ci_defaults(env: Mapping[str, str] | None = None) -> tuple[str | None, str | None, str | None]:
    """``(commit, branch, ci_url)`` from the variables CI systems set, else ``None``."""
    source: Mapping[str, str] = os.environ if env is None else env

    def first(names: Sequence[str]) -> str | None:
        return next((source[n].strip() for n in names if source.get(n, "").strip()), None)

    ci_url = first(_CI_URL_VARS)
    github = [
        source.get(n, "") for n in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    ]
    if ci_url is None and all(github):
        ci_url = f"{github[0]}/{github[1]}/actions/runs/{github[2]}"
    return first(_COMMIT_VARS), first(_BRANCH_VARS), ci_url


def random_seed(config: pytest.Config) -> tuple[int | None, str | None]:
    """``(seed, plugin)`` of the plugin shuffling this session's tests, else ``(None, None)``.

    pytest-randomly (plugin ``randomly``) shuffles whenever it is loaded; pytest-random-order
    (``random_order``) only when asked to (``--random-order``, a bucket or a seed).
    """
    manager = config.pluginmanager
    if manager.has_plugin("randomly"):
        seed = _int(config.getoption("randomly_seed", None))
        if seed is not None:
            return seed, "pytest-randomly"
    if manager.has_plugin("random_order"):
        enabled = config.getoption("random_order_enabled", None)
        bucket = config.getoption("random_order_bucket", None)
        if enabled or (enabled is None and bucket not in (None, "none")):
            seed = _int(config.getoption("random_order_seed", None))
            if seed is not None:
                return seed, "pytest-random-order"
    return None, None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.rpartition(":")[2].strip()  # pytest-random-order may say "default:1234"
        return int(text) if text.isdigit() else None
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Attempt:
    """The phase reports of one attempt of one test, until it is complete."""

    reports: list[pytest.TestReport]


def _is_rerun(report: pytest.TestReport) -> bool:
    # pytest-rerunfailures sets this outcome, which pytest's own annotation leaves out.
    return str(report.outcome) == "rerun"


def _held(report: pytest.TestReport) -> bool:
    """A quarantined test's failure, which pytest was shown as an expected failure."""
    return bool(getattr(report, "aqe_quarantined", False))


def _bad(report: pytest.TestReport) -> bool:
    return report.failed or _is_rerun(report) or _held(report)


def _outcome(reports: Sequence[pytest.TestReport]) -> tuple[Outcome, pytest.TestReport | None]:
    """The attempt's outcome and the report that explains it (``None`` when it passed).

    A failing setup is an error; a failing call a failure; a skip (``xfail`` included)
    a skip; a failing teardown after a passing or skipped test an error. A report of
    pytest-rerunfailures (outcome ``rerun``) counts as the failure it stands for.
    """
    by_phase = {r.when: r for r in reports}
    setup, call, teardown = by_phase.get("setup"), by_phase.get("call"), by_phase.get("teardown")
    if setup is not None and _bad(setup):
        return "error", setup
    if setup is not None and setup.skipped:
        outcome: Outcome = "skipped"
        why: pytest.TestReport | None = setup
    elif call is not None and _bad(call):
        return "failed", call
    elif call is not None and call.skipped:
        outcome, why = "skipped", call
    else:
        outcome, why = "passed", None
    if teardown is not None and _bad(teardown):
        return "error", teardown
    return outcome, why


def _message(report: pytest.TestReport | None) -> str | None:
    """A short reason: the crash message of a failure, the reason of a skip."""
    if report is None:
        return None
    wasxfail = getattr(report, "wasxfail", None)
    if report.skipped and wasxfail is not None and not _held(report):
        return f"xfail: {wasxfail}" if wasxfail else "xfail"
    longrepr = report.longrepr
    if longrepr is None:
        return None
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])  # a skip: (path, line, "Skipped: reason")
    crash = getattr(longrepr, "reprcrash", None)
    message = getattr(crash, "message", None)
    if isinstance(message, str) and message:
        return message
    return report.longreprtext or str(longrepr)


# --- publishing in the background -----------------------------------------------------


class _Publisher:
    """A daemon thread with an asyncio loop that owns the connection and publishes.

    :meth:`submit` never blocks on the network; :meth:`finish` waits a bounded time
    for every submitted event to be acknowledged.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="aqe-publisher", daemon=True
        )
        self._main: concurrent.futures.Future[None] | None = None
        self.submitted = 0
        self.acked = 0
        self.error: str | None = None
        self.server: str | None = None

    def start(self) -> None:
        """Start the thread and begin connecting."""
        _import_client()
        self._thread.start()
        self._main = asyncio.run_coroutine_threadsafe(self._run(), self._loop)

    def submit(self, event: Event) -> None:
        """Hand one event over for publishing (thread-safe, returns at once)."""
        self.submitted += 1
        self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    @property
    def complete(self) -> bool:
        """Whether every submitted event was acknowledged and nothing failed."""
        return self.error is None and self.acked == self.submitted

    def finish(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the acknowledgements, then stop."""
        if self._main is None:
            return
        self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
        try:
            self._main.result(timeout)
        except concurrent.futures.TimeoutError:
            if self.error is None and self.acked < self.submitted:
                self.error = (
                    f"{self.submitted - self.acked} events unacknowledged after {timeout:g} s"
                )
        finally:
            self._stop()

    def _stop(self) -> None:
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(3.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(3.0)
        if not self._thread.is_alive():
            self._loop.close()

    async def _shutdown(self) -> None:
        """Cancel what is still running (a hung connect or ack) and wait for it."""
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2.0)
        await self._loop.shutdown_asyncgens()

    async def _run(self) -> None:
        from aqe.log.jetstream import JetStreamEventLog

        try:
            log = await JetStreamEventLog.connect(self._settings)
        except Exception as exc:  # reported at the end; spooled meanwhile
            self.error = _describe(exc)
            return
        try:
            self.server = _server_name(log)
            await self._publish_all(log)
        except Exception as exc:  # reported at the end; spooled meanwhile
            self.error = _describe(exc)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(log.close(), 2.0)

    async def _publish_all(self, log: JetStreamEventLog) -> None:
        from aqe.log.admin import create_missing_streams
        from aqe.log.port import NewEvent

        await create_missing_streams(log.connection, log.specs)
        done = False
        while not done:
            items = [await self._queue.get()]
            while len(items) < _BATCH and not self._queue.empty():
                items.append(self._queue.get_nowait())
            events = [e for e in items if e is not None]
            done = len(events) < len(items)
            if events:
                try:
                    results = await asyncio.wait_for(
                        log.append_many([NewEvent(event=e) for e in events]), _ACK_TIMEOUT_S
                    )
                except TimeoutError:
                    lost = "" if log.connection.is_connected else "connection lost; "
                    raise TimeoutError(
                        f"{lost}no acknowledgement in {_ACK_TIMEOUT_S:g} s"
                    ) from None
                self.acked += len(results)


def _import_client(*, reader: bool = False) -> None:
    """Import the log's client modules (and the reader's) in the calling thread.

    The publisher's thread and the log reader's thread would otherwise import nats-py
    at the same time, and one of them can meet a module the other is still initialising
    (``cannot import name ... from partially initialized module 'nats.js.errors'``).
    """
    import aqe.log.admin
    import aqe.log.jetstream

    if reader:
        import aqe.learning.training  # noqa: F401


def _read_log(settings: Settings, *, history: bool, coverage: bool = False) -> list[Event]:
    """The tests stream's events (``history``), else only its quarantine events; with
    ``coverage`` the coverage stream's events after them.

    Runs on a thread of its own with its own event loop, so the session's loop state
    (pytest-asyncio's) is left alone; bounded by ``_READ_TIMEOUT_S``.
    """

    async def read() -> list[Event]:
        from aqe.events import REGISTRY
        from aqe.learning.training import read_test_events
        from aqe.log.admin import create_missing_streams
        from aqe.log.jetstream import JetStreamEventLog

        log = await JetStreamEventLog.connect(settings)
        try:
            await create_missing_streams(log.connection, log.specs)
            if history:
                events, _ = await read_test_events(log)
                if coverage:
                    async for env in log.read("AQE_COVERAGE"):
                        events.append(REGISTRY.decode(env.data, subject=env.subject, seq=env.seq))
                return events
            envelopes = []
            for action in ("quarantined", "unquarantined"):
                subjects = f"aqe.tests.case.*.{action}"
                envelopes += [e async for e in log.read("AQE_TESTS", subjects=subjects)]
            envelopes.sort(key=lambda e: e.seq)
            return [REGISTRY.decode(e.data, subject=e.subject, seq=e.seq) for e in envelopes]
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(log.close(), 2.0)

    def main() -> list[Event]:
        return asyncio.run(asyncio.wait_for(read(), _READ_TIMEOUT_S))

    _import_client(reader=True)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="aqe-read") as pool:
        return pool.submit(main).result()


def _server_name(log: JetStreamEventLog) -> str:
    """The connected server as ``nats://host:port`` (no credentials)."""
    url = log.connection.connected_url
    if url is None:
        return "NATS"
    return f"{url.scheme}://{url.hostname}:{url.port}"


# --- the recorder -----------------------------------------------------------------------


class AqeRecorder:
    """Turns a session's reports into events, spools them and publishes them.

    Registered as a plugin by :func:`pytest_configure` when aqe is enabled.
    """

    def __init__(
        self,
        *,
        settings: Settings | None,
        run_id: str,
        suite: str,
        commit: str | None,
        branch: str | None,
        ci_url: str | None,
        spool_path: Path,
        problem: str | None = None,
        subset: str | None = None,
        order: bool = False,
        policy: str | None = None,
        quarantine: bool = True,
    ) -> None:
        self.run_id = run_id
        self.suite = suite
        self.commit = commit
        self.branch = branch
        self.ci_url = ci_url
        self.spool_path = spool_path
        self._settings = settings
        self._config_problem = problem
        self._problems: list[str] = []
        self._spool: SpoolWriter | None = None
        self._publisher: _Publisher | None = None
        self._pending: dict[str, _Attempt] = {}
        self._attempts: dict[str, int] = {}
        self._final: dict[str, Outcome] = {}
        self._failed_before: set[str] = set()
        self._results = 0
        self._started = time.monotonic()
        self._lines: list[str] = []
        self._reported = False
        self.subset = subset
        self.order = order
        self.policy = policy
        self.quarantine = quarantine
        self._quarantined: set[str] = set()
        self._selection_line: str | None = None
        self._test_ids: dict[str, str] = {}

    @classmethod
    def from_config(cls, config: pytest.Config) -> AqeRecorder:
        """Build the recorder from the command line, the ini file and the environment."""
        from aqe.config import DEFAULT_DATA_DIR, ENV_VARS, discover
        from aqe.errors import ConfigError

        run_id = config.getoption("aqe_run_id") or f"pytest-{uuid.uuid4().hex[:12]}"
        env_commit, env_branch, ci_url = ci_defaults()
        settings: Settings | None = None
        problem = None
        timeout_set = bool(os.environ.get(ENV_VARS["connect_timeout"], "").strip())
        try:
            # Found as the aqe command finds them: the same project, the same data dir.
            settings = discover(
                nats_url=config.getoption("aqe_url"),
                connect_timeout=None if timeout_set else CONNECT_TIMEOUT_S,
            ).settings
        except ConfigError as exc:
            problem = str(exc)
        spool_option = config.getoption("aqe_spool")
        if spool_option:
            spool_path = Path(spool_option)
        else:
            data_dir = settings.data_dir if settings is not None else DEFAULT_DATA_DIR
            spool_path = data_dir / "spool" / f"{run_id}.jsonl"
        return cls(
            settings=settings,
            run_id=run_id,
            suite=config.getoption("aqe_suite") or config.rootpath.name,
            commit=config.getoption("aqe_commit") or env_commit,
            branch=config.getoption("aqe_branch") or env_branch,
            ci_url=ci_url,
            # Tests may change directory; the file stays where the session began.
            spool_path=spool_path.absolute(),
            problem=problem,
            subset=config.getoption("aqe_subset"),
            order=bool(config.getoption("aqe_order")),
            policy=config.getoption("aqe_policy"),
            quarantine=not config.getoption("aqe_no_quarantine"),
        )

    # -- plumbing ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self, where: str) -> Iterator[None]:
        """Keep any error of the plugin away from the session; remember it for the end."""
        try:
            yield
        except Exception as exc:  # a plugin must never break the test run
            message = f"{where}: {type(exc).__name__}: {_describe(exc)}"
            if message not in self._problems:
                self._problems.append(message)

    def _emit(self, event: Event) -> None:
        if self._spool is not None:
            try:
                self._spool.write(event)
            except OSError as exc:
                self._problems.append(f"cannot write spool {self.spool_path}: {_describe(exc)}")
                self._spool.close()
                self._spool = None
        if self._publisher is not None:
            self._publisher.submit(event)

    # -- hooks ---------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Open the spool, start connecting, and record the run's start."""
        from aqe.events import TestRunStarted
        from aqe.ingest.spool import SpoolWriter

        with self._guard("starting"):
            self._started = time.monotonic()
            try:
                self._spool = SpoolWriter(self.spool_path)
            except OSError as exc:
                self._problems.append(f"cannot open spool {self.spool_path}: {_describe(exc)}")
            if self._settings is not None:
                self._publisher = _Publisher(self._settings)
                self._publisher.start()
            seed, shuffler = random_seed(session.config)
            self._emit(
                TestRunStarted(
                    run_id=self.run_id,
                    suite=self.suite,
                    commit=self.commit,
                    branch=self.branch,
                    ci_url=self.ci_url,
                    started_at=_now(),
                    source=SOURCE,
                    random_seed=seed,
                    random_plugin=shuffler,
                )
            )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect the phases of an attempt; record it when it is complete.

        An attempt begins with its setup report and ends with its teardown report.
        pytest-rerunfailures 14-16 log a failing attempt's phase as ``rerun`` and then
        that attempt's teardown; older versions start over without the teardown, so a
        new setup report also ends the attempt before it.
        """
        with self._guard(f"recording {report.nodeid}"):
            if report.when == "setup":
                self._close(report.nodeid)
            self._pending.setdefault(report.nodeid, _Attempt([])).reports.append(report)
            if report.when == "teardown":
                self._close(report.nodeid)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        """Record an attempt still open when its test is done (no teardown report)."""
        with self._guard(f"recording {nodeid}"):
            self._close(nodeid)

    def _close(self, nodeid: str) -> None:
        attempt = self._pending.pop(nodeid, None)
        if attempt is not None and attempt.reports:
            self._record(nodeid, attempt.reports)

    def _test_id(self, nodeid: str) -> str:
        test_id = self._test_ids.get(nodeid)
        if test_id is None:
            from aqe.ingest.identity import split_pytest_nodeid, test_identity

            test_id = self._test_ids[nodeid] = test_identity(*split_pytest_nodeid(nodeid))
        return test_id

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        """Read the quarantine (and for a selection the history) from the log; apply them."""
        selecting = self.subset is not None or self.order or config.getoption("aqe_changed_since")
        if not (self.quarantine or selecting):
            return
        with self._guard("reading the log"):
            if self._settings is None:
                if selecting:
                    self._lines.append(f"aqe: every test runs: no history ({self._config_problem})")
                return
            try:
                events = _read_log(
                    self._settings,
                    history=selecting,
                    coverage=bool(config.getoption("aqe_changed_since")),
                )
            except Exception as exc:  # the session goes on without the log
                what = "no quarantine applied" + ("; every test runs" if selecting else "")
                self._lines.append(f"aqe: could not read the log ({_describe(exc)}): {what}")
                return
            from aqe.learning.selection import quarantined_tests

            if self.quarantine:
                self._quarantined = quarantined_tests(events)
            if selecting:
                self._select(config, items, events, self._settings.data_dir)

    def _select(
        self, config: pytest.Config, items: list[pytest.Item], events: list[Event], data_dir: Path
    ) -> None:
        from aqe.events import TestRunSelected
        from aqe.learning.features import from_events
        from aqe.learning.selection import (
            failure_weights,
            history_order,
            parse_budget,
            prioritise,
            resolve_pending,
            resolve_policy,
            runner_names,
            select,
        )

        cycles = from_events(events)
        names = runner_names(events)
        known = history_order(cycles, names)
        pending = resolve_pending([item.nodeid for item in items], known, names)
        test_of = {nodeid: test_id for test_id, nodeid in pending.nodeids.items()}
        self._test_ids.update(test_of)
        policy, replay, label = resolve_policy(self.policy, data_dir)
        order = prioritise(policy, cycles, pending, replay=replay, also=names)
        new = len(order) - sum(1 for r in order if r.test_id in known)
        changed_since = config.getoption("aqe_changed_since")
        if changed_since:
            from aqe.coverage.tia import impacted_by_diff

            impact = impacted_by_diff(
                events, changed_since, config.rootpath, pending.test_ids, nodeids=pending.nodeids
            )
            order = [r for r in order if r.test_id in impact.reasons]
            label = f"{label}, tests impacted since {changed_since} ({impact.describe()})"
        chosen = order
        if self.subset is not None:
            total = sum(r.expected_duration_s for r in order)
            budget_s = parse_budget(self.subset, total)
            chosen = list(
                select(
                    order,
                    budget_s=budget_s,
                    weights=failure_weights(cycles),
                    always=[r.test_id for r in order if r.test_id not in known],
                ).chosen
            )
        position = {r.test_id: r.position for r in chosen}
        kept = [item for item in items if test_of.get(item.nodeid) in position]
        dropped = [item for item in items if test_of.get(item.nodeid) not in position]
        kept.sort(key=lambda item: position[test_of[item.nodeid]])
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = kept
        subsetting = self.subset is not None or bool(changed_since)
        mode: Literal["subset", "order"] = "subset" if subsetting else "order"
        dropped_ids = [test_of.get(i.nodeid, i.nodeid) for i in dropped]
        self._emit(
            TestRunSelected(
                run_id=self.run_id,
                mode=mode,
                policy=label,
                budget=self.subset,
                collected=len(kept) + len(dropped),
                selected=len(kept),
                new=new,
                deselected_ids=tuple(dropped_ids[:_DESELECTED_KEPT]),
                deselected=len(dropped),
            )
        )
        what = "order" if mode == "order" else f"subset {self.subset or 'of impacted tests'}"
        self._selection_line = (
            f"aqe: {what}: {len(kept)} of {len(kept) + len(dropped)} tests run, ranked by "
            f"{label} ({new} new, always run); {len(dropped)} deselected"
        )

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """Show pytest a quarantined test's failure as an expected failure (xfail)."""
        report = yield
        if self._quarantined and report.failed and report.when in ("setup", "call"):
            with self._guard(f"quarantine of {item.nodeid}"):
                if self._test_id(item.nodeid) in self._quarantined:
                    setattr(report, "aqe_quarantined", True)  # noqa: B010 (not a TestReport field)
                    report.outcome = "skipped"
                    setattr(report, "wasxfail", QUARANTINE_REASON)  # noqa: B010
        return report

    def _record(self, nodeid: str, reports: Sequence[pytest.TestReport]) -> None:
        from aqe.events import TestCaseExecuted
        from aqe.ingest.identity import normalise_container, split_pytest_nodeid, test_identity
        from aqe.ingest.model import MAX_MESSAGE, MAX_OUTPUT, truncate

        outcome, why = _outcome(reports)
        held = self._test_id(nodeid) in self._quarantined
        number = self._attempts.get(nodeid, 0) + 1
        self._attempts[nodeid] = number
        if self._final.get(nodeid) in ("failed", "error"):
            self._failed_before.add(nodeid)
        self._final[nodeid] = outcome
        container, name = split_pytest_nodeid(nodeid)
        last = reports[-1]
        output = (last.capstdout or "") + (last.capstderr or "")
        start = getattr(reports[0], "start", None)
        self._results += 1
        self._emit(
            TestCaseExecuted(
                test_id=test_identity(container, name),
                run_id=self.run_id,
                outcome=outcome,
                duration_s=round(sum(r.duration for r in reports), 6),
                attempt=number,
                message=truncate(_message(why), MAX_MESSAGE),
                file=last.location[0] if last.location else None,
                commit=self.commit,
                suite=self.suite or None,
                name=name,
                classname=normalise_container(container) or None,
                output=truncate(output, MAX_OUTPUT) if output else None,
                started_at=(
                    datetime.fromtimestamp(start, UTC) if isinstance(start, int | float) else None
                ),
                nodeid=nodeid,
                quarantined=held,
            )
        )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Record the totals, wait (bounded) for the server, keep or drop the spool."""
        with self._guard("finishing"):
            for nodeid in list(self._pending):
                self._close(nodeid)
            self._emit(self._finished())
        with self._guard("publishing"):
            self._settle()

    def _finished(self) -> Event:
        from aqe.events import TestRunFinished

        outcomes = list(self._final.values())
        return TestRunFinished(
            run_id=self.run_id,
            total=len(outcomes),
            passed=outcomes.count("passed"),
            failed=outcomes.count("failed"),
            errors=outcomes.count("error"),
            skipped=outcomes.count("skipped"),
            flaky=sum(1 for n in self._failed_before if self._final[n] == "passed"),
            quarantined=sum(
                1
                for n, o in self._final.items()
                if o in ("failed", "error") and self._test_id(n) in self._quarantined
            ),
            duration_s=round(time.monotonic() - self._started, 6),
            finished_at=_now(),
        )

    def _settle(self) -> None:
        if self._selection_line:
            self._lines.append(self._selection_line)
        held = sorted(
            self._test_id(n)
            for n, o in self._final.items()
            if o in ("failed", "error") and self._test_id(n) in self._quarantined
        )
        if held:
            shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
            self._lines.append(
                f"aqe: {len(held)} quarantined test(s) failed without failing the session "
                f"(recorded as failed, shown as xfail): {shown}"
            )
        publisher = self._publisher
        if publisher is not None:
            publisher.finish(FINISH_TIMEOUT_S)
        spooled = self._spool is not None
        if self._spool is not None:
            self._spool.close()
        if publisher is not None and publisher.complete:
            if spooled:
                self.spool_path.unlink(missing_ok=True)
            self._lines.append(
                f"aqe: published run {self.run_id} ({self._results} results) "
                f"to {publisher.server or 'NATS'}"
            )
        else:
            reason = publisher.error if publisher is not None else self._config_problem
            reason = reason or "not connected"
            if spooled:
                self._lines.append(
                    f"aqe: could not publish to NATS ({reason}); results spooled to "
                    f"{self.spool_path}; load them later with: aqe ingest {self.spool_path}"
                )
            else:
                self._lines.append(
                    f"aqe: could not publish to NATS ({reason}) nor spool to "
                    f"{self.spool_path}; the results of run {self.run_id} are lost"
                )
        self._lines.extend(
            f"aqe: plugin error ({p}); the test results are unaffected" for p in self._problems
        )

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Print what happened to the results (one line, more only on plugin errors)."""
        with self._guard("reporting"):
            for line in self._lines:
                terminalreporter.write_line(line)
            self._reported = True

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """Without a terminal reporter the lines still reach stderr."""
        if not self._reported:
            for line in self._lines:
                sys.stderr.write(line + "\n")
            self._reported = True
