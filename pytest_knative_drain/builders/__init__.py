"""Builders for every image the platforms run, made here when no registry answers.

Each module makes one thing from the package registries this machine reaches (Debian's
archive, the Go module proxy, PyPI) and caches it by a hash of its inputs:

- ``gomod``: Go modules fetched and built (the module proxy here is a filtering mirror).
- ``rootfs``: Debian root filesystems (debootstrap) imported as Docker images.
- ``kubernetes``: Kubernetes binaries and the control-plane images kubeadm expects.
- ``node_image``: a kind node image (systemd, containerd, kubelet, images preloaded).
- ``kind_cli``: the kind command.
- ``knative``: Knative Serving's images and manifests for one release.
- ``kourier``: Kourier's controller, an Envoy gateway and Kourier's manifest.
- ``images``: the local platform's images (base, queue-proxy, fixture apps), and the
  fixture apps tagged and pushed for a cluster.

Importable and usable without pytest; ``knative-drain provision`` runs them.
"""
