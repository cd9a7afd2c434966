"""Kubernetes from its Go modules: binaries, and the control-plane images kubeadm pulls.

``k8s.io/kubernetes`` points its staging modules (k8s.io/api, ...) at ``./staging``
paths, so it cannot be built as a dependency as is: a wrapper module requires it and
replaces each staging module with its published ``v0.Y.Z``. Where the module proxy
refuses one of those (seen here for v0.31.14 of k8s.io/kube-proxy, kube-scheduler,
kube-controller-manager and endpointslice), the nearest lower patch release it serves
is used; those modules hold only configuration types, and the substitution is recorded.

Binaries carry the version ldflags Kubernetes' own build sets (hack/lib/version.sh),
else kubeadm reads a placeholder version and asks for images that do not exist.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker

from ..host.docker_engine import state_dir
from . import gomod
from .rootfs import (
    LABEL_INPUTS,
    LABEL_KIND,
    ImageOutcome,
    ImagesError,
    cached_image,
    ensure_rootfs_image,
    inputs_hash,
    outcome,
)

Progress = Callable[[str], None]
RECIPE = 1
BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubelet",
    "kubeadm",
    "kubectl",
)
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
RUNTIME_BASE = "knative-drain/runtime-base:bookworm"
RUNTIME_PACKAGES = ("ca-certificates", "iptables", "conntrack", "ipset", "kmod", "curl", "iproute2")
_VERSION = re.compile(r"^v1\.(\d+)\.(\d+)$")


@dataclass(frozen=True)
class KubernetesVersions:
    """What kubeadm of one Kubernetes release expects (cmd/kubeadm/app/constants)."""

    kubernetes: str  # v1.31.14
    etcd: str  # 3.5.24-0 (image tag; the etcd release is the part before '-')
    coredns: str  # v1.11.3
    pause: str  # 3.10

    @property
    def etcd_release(self) -> str:
        return "v" + self.etcd.split("-")[0]

    def images(self) -> dict[str, str]:
        """component -> the registry.k8s.io reference kubeadm (and kind's containerd) use."""
        refs = {c: f"registry.k8s.io/{c}:{self.kubernetes}" for c in CONTROL_PLANE}
        refs["etcd"] = f"registry.k8s.io/etcd:{self.etcd}"
        refs["coredns"] = f"registry.k8s.io/coredns/coredns:{self.coredns}"
        refs["pause"] = f"registry.k8s.io/pause:{self.pause}"
        return refs


@dataclass
class KubernetesBuild:
    """Built binaries (directory) and the module substitutions it needed."""

    version: str
    bin_dir: Path
    substitutions: list[gomod.Substitution] = field(default_factory=list)
    seconds: float = 0.0
    cached: bool = False


def check_version(version: str) -> tuple[int, int]:
    match = _VERSION.match(version)
    if not match:
        raise ImagesError(f"Kubernetes version {version!r}: expected v1.MINOR.PATCH, e.g. v1.31.14")
    return int(match[1]), int(match[2])


def kubeadm_versions(version: str, source: Path) -> KubernetesVersions:
    """Read etcd, CoreDNS and pause versions from kubeadm's constants in the module source."""
    minor, _ = check_version(version)
    text = (source / "cmd/kubeadm/app/constants/constants.go").read_text()
    etcd = re.search(rf"\b{minor}:\s*\"([0-9.]+-[0-9]+)\"", text)
    coredns = re.search(r'CoreDNSVersion\s*=\s*"([^"]+)"', text)
    pause = re.search(r'PauseVersion\s*=\s*"([^"]+)"', text)
    if not (etcd and coredns and pause):
        raise ImagesError(f"kubeadm {version}: image versions not found in constants.go")
    return KubernetesVersions(version, etcd[1], coredns[1], pause[1])


def version_ldflags(version: str, commit: str = "0" * 40) -> str:
    """``-X`` flags for component-base and client-go version packages, as Kubernetes sets."""
    minor, _ = check_version(version)
    values = {
        "gitVersion": version,
        "gitMajor": "1",
        "gitMinor": str(minor),
        "gitTreeState": "clean",
        "gitCommit": commit,
        "buildDate": "1970-01-01T00:00:00Z",
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{k}={v}" for k, v in values.items()]
    return " ".join(flags)


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The k8s.io modules kubernetes' go.mod replaces with ./staging paths."""
    return sorted(set(re.findall(r"(k8s\.io/[a-z0-9-]+) => \./staging/src/", kubernetes_go_mod)))


def resolve_staging(
    version: str, modules: list[str], progress: Progress = print
) -> tuple[dict[str, str], list[gomod.Substitution]]:
    """module -> the version to use: the matching v0.Y.Z, else the nearest one served."""
    wanted = "v0." + version.removeprefix("v1.")
    proxy = gomod.proxy_url()
    chosen: dict[str, str] = {}
    subs: list[gomod.Substitution] = []
    for module in modules:
        used = gomod.nearest_resolvable(module, wanted, proxy)
        if used is None:
            raise ImagesError(f"{module}: no {wanted.rsplit('.', 1)[0]}.x the module proxy serves")
        chosen[module] = used
        if used != wanted:
            subs.append(gomod.Substitution(module, wanted, used))
            progress(f"module proxy refuses {module}@{wanted}: using {used}")
    return chosen, subs


def build_binaries(version: str, progress: Progress = print) -> KubernetesBuild:
    """All of :data:`BINARIES` for ``version`` in one ``go build`` (cached by version)."""
    started = time.monotonic()
    check_version(version)
    out = state_dir() / "bin" / f"kubernetes-{version}-r{RECIPE}"
    record = out / "substitutions.txt"
    if all((out / b).is_file() for b in BINARIES) and record.is_file():
        subs = [gomod.Substitution(*line.split()) for line in record.read_text().splitlines()]
        return KubernetesBuild(version, out, subs, time.monotonic() - started, cached=True)
    info = gomod.download("k8s.io/kubernetes", version)
    replacements, subs = resolve_staging(
        version, staging_modules(Path(info["GoMod"]).read_text()), progress
    )
    # a substituted version may lack a checksum-database entry here: skip the lookup for it
    env = gomod.go_env(GONOSUMDB=",".join(s.module for s in subs))
    progress(f"building Kubernetes {version} ({', '.join(BINARIES)}): 30-45 min cold on 2 cores")
    with gomod.staged(out) as staging:
        gomod.wrapper_build(
            {"k8s.io/kubernetes": version},
            {f"k8s.io/kubernetes/cmd/{b}": b for b in BINARIES},
            staging,
            replaces=replacements,
            ldflags=version_ldflags(version),
            env=env,
        )
        (staging / "substitutions.txt").write_text(
            "".join(f"{s.module} {s.wanted} {s.used}\n" for s in subs)
        )
    return KubernetesBuild(version, out, subs, time.monotonic() - started)


def ensure_runtime_base(client: docker.DockerClient, progress: Progress = print) -> ImageOutcome:
    """A small Debian for images that need a userland (kube-proxy: iptables, conntrack;
    the Envoy gateway: /bin/sh and curl for its preStop)."""
    return ensure_rootfs_image(
        client, RUNTIME_BASE, RUNTIME_PACKAGES, kind="runtime-base", recipe=1, progress=progress
    )


def binary_image(
    client: docker.DockerClient,
    tag: str,
    files: dict[str, Path],
    *,
    base: str,
    entrypoint: list[str] | None = None,
    user: str | None = None,
    env: dict[str, str] | None = None,
    kind: str,
) -> ImageOutcome:
    """An image of ``base`` plus ``files`` (path in image -> file here), cached by content."""
    import hashlib
    import io
    import tarfile

    started = time.monotonic()
    base_id = client.images.get(base).id if base != "scratch" else "scratch"
    digests = {dst: hashlib.sha256(src.read_bytes()).hexdigest() for dst, src in files.items()}
    digest = inputs_hash("binary-image", base_id, digests, entrypoint, user, env)
    image = cached_image(client, tag, digest)
    if image is not None:
        return outcome(image, tag, True, started)
    lines = [f"FROM {base}"]
    for i, dst in enumerate(files):
        lines.append(f"COPY f{i} {dst}")
    lines += [f"ENV {k}={v}" for k, v in (env or {}).items()]
    if user:
        lines.append(f"USER {user}")
    if entrypoint:
        import json

        lines.append(f"ENTRYPOINT {json.dumps(entrypoint)}")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i, src in enumerate(files.values()):
            info = tar.gettarinfo(str(src), arcname=f"f{i}")
            info.mode = 0o755
            info.uid = info.gid = 0
            with src.open("rb") as fh:
                tar.addfile(info, fh)
        data = "\n".join(lines).encode() + b"\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    labels = {LABEL_INPUTS: digest, LABEL_KIND: kind}
    try:
        image, _ = client.images.build(
            fileobj=buf, custom_context=True, tag=tag, labels=labels, rm=True, forcerm=True
        )
    except (docker.errors.BuildError, docker.errors.APIError) as exc:
        raise ImagesError(f"docker build of {tag}: {exc}") from None
    return outcome(image, tag, False, started)


# The pod sandbox: sleeps until SIGINT/SIGTERM, reaps children (it may be PID 1 of a pod
# sharing its PID namespace). Our own few lines, not Kubernetes' pause.c.
PAUSE_GO = """package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	children := make(chan os.Signal, 8)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			for {
				var status syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
"""


def build_support_binaries(versions: KubernetesVersions, progress: Progress = print) -> Path:
    """etcd, CoreDNS and pause for ``versions`` (cached): the directory holding them."""
    out = (
        state_dir()
        / "bin"
        / (f"support-etcd{versions.etcd_release}-coredns{versions.coredns}-r{RECIPE}")
    )
    if all((out / b).is_file() for b in ("etcd", "coredns", "pause")):
        return out
    with gomod.staged(out) as staging:
        progress(f"building etcd {versions.etcd_release} (about 3 min cold)")
        gomod.wrapper_build(
            {"go.etcd.io/etcd/server/v3": versions.etcd_release},
            {"go.etcd.io/etcd/server/v3": "etcd"},
            staging,
        )
        progress(f"building CoreDNS {versions.coredns} (about 10 min cold)")
        gomod.wrapper_build(
            {"github.com/coredns/coredns": versions.coredns},
            {"github.com/coredns/coredns": "coredns"},
            staging,
        )
        with tempfile.TemporaryDirectory(prefix="knative-drain-pause-") as tmp:
            src = Path(tmp)
            (src / "go.mod").write_text("module knativedrain.local/pause\n\ngo 1.22\n")
            (src / "main.go").write_text(PAUSE_GO)
            gomod.build({".": "pause"}, staging, cwd=src)
    return out


def ensure_control_plane_images(
    client: docker.DockerClient,
    build: KubernetesBuild,
    versions: KubernetesVersions,
    progress: Progress = print,
) -> dict[str, ImageOutcome]:
    """component -> image, tagged with the registry.k8s.io names kubeadm asks for.

    Static binaries; kube-proxy on the small Debian (it runs iptables and conntrack).
    kubeadm's static pods call ``kube-apiserver``/``etcd`` by name, kube-proxy's DaemonSet
    ``/usr/local/bin/kube-proxy``, CoreDNS's Deployment relies on ENTRYPOINT ``/coredns``.
    """
    base = ensure_runtime_base(client, progress).tag
    support = build_support_binaries(versions, progress)
    refs = versions.images()
    made: dict[str, ImageOutcome] = {}
    for component in CONTROL_PLANE:
        made[component] = binary_image(
            client,
            refs[component],
            {f"/usr/local/bin/{component}": build.bin_dir / component},
            base=base,
            kind="kubernetes",
        )
    made["etcd"] = binary_image(
        client,
        refs["etcd"],
        {"/usr/local/bin/etcd": support / "etcd"},
        base=base,
        kind="kubernetes",
    )
    made["coredns"] = binary_image(
        client,
        refs["coredns"],
        {"/coredns": support / "coredns"},
        base="scratch",
        entrypoint=["/coredns"],
        kind="kubernetes",
    )
    made["pause"] = binary_image(
        client,
        refs["pause"],
        {"/pause": support / "pause"},
        base="scratch",
        entrypoint=["/pause"],
        user="65535:65535",
        kind="kubernetes",
    )
    return made
