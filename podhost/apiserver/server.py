"""The HTTPS server: aiohttp on its own event loop in one daemon thread, client certificates required.

Why aiohttp: a maintained asyncio server that streams responses (watch, `logs -f`) without a thread per
client. Exec, attach and port-forward take the connection over and proxy it to the CRI streaming server
(podhost.apiserver.streaming), as the kubelet does.

Access. TLS asks for a client certificate without requiring it in the handshake (CERT_OPTIONAL): a
certificate that is presented must chain to the instance's CA or the handshake fails, and a request
that presented none gets kube-apiserver's 401 `Status` instead of a bare TLS alert. Only HTTP/1.1 is
offered (ALPN), which kubectl speaks as well as HTTP/2. It listens on `kube_api_address` (127.0.0.1 by
default) and nothing else.

Every handler's errors go through `status.status_object`; blocking work (the manager, the store) runs in
the loop's executor so a slow call never stalls a watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from podhost.apiserver import certs, k8s_protobuf, logs, objects, openapi_v2, openapi_v3, streaming
from podhost.apiserver.resources import (
    API,
    APPLY_PATCH,
    KINDS,
    POD_SPEC_SUBRESOURCES,
    Kind,
    api_resource_list,
    served_kinds,
)
from podhost.apiserver.status import (
    BadRequest,
    MethodNotAllowed,
    Unauthorized,
    UnsupportedMediaType,
    code_and_reason,
    status_object,
)
from podhost.apiserver.store import field_selector, label_selector
from podhost.errors import NotFound, PodhostError
from podhost.kubeapi.schema import KUBERNETES_VERSION

if TYPE_CHECKING:
    from podhost.config import Config
    from podhost.kubelet.manager import PodManager

log = logging.getLogger(__name__)

KUBECONFIG = "kubeconfig"
CREDENTIALS_DIR = "kube-api"
WATCH_DEFAULT_SECONDS = 1800
#: How long open requests (watches, `logs -f`) may take to end when the daemon stops; then they are cut.
SHUTDOWN_SECONDS = 1.0
JSON = "application/json"


def _json(obj: Any, status: int = 200, warnings: tuple[str, ...] = ()) -> web.Response:
    headers = [("Warning", f'299 - "{w.replace(chr(34), chr(92) + chr(34))}"') for w in warnings]
    response = web.Response(body=json.dumps(obj).encode(), status=status, content_type=JSON)
    for name, value in headers:
        response.headers.add(name, value)
    return response


def _error(error: BaseException, details: dict[str, Any] | None = None) -> web.Response:
    code, _ = code_and_reason(error)
    return _json(status_object(error, details), code)


def wants_table(accept: str) -> str:
    """The Table apiVersion the Accept header asks for first ("" when it asks for objects)."""
    for part in accept.split(","):
        params = dict(p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p)
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return "meta.k8s.io/" + params.get("v", "v1")
        if part.split(";")[0].strip() in (JSON, "*/*", "application/yaml") and "as" not in params:
            return ""
    return ""


@web.middleware
async def authenticate(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if ssl_object is None or not ssl_object.getpeercert():
        return _error(Unauthorized("Unauthorized"))
    return await handler(request)


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except PodhostError as e:
        return _error(e, getattr(e, "details", None))
    except web.HTTPException as e:
        if e.status == 404:
            return _error(NotFound("the server could not find the requested resource"))
        if e.status == 405:
            return _error(MethodNotAllowed("the server does not allow this method on the requested resource"))
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as e:
        log.exception("kube-api: %s %s failed", request.method, request.path)
        return _error(e)


class Routes:
    """The URL space: discovery, OpenAPI, and /api/v1 resources parsed by hand (cluster-scoped and
    namespaced paths overlap for aiohttp's router)."""

    def __init__(self, api: API) -> None:
        self.api = api

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[authenticate, errors], client_max_size=8 * 1024 * 1024)
        app.router.add_get("/version", self.version)
        app.router.add_get("/api", self.api_versions)
        app.router.add_get("/apis", self.api_groups)
        app.router.add_get("/openapi/v2", self.openapi_v2)
        app.router.add_get("/openapi/v3", self.openapi_root)
        app.router.add_get("/openapi/v3/api/v1", self.openapi_core)
        for probe in ("/healthz", "/livez", "/readyz"):
            app.router.add_get(probe, self.healthz)
        app.router.add_get("/api/v1", self.resource_list)
        app.router.add_route("*", "/api/v1/{tail:.+}", self.resources)
        return app

    # --- discovery -----------------------------------------------------------------------------------

    async def version(self, request: web.Request) -> web.Response:
        major, minor, _ = KUBERNETES_VERSION.split(".")
        return _json(
            {
                "major": major,
                "minor": minor,
                "gitVersion": f"v{KUBERNETES_VERSION}+podhost",
                "gitCommit": "",
                "gitTreeState": "clean",
                "buildDate": "",
                "goVersion": "",
                "compiler": "podhost",
                "platform": "linux/" + self.api.node.architecture,
            }
        )

    async def api_versions(self, request: web.Request) -> web.Response:
        host = request.transport.get_extra_info("sockname") if request.transport else None
        address = f"{host[0]}:{host[1]}" if host else ""
        return _json(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
            }
        )

    async def api_groups(self, request: web.Request) -> web.Response:
        return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    async def resource_list(self, request: web.Request) -> web.Response:
        return _json(api_resource_list())

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def _core_document(self) -> bytes:
        return openapi_v3.core_v1_document(served_kinds())

    async def openapi_v2(self, request: web.Request) -> web.Response:
        """Swagger 2.0 for older clients: gnostic's protobuf when asked for (kubectl 1.20 asks for
        nothing else), JSON otherwise."""
        accept = request.headers.get("Accept", "")
        if any(t in accept for t in openapi_v2.PROTOBUF_TYPES):
            body = await self.run(openapi_v2.protobuf_document, served_kinds())
            return web.Response(body=body, headers={"Content-Type": openapi_v2.PROTOBUF_CONTENT_TYPE})
        return _json(await self.run(openapi_v2.document, served_kinds()))

    async def openapi_root(self, request: web.Request) -> web.Response:
        doc = await self.run(self._core_document)
        return _json(openapi_v3.discovery_document(doc))

    async def openapi_core(self, request: web.Request) -> web.Response:
        doc = await self.run(self._core_document)
        return web.Response(body=doc, content_type=JSON, headers={"Cache-Control": "public, immutable"})

    # --- resources -----------------------------------------------------------------------------------

    def _parse(self, tail: str) -> tuple[Kind, str, str, str]:
        """(kind, namespace, name, subresource) of a path under /api/v1/."""
        parts = [p for p in tail.split("/") if p]
        if len(parts) >= 3 and parts[0] == "namespaces" and parts[2] not in ("status", "finalize"):
            kind = self.api.kind(parts[2])
            if not kind.namespaced:
                raise NotFound("the server could not find the requested resource")
            rest = parts[3:]
            namespace = parts[1]
        else:
            kind = self.api.kind(parts[0])
            rest, namespace = parts[1:], ""
        if len(rest) > 2:
            raise NotFound("the server could not find the requested resource")
        name = rest[0] if rest else ""
        sub = rest[1] if len(rest) > 1 else ""
        if sub and sub not in dict(kind.subresources):
            raise NotFound("the server could not find the requested resource")
        return kind, namespace, name, sub

    async def resources(self, request: web.Request) -> web.StreamResponse:
        kind, namespace, name, sub = self._parse(request.match_info["tail"])
        q = dict(request.query)
        method = request.method
        if method == "GET" and not name:
            if q.get("watch") in ("true", "1"):
                return await self.watch(request, kind, namespace, q)
            return await self.list(request, kind, namespace, q)
        if sub in streaming.SUBRESOURCES:
            return await streaming.serve(
                request, self.run, self._get_pod, self.api.manager, namespace or "default", name, sub
            )
        if method == "GET" and sub == "log":
            return await self.log(request, namespace, name, q)
        if method == "GET":
            obj = await self.run(self.api.get, kind, namespace, name)
            return self._respond(request, kind, obj, [obj], q)
        if method == "PATCH" and kind.name == "pods" and sub == "status":
            raw = await request.read()
            result = await self.run(self.api.patch_pod_status, namespace, name, raw, request.content_type)
            return _json(result.obj, result.code)
        if sub and (kind.name != "pods" or sub not in POD_SPEC_SUBRESOURCES):
            raise MethodNotAllowed(f"podhost serves {kind.name}/{sub} read-only: the pod manager owns it")
        if "fieldManager" not in q and request.content_type != APPLY_PATCH:
            # kube-apiserver's default manager of an update: the client's User-Agent up to its first "/"
            q["fieldManager"] = request.headers.get("User-Agent", "").split("/", 1)[0][:128] or "unknown"
        if method == "POST" and not name:
            body = await self._body(request)
            result = await self.run(self.api.create, kind, namespace, body, q)
        elif method == "PATCH" and name:
            raw = await request.read()
            result = await self.run(self.api.patch, kind, namespace, name, raw, request.content_type, q, sub)
        elif method == "PUT" and name:
            body = await self._body(request)
            result = await self.run(self.api.update, kind, namespace, name, body, q, None, None, sub)
        elif method == "DELETE" and name:
            raw = await request.read()
            options = json.loads(raw) if raw.strip() else {}
            result = await self.run(self.api.delete, kind, namespace, name, options, q)
        else:
            raise MethodNotAllowed(f"{method} is not supported on this {kind.name} path")
        return _json(result.obj, result.code, result.warnings)

    def _get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.api.get(KINDS["pods"], namespace, name)

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if request.content_type == k8s_protobuf.PROTOBUF:  # client-go's typed clients (create configmap)
            try:
                return k8s_protobuf.decode(raw)
            except k8s_protobuf.DecodeError as e:
                raise UnsupportedMediaType(f"the body of the request cannot be decoded: {e}") from None
            except UnicodeDecodeError:  # its message would quote bytes of the body: a Secret's, maybe
                raise BadRequest("the body of the request holds a string that is not UTF-8") from None
        try:
            if request.content_type in ("application/yaml", "application/x-yaml"):
                import yaml

                return yaml.safe_load(raw)
            return json.loads(raw)
        except ValueError as e:
            raise BadRequest(f"the request body is not valid JSON: {e}") from None

    def _respond(
        self,
        request: web.Request,
        kind: Kind,
        body: dict[str, Any],
        items: list[dict[str, Any]],
        q: dict[str, str],
        resource_version: int = 0,
    ) -> web.Response:
        table = wants_table(request.headers.get("Accept", ""))
        if table:
            version = resource_version or int(body.get("metadata", {}).get("resourceVersion") or 0)
            return _json(self.api.table(kind, items, version, q, table))
        return _json(body)

    def _filter(self, q: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
        fields = field_selector(q.get("fieldSelector", ""))
        labels = label_selector(q.get("labelSelector", ""))
        return lambda obj: fields(obj) and labels(obj)

    async def list(self, request: web.Request, kind: Kind, namespace: str, q: dict[str, str]) -> web.Response:
        items, version = await self.run(self.api.store.list_objects, kind.name, namespace)
        match = self._filter(q)
        items = [o for o in items if match(o)]
        return self._respond(request, kind, self.api.list_body(kind, items, version), items, q, version)

    async def watch(
        self, request: web.Request, kind: Kind, namespace: str, q: dict[str, str]
    ) -> web.StreamResponse:
        match = self._filter(q)
        table = wants_table(request.headers.get("Accept", ""))
        timeout = float(q.get("timeoutSeconds") or WATCH_DEFAULT_SECONDS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        changed = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(changed.set)

        store = self.api.store
        store.add_listener(wake)
        response = web.StreamResponse(headers={"Content-Type": JSON, "Transfer-Encoding": "chunked"})
        first = True

        async def send(kind_: str, obj: dict[str, Any]) -> None:
            nonlocal first
            if table:
                body = self.api.table(kind, [obj], 0, q, table, headers=first)
                body["metadata"] = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
                obj = body
            first = False
            await response.write(json.dumps({"type": kind_, "object": obj}).encode() + b"\n")

        try:
            asked = q.get("resourceVersion", "")
            if asked in ("", "0") or q.get("sendInitialEvents") == "true":
                items, version = await self.run(store.list_objects, kind.name, namespace)
                await response.prepare(request)
                for obj in items:
                    if match(obj):
                        await send("ADDED", obj)
            else:
                try:
                    version = int(asked)
                except ValueError:
                    raise BadRequest(f"resourceVersion: invalid value {asked!r}") from None
                await self.run(store.sync)
                store.events_since(version, kind.name)  # 410 before the stream starts
                await response.prepare(request)
            while True:
                changed.clear()
                events = store.events_since(version, kind.name)
                for event in events:
                    version = event.resource_version
                    obj_ns = event.object.get("metadata", {}).get("namespace", "")
                    if (not namespace or obj_ns == namespace) and match(event.object):
                        await send(event.type, event.object)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=remaining)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            store.remove_listener(wake)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def log(
        self, request: web.Request, namespace: str, name: str, q: dict[str, str]
    ) -> web.StreamResponse:
        pod = await self.run(self.api.get, KINDS["pods"], namespace, name)
        container = logs.default_container(pod, q.get("container", ""))
        previous = q.get("previous") in ("true", "1")
        options = logs.LogOptions.from_query(q)
        manager = self.api.manager
        where = await self.run(manager.locate, namespace, name, container, previous)
        if not where.get("log_path"):
            waiting = next(
                (
                    cs["state"]["waiting"].get("reason", "")
                    for cs in pod.get("status", {}).get("containerStatuses", [])
                    if cs.get("name") == container and "waiting" in cs.get("state", {})
                ),
                "",
            )
            raise BadRequest(
                f'container "{container}" in pod "{name}" is waiting to start: {waiting or "not started"}'
            )
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)

        async def running() -> bool:
            try:
                found = await self.run(manager.locate, namespace, name, container, previous)
            except PodhostError:
                return False
            return bool(found.get("running")) and found.get("log_path") == where["log_path"]

        try:
            await logs.stream(str(where["log_path"]), options, response.write, running)
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response


