"""Fixtures: the platform for the run, the app under test, and the scenario driver."""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from . import plugin
from .evidence.report import one_line
from .matrix.apps import APPS, FixtureApp
from .matrix.cases import Case
from .matrix.configs import CONFIGS, DEFAULT_CONFIG
from .matrix.scenarios import GRPC_KINDS, SCENARIOS, TRIGGERS
from .options import DEFAULT_INGRESS_PORT, DrainOptions
from .platforms.pod import InfrastructureError
from .run import scheduler
from .run.preflight import unserved_reason
from .run.progress import CaseProgress
from .run.runner import ScenarioResult, TriggerError, expectation_problem, run_scenario


@pytest.fixture(scope="session", autouse=True)
def _drain_testsuite_properties(request: pytest.FixtureRequest) -> None:
    """Keep pytest's xunit2-safe testsuite-property writer for the session's end."""
    try:
        record = request.getfixturevalue("record_testsuite_property")
    except pytest.FixtureLookupError:  # -p no:junitxml
        return
    request.config.stash[plugin.SUITE_PROPERTY_KEY] = record


@pytest.fixture(scope="session")
def drain_options(pytestconfig: pytest.Config) -> DrainOptions:
    """The resolved ``--knative-version``/``--platform``/... options of this run."""
    return pytestconfig.stash[plugin.OPTIONS_KEY]


def _infrastructure_errors() -> tuple[type[Exception], ...]:
    """What the platforms raise when Docker, kind or the cluster cannot do their part."""
    from .builders.images import ImagesError
    from .host.docker_engine import DockerEngineError
    from .platforms.cluster.api import ClusterError
    from .platforms.local import LocalPlatformError

    return (ClusterError, DockerEngineError, ImagesError, LocalPlatformError)


def _registry_images(options: DrainOptions) -> dict[str, str]:
    """Where the cluster pulls the fixture apps (``--app-registry``), if it can."""
    from .builders.images import cluster_app_refs

    return cluster_app_refs(options.app_registry, list(APPS)) if options.app_registry else {}


def _selected_params(session: pytest.Session) -> Iterator[dict[str, Any]]:
    """The parameters of every selected, not-skipped test (what the platform must serve)."""
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and not item.get_closest_marker("skip"):
            yield callspec.params


def _workers(session: pytest.Session) -> int:
    """kind worker nodes the selected cases need (node drain needs somewhere to go)."""
    cases = [p.get("drain_case") for p in _selected_params(session)]
    return max([0] + [c.scenario.workers for c in cases if isinstance(c, Case)])


def _batch_kinds(session: pytest.Session, profile: str) -> set[str]:
    """The kinds of load (http, stream, websocket) the selected cases send, as the preflight
    asks them."""
    kinds = {"http"}
    for params in _selected_params(session):
        case = params.get("drain_case")
        if isinstance(case, Case):
            kinds |= {b.kind for b in case.scenario.plan(profile).batches}
    # gRPC calls go to the app's gRPC form on an h2c port, another pod than the one the
    # preflight starts: only the HTTP contract is asked before the run (issue 20 goes on)
    return kinds - GRPC_KINDS


def _apps(session: pytest.Session) -> list[str]:
    """The fixture apps the selected cases run (kind loads only those into its nodes)."""
    needed: set[str] = set()
    for params in _selected_params(session):
        case = params.get("drain_case")
        app = case.app if isinstance(case, Case) else params.get("drain_app")
        if isinstance(app, str) and app in APPS:
            needed.add(app)
    return sorted(needed)


