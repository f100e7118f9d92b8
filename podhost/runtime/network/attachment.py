"""The on-disk record of one pod's network attachment: everything a later CNI DEL or CHECK needs.

Owns `Config.cni_state_dir/results/<sandbox_id>.json`, written atomically (`atomicfile.write_json_atomic`).
The record is written BEFORE the first CNI ADD with `state="adding"`, because a plugin that fails or a
daemon killed mid-ADD may already have allocated an address or made a veth; finding the record is how
the daemon knows to run DEL. After every ADD succeeded it is rewritten with the results and
`state="added"`. It is removed only after DEL succeeded; a failed DEL counts itself in `del_attempts`
and `del_error`, so an attachment kept for retry says why.

It keeps the exact network config list used (not a pointer to the config dir, which may change before
the pod goes away), the netns path, interface names, CNI_ARGS and the capability arguments, so DEL
replays exactly what ADD was given (CNI SPEC.md: DEL gets the same configuration as ADD).

Must never: execute plugins or decide when to DEL.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from podhost.atomicfile import sweep_partial_writes, write_json_atomic

log = logging.getLogger(__name__)

ADDING = "adding"
ADDED = "added"


@dataclass
class Attachment:
    sandbox_id: str
    netns: str
    ifname: str
    cni_args: str
    capability_args: dict[str, Any]
    network: dict[str, Any]  # the conflist JSON used for ADD
    loopback: dict[str, Any]  # the loopback network JSON used for ADD
    network_source: str = ""
    state: str = ADDING
    result: dict[str, Any] | None = None  # the final result of the main chain
    loopback_result: dict[str, Any] | None = None
    #: failed DELs so far and the last one's error: a plugin that keeps failing is visible here.
    del_attempts: int = 0
    del_error: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attachment:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class AttachmentStore:
    """The attachment records of one podhost instance, read from disk on every call (they are few and
    small, and reading keeps a second PodNetwork on the same state dir consistent)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    def sweep_partial_writes(self) -> None:
        """Drop the temp files of writes a killed daemon never finished (atomicfile.write_atomic's). Only at
        daemon start, when nothing writes here."""
        sweep_partial_writes(self.directory)

    def path(self, sandbox_id: str) -> Path:
        if not sandbox_id or "/" in sandbox_id or sandbox_id.startswith("."):
            raise ValueError(f"invalid sandbox id {sandbox_id!r}")
        return self.directory / f"{sandbox_id}.json"

    def put(self, attachment: Attachment, durable: bool = True) -> None:
        """Write `attachment`. `durable=False` skips the fsyncs: only for what a reboot may lose, since the
        record already on disk still lets recovery DEL the attachment."""
        with self._lock:
            write_json_atomic(self.path(attachment.sandbox_id), asdict(attachment), durable=durable)

    def get(self, sandbox_id: str) -> Attachment | None:
        path = self.path(sandbox_id)
        try:
            data = json.loads(path.read_bytes())
            return Attachment.from_json(data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as e:
            # Unreadable: keep an attachment with no config so teardown falls back to the current
            # conflist and still releases what it can.
            log.warning("%s: CNI attachment record %s unreadable (%s)", sandbox_id, path, e)
            return Attachment(sandbox_id, "", "eth0", "", {}, {}, {}, state=ADDING)

    def delete(self, sandbox_id: str) -> None:
        with self._lock:
            self.path(sandbox_id).unlink(missing_ok=True)

    def ids(self) -> list[str]:
        try:
            names = sorted(p.name for p in self.directory.iterdir())
        except FileNotFoundError:
            return []
        return [n[: -len(".json")] for n in names if n.endswith(".json") and not n.startswith(".")]
