"""A small client of a podhost daemon's Kubernetes API, for tests and benchmarks that poll a pod's status
faster than a kubectl process per look allows (a kubectl start is ~100 ms here; a GET is ~2 ms).

It speaks the API a kubectl speaks (HTTPS to 127.0.0.1, the instance's client certificate), never the
pod manager directly: what it sees is what `kubectl get -o json` shows. The server's address is read from
`<state>/kubeconfig` on every request, since a restarted daemon may listen on another port. User-facing
commands in tests go through the real kubectl; this is for watching state closely.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The plural resource of each kind name the tests use.
RESOURCES = {
    "pod": "pods",
    "pods": "pods",
    "service": "services",
    "services": "services",
    "endpoints": "endpoints",
    "event": "events",
    "events": "events",
}


class KubeAPIError(Exception):
    def __init__(self, code: int, status: dict[str, Any]) -> None:
        super().__init__(f"{code} {status.get('reason', '')}: {status.get('message', '')}")
        self.code, self.status = code, status


class KubeAPI:
    """Requests with the credentials under `<state_dir>/kube-api` to the server `<state_dir>/kubeconfig`
    names."""

    def __init__(self, state_dir: Path, timeout: float = 30.0) -> None:
        self.state_dir, self.timeout = state_dir, timeout
        self._context: ssl.SSLContext | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def server(self) -> str:
        found = re.search(r"server: (https://\S+)", self.kubeconfig.read_text())
        if not found:
            raise KubeAPIError(0, {"message": f"no server in {self.kubeconfig}"})
        return found.group(1)

    def _ssl(self) -> ssl.SSLContext:
        if self._context is None:
            creds = self.state_dir / "kube-api"
            ctx = ssl.create_default_context(cafile=str(creds / "ca.crt"))
            ctx.load_cert_chain(str(creds / "client.crt"), str(creds / "client.key"))
            self._context = ctx
        return self._context

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.server() + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                status = json.loads(raw)
            except ValueError:
                status = {"message": raw.decode(errors="replace")}
            raise KubeAPIError(e.code, status) from None

    def answers(self) -> bool:
        try:
            return bool(self.kubeconfig.exists() and self.request("GET", "/version"))
        except (OSError, KubeAPIError, ValueError):
            return False

    @staticmethod
    def _path(kind: str, namespace: str, name: str = "") -> str:
        resource = RESOURCES[kind]
        base = f"/api/v1/namespaces/{namespace}/{resource}" if namespace else f"/api/v1/{resource}"
        return f"{base}/{name}" if name else base

    def get(self, kind: str, namespace: str = "", name: str = "") -> list[dict[str, Any]]:
        """The objects of a kind (in one namespace, or all); with `name`, the one object, or for events
        the events about that pod."""
        if RESOURCES[kind] == "events":
            query = f"?fieldSelector={urllib.parse.quote(f'involvedObject.name={name}')}" if name else ""
            items: list[dict[str, Any]] = self.request("GET", self._path(kind, namespace) + query)["items"]
            return items
        if name:
            return [self.request("GET", self._path(kind, namespace or "default", name))]
        listed: list[dict[str, Any]] = self.request("GET", self._path(kind, namespace))["items"]
        return listed

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any]:
        obj: dict[str, Any] = self.request("GET", self._path("pods", namespace, name))
        return obj

    def watch(self, kind: str, namespace: str, name: str, seconds: int = 60) -> Iterator[dict[str, Any]]:
        """The watch events of one named object (`{"type", "object"}`), the current state first, as they
        arrive on one connection: a watcher sees a change when the server publishes it, without the
        handshake and CPU of a GET per look competing with the daemon it measures."""
        server = urllib.parse.urlsplit(self.server())
        query = urllib.parse.urlencode(
            {"watch": "1", "fieldSelector": f"metadata.name={name}", "timeoutSeconds": str(seconds)}
        )
        conn = http.client.HTTPSConnection(
            server.hostname or "127.0.0.1", server.port, context=self._ssl(), timeout=seconds + 5
        )
        try:
            conn.request(
                "GET", f"{self._path(kind, namespace)}?{query}", headers={"Accept": "application/json"}
            )
            resp = conn.getresponse()
            if resp.status != 200:
                raise KubeAPIError(resp.status, {"message": resp.read().decode(errors="replace")})
            while line := resp.readline():
                yield json.loads(line)
        finally:
            conn.close()

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata", {})
        kind = str(obj["kind"]).lower()
        created: dict[str, Any] = self.request(
            "POST", self._path(kind, meta.get("namespace", "default")), obj
        )
        return created

    def delete(
        self, kind: str, name: str, namespace: str = "default", grace_period_seconds: int | None = None
    ) -> None:
        body = None if grace_period_seconds is None else {"gracePeriodSeconds": grace_period_seconds}
        self.request("DELETE", self._path(kind, namespace, name), body)

    def close(self) -> None:
        self._context = None
