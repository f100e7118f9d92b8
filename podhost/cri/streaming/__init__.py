"""CRI streaming: the server behind Exec/Attach/PortForward URLs, and the client that uses such URLs.

Layers, bottom up (each imports only those below it):

    tokens          one-time tokens with expiry for waiting requests (no I/O)
    spdy            SPDY/3.1 frames (pure) and a threaded session over a socket
    websocket       Kubernetes channel WebSockets over the `websockets` sans-I/O protocol
    requests        the request kinds and the `StreamRuntime` surface the server drives
    remotecommand   exec/attach sessions: streams, resize, exit status, over either transport
    portforward     port-forward sessions over either transport
    server          the HTTP endpoint: routes, upgrades, runs sessions
    client          the other end: exec/attach/port-forward through a URL, terminals

The wire protocols are Kubernetes' (k8s.io/apimachinery util/remotecommand and httpstream, the kubelet's
cri/streaming), so crictl and the kubelet work against podhost, and podhost's client against containerd.
"""
