"""`podhost daemon`: the runtime behind a CRI socket.

Pods do not depend on this process: pause and conmon are detached, so the daemon can be stopped, killed
or upgraded while pods run; on start it adopts what still runs and rolls back what was half-made.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from podhost.config import Config
from podhost.errors import FailedPrecondition

log = logging.getLogger("podhost.daemon")


def run(config: Config) -> None:
    """Serve CRI on `config.socket` until SIGTERM/SIGINT; the pod manager (the `kubelet_*` settings) is
    embedded and serves podhost.v1.Pods on the same socket."""
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if os.geteuid() != 0:
        raise FailedPrecondition("podhost daemon must run as root (pods need namespaces, mounts and cgroups)")
    from podhost.cri.server import serve
    from podhost.cri.streaming.server import StreamingServer
    from podhost.pause.build import build
    from podhost.runtime.runtime import Runtime

    if config.pause_binary is None:
        build()
    runtime = Runtime.open(config)
    streaming = StreamingServer(runtime, config.stream_address, config.stream_port)
    streaming.start()
    from podhost.kubelet.manager import PodManager, settings_from_config

    manager = PodManager(settings_from_config(config))
    server = serve(runtime, config.socket, streaming=streaming, services=[manager.register])
    manager.start()  # after the server: it drives the runtime through the CRI socket, like a kubelet
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("podhost daemon serving CRI on %s (state %s)", config.socket, config.state_dir)
    try:
        stop.wait()
    finally:
        manager.close()
        server.stop(grace=2).wait()
        streaming.close()
        runtime.close()
        log.info("podhost daemon stopped; pods keep running")
