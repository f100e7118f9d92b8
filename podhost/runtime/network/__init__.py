"""The pod network layer: CNI plugins run for each pod sandbox, as containerd's CRI plugin runs them.

Layering, bottom up (each module imports only those above it in this list):
- `conflist`   which network config list a pod gets, and each plugin's stdin (pure);
- `plugin`     one plugin execution per the CNI execution protocol (env, stdin, result/error JSON);
- `result`     reading a CNI result (pure);
- `attachment` the on-disk record that makes every ADD end in a DEL, even across a daemon crash;
- `egress`     the node-only policy: an iptables FORWARD guard and ip_forward kept at 0;
- `cni`        `PodNetwork`, the service the sandbox layer calls: setup, teardown, check, status.

Namespaces are not created here: the sandbox layer founds and pins the netns and passes its path.
"""

from podhost.runtime.network.cni import PodNetwork

__all__ = ["PodNetwork"]
