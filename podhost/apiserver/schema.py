"""Kubernetes' published schemas, from upstream data: OpenAPI v3 for kubectl, strict field validation.

The definitions are the Kubernetes OpenAPI definitions as the `kubernetes-validate` package ships them per
release (`kubernetes-json-schema/v<version>-local/_definitions.json`, JSON-Schema flavoured: `$defs`,
nullable `type` lists), not written by hand. From them this module makes:

- the OpenAPI v3 documents kubectl fetches (`/openapi/v3` and `/openapi/v3/api/v1`). kubectl's default
  `--validate=strict` looks up, in that document, the PATCH operation of the object's group-version-kind
  and whether it takes the `fieldValidation` query parameter; when it does, kubectl leaves validation to
  the server and sends `fieldValidation=Strict`. An object whose kind has no PATCH path is an error for
  kubectl, so every served kind has one. The same document feeds `kubectl explain` and client-side
  apply's strategic-merge patch metadata.
- `unknown_fields`: the fields of an object that its schema does not have, named by path as the API
  server's strict decoding names them (`spec.containers[0].comand`).
- the patch metadata (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`) for `patch`.

Loaded once, lazily: the file is 1.3 MB of JSON and a daemon that nobody asks needs none of it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources
from typing import Any

#: The Kubernetes release whose API this server speaks (kubectl 1.32 is the client on these machines).
KUBERNETES_VERSION = "1.32.0"
_DEF_PREFIX = "#/$defs/"
_COMPONENT_PREFIX = "#/components/schemas/"
CORE = "io.k8s.api.core.v1."
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"


@functools.cache
def definitions() -> dict[str, dict[str, Any]]:
    """Every definition of the release, by its OpenAPI name (io.k8s.api.core.v1.Pod, ...)."""
    path = (
        resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{KUBERNETES_VERSION}-local"
        / "_definitions.json"
    )
    defs: dict[str, dict[str, Any]] = json.loads(path.read_text())["$defs"]
    return defs


def ref_name(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref", "")
    return ref[len(_DEF_PREFIX) :] if isinstance(ref, str) and ref.startswith(_DEF_PREFIX) else ""


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """Follow `$ref` (and a lone `allOf: [$ref]`) to the definition."""
    for _ in range(8):
        name = ref_name(schema)
        if not name and len(schema.get("allOf", [])) == 1:
            name = ref_name(schema["allOf"][0])
        if not name:
            return schema
        schema = definitions()[name]
    return schema


# --- strict field validation ----------------------------------------------------------------------------


def unknown_fields(obj: Any, definition: str, prune: bool = False) -> list[str]:
    """Paths of the fields in `obj` that definition `definition` does not declare, in document order.
    Maps (`additionalProperties`) accept any key; values are checked against their own schema. With
    `prune` they are also removed from `obj`, as decoding into the Go types drops them."""
    found: list[str] = []
    _walk(obj, definitions()[definition], "", found, prune)
    return found


def _walk(value: Any, schema: dict[str, Any], path: str, found: list[str], prune: bool) -> None:
    schema = resolve(schema)
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        unknown = []
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if props is not None and key in props:
                _walk(item, props[key], where, found, prune)
            elif isinstance(extra, dict):
                _walk(item, extra, where, found, prune)
            elif props is not None and extra is not True:
                found.append(where)
                unknown.append(key)
        if prune:
            for key in unknown:
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _walk(item, schema["items"], f"{path}[{i}]", found, prune)


# --- patch metadata -------------------------------------------------------------------------------------


def field_schema(schema: dict[str, Any], key: str) -> dict[str, Any]:
    """The schema of field `key` of an object schema ({} when unknown: a patch then merges plainly)."""
    schema = resolve(schema)
    props = schema.get("properties") or {}
    if key in props:
        return dict(props[key])
    extra = schema.get("additionalProperties")
    return dict(extra) if isinstance(extra, dict) else {}


def items_schema(schema: dict[str, Any]) -> dict[str, Any]:
    items = resolve(schema).get("items")
    return dict(items) if isinstance(items, dict) else {}


def definition(name: str) -> dict[str, Any]:
    return {"$ref": _DEF_PREFIX + name}


# --- OpenAPI v3 -----------------------------------------------------------------------------------------


def _openapi(node: Any) -> Any:
    """A definition in OpenAPI 3.0 form: refs to components, one `type`, IntOrString as upstream
    publishes it (a string of format int-or-string)."""
    if isinstance(node, list):
        return [_openapi(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith(_DEF_PREFIX):
            out[key] = _COMPONENT_PREFIX + value[len(_DEF_PREFIX) :]
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


def _closure(roots: list[str]) -> list[str]:
    defs = definitions()
    seen: list[str] = []
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.append(name)
        text = json.dumps(defs[name])
        start = 0
        while (at := text.find('"' + _DEF_PREFIX, start)) >= 0:
            end = text.index('"', at + 1)
            todo.append(text[at + 1 + len(_DEF_PREFIX) : end])
            start = end
    return sorted(seen)


def _component(name: str) -> dict[str, Any]:
    if name == INT_OR_STRING:
        return {
            "description": definitions()[name].get("description", ""),
            "type": "string",
            "format": "int-or-string",
        }
    converted: dict[str, Any] = _openapi(definitions()[name])
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
    kind_def = CORE + resource.kind
    list_def = CORE + resource.kind + "List"
    body = {"content": {"*/*": {"schema": {"$ref": _COMPONENT_PREFIX + kind_def}}}, "required": True}
    patch_body = {
        "content": {
            t: {"schema": {"$ref": _COMPONENT_PREFIX + META + "Patch"}}
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
    roots = [CORE + k.kind for k in served] + [CORE + k.kind + "List" for k in served]
    roots += [META + n for n in ("Status", "DeleteOptions", "Patch", "WatchEvent", "APIResourceList")]
    paths: dict[str, Any] = {}
    for kind in served:
        paths.update(_paths_for(kind))
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": f"v{KUBERNETES_VERSION}"},
        "paths": paths,
        "components": {
            "schemas": {name: _component(name) for name in _closure(roots)},
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