@pytest.fixture(scope="session")
def drain_platform(
    drain_options: DrainOptions, pytestconfig: pytest.Config, request: pytest.FixtureRequest
) -> Iterator[object]:
    """Bring up the platform once per session; tear it down unless kept."""
    infrastructure = _infrastructure_errors()

    report = pytestconfig.stash[plugin.REPORT_KEY]
    options = drain_options
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    platform: Any = None
    failure = ""
    try:
        if options.platform == "existing":
            from .platforms.existing import ExistingPlatform

            platform = ExistingPlatform.connect(
                options.kubeconfig,
                options.context,
                run_id=run_id,
                requested_version=options.knative_version_requested,
                allow_cluster_config=options.allow_cluster_config,
                keep=options.keep,
                ingress_url=options.ingress_url,
                ingress_port=options.ingress_port,
                app_images=_registry_images(options),
                progress=lambda msg: _say(pytestconfig, msg),
            )
            platform.check_ingress()
        elif options.platform == "kind":
            from .platforms.kind import KindPlatform

            platform = KindPlatform.create(
                options.release,
                run_id=run_id,
                app_image=options.app_image,
                apps=_apps(request.session) or None,
                manifests_dir=options.knative_manifests_dir,
                kubeconfig=options.kubeconfig,
                build=options.kind_build,
                kubernetes=options.kubernetes,
                keep=options.keep,
                host_port=options.ingress_port or DEFAULT_INGRESS_PORT,
                workers=max(_workers(request.session), options.kind_workers),
                progress=lambda msg: _say(pytestconfig, msg),
            )
        else:
            from .platforms.local import LocalPlatform

            platform = LocalPlatform.provision(
                options.release,
                apps=[] if options.app_image else list(APPS),
                run_id=run_id,
                keep=options.keep,
                progress=lambda msg: _say(pytestconfig, msg),
            )
    except infrastructure as exc:  # what is missing (Docker, kind, cluster), no traceback
        failure = f"--platform={options.platform}: {exc}"
    if failure:  # outside the except block: no "During handling..." chain in the output
        pytest.fail(failure, pytrace=False)
    try:  # from here on: a signal (host/signals.py) landing anywhere still closes the platform
        _say(
            pytestconfig, f"{options.platform} platform ready in {time.monotonic() - started:.1f} s"
        )
        report.environment.update(platform.describe())
        yield platform
    finally:
        _session_end(pytestconfig, f"closing the {options.platform} platform", platform.close)


@pytest.fixture(scope="session")
def _drain_preflight(
    drain_platform: object, drain_options: DrainOptions, request: pytest.FixtureRequest
) -> None:
    """Once, before the first case: every app the selected cases run serves the fixture
    contract on the platform, else the session ends here in one line.

    ``pytest.exit``, not a failed fixture: a session fixture's failure is repeated as an
    error on every case; this is said once, the session fixtures still tear down (nothing
    left behind) and the evidence writers still run. Exit code 4 (usage error) when it is
    ``--app-image``'s fault, as for its other checks; 1 when the platform's (queue-proxy,
    Docker, the cluster, its ingress) or a fixture app's. The streaming and websocket
    endpoints are asked too when a selected case uses them: an --app-image that does not
    serve one has its scenarios skipped (unless --app-strict).
    """
    from .run.preflight import check_cluster, check_local, done_line, session_line

    config = request.config
    custom = drain_options.app_image is not None
    apps = ["custom"] if custom else _apps(request.session)
    kinds = _batch_kinds(request.session, drain_options.profile)
    # an app team's image is judged on what it serves; --app-strict and fixture apps: all
    optional = frozenset(kinds - {"http"} if custom and not drain_options.app_strict else ())
    check = check_local if drain_options.platform == "local" else check_cluster
    started = time.monotonic()
    image = drain_options.app_image if custom else None
    pool = concurrent.futures.ThreadPoolExecutor(len(apps) or 1, "drain-preflight")
    try:
        found = list(
            pool.map(lambda app: check(drain_platform, app, image, kinds, optional=optional), apps)
        )
    finally:  # a signal does not wait for the checks: the platform's close removes their pods
        pool.shutdown(wait=False, cancel_futures=True)
    for problem in [c.problem for c in found if c.problem is not None][:1]:  # app order
        line = session_line(problem, custom, drain_options.platform, drain_options.app_strict)
        config.stash[plugin.REPORT_KEY].environment["preflight"] = f"failed: {line}"
        usage = custom and problem.culprit == "app"
        pytest.exit(line, returncode=pytest.ExitCode.USAGE_ERROR if usage else 1)
    unserved = {k: d for checked in found for k, d in checked.unsupported.items()}
    config.stash[plugin.UNSERVED_KEY] = unserved
    through = "queue-proxy" if drain_options.platform == "local" else "the ingress"
    done = done_line(apps, kinds, unserved, through, time.monotonic() - started)
    config.stash[plugin.REPORT_KEY].environment["preflight"] = done
    _say(config, f"contract preflight: {done}")


