"""The OCI runtime command line (runc, or crun with the same CLI): arguments as pure functions, one wrapper.

Owns how podhost calls the runtime binary: the global flags (`--root <run_dir>/runc-root/<handler>`, so
instances and handlers never share state; `--log FILE --log-format json`, so errors come back as the
runtime's own words), and turning a failure into RuntimeFailure carrying the runtime's message. `create`
is not here: conmon runs it (podhost.runtime.container.conmon). Never decides *when* to call what; that
is the service's job.

Marks: an `OciRuntime` bound to a container (`for_owner(instance, container_id)`) runs every command
marked for that container and for that one call (podhost.runtime.procs), so a crashed daemon's successor
finds a runtime command still running, and a failed call kills what it started and nothing else of the
container's (not its conmon). Unbound (the default), commands run unmarked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podhost.errors import RuntimeFailure
from podhost.runtime import procs
from podhost.runtime.container import exec_fifo

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 30.0
#: The per-call runtime logs in a runtime root (a killed daemon's are swept at start).
CALL_LOG_GLOB = ".call-*.log"
NOT_FOUND_MARKERS = ("does not exist", "No such file or directory", "not found")


def runtime_root(run_dir: Path, handler: str) -> Path:
    return run_dir / "runc-root" / handler


def global_args(binary: str, root: Path, log_file: Path) -> list[str]:
    return [binary, "--root", str(root), "--log", str(log_file), "--log-format", "json"]


def start_args(container_id: str) -> list[str]:
    return ["start", container_id]


def kill_args(container_id: str, sig: int, all_processes: bool = False) -> list[str]:
    return ["kill", *(["--all"] if all_processes else []), container_id, str(sig)]


def delete_args(container_id: str, force: bool = False) -> list[str]:
    return ["delete", *(["--force"] if force else []), container_id]


def state_args(container_id: str) -> list[str]:
    return ["state", container_id]


def exec_args(container_id: str, process_file: Path, pid_file: Path) -> list[str]:
    return ["exec", "--process", str(process_file), "--pid-file", str(pid_file), container_id]


def update_args(container_id: str, resources_file: Path) -> list[str]:
    return ["update", "--resources", str(resources_file), container_id]


def parse_log(text: str) -> str:
    """The error lines of a json-format runtime log, joined; raw text when it is not json."""
    messages = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            messages.append(line)
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal", "warning", None):
            messages.append(str(entry.get("msg", "")).strip())
    return "; ".join(m for m in messages if m)


@dataclass(frozen=True)
class OciRuntime:
    """One runtime handler: its binary and its state root; bound to a container's mark when `instance`
    is set (`for_owner`)."""

    handler: str
    binary: str
    root: Path
    #: the podhost instance and the container id that mark every command (procs.mark_env); "" = unmarked.
    instance: str = ""
    owner: str = ""

    def for_owner(self, instance: str, owner: str) -> OciRuntime:
        """This runtime, running its commands marked for container `owner` of podhost `instance`."""
        return dataclasses.replace(self, instance=instance, owner=owner)

    def call_env(self, call: str) -> dict[str, str] | None:
        """The environment of one command: ours, plus the marks of the bound container and of `call`."""
        if not self.instance:
            return None  # inherit
        return {**os.environ, **procs.mark_env(self.instance, self.owner, call)}

    def _log_file(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f".call-{uuid.uuid4().hex[:12]}.log"  # matches CALL_LOG_GLOB

    def command(self, args: list[str], log_file: Path) -> list[str]:
        return global_args(self.binary, self.root, log_file) + args

    def run(self, args: list[str], timeout: float = CALL_TIMEOUT_S) -> str:
        """Run one runtime command; its stdout, or RuntimeFailure with the runtime's own message.

        The runtime runs in a session (and process group) of its own; the call ends when the runtime
        exits, not when its pipes close. On a timeout or an interrupt the runtime, its process tree and
        group and whatever carries this call's mark are killed (`procs.kill_session`): what it started
        must not outlive the call."""
        log_file = self._log_file()
        call = uuid.uuid4().hex[:12]
        try:
            try:
                popen = subprocess.Popen(
                    self.command(args, log_file), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, start_new_session=True, env=self.call_env(call),
                )  # fmt: skip
            except OSError as e:
                raise RuntimeFailure(f"{self.handler} ({self.binary}): {e.strerror}") from e
            report = None
            try:
                report = procs.communicate(popen, None, time.monotonic() + timeout)
                if report is None:
                    raise RuntimeFailure(f"{self.handler} {' '.join(args)}: timed out after {timeout:g}s")
            finally:
                if report is None:  # timed out or interrupted
                    procs.kill_session(popen, self.instance, self.owner, call)
                else:
                    for stream in (popen.stdout, popen.stderr):
                        if stream is not None:
                            stream.close()
            stdout, stderr = report
            if popen.returncode != 0:
                message = self.read_log(log_file) or stderr.decode(errors="replace").strip()
                raise RuntimeFailure(
                    f"{self.handler} {args[0]} {args[-1] if len(args) > 1 else ''}: "
                    f"{message or f'exit status {popen.returncode}'}"
                )
            return stdout.decode(errors="replace")
        finally:
            log_file.unlink(missing_ok=True)

    @staticmethod
    def read_log(log_file: Path) -> str:
        try:
            return parse_log(log_file.read_text(errors="replace"))
        except OSError:
            return ""

    # --- verbs -------------------------------------------------------------------------------------

    def start(self, container_id: str, init: procs.Proc, bundle: Path) -> None:
        """Start a created container: through runc's exec fifo where that applies (exec_fifo), else
        `<runtime> start`."""
        if exec_fifo.applies(self.binary, bundle / "config.json") and exec_fifo.start(
            self.root / container_id / exec_fifo.FIFO_NAME, init, CALL_TIMEOUT_S
        ):
            return
        self.run(start_args(container_id))

    def kill(self, container_id: str, sig: int = signal.SIGTERM, all_processes: bool = False) -> None:
        self.run(kill_args(container_id, sig, all_processes))

    def delete(self, container_id: str, force: bool = False) -> None:
        """Delete the runtime's state of a container; one it does not know is fine (idempotent)."""
        try:
            self.run(delete_args(container_id, force))
        except RuntimeFailure as e:
            if not any(marker in str(e) for marker in NOT_FOUND_MARKERS):
                raise

    def state(self, container_id: str) -> dict[str, Any] | None:
        """`<runtime> state`: {"status": created|running|stopped|paused, "pid": ...}; None if unknown."""
        try:
            out = self.run(state_args(container_id))
        except RuntimeFailure as e:
            if any(marker in str(e) for marker in NOT_FOUND_MARKERS):
                return None
            raise
        try:
            state = json.loads(out)
        except ValueError as e:
            raise RuntimeFailure(
                f"{self.handler} state {container_id}: unreadable output {out[:200]!r}"
            ) from e
        return state if isinstance(state, dict) else None

    def update(self, container_id: str, resources: dict[str, Any], scratch_dir: Path) -> None:
        path = scratch_dir / f".update-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps(resources))
        try:
            self.run(update_args(container_id, path))
        finally:
            path.unlink(missing_ok=True)

    def exec(self, container_id: str, process: dict[str, Any], work_dir: Path) -> ExecProcess:
        """Start `runc exec` for `process` (an OCI process object); the caller waits on the result."""
        token = uuid.uuid4().hex[:8]
        process_file = work_dir / f".exec-{token}.json"
        pid_file = work_dir / f".exec-{token}.pid"
        log_file = self._log_file()
        process_file.write_text(json.dumps(process))
        argv = self.command(exec_args(container_id, process_file, pid_file), log_file)
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=self.call_env(token),
            )
        except OSError as e:
            for f in (process_file, log_file):
                f.unlink(missing_ok=True)
            raise RuntimeFailure(f"{self.handler} exec: {e.strerror}") from e
        return ExecProcess(popen, process_file, pid_file, log_file, token)


@dataclass
class ExecProcess:
    """A running `runc exec`: its Popen (stdout/stderr are the exec'd process's) and its files."""

    popen: subprocess.Popen[bytes]
    process_file: Path
    pid_file: Path
    log_file: Path
    #: the call mark `runc exec` and what it started carry (procs.kill_session(popen, instance, owner,
    #: call) ends them all), when its OciRuntime is bound to the container.
    call: str = ""

    def exec_pid(self) -> int:
        """The exec'd process in the host PID namespace (runc writes it once the process runs); 0 if not yet."""
        try:
            return int(self.pid_file.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def error(self) -> str:
        return OciRuntime.read_log(self.log_file)

    def cleanup(self) -> None:
        for f in (self.process_file, self.pid_file, self.log_file):
            f.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the exec'd process (runc exec then exits with it)."""
        pid = self.exec_pid()
        if pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
