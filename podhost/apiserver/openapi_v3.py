"""The OpenAPI v3 documents kubectl fetches (`/openapi/v3` and `/openapi/v3/api/v1`), from the upstream
definitions (`podhost.kubeapi.schema`).

kubectl's default `--validate=strict` looks up, in that document, the PATCH operation of the object's
group-version-kind and whether it takes the `fieldValidation` query parameter; when it does, kubectl
leaves validation to the server and sends `fieldValidation=Strict`. An object whose kind has no PATCH path
is an error for kubectl, so every served kind has one. The same document feeds `kubectl explain` and
client-side apply's strategic-merge patch metadata.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from podhost.kubeapi import schema as sch

_COMPONENT_PREFIX = "#/components/schemas/"


def _openapi(node: Any) -> Any:
    """A definition in OpenAPI 3.0 form: refs to components, one `type`, IntOrString as upstream
    publishes it (a string of format int-or-string)."""
    if isinstance(node, list):
        return [_openapi(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith(sch.DEF_PREFIX):
            out[key] = _COMPONENT_PREFIX + value[len(sch.DEF_PREFIX) :]
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            if len(types) == 1:
                out[key] = types[0]
            elif types:
                out[key] = types
        elif key in ("properties", "patternProperties"):
            out[key] = {k: _openapi(v) for k, v in value.items()}
        else:
            out[key] = _openapi(value)
    return out


def _component(name: str) -> dict[str, Any]:
    if name == sch.INT_OR_STRING:
        return {
            "description": sch.definitions()[name].get("description", ""),
            "type": "string",
            "format": "int-or-string",
        }
    converted: dict[str, Any] = _openapi(sch.definitions()[name])
    return converted


def _parameter(name: str, where: str, description: str, type_: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "description": description,
        "schema": {"type": type_, "uniqueItems": True},
    }


_FIELD_VALIDATION = _parameter(
    "fieldValidation",
    "query",
    "How the server treats unknown or duplicate fields in the request: Ignore, Warn (the default) or "
    "Strict (the request fails naming them).",
)
_DRY_RUN = _parameter("dryRun", "query", "When present (All), the change is validated but not persisted.")
_FIELD_MANAGER = _parameter("fieldManager", "query", "The name of the actor making the change.")


def _response(schema_name: str) -> dict[str, Any]:
    ref = {"$ref": _COMPONENT_PREFIX + schema_name}
    return {
        "200": {
            "description": "OK",
            "content": {"application/json": {"schema": ref}, "application/yaml": {"schema": ref}},
        },
        "401": {"description": "Unauthorized"},
    }


def _paths_for(resource: ServedKind) -> dict[str, Any]:
    gvk = {"group": "", "version": "v1", "kind": resource.kind}
    base = "/api/v1/namespaces/{namespace}/" if resource.namespaced else "/api/v1/"
    name_param = _parameter("name", "path", f"name of the {resource.kind}")
    ns_params = [_parameter("namespace", "path", "object name and auth scope")] if resource.namespaced else []
    kind_def = sch.CORE + resource.kind
    list_def = sch.CORE + resource.kind + "List"
    body = {"content": {"*/*": {"schema": {"$ref": _COMPONENT_PREFIX + kind_def}}}, "required": True}
    patch_body = {
        "content": {
            t: {"schema": {"$ref": _COMPONENT_PREFIX + sch.META + "Patch"}}
            for t in (
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/apply-patch+yaml",
            )
        },
        "required": True,
    }

    def op(action: str, verb: str, response: str, **extra: Any) -> dict[str, Any]:
        return {
            "operationId": f"{verb}{'Namespaced' if resource.namespaced else ''}{resource.kind}",
            "tags": ["core_v1"],
            "responses": _response(response),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            **extra,
        }

    writes = [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION]
    collection: dict[str, Any] = {"get": op("list", "list", list_def), "parameters": ns_params}
    item: dict[str, Any] = {"get": op("get", "read", kind_def), "parameters": [name_param, *ns_params]}
    if "create" in resource.verbs:
        collection["post"] = op("post", "create", kind_def, parameters=writes, requestBody=body)
    if "update" in resource.verbs:
        item["put"] = op("put", "replace", kind_def, parameters=writes, requestBody=body)
    if "patch" in resource.verbs:
        item["patch"] = op("patch", "patch", kind_def, parameters=writes, requestBody=patch_body)
    if "delete" in resource.verbs:
        item["delete"] = op("delete", "delete", kind_def, parameters=[_DRY_RUN])
    paths = {base + resource.name: collection, base + resource.name + "/{name}": item}
    if resource.namespaced:
        paths["/api/v1/" + resource.name] = {"get": op("list", "list", list_def)}
    return paths


class ServedKind:
    """What OpenAPI needs to know of one served resource (filled from `resources.KINDS`)."""

    def __init__(self, name: str, kind: str, namespaced: bool, verbs: tuple[str, ...]) -> None:
        self.name, self.kind, self.namespaced, self.verbs = name, kind, namespaced, verbs


@functools.cache
def _core_v1_document(kinds: tuple[tuple[str, str, bool, tuple[str, ...]], ...]) -> bytes:
    served = [ServedKind(*k) for k in kinds]
    roots = [sch.CORE + k.kind for k in served] + [sch.CORE + k.kind + "List" for k in served]
    roots += [sch.META + n for n in ("Status", "DeleteOptions", "Patch", "WatchEvent", "APIResourceList")]
    paths: dict[str, Any] = {}
    for kind in served:
        paths.update(_paths_for(kind))
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": f"v{sch.KUBERNETES_VERSION}"},
        "paths": paths,
        "components": {
            "schemas": {name: _component(name) for name in sch.closure(roots)},
            "securitySchemes": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def core_v1_document(kinds: list[ServedKind]) -> bytes:
    """`/openapi/v3/api/v1`: the served kinds' paths and every schema they reach (JSON bytes)."""
    return _core_v1_document(tuple((k.name, k.kind, k.namespaced, tuple(k.verbs)) for k in kinds))


def discovery_document(core_v1: bytes) -> dict[str, Any]:
    """`/openapi/v3`: where each group-version's document is; the hash lets clients cache it."""
    digest = hashlib.sha512(core_v1).hexdigest()[:128].upper()
    return {"paths": {"api/v1": {"serverRelativeURL": f"/openapi/v3/api/v1?hash={digest}"}}}