def _session_end(config: pytest.Config, what: str, step: Callable[[], object]) -> None:
    """A session fixture's teardown step. Its error is the run's own: one line, an
    ``infrastructure_errors`` entry (verdict ``incomplete``) and exit 1, never the last
    test's teardown error, which pytest reports under that test's outcome (XFAIL hides it).
    """
    try:
        step()
    except Exception as exc:  # a signal's KeyboardInterrupt still unwinds (host/signals.py)
        message = f"{what} failed at the session's end: {one_line(exc)}"
        config.stash[plugin.SESSION_END_ERRORS_KEY].append(message)
        config.stash[plugin.REPORT_KEY].add_error("session end", message)
        _say(config, message)


def _say(config: pytest.Config, message: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"[knative-drain] {message}")


def _scheduled_cases(session: pytest.Session, options: DrainOptions) -> list[tuple[str, Case]]:
    """(test id, case) of every selected test that runs a matrix cell with ``drain``."""
    out = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        case = callspec.params.get("drain_case") if callspec is not None else None
        if (
            isinstance(case, Case)
            and "drain" in getattr(item, "fixturenames", ())
            and not item.get_closest_marker("skip")
            and options.platform in case.platforms
            and unserved_reason(session.config.stash.get(plugin.UNSERVED_KEY, {}), case) is None
        ):
            out.append((item.nodeid, case))
    return out


def _abort(platform: object, options: DrainOptions) -> Callable[[], None] | None:
    """How to end running cases at once: local removes the run's containers (each case's
    load and wait then end on the missing pod, its ``with`` blocks clean up the rest). A
    cluster case is left to finish: its own ``with`` blocks restore what it changed."""
    if options.platform != "local" or options.keep:
        return None
    from .platforms.local import sweep

    return lambda: sweep(platform.client, platform.run_id)  # type: ignore[attr-defined]


def _check_capacity(
    platform: Any, cases: list[Case], workers: int, environment: dict[str, Any], config: Any
) -> None:
    """Put the cluster's free CPU (in revision pods) in the report; say when ``workers``
    cases at once cannot all be scheduled (their pods would wait Pending)."""
    from .platforms.cluster.capacity import too_many

    try:
        capacity = platform.capacity()
    except _infrastructure_errors() as exc:
        _say(config, f"cluster capacity not read: {exc}")
        return
    peak = max([2 * c.scenario.scale for c in cases] or [2])  # old and new pods at a delete
    figures, warning = too_many(capacity, peak, workers)
    environment["cluster_capacity"] = figures
    if warning:
        _say(config, warning)


@pytest.fixture(scope="session")
def _drain_scheduler(
    drain_platform: object,
    _drain_preflight: None,
    drain_options: DrainOptions,
    request: pytest.FixtureRequest,
) -> Iterator[scheduler.CaseScheduler | None]:
    """Every selected case starts now on the case pool (``--drain-concurrency``); each test
    then reports its own case. None when cases run one after another (1, or one case)."""
    config = request.config
    options = drain_options
    selected = _scheduled_cases(request.session, options)
    workers = scheduler.concurrency(
        options.drain_concurrency,
        options.platform,
        len(selected),
        scheduler.cluster_concurrency(options.platform, options.kind_workers),
    )
    how = "auto" if options.drain_concurrency is None else "--drain-concurrency"
    environment = config.stash[plugin.REPORT_KEY].environment
    environment["drain_concurrency"] = f"{workers} ({how})"
    config.stash[plugin.PROGRESS_KEY] = CaseProgress(len(selected))
    if options.platform != "local" and workers > 1:
        _check_capacity(drain_platform, [c for _, c in selected], workers, environment, config)
    if workers <= 1:
        yield None
        return

    def execute(case: Case) -> ScenarioResult:  # on a pool thread
        drain = Drain(drain_platform, app_for(case.app, options), options, config)
        return drain._execute(case, pool.stopping, pool.pod_starts)

    pool = scheduler.CaseScheduler(workers, execute)
    alone = sum(1 for _, case in selected if scheduler.exclusive(case))
    _say(
        config,
        f"running {len(selected)} case(s), up to {workers} at once"
        + (f"; {alone} that change what other cases see run alone" if alone else ""),
    )

    def first(pair: tuple[str, Case]) -> tuple[bool, float]:  # alone ones, then the longest
        case = pair[1]
        return (not scheduler.exclusive(case), -scheduler.estimated_s(case, options.profile))

    order = sorted(selected, key=first)
    try:
        for nodeid, case in order:
            pool.submit(_key(nodeid, case), case)
        yield pool
    finally:
        wait_s = 600.0 if options.platform == "existing" else 60.0
        _session_end(
            config,
            "stopping the case pool",
            lambda: pool.stop(_abort(drain_platform, options), wait_s, lambda m: _say(config, m)),
        )


