"""``knative-drain``: the engines without pytest (plan, load, provision, compare, upstream)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from .knative import catalog
from .knative.kubernetes import KubernetesChoice


def _release(
    parser: argparse.ArgumentParser,
    version: str,
    platform: str | None = None,
    *,
    builds: bool = False,
) -> catalog.Release:
    """The release ``version`` names; with ``builds`` (it is built here), a minor's newest
    patch the module proxy serves, said on stdout when it is not the newest patch."""
    try:
        release = catalog.resolve(version)
        if platform is not None:
            release.check_platform(platform)
    except catalog.CatalogError as exc:
        parser.error(f"--knative-version={version}: {exc}")
        raise  # unreachable: parser.error exits
    if builds:
        from .platforms.release_patch import buildable

        choice = buildable(release, version)
        if choice.substituted:
            print(f"--knative-version={version}: {choice.substituted}; running it")
        release = choice.release
    return release


def cmd_plan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .knative import kind_plan

    release = _release(parser, args.knative_version, "kind")
    try:
        steps = kind_plan.kind_steps(
            release,
            cluster_name=args.cluster_name,
            host_port=args.host_port,
            workers=args.workers,
            manifests_dir=args.knative_manifests_dir,
        )
    except kind_plan.KindPlanError as exc:
        parser.error(str(exc))
    print(kind_plan.format_plan(release, steps))
    return 0


def cmd_load(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import load
    from .run import verdict

    if not args.url.startswith("http://"):
        parser.error(f"URL {args.url!r}: only http:// URLs are accepted")
    for name in ("requests", "concurrency"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name}={value}: must be a whole number >= 1")
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout={args.timeout}: must be > 0 seconds")
    headers = {"Host": args.host} if args.host else None
    result = load.run_batch(
        args.url,
        args.requests,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        expect_body=args.expect_body,
        headers=headers,
    )
    summary = verdict.summarize(result.records, planned=result.planned)
    _print_summary(summary, result.records)
    if args.json:
        doc = {
            "url": args.url,
            "summary": summary.to_dict(),
            "failures": verdict.failure_table(result.records),
            "records": [verdict.record_verdict(r) for r in result.records],
        }
        Path(args.json).write_text(json.dumps(doc, indent=2))
        print(f"wrote {args.json}")
    return 0 if not verdict.check_slo(summary, args.min_strict_sli) else 1


def _print_summary(summary: object, records: list) -> None:
    from .run import verdict

    assert isinstance(summary, verdict.Summary)
    skew = f"{summary.start_skew_s * 1000:.1f} ms" if summary.start_skew_s is not None else "-"
    print(
        f"requests   {summary.total}/{summary.planned}   ok {summary.ok}   "
        f"failures {summary.failures}   start skew {skew}"
    )
    print(
        f"strict SLI {summary.strict_sli:.4f}   upstream-equivalent SLI {summary.upstream_sli:.4f}"
    )
    if summary.classes:
        print("classes    " + "  ".join(f"{c}={n}" for c, n in summary.classes.items()))
    for row in verdict.failure_table(records):
        print(
            f"  {row['count']:>5} x {row['class']:<14} {row['signature'] or '-':<12} "
            f"{row['detail']!r}\n          -> {row['hint']}"
        )
    for problem in verdict.check_slo(summary):
        print(f"FAIL: {problem}")


def cmd_provision(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.platform not in ("local", "kind"):
        parser.error(f"--platform={args.platform}: provision supports: local, kind")
    from .matrix.apps import APPS
    from .platforms.local import LocalPlatform

    release = _release(parser, args.knative_version, args.platform, builds=True)
    if args.platform == "kind":
        from .knative import kubernetes as kube_versions

        try:
            choice = kube_versions.resolve(release, args.kubernetes_version)
        except kube_versions.KubernetesVersionError as exc:
            parser.error(str(exc))
        return _provision_kind(release, choice)
    if args.kubernetes_version:
        parser.error(f"--kubernetes-version={args.kubernetes_version}: only with --platform=kind")
    unknown = [a for a in args.apps or [] if a not in APPS]
    if unknown:
        parser.error(f"--app {', '.join(unknown)}: accepted: {', '.join(APPS)}")
    from .builders.gomod import GoBuildError
    from .builders.rootfs import ImagesError
    from .host.docker_engine import DockerEngineError

    started = time.monotonic()
    try:
        platform = LocalPlatform.provision(
            release, apps=args.apps or list(APPS), run_id="provision", keep=True, progress=print
        )
    except (DockerEngineError, GoBuildError, ImagesError) as exc:
        print(f"knative-drain provision --platform=local: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(platform.describe(), indent=2))
    print(f"provisioned in {time.monotonic() - started:.1f} s")
    return 0


def _provision_kind(release: catalog.Release, choice: KubernetesChoice) -> int:
    """Build everything a kind cluster of ``release`` needs here (cached; no cluster made)."""
    from .builders.gomod import GoBuildError
    from .builders.rootfs import ImagesError
    from .builders.stack import build_kind_stack
    from .host.privileged_runtime import PrivilegedRuntimeError, ensure_privileged_runtime

    started = time.monotonic()
    try:
        runtime = ensure_privileged_runtime()
        print(f"Kubernetes {choice.version}, kind {choice.kind_version}: {choice.reason}")
        stack = build_kind_stack(
            release.version,
            kubernetes_version=choice.version,
            kind_version=choice.kind_version,
            kubernetes_reason=choice.reason,
        )
    except (GoBuildError, ImagesError, PrivilegedRuntimeError) as exc:
        print(f"knative-drain provision --platform=kind: {exc}", file=sys.stderr)
        return 1
    facts = stack.describe()
    if runtime:
        facts["privileged_runtime"] = runtime
    print(json.dumps({**facts, "kind": str(stack.kind), "load_images": stack.load_images,
                      "manifests_dir": str(stack.manifests_dir)}, indent=2))  # fmt: skip
    print(f"provisioned in {time.monotonic() - started:.1f} s")
    return 0


def cmd_cleanup(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Remove what kept or interrupted runs left: kind clusters, containers, namespaces."""
    from .platforms.cleanup import cleanup

    removed = cleanup(cluster_prefix=args.cluster_prefix, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for line in removed:
        print(f"{verb} {line}")
    print(f"{verb} {len(removed)} thing(s)")
    return 0


def cmd_push_apps(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Build the fixture apps and push them where an existing cluster pulls from."""
    from .builders import images
    from .matrix.apps import APPS

    unknown = [a for a in args.apps or [] if a not in APPS]
    if unknown:
        parser.error(f"--app {', '.join(unknown)}: accepted: {', '.join(APPS)}")
    try:
        refs = images.cluster_app_refs(args.registry, args.apps or list(APPS))
    except images.ImagesError as exc:
        parser.error(f"--registry={args.registry}: {exc}")
    started = time.monotonic()
    images.ensure_engine()
    client = images.docker_client()
    try:
        images.tag_fixture_apps(client, refs)
        images.push_images(client, list(refs.values()))
    except images.ImagesError as exc:
        print(f"knative-drain push-apps: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"pushed {len(refs)} fixture app images in {time.monotonic() - started:.1f} s; run:")
    print(f"  pytest conformance --platform=existing --app-registry={args.registry}")
    return 0


def cmd_verify(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """A certification bundle checked: exit 0 when whole, 1 with one line per problem."""
    from .evidence.verify import verify

    try:
        found = verify(args.bundle)
    except (OSError, EOFError, ValueError) as exc:  # a damaged .tar.gz, an unreadable dir
        print(f"knative-drain verify: {args.bundle}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    for line in found.notes:
        print(f"note: {line}")
    for line in found.problems:
        print(f"FAIL: {line}")
    if found.ok:
        print(f"verify: OK: {args.bundle} ({found.files} files, {found.cases} cases)")
    return 0 if found.ok else 1


def cmd_compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Two drain reports side by side; exit 1 on a regression, 2 on input it cannot read."""
    from .evidence import compare

    try:
        old = compare.load_report(args.old, "OLD")
        new = compare.load_report(args.new, "NEW")
        result = compare.compare(old, new, args.old, args.new)
    except compare.CompareError as exc:
        print(f"knative-drain compare: {exc}", file=sys.stderr)
        return 2
    text = compare.render_markdown(result)
    print(text, end="")
    if args.summary:
        try:
            with open(args.summary, "a", encoding="utf-8") as out:  # GITHUB_STEP_SUMMARY appends
                out.write(text)
        except OSError as exc:
            print(f"knative-drain compare: --summary {args.summary}: {exc}", file=sys.stderr)
            return 2
    return result.exit_code


def cmd_table(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Drain reports of many releases as one matrix table (markdown)."""
    from .evidence import release_table
    from .evidence.compare import CompareError

    try:
        runs = release_table.load_runs(args.reports, args.upstream or [])
    except CompareError as exc:
        print(f"knative-drain table: {exc}", file=sys.stderr)
        return 2
    text = release_table.render(runs)
    print(text, end="")
    if args.out:
        try:
            args.out.write_text(text)
        except OSError as exc:
            print(f"knative-drain table: --out {args.out}: {exc}", file=sys.stderr)
            return 2
    return 0


def cmd_upstream(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Knative's own drain tests, built from the release's module, on a kept kind cluster."""
    from .builders.gomod import GoBuildError
    from .builders.rootfs import ImagesError
    from .builders.upstream_tests import FAMILIES
    from .knative import kubernetes as kube_versions
    from .platforms.cluster.api import ClusterError
    from .run import upstream

    release = _release(parser, args.knative_version, "kind", builds=True)
    families = args.families or list(FAMILIES)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"--family {', '.join(unknown)}: accepted: {', '.join(FAMILIES)}")
    if not re.fullmatch(r"\d+[smh]", args.timeout):
        parser.error(f"--timeout={args.timeout}: a go duration such as 35m, 90s or 1h")
    try:
        record = upstream.run_on_kind(
            release.version,
            cluster_name=args.cluster_name,
            kubeconfig=args.kubeconfig,
            families=families,
            out_dir=args.out,
            kind_version=kube_versions.default_for(release).kind_version,
            timeout=args.timeout,
        )
    except (ClusterError, GoBuildError, ImagesError) as exc:
        print(f"knative-drain upstream: {exc}", file=sys.stderr)
        return 2
    print("\n".join(upstream.summary_lines(record)))
    print(f"wrote {args.out / f'upstream-{release.version}.json'} and its go test -v logs")
    if not record["passed"]:
        return 1
    return 0 if record["complete"] else 2  # a test that could not run is no pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="knative-drain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="print what the kind platform will do for a version")
    plan.add_argument("--knative-version", default="1.14")
    plan.add_argument("--cluster-name", default="knative-drain")
    plan.add_argument("--host-port", type=int, default=31080)
    plan.add_argument("--workers", type=int, default=0)
    plan.add_argument("--knative-manifests-dir", type=Path, default=None)
    plan.set_defaults(func=cmd_plan)

    load = sub.add_parser("load", help="send one batch of concurrent requests and judge it")
    load.add_argument("url")
    load.add_argument("--requests", type=int, required=True)
    load.add_argument(
        "--concurrency", type=int, default=None, help="requests in flight at once (default: all)"
    )
    load.add_argument(
        "--timeout", type=float, default=None, help="per-request timeout in seconds (default: none)"
    )
    load.add_argument("--host", default=None, help="Host header (Knative ingress routing)")
    load.add_argument(
        "--expect-body",
        default=None,
        help="substring every 200 body must contain (else: truncated)",
    )
    load.add_argument("--min-strict-sli", type=float, default=1.0)
    load.add_argument("--json", default=None, help="write summary and records to this path")
    load.set_defaults(func=cmd_load)

    prov = sub.add_parser("provision", help="build/start what a platform needs (idempotent)")
    prov.add_argument("--platform", default="local")
    prov.add_argument("--knative-version", default="1.14")
    prov.add_argument(
        "--kubernetes-version",
        default=None,
        help="--platform=kind: a minor (1.34) or patch (v1.34.12); default: the release's",
    )
    prov.add_argument(
        "--app",
        dest="apps",
        action="append",
        default=None,
        help="fixture app to build (repeatable; default: all)",
    )
    prov.set_defaults(func=cmd_provision)

    clean = sub.add_parser(
        "cleanup",
        help="remove kind clusters, containers and namespaces runs left behind (run it when "
        "no run is in progress: a live run's namespace carries the same label)",
    )
    clean.add_argument(
        "--cluster-prefix", default="knative-drain", help="kind clusters named so are removed"
    )
    clean.add_argument("--dry-run", action="store_true", help="only list what would go")
    clean.set_defaults(func=cmd_cleanup)

    push = sub.add_parser(
        "push-apps", help="build the fixture apps and push them for --platform=existing"
    )
    push.add_argument("--registry", required=True, help="e.g. registry.example.com:5000/team")
    push.add_argument(
        "--app", dest="apps", action="append", default=None, help="repeatable; default: all"
    )
    push.set_defaults(func=cmd_push_apps)

    comp = sub.add_parser(
        "compare",
        help="two drain reports side by side: exit 1 on a regression (markdown on stdout)",
    )
    comp.add_argument("old", help="the earlier run's drain report (--drain-report JSON)")
    comp.add_argument("new", help="the later run's drain report")
    comp.add_argument(
        "--summary",
        default=None,
        help="also append the markdown here (e.g. $GITHUB_STEP_SUMMARY)",
    )
    comp.set_defaults(func=cmd_compare)

    ver = sub.add_parser("verify", help="check a --drain-bundle: whole, unedited, a full run")
    ver.add_argument("bundle", type=Path, help="the --drain-bundle directory, or its .tar.gz")
    ver.set_defaults(func=cmd_verify)

    table = sub.add_parser("table", help="drain reports of many releases as one matrix table")
    table.add_argument("reports", nargs="+", help="drain-report.json files, one per run")
    table.add_argument(
        "--upstream", action="append", default=None, help="upstream-X.json records (repeatable)"
    )
    table.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    table.set_defaults(func=cmd_table)

    up = sub.add_parser(
        "upstream",
        help="run Knative's own drain tests (destroypod, websocket, ha) on a kept kind cluster",
    )
    up.add_argument("--knative-version", required=True, help="the release the cluster runs")
    up.add_argument("--cluster-name", default="knative-drain")
    up.add_argument("--kubeconfig", type=Path, default=None, help="default: kind's own")
    up.add_argument(
        "--family",
        dest="families",
        action="append",
        default=None,
        help="destroypod, websocket or ha (repeatable; default: all)",
    )
    up.add_argument("--out", type=Path, required=True, help="directory for the logs and record")
    up.add_argument("--timeout", default="35m", help="go test -timeout (upstream CI: 35m)")
    up.set_defaults(func=cmd_upstream)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. SIGTERM, SIGHUP and SIGINT unwind it as Ctrl-C does (the
    signal guard of a pytest run): builds cut short remove their temporary and staging
    directories and stop their ``go`` children; the exit code is 128 + the signal."""
    from .host.signals import Interrupted, SignalGuard

    parser = build_parser()
    args = parser.parse_args(argv)
    guard = SignalGuard.install()
    try:
        return args.func(args, parser)
    except Interrupted as exc:
        print(f"knative-drain {args.command}: {exc.signame} received: stopped, "
              f"its temporary files removed", file=sys.stderr)  # fmt: skip
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"knative-drain {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if guard is not None:
            guard.uninstall()


if __name__ == "__main__":
    sys.exit(main())
