"""A kind node image made here: Debian + systemd + containerd + kubelet, images preloaded.

What kind needs of a node image (read in kubernetes-sigs/kind v0.24.0, images/base and
pkg/build/nodeimage): systemd as PID 1 behind kind's entrypoint, containerd with kind's
configuration, runc, CNI plugins in /opt/cni/bin, crictl, kubelet/kubeadm/kubectl in
/usr/bin, ``/kind/version``, and every image kubeadm asks for already in containerd's
``k8s.io`` namespace under its registry.k8s.io name (nothing can be pulled here).

kind's own files for the base (entrypoint, containerd config, kubelet units) come from the
kind Go module at build time, the same version as the kind command that runs the node;
none of them is stored in this repository. Debian packages replace kind's source builds
of containerd, runc and the CNI plugins. Two changes to kind's files, both needed on a
host whose capability bounding set lacks CAP_SYS_RESOURCE and harmless elsewhere:
containerd's ``restrict_oom_score_adj = true`` and no ``OOMScoreAdjust`` for containerd.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
from tenacity import RetryError, retry, retry_if_exception_type, stop_after_delay, wait_fixed

from . import gomod
from .kubernetes import KubernetesBuild, KubernetesVersions
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
NODE_BASE = "knative-drain/kind-node-base:bookworm"
NODE_REPO = "knative-drain/kind-node"
NODE_PACKAGES = (
    "systemd",
    "dbus",
    "conntrack",
    "iptables",
    "nftables",
    "iproute2",
    "ethtool",
    "util-linux",
    "mount",
    "kmod",
    "libseccomp2",
    "pigz",
    "bash",
    "ca-certificates",
    "curl",
    "jq",
    "procps",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "socat",
)
CNI_PLUGINS = ("host-local", "loopback", "ptp", "portmap", "bridge")
CRI_TOOLS = ("sigs.k8s.io/cri-tools", "v1.30.0")  # the newest the module proxy serves here
# What ``docker import``/``docker commit`` can set; STOPSIGNAL needs a build step.
NODE_CHANGES = (
    "ENV container=docker",
    'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]',
)
STOP_SIGNAL = "SIGRTMIN+3"  # systemd's clean shutdown, as kind's node image


def kind_base_files(kind_version: str) -> Path:
    """``images/base/files`` of the kind module at ``kind_version`` (module cache)."""
    info = gomod.download("sigs.k8s.io/kind", kind_version)
    files = Path(info["Dir"]) / "images" / "base" / "files"
    if not files.is_dir():
        raise ImagesError(f"sigs.k8s.io/kind@{kind_version} has no images/base/files")
    return files


def build_crictl(progress: Progress = print) -> Path:
    """crictl from cri-tools' own module (vendored), cached."""
    from ..host.docker_engine import state_dir

    module, version = CRI_TOOLS
    out = state_dir() / "bin" / f"crictl-{version}"
    if out.is_file():
        return out
    progress(f"building crictl {version}")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="knative-drain-crictl-") as tmp:
        src = gomod.writable_copy(Path(gomod.download(module, version)["Dir"]), Path(tmp) / "s")
        go_module = (src / "go.mod").read_text().split()[1]  # github.com/kubernetes-sigs/...
        shutil.rmtree(src / "vendor", ignore_errors=True)  # the zip's vendor/ is incomplete
        env = gomod.go_env()
        flags = f"-s -w -X {go_module}/pkg/version.Version={version.lstrip('v')}"
        gomod.build({"./cmd/crictl": out.name}, out.parent, cwd=src, ldflags=flags, env=env)
    return out


def _install_kind_files(root: Path, files: Path) -> None:
    """Copy kind's base files as its Dockerfile does: scripts 0755, the rest 0644."""
    for src in files.rglob("*"):
        if src.is_dir() or src.parts[len(files.parts)] == "LICENSES":
            continue
        dst = root / src.relative_to(files)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        executable = "bin" in src.relative_to(files).parts
        dst.chmod(0o755 if executable else 0o644)


def _enable(root: Path, unit: str, target: str = "multi-user.target") -> None:
    wants = root / "etc/systemd/system" / f"{target}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit
    link.unlink(missing_ok=True)
    link.symlink_to(f"/etc/systemd/system/{unit}")