def gateway_address(subnet: str) -> str:
    """The node's address on the pod network (the bridge's, the first of the subnet): what its pods see
    as the host, so the Node's InternalIP and every pod's hostIP."""
    network = ipaddress.ip_network(subnet, strict=False)
    return str(network.network_address + 1)


def tls_context(creds: certs.Credentials) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(creds.server_cert, creds.server_key)
    ctx.load_verify_locations(cafile=str(creds.ca_cert))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class KubeAPIServer:
    """One instance's Kubernetes API: `start()` makes the credentials, listens and writes the kubeconfig;
    `close()` stops listening (watches end; the manager is not touched)."""

    def __init__(self, config: Config, manager: PodManager) -> None:
        self.config = config
        self.manager = manager
        self.kubeconfig_path = Path(config.state_dir) / KUBECONFIG
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.api: API | None = None

    def start(self) -> None:
        started = time.monotonic()
        creds = certs.ensure_credentials(Path(self.config.state_dir) / CREDENTIALS_DIR)
        node = objects.node_facts(
            Path(self.config.state_dir),
            gateway_address(self.config.subnet),
            KUBERNETES_VERSION,
            created=_created(creds.ca_cert),
        )
        self.api = API(self.manager, node)
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="kube-api", daemon=True)
        self._thread.start()
        address = self.config.kube_api_address
        wanted = self.config.kube_api_port
        candidates = (
            [wanted] if wanted else [p for p in (certs.port_in_kubeconfig(self.kubeconfig_path),) if p] + [0]
        )
        error: OSError | None = None
        for port in candidates:
            try:
                self.port = asyncio.run_coroutine_threadsafe(self._listen(address, port, creds), loop).result(
                    30
                )
                break
            except OSError as e:
                error = e
        else:
            self.close()
            raise PodhostError(f"kube-api: cannot listen on {address}:{candidates[-1]}: {error}")
        url = f"https://{_host(address)}:{self.port}"
        certs.write_kubeconfig(self.kubeconfig_path, certs.kubeconfig(creds, url))
        log.info(
            "Kubernetes API on %s (kubeconfig %s; ready in %.0f ms)",
            url,
            self.kubeconfig_path,
            (time.monotonic() - started) * 1000,
        )

    async def _listen(self, address: str, port: int, creds: certs.Credentials) -> int:
        assert self.api is not None
        runner = web.AppRunner(
            Routes(self.api).app(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_SECONDS
        )
        await runner.setup()
        site = web.TCPSite(runner, address, port, ssl_context=tls_context(creds), reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        sockets = getattr(site._server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    def close(self) -> None:
        loop = self._loop
        if loop is None:
            return
        if self.api is not None:
            self.api.store.close()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(3)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=3)
        self._loop = None


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _created(ca_cert: Path) -> float:
    """When this instance's API began (its CA was made): the node's and namespaces' creation time."""
    try:
        return ca_cert.stat().st_mtime
    except OSError:
        return time.time()
