"""podhost: a Kubernetes pod runtime for one Linux machine.

Layering (arrows point down only; a layer never imports one above it):

    cli        kubectl-style and crictl-style commands
    kubelet    the pod manager: manifests -> CRI calls (speaks only CRI)
    cri        the CRI v1 gRPC servicers, streaming server and client
    runtime    plain Python services behind CRI: sandbox, container, image, network, state
    pause      the pause program that founds every pod sandbox

`errors` and `config` sit beside all layers: every layer raises `errors.PodhostError` subclasses, and one
place per edge (`cri.status`, `cli.main`) turns them into gRPC codes or CLI messages.
"""

__version__ = "0.1.0"