def customize_node(root: Path, kind_files: Path, crictl: Path) -> None:
    """Turn a Debian root filesystem into kind's node base (no Kubernetes yet)."""
    _install_kind_files(root, kind_files)
    # as kind's base Dockerfile: no services but ours, no kmsg in the journal, init
    for pattern in (
        "lib/systemd/system/multi-user.target.wants/*",
        "etc/systemd/system/*.wants/*",
        "lib/systemd/system/local-fs.target.wants/*",
        "lib/systemd/system/sockets.target.wants/*udev*",
        "lib/systemd/system/sockets.target.wants/*initctl*",
        "lib/systemd/system/basic.target.wants/*",
        "lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service",
    ):
        for path in root.glob(pattern):
            path.unlink()
    with (root / "etc/systemd/journald.conf").open("a") as conf:
        conf.write("ReadKMsg=no\n")
    init = root / "sbin/init"
    init.unlink(missing_ok=True)
    init.symlink_to("/lib/systemd/systemd")
    for unit in ("kubelet.service", "containerd.service", "undo-mount-hacks.service"):
        _enable(root, unit)
    (root / "etc/systemd/system/systemd-binfmt.service").symlink_to("/dev/null")
    (root / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)
    # Debian's containerd and plugins where kind's units and config expect kind's builds
    (root / "usr/local/bin/containerd").symlink_to("/usr/bin/containerd")
    cni = root / "opt/cni/bin"
    cni.mkdir(parents=True, exist_ok=True)
    for plugin in CNI_PLUGINS:
        shutil.copy2(root / "usr/lib/cni" / plugin, cni / plugin)
    shutil.copy2(crictl, root / "usr/local/bin/crictl")
    config = root / "etc/containerd/config.toml"
    config.write_text(
        config.read_text().replace(
            "restrict_oom_score_adj = false", "restrict_oom_score_adj = true"
        )
    )
    unit = root / "etc/systemd/system/containerd.service"
    unit.write_text(
        "\n".join(
            line for line in unit.read_text().splitlines() if not line.startswith("OOMScoreAdjust")
        )
        + "\n"
    )
    spec = json.loads(
        subprocess.run(
            ["chroot", str(root), "ctr", "oci", "spec"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    spec.setdefault("hooks", {}).setdefault("createContainer", []).append(
        {"path": "/kind/bin/mount-product-files.sh"}
    )
    spec["process"].pop("rlimits", None)
    (root / "etc/containerd/cri-base.json").write_text(json.dumps(spec, indent=2))


def ensure_node_base(
    client: docker.DockerClient, kind_version: str, progress: Progress = print
) -> ImageOutcome:
    """The node's operating system: Debian with systemd, containerd, runc, CNI, crictl."""
    files = kind_base_files(kind_version)
    crictl = build_crictl(progress)
    return ensure_rootfs_image(
        client,
        f"{NODE_BASE}-kind-{kind_version}",  # one per kind release: each has its own files
        NODE_PACKAGES,
        kind="kind-node-base",
        recipe=[RECIPE, kind_version, CRI_TOOLS],
        changes=NODE_CHANGES,
        customize=lambda root: customize_node(root, files, crictl),
        progress=progress,
    )


def _docker(*args: str, stdin: Any = None, timeout: float = 600) -> str:
    try:
        done = subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=stdin,
        )
    except subprocess.TimeoutExpired:
        raise ImagesError(
            f"docker {' '.join(args[:3])}: no answer within {timeout:.0f} s"
        ) from None
    if done.returncode != 0:
        raise ImagesError(f"docker {' '.join(args[:3])} failed: {done.stderr.strip()[-800:]}")
    return done.stdout


def ensure_node_image(
    client: docker.DockerClient,
    *,
    kind_version: str,
    build: KubernetesBuild,
    versions: KubernetesVersions,
    images: dict[str, str],
    progress: Progress = print,
) -> ImageOutcome:
    """``knative-drain/kind-node:<k8s version>``: node base + Kubernetes + ``images``
    (name -> reference, all local) imported into containerd, as kind's node image build."""
    started = time.monotonic()
    base = ensure_node_base(client, kind_version, progress)
    images = with_sandbox_pause(client, images, kind_base_files(kind_version))
    refs = sorted(set(images.values()))
    image_ids = {ref: client.images.get(ref).id for ref in refs}
    binaries = {
        b: (build.bin_dir / b).stat().st_mtime_ns for b in ("kubelet", "kubeadm", "kubectl")
    }
    digest = inputs_hash("kind-node", RECIPE, base.image_id, image_ids, binaries)
    tag = f"{NODE_REPO}:{versions.kubernetes}"
    cached = cached_image(client, tag, digest)
    if cached is not None:
        return outcome(cached, tag, True, started)
    name = f"knative-drain-nodebuild-{uuid.uuid4().hex[:8]}"
    progress(f"{tag}: Kubernetes {versions.kubernetes} into the node, {len(refs)} images preloaded")
    _docker(
        "run",
        "-d",
        "--name",
        name,
        "--privileged",
        "--entrypoint",
        "sleep",
        # knative-drain cleanup finds a build container a killed run left behind
        "--label",
        "knative-drain.run=node-image-build",
        base.tag,
        "infinity",
    )
    try:
        for binary in ("kubelet", "kubeadm", "kubectl"):
            _docker("cp", str(build.bin_dir / binary), f"{name}:/usr/bin/{binary}")
        _docker(
            "exec",
            name,
            "sh",
            "-c",
            f"mkdir -p /kind && echo {versions.kubernetes} "
            "> /kind/version && (containerd >/var/log/containerd-build.log 2>&1 &)",
        )
        _wait_containerd(name)
        with subprocess.Popen(["docker", "save", *refs], stdout=subprocess.PIPE) as save:
            _docker(
                "exec",
                "-i",
                name,
                "ctr",
                "-n",
                "k8s.io",
                "images",
                "import",
                "--all-platforms",
                "--no-unpack",
                "--digests",
                "-",
                stdin=save.stdout,
                timeout=1800,
            )
            if save.wait() != 0:
                raise ImagesError(f"docker save {' '.join(refs)} failed ({save.returncode})")
        listed = _docker("exec", name, "ctr", "-n", "k8s.io", "images", "ls", "-q")
        missing = [r for r in refs if _containerd_name(r) not in listed.split()]
        if missing:
            raise ImagesError(f"images not in the node's containerd after import: {missing}")
        for ref in refs:
            _docker(
                "exec",
                name,
                "ctr",
                "-n",
                "k8s.io",
                "images",
                "label",
                _containerd_name(ref),
                "io.cri-containerd.pinned=pinned",
            )
        _docker(
            "exec",
            name,
            "sh",
            "-c",
            "pkill containerd; sleep 1; rm -f /var/log/containerd-build.log",
        )
        args = ["commit"]
        for change in (*NODE_CHANGES, "CMD []"):
            args += ["--change", change]
        _docker(*args, name, f"{tag}-commit", timeout=1800)
    finally:
        with contextlib.suppress(ImagesError):
            _docker("rm", "-f", name)
    labels = {
        LABEL_INPUTS: digest,
        LABEL_KIND: "kind-node",
        "knative-drain.kubernetes-version": versions.kubernetes,
    }
    dockerfile = f"FROM {tag}-commit\nSTOPSIGNAL {STOP_SIGNAL}\n"
    import io

    try:
        image, _ = client.images.build(
            fileobj=io.BytesIO(dockerfile.encode()), tag=tag, labels=labels, rm=True
        )
    except (docker.errors.BuildError, docker.errors.APIError) as exc:
        raise ImagesError(f"docker build of {tag}: {exc}") from None
    finally:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(f"{tag}-commit")
    return outcome(image, tag, False, started)


def sandbox_image(containerd_config: str) -> str | None:
    """The ``sandbox_image`` a kind base's containerd config pins, if any."""
    match = re.search(r'^\s*sandbox_image\s*=\s*"([^"\n]+)"', containerd_config, re.MULTILINE)
    return match[1] if match else None


def with_sandbox_pause(
    client: docker.DockerClient, images: dict[str, str], kind_files: Path
) -> dict[str, str]:
    """``images`` with the pause image under the reference containerd runs pods with.

    kind's node image build does the same (pkg/build/nodeimage/buildcontext.go: "replace
    pause image with our own"): kubeadm's pause entry gives way to the containerd config's
    ``sandbox_image``. They differ from kind v0.30 with Kubernetes 1.34 (kubeadm wants
    pause:3.10.1, kind's config pins pause:3.10); preloading kubeadm's left every static
    pod's sandbox waiting on a pull that cannot happen here, and ``kind create`` failed
    (measured 2026-12-04: "unable to create ClusterRoleBinding ... rate limiter").
    """
    pinned = sandbox_image((kind_files / "etc/containerd/config.toml").read_text())
    if pinned is None or "pause" not in images or images["pause"] == pinned:
        return images
    client.images.get(images["pause"]).tag(pinned)
    return {**images, "pause": pinned}


def _containerd_name(ref: str) -> str:
    """containerd's fully qualified name of a Docker reference (docker.io/library/...)."""
    first = ref.split("/", 1)[0]
    if "/" not in ref:
        return f"docker.io/library/{ref}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{ref}"
    return ref


def _wait_containerd(name: str, timeout_s: float = 60) -> None:
    @retry(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(0.5),
        retry=retry_if_exception_type(ImagesError),
    )
    def answers() -> None:
        _docker("exec", name, "ctr", "version", timeout=10)

    try:
        answers()
    except RetryError:
        log = subprocess.run(
            ["docker", "exec", name, "cat", "/var/log/containerd-build.log"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        raise ImagesError(
            f"containerd in the node build container did not start:\n{log[-1500:]}"
        ) from None