def _key(nodeid: str, case: Case) -> str:
    return f"{nodeid}::{case.id}"


def app_for(name: str, options: DrainOptions) -> AppUnderTest:
    if name == "custom":
        return AppUnderTest("custom", options.app_image, None)
    return AppUnderTest(name, None, APPS[name])


@dataclass(frozen=True)
class AppUnderTest:
    name: str
    image: str | None  # None: the fixture app's image from the platform
    spec: FixtureApp | None  # None for the user's own image: it must pass


@pytest.fixture
def drain_case(request: pytest.FixtureRequest) -> Case:
    """One cell of a family's matrix (parametrized by the plugin; see ``drain_family``)."""
    if not hasattr(request, "param"):
        raise pytest.UsageError("drain_case needs @pytest.mark.drain_family(name) on the test")
    return request.param


@pytest.fixture
def drain_app(request: pytest.FixtureRequest, drain_options: DrainOptions) -> AppUnderTest:
    """One app under test (parametrized over the fixture apps, or the ``drain_case``'s)."""
    if "drain_case" in request.fixturenames:
        name = request.getfixturevalue("drain_case").app
    else:
        name = request.param
    return app_for(name, drain_options)


class Drain:
    """Runs a scenario for the current app on the session's platform and records it."""

    def __init__(
        self,
        platform: object,
        app: AppUnderTest,
        options: DrainOptions,
        config: pytest.Config,
        pool: scheduler.CaseScheduler | None = None,
        nodeid: str = "",
    ) -> None:
        self.platform = platform
        self.app = app
        self.options = options
        self.config = config
        self.pool = pool  # cases started for the session; None: run inline
        self.nodeid = nodeid

    def run(self, case: Case | str) -> ScenarioResult:
        """Run a matrix cell (or a scenario name, under the default config) for this app.

        Skips when ``--platform=existing`` may not change what the case needs; fails
        without a traceback when the platform cannot do what the case needs.
        """
        from .platforms.existing import ClusterConfigRefused

        if isinstance(case, str):
            case = Case(SCENARIOS[case], CONFIGS[DEFAULT_CONFIG], self.app.name)
        if self.options.platform not in case.platforms:
            plugin.suite_skip(self.config, self.nodeid)
            pytest.skip(f"{case.id} cannot run on --platform={self.options.platform}")
        unserved = unserved_reason(self.config.stash.get(plugin.UNSERVED_KEY, {}), case)
        if unserved:
            plugin.suite_skip(self.config, self.nodeid)
            pytest.skip(unserved)
        skip = failure = ""
        try:
            result = self._result(case)
        except ClusterConfigRefused as exc:
            skip = str(exc)
        except (InfrastructureError, *_infrastructure_errors()) as exc:
            # the platform failed under the case: no verdict, said as such, in the report too
            failure = f"infrastructure: {case.id}: {exc}"
            self.config.stash[plugin.REPORT_KEY].add_error(case.id, failure)
        except TriggerError as exc:
            failure = f"{case.id}: {exc}"
        if skip:  # outside the except blocks: no exception chain in the output
            plugin.suite_skip(self.config, self.nodeid)
            pytest.skip(skip)
        if failure:
            pytest.fail(failure, pytrace=False)
        self.config.stash[plugin.REPORT_KEY].add(result)
        return result

    def _result(self, case: Case) -> ScenarioResult:
        """This test's case from the pool (started with the session's others), else run
        here: a case not submitted (a scenario name, a second run), under the pool's lock."""
        try:
            if self.pool is None:
                return self._execute(case)
            future = self.pool.take(_key(self.nodeid, case))
            if future is not None and case.app == self.app.name:
                while not concurrent.futures.wait([future], timeout=2.0).done:
                    plugin.say_progress(self.config)  # cases the pool finished meanwhile
                return scheduler.result_of(future)
            with self.pool.lock.for_case(case):
                return self._execute(case, self.pool.stopping, self.pool.pod_starts)
        finally:
            plugin.say_progress(self.config)

    def _execute(
        self,
        case: Case,
        stopping: threading.Event | None = None,
        pod_starts: threading.Semaphore | None = None,
    ) -> ScenarioResult:
        """:meth:`_run_case`, with a progress line when it ends (run/progress.py)."""
        progress = self.config.stash.get(plugin.PROGRESS_KEY, None)
        if progress is None:
            return self._run_case(case, stopping, pod_starts)
        progress.started(case.id)
        outcome = "error"
        try:
            result = self._run_case(case, stopping, pod_starts)
            met = "met" if result.expectation_met else "NOT MET"
            outcome = f"{met} (strict SLI {result.summary.strict_sli:.3f})"
            return result
        except scheduler.Stopped:
            outcome = "stopped"
            raise
        finally:
            progress.finished(case.id, outcome)

    def _run_case(
        self,
        case: Case,
        stopping: threading.Event | None = None,
        pod_starts: threading.Semaphore | None = None,
    ) -> ScenarioResult:
        """Configure, start the pod (``pod_starts``: a slot of the pods starting at once),
        load it, trigger, wait, judge."""
        scenario, config = case.scenario, case.config
        plan = scenario.plan(self.options.profile)
        timeout = config.timeout_seconds(plan)
        tbc = config.target_burst_capacity
        if stopping is not None and stopping.is_set():
            raise scheduler.Stopped("the run is stopping")
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.platform.configure(config, scenario))
            with pod_starts or contextlib.nullcontext():
                if stopping is not None and stopping.is_set():
                    raise scheduler.Stopped("the run is stopping")
                pod = stack.enter_context(
                    self.platform.pod(
                        self.app.name,
                        self.app.image,
                        timeout,
                        scale=scenario.scale if config.scale is None else config.scale,
                        max_scale=scenario.max_scale,
                        target_burst_capacity=scenario.target_burst_capacity
                        if tbc is None
                        else tbc,
                        annotations=scenario.annotations,
                        response_start_timeout_seconds=config.response_start_timeout_s,
                        idle_timeout_seconds=config.idle_timeout_s,
                        protocol=scenario.protocol,
                        container_concurrency=scenario.container_concurrency,
                        liveness_probe=scenario.liveness_probe,
                    )
                )
            result = run_scenario(
                pod,
                scenario=scenario.name,
                app=self.app.name,
                profile=self.options.profile,
                plan=plan,
                expected=case.expected,
                trigger=TRIGGERS[scenario.trigger],
                config=config.name,
                timeout_seconds=timeout if timeout != plan.timeout_seconds else None,
            )
            if not result.expectation_met:
                pod.collect_logs()
                result.logs = dict(pod.logs)
        return result

    def check(self, result: ScenarioResult) -> None:
        """Fail the test unless the outcome matches the app's expectation."""
        problem = expectation_problem(result)
        if problem:
            raise plugin.ExpectationNotMet(problem, pytrace=False)


@pytest.fixture
def drain(
    drain_platform: object,
    _drain_preflight: None,
    drain_app: AppUnderTest,
    drain_options: DrainOptions,
    pytestconfig: pytest.Config,
    _drain_scheduler: scheduler.CaseScheduler | None,
    request: pytest.FixtureRequest,
) -> Drain:
    """Scenario driver: ``result = drain.run(drain_case); drain.check(result)``."""
    return Drain(
        drain_platform,
        drain_app,
        drain_options,
        pytestconfig,
        _drain_scheduler,
        request.node.nodeid,
    )
