"""The pod manager (the kubelet's role): Pod manifests in, CRI calls out.

It speaks only CRI to the runtime (through `podhost.cri.client`), so it drives podhost's own runtime and
containerd alike.
"""
