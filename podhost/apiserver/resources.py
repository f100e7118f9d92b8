"""The served resources and what each verb does with them, over the pod manager and `ResourceStore`.

`KINDS` is the one table of what this server serves (discovery, OpenAPI paths and routing all read it).
`API` holds the manager, the store and the node, and does each verb synchronously (the HTTP layer runs
it in a worker thread): reads come from the store, writes go to the manager's public methods (`apply`,
`delete`) and are read back through a store sync, so a client sees its own write with its
resourceVersion, as from kube-apiserver.

Every write records its field manager in `metadata.managedFields` (fieldmanager.py; stored with the
object's manifest, so a daemon restart keeps them), and `application/apply-patch+yaml` is
server-side apply over the same entries (conflicts, `force`).

Writes are checked as kube-apiserver checks them before the manager sees them: the kind and namespace of
the body, strict field validation against the upstream schema (`fieldValidation=Strict` fails naming the
fields, Warn answers with Warning headers, Ignore drops them silently; in every case unknown fields are
dropped, as decoding does), preconditions, and the pod update rule (`patch.pod_spec_change`). What
is left is validated once, by the validator static pods go through too (`kubelet.manifest.parse_object`:
the upstream schema, then what podhost runs), dry runs included; its refusals come back as 422 Invalid
naming the object.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from podhost.apiserver import fieldmanager, objects, patch, printers
from podhost.apiserver.openapi_v3 import ServedKind
from podhost.apiserver.status import (
    BadRequest,
    Conflict,
    MethodNotAllowed,
    UnsupportedMediaType,
)
from podhost.apiserver.store import ResourceStore
from podhost.errors import AlreadyExists, InvalidArgument, NotFound
from podhost.kubeapi import schema as sch
from podhost.kubelet.manifest import parse_object

if TYPE_CHECKING:
    from podhost.kubelet.manager import PodManager

APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    APPLY_PATCH,
)

READ = ("get", "list", "watch")
#: The pod subresources a write goes to (the rest are read-only or streaming): each changes one part of
#: the spec, which the pod manager carries out on the running pod (PodManager.update_pod_spec).
POD_SPEC_SUBRESOURCES = {
    "ephemeralcontainers": patch.ephemeral_containers_update,
    "resize": patch.resize_update,
}
#: The kinds without a spec: what of their body is theirs to keep.
DATA_FIELDS = {
    "ConfigMap": ("data", "binaryData", "immutable"),
    "Secret": ("data", "stringData", "type", "immutable"),
}
WRITE = ("create", "delete", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Kind:
    name: str  # the resource: "pods"
    kind: str  # "Pod"
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def singular(self) -> str:
        return self.kind.lower()


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("configmaps", "ConfigMap", True, WRITE, ("cm",)),
        Kind("endpoints", "Endpoints", True, READ, ("ep",)),
        Kind("events", "Event", True, READ, ("ev",)),
        Kind("namespaces", "Namespace", False, READ, ("ns",), (), (("status", ("get",)),)),
        Kind("nodes", "Node", False, READ, ("no",), (), (("status", ("get",)),)),
        Kind(
            "pods",
            "Pod",
            True,
            WRITE,
            ("po",),
            ("all",),
            (
                ("attach", ("create", "get")),
                ("ephemeralcontainers", ("get", "patch", "update")),
                ("exec", ("create", "get")),
                ("log", ("get",)),
                ("portforward", ("create", "get")),
                ("resize", ("get", "patch", "update")),
                ("status", ("get", "patch")),
            ),
        ),
        Kind("secrets", "Secret", True, WRITE),
        Kind("services", "Service", True, WRITE, ("svc",), ("all",)),
    )
}


def served_kinds() -> list[ServedKind]:
    return [ServedKind(k.name, k.kind, k.namespaced, k.verbs) for k in KINDS.values()]


def api_resource_list() -> dict[str, Any]:
    """`/api/v1`: every resource and subresource with its verbs (kubectl's legacy discovery)."""
    out = []
    for k in KINDS.values():
        entry: dict[str, Any] = {
            "name": k.name,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": sorted(k.verbs),
        }
        if k.short_names:
            entry["shortNames"] = list(k.short_names)
        if k.categories:
            entry["categories"] = list(k.categories)
        out.append(entry)
        for sub, verbs in k.subresources:
            out.append(
                {
                    "name": f"{k.name}/{sub}",
                    "singularName": "",
                    "namespaced": k.namespaced,
                    "kind": k.kind,
                    "verbs": list(verbs),
                }
            )
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": out}


@dataclass
class WriteResult:
    obj: dict[str, Any]
    code: int = 200
    warnings: tuple[str, ...] = ()


def strict_error(kind: str, unknown: list[str]) -> BadRequest:
    fields = ", ".join(f'unknown field "{f}"' for f in unknown)
    return BadRequest(
        f'{kind} in version "v1" cannot be handled as a {kind}: strict decoding error: {fields}'
    )


class Invalid(InvalidArgument):
    """422 Invalid with kube-apiserver's details (errors.NewInvalid): the kind, the name and one cause
    per field error, which kubectl prints as `The Pod "web" is invalid: spec: Forbidden: ...`."""

    def __init__(self, kind: str, name: str, message: str) -> None:
        super().__init__(f'{kind} "{name}" is invalid: {message}')
        field, _, body = message.partition(": ")
        if not body:
            field, body = "", message
        reason = next((t for p, t in _CAUSE_TYPES if body.startswith(p)), "FieldValueInvalid")
        cause = {"reason": reason, "message": body, "field": field}
        self.details = {"name": name, "kind": kind, "causes": [cause]}


#: field.ErrorType's words -> the StatusCause type kube-apiserver sends.
_CAUSE_TYPES = (
    ("Forbidden", "FieldValueForbidden"),
    ("Required value", "FieldValueRequired"),
    ("Unsupported value", "FieldValueNotSupported"),
    ("Duplicate value", "FieldValueDuplicate"),
    ("Too many", "FieldValueTooMany"),
    ("Too long", "FieldValueTooLong"),
)


def invalid(kind: str, name: str, message: str) -> InvalidArgument:
    return Invalid(kind, name, message)


class API:
    def __init__(self, manager: PodManager, node: objects.NodeFacts) -> None:
        self.manager = manager
        self.node = node
        self.store = ResourceStore(self._render, self._signature, manager.wait_changed)

    # --- the store's view of the manager ------------------------------------------------------------------

    def _signature(self) -> object:
        events = self.manager.events.list()
        last = events[-1] if events else None
        return (
            self.manager.version,
            len(events),
            (last.count, last.last_timestamp, last.first_timestamp) if last else None,
        )

    def _render(self) -> dict[str, list[dict[str, Any]]]:
        m = self.manager
        pods = [objects.pod_object(p, self.node) for p in m.pod_objects()]
        uids = {(p["metadata"]["namespace"], p["metadata"]["name"]): p["metadata"]["uid"] for p in pods}
        services = m.service_objects()
        configmaps, secrets_ = m.config_objects("ConfigMap"), m.config_objects("Secret")
        endpoints = m.endpoint_objects()
        for ep in endpoints:
            meta = ep["metadata"]
            meta.setdefault("uid", objects.stable_uid("endpoints", meta["namespace"], meta["name"]))
        events = [objects.event_object(e, uids, self.node.name) for e in m.event_objects()]
        used = {o["metadata"]["namespace"] for o in [*pods, *services, *configmaps, *secrets_, *events]}
        namespaces = [
            objects.namespace_object(ns, self.node.created)
            for ns in sorted(set(objects.SYSTEM_NAMESPACES) | used)
        ]
        return {
            "pods": pods,
            "services": services,
            "configmaps": configmaps,
            "secrets": secrets_,
            "endpoints": endpoints,
            "events": events,
            "namespaces": namespaces,
            "nodes": [objects.node_object(self.node, self.node.created)],
        }

    # --- reads ----------------------------------------------------------------------------------------

    def kind(self, resource: str) -> Kind:
        if resource not in KINDS:
            raise NotFound(f"the server could not find the requested resource ({resource})")
        return KINDS[resource]

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        obj = self.store.get(kind.name, namespace if kind.namespaced else "", name)
        if obj is None:
            raise NotFound(f'{kind.name} "{name}" not found')
        return obj

    def list_body(self, kind: Kind, items: list[dict[str, Any]], resource_version: int) -> dict[str, Any]:
        return {
            "kind": kind.kind + "List",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(resource_version)},
            "items": items,
        }

    # --- writes ---------------------------------------------------------------------------------------

    def _check_fields(self, kind: Kind, obj: dict[str, Any], validation: str) -> tuple[str, ...]:
        """Unknown fields per `fieldValidation`; they are dropped from `obj` in every case."""
        unknown = sch.unknown_fields(obj, sch.CORE + kind.kind, prune=True)
        if not unknown or validation == "Ignore":
            return ()
        if validation == "Strict":
            raise strict_error(kind.kind, unknown)
        return tuple(f'unknown field "{f}"' for f in unknown)

    def _check_body(self, kind: Kind, obj: Any, namespace: str) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise BadRequest(f"the body of the request is not a {kind.kind} object")
        if obj.get("kind", kind.kind) != kind.kind or obj.get("apiVersion", "v1") != "v1":
            raise BadRequest(
                f"the API version in the data ({obj.get('apiVersion')}) does not match the expected API version (v1)"
                if obj.get("apiVersion", "v1") != "v1"
                else f'{obj.get("kind")} in version "v1" cannot be handled as a {kind.kind}'
            )
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise BadRequest("metadata: expected an object")
        if kind.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        return obj

    @staticmethod
    def _manifest(obj: dict[str, Any], spec: Any) -> dict[str, Any]:
        """What the pod manager is given: identity, labels, annotations and the spec, or a ConfigMap's or
        Secret's data (server-set metadata and status are the server's, not the manifest's)."""
        meta = obj.get("metadata", {})
        keep = {k: meta[k] for k in ("name", "namespace", "uid", "labels", "annotations") if meta.get(k)}
        manifest = {"apiVersion": "v1", "kind": obj["kind"], "metadata": keep}
        if obj["kind"] not in DATA_FIELDS:
            return {**manifest, "spec": spec}
        return {**manifest, **{k: obj[k] for k in DATA_FIELDS[obj["kind"]] if obj.get(k) is not None}}

    @staticmethod
    def _validate(kind: Kind, name: str, manifest: dict[str, Any]) -> None:
        """What `_apply` would refuse, without applying (a dry run)."""
        try:
            parse_object(manifest)
        except InvalidArgument as e:
            raise invalid(kind.kind, name, str(e)) from None

    def _apply(self, kind: Kind, name: str, manifest: dict[str, Any]) -> None:
        try:
            self.manager.apply(json.dumps(manifest))
        except (NotFound, AlreadyExists):
            raise
        except InvalidArgument as e:
            raise invalid(kind.kind, name, str(e)) from None

    def _update_pod_spec(self, kind: Kind, name: str, manifest: dict[str, Any]) -> None:
        namespace = str(manifest["metadata"].get("namespace", ""))
        try:
            self.manager.update_pod_spec(
                namespace, name, manifest["spec"], manifest["metadata"]["managedFields"]
            )
        except NotFound:
            raise
        except InvalidArgument as e:
            raise invalid(kind.kind, name, str(e)) from None

    def _write(
        self,
        kind: Kind,
        name: str,
        manifest: dict[str, Any],
        managed: list[fieldmanager.Manager],
        subresource: str = "",
    ) -> None:
        """Give the manager `manifest` with the object's managedFields in it: they are stored with it (so
        a restart keeps them) and rendered from it, with the object."""
        manifest["metadata"]["managedFields"] = [m.to_entry() for m in managed]
        if subresource:
            self._update_pod_spec(kind, name, manifest)
        else:
            self._apply(kind, name, manifest)

    def create(self, kind: Kind, namespace: str, body: Any, params: dict[str, str]) -> WriteResult:
        if "create" not in kind.verbs:
            raise MethodNotAllowed(f"podhost does not create {kind.name}")
        obj = self._check_body(kind, body, namespace)
        obj["kind"], obj["apiVersion"] = kind.kind, "v1"
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = str(meta.get("name") or "")
        if not name:
            raise invalid(kind.kind, "", "metadata.name: Required value: name or generateName is required")
        warnings = self._check_fields(kind, obj, params.get("fieldValidation", "Warn"))
        if kind.name == "pods" and (obj.get("spec") or {}).get("ephemeralContainers"):
            raise invalid(kind.kind, name, "spec.ephemeralContainers: Forbidden: cannot be set on create")
        if self.store.get(kind.name, namespace, name) is not None:
            raise AlreadyExists(f'{kind.name} "{name}" already exists')
        return self._create(kind, namespace, obj, params, None, warnings)

    def _create(
        self,
        kind: Kind,
        namespace: str,
        obj: dict[str, Any],
        params: dict[str, str],
        managed: list[fieldmanager.Manager] | None,
        warnings: tuple[str, ...],
    ) -> WriteResult:
        """A new object: its uid, its managers (`managed`, or the creating update's), the manager."""
        meta, name = obj["metadata"], str(obj["metadata"]["name"])
        for server_set in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "managedFields",
        ):
            meta.pop(server_set, None)
        if params.get("dryRun"):
            self._validate(kind, name, self._manifest(obj, obj.get("spec", {})))
            return WriteResult(obj, 201, warnings)
        schema = sch.definition(sch.CORE + kind.kind)
        if managed is None:
            managed = fieldmanager.update(None, obj, params.get("fieldManager") or "unknown", [], schema)
        meta["uid"] = str(uuid.uuid4())
        self._write(kind, name, self._manifest(obj, obj.get("spec", {})), managed)
        return WriteResult(self.get(kind, namespace, name), 201, warnings)

    def server_side_apply(
        self, kind: Kind, namespace: str, name: str, body: bytes, params: dict[str, str]
    ) -> WriteResult:
        """PATCH `application/apply-patch+yaml`: the configuration owned by `fieldManager`, merged into
        the live object (created when there is none); conflicts are 409 unless `force`."""
        manager = params.get("fieldManager", "")
        if not manager:
            raise invalid(
                "PatchOptions.meta.k8s.io", "", "fieldManager: Required value: is required for apply patch"
            )
        import yaml  # only here: a daemon that is never applied to does not load it

        try:
            config = yaml.safe_load(body or b"")
        except yaml.YAMLError as e:
            raise BadRequest(f"error decoding YAML: {e}") from None
        obj = self._check_body(kind, config, namespace)
        if str(obj["metadata"].get("name") or name) != name:
            raise BadRequest(
                f"the name of the object ({obj['metadata'].get('name')}) does not match the name on the URL ({name})"
            )
        obj["metadata"]["name"] = name
        obj["kind"], obj["apiVersion"] = kind.kind, "v1"
        unknown = sch.unknown_fields(obj, sch.CORE + kind.kind, prune=True)
        if unknown and params.get("fieldValidation") != "Ignore":
            # structured-merge-diff's words: the configuration cannot be typed against the schema
            errors = [f".{f}: field not declared in schema" for f in unknown]
            where = f"{namespace}/{name}" if kind.namespaced else name
            raise BadRequest(
                f"failed to create typed patch object ({where}; /v1, Kind={kind.kind}): "
                + (errors[0] if len(errors) == 1 else "errors:\n  " + "\n  ".join(errors))
            )
        warnings: tuple[str, ...] = ()
        current = self.store.get(kind.name, namespace if kind.namespaced else "", name)
        schema = sch.definition(sch.CORE + kind.kind)
        force = params.get("force") in ("true", "1")
        new, managed = fieldmanager.apply(
            current, obj, manager, fieldmanager.managers(current), schema, force
        )
        if current is None:
            if "create" not in kind.verbs:
                raise MethodNotAllowed(f"podhost does not create {kind.name}")
            return self._create(kind, namespace, new, params, managed, warnings)
        result = self.update(kind, namespace, name, new, params, current, managed)
        return WriteResult(result.obj, result.code, warnings + result.warnings)

    def patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        body: bytes,
        content_type: str,
        params: dict[str, str],
        subresource: str = "",
    ) -> WriteResult:
        if "patch" not in kind.verbs:
            raise MethodNotAllowed(f"podhost does not patch {kind.name}")
        media = content_type.split(";")[0].strip()
        if media == APPLY_PATCH and not subresource:  # YAML, and it may create the object
            return self.server_side_apply(kind, namespace, name, body, params)
        current = self.get(kind, namespace, name)
        new = self._patched(kind, current, body, media)
        return self.update(kind, namespace, name, new, params, current, subresource=subresource)

    def _patched(self, kind: Kind, current: dict[str, Any], body: bytes, media: str) -> Any:
        """`current` with a JSON patch (strategic merge, merge or JSON patch, per `media`) applied."""
        try:
            data = json.loads(body or b"null")
        except ValueError as e:
            raise BadRequest(f"the patch is not JSON: {e}") from None
        if media == "application/strategic-merge-patch+json":
            new = patch.strategic_merge(current, data, sch.definition(sch.CORE + kind.kind))
        elif media == "application/merge-patch+json":
            new = patch.merge_patch(current, data)
        elif media == "application/json-patch+json":
            new = patch.json_patch(current, data)
        else:
            raise UnsupportedMediaType(
                f"the body of the request was in an unknown format - accepted media types include: {', '.join(PATCH_TYPES)}"
            )
        return new

    def patch_pod_status(self, namespace: str, name: str, body: bytes, content_type: str) -> WriteResult:
        """PATCH pods/<name>/status (`kubectl patch --subresource status`): what a controller may set there
        are the pod's conditions beside the kubelet's, such as a readiness gate's (which the kubelet then
        reads into Ready); every other status field, and the kubelet's own conditions, stay the pod
        manager's, as the kubelet would overwrite them at its next status update."""
        kind = KINDS["pods"]
        current = self.get(kind, namespace, name)
        new = self._patched(kind, current, body, content_type.split(";")[0].strip())
        status = new.get("status") if isinstance(new, dict) else None
        conditions = status.get("conditions") if isinstance(status, dict) else None
        if not isinstance(conditions, list) or not all(
            isinstance(c, dict) and c.get("type") for c in conditions
        ):
            raise invalid(kind.kind, name, "status.conditions: Invalid value: each condition needs a type")
        self.manager.set_pod_conditions(namespace, name, conditions)
        return WriteResult(self.get(kind, namespace, name), 200)

    def update(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        body: Any,
        params: dict[str, str],
        current: dict[str, Any] | None = None,
        managed: list[fieldmanager.Manager] | None = None,
        subresource: str = "",
    ) -> WriteResult:
        """PUT (and what a patch or an apply made): `managed` are an apply's entries; otherwise the update
        moves the fields it changed to its `fieldManager` (over the entries it sent, when it sent others)."""
        if "update" not in kind.verbs:
            raise MethodNotAllowed(f"podhost does not update {kind.name}")
        current = current or self.get(kind, namespace, name)
        new = self._check_body(kind, body, namespace)
        new["kind"], new["apiVersion"] = kind.kind, "v1"
        meta = new["metadata"]
        if meta.get("name", name) != name:
            raise BadRequest("the name of the object does not match the name on the URL")
        meta["name"] = name
        warnings = self._check_fields(kind, new, params.get("fieldValidation", "Warn"))
        version = meta.get("resourceVersion")
        if version and version != current["metadata"].get("resourceVersion"):
            raise Conflict(
                f'Operation cannot be fulfilled on {kind.name} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again"
            )
        if meta.get("uid") not in (None, "", current["metadata"].get("uid")):
            raise Conflict(
                f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: "
                f"{current['metadata'].get('uid')}"
            )
        if kind.name == "pods" and subresource:
            if subresource not in POD_SPEC_SUBRESOURCES:
                raise MethodNotAllowed(f"podhost serves {kind.name}/{subresource} read-only")
            spec, forbidden = POD_SPEC_SUBRESOURCES[subresource](current.get("spec", {}), new.get("spec", {}))
            if forbidden:
                raise invalid(kind.kind, name, forbidden)
            manifest = self._manifest(current, spec)  # metadata is not written through a subresource
            new = {**current, "spec": spec}
        elif kind.name == "pods":
            forbidden = patch.pod_spec_change(current.get("spec", {}), new.get("spec", {}))
            if forbidden:
                raise invalid(kind.kind, name, forbidden)
            (stored,) = self.manager.pod_objects(namespace, name)
            manifest = self._manifest(new, stored.get("spec", {}))
        else:
            manifest = self._manifest(new, new.get("spec", {}))
        if params.get("dryRun"):
            self._validate(kind, name, manifest)
            return WriteResult(new, 200, warnings)
        if managed is None:
            sent, had = meta.get("managedFields"), current["metadata"].get("managedFields")
            entries = fieldmanager.managers(current if sent is None or sent == had else new)
            field_manager = params.get("fieldManager") or "unknown"
            managed = fieldmanager.update(
                current, new, field_manager, entries, sch.definition(sch.CORE + kind.kind)
            )
        self._write(kind, name, manifest, managed, subresource)
        return WriteResult(self.get(kind, namespace, name), 200, warnings)

    def delete(
        self, kind: Kind, namespace: str, name: str, options: dict[str, Any], params: dict[str, str]
    ) -> WriteResult:
        if "delete" not in kind.verbs:
            raise MethodNotAllowed(f"podhost does not delete {kind.name}")
        current = self.get(kind, namespace, name)
        uid = (options.get("preconditions") or {}).get("uid")
        if uid and uid != current["metadata"].get("uid"):
            raise Conflict(
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: {current['metadata'].get('uid')}"
            )
        grace = params.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        if params.get("dryRun") or options.get("dryRun"):
            return WriteResult(current)
        if kind.name == "pods":
            self.manager.delete(
                "pods",
                namespace,
                name,
                wait=False,
                grace_period_seconds=None if grace is None else int(grace),
            )
        else:
            self.manager.delete(kind.name, namespace, name)
        after = self.store.get(kind.name, namespace, name)
        if after is not None:
            return WriteResult(after)
        return WriteResult(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "kind": kind.name, "uid": current["metadata"].get("uid")},
            }
        )

    # --- printing -------------------------------------------------------------------------------------

    def table(
        self,
        kind: Kind,
        items: list[dict[str, Any]],
        resource_version: int,
        params: dict[str, str],
        api_version: str,
        headers: bool = True,
    ) -> dict[str, Any]:
        return printers.table(
            kind.kind,
            items,
            time.time(),
            resource_version=str(resource_version),
            include_object=params.get("includeObject", "Metadata"),
            headers=headers,
            api_version=api_version,
        )
