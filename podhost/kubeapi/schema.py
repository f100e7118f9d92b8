"""Kubernetes' object schemas, from upstream data, and the one check of an object against them.

The definitions are the Kubernetes OpenAPI definitions as the `kubernetes-validate` package ships them per
release (`kubernetes-json-schema/v<version>-local/_definitions.json`, JSON-Schema flavoured: `$defs`,
nullable `type` lists, `oneOf` for IntOrString and Quantity), not written by hand. From them:

- `unknown_fields`: the fields of an object that its schema does not have, named by path as the API
  server's strict decoding names them (`spec.containers[0].comand`);
- `invalid_fields`: values of the wrong JSON type and missing required fields, as field errors
  (`spec.containers[0].ports[0].containerPort: Required value`);
- lookups (`resolve`, `field_schema`, `items_schema`) for patches, field managers and OpenAPI documents.

Both the pod manager (every manifest, static pods included) and the API server check objects here; what
podhost can run of a valid object is the manifest reader's business (`podhost.kubelet.manifest`).
Loaded once, lazily: the file is 1.3 MB of JSON and a daemon that nobody asks needs none of it.
"""

from __future__ import annotations

import datetime
import functools
import json
from importlib import resources
from typing import Any

#: The Kubernetes release whose API this server speaks (its Pods as issue 14 asks; kubectl 1.32 and 1.20 work).
KUBERNETES_VERSION = "1.36.0"
DEF_PREFIX = "#/$defs/"
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
    """The definition `schema` refers to (directly or as a lone `allOf`), or ""."""
    ref = schema.get("$ref", "")
    if not ref and len(schema.get("allOf", [])) == 1:
        ref = schema["allOf"][0].get("$ref", "")
    return ref[len(DEF_PREFIX) :] if isinstance(ref, str) and ref.startswith(DEF_PREFIX) else ""


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """Follow `$ref` (and a lone `allOf: [$ref]`) to the definition."""
    for _ in range(8):
        name = ref_name(schema)
        if not name:
            return schema
        schema = definitions()[name]
    return schema


def definition(name: str) -> dict[str, Any]:
    return {"$ref": DEF_PREFIX + name}


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


def closure(roots: list[str]) -> list[str]:
    """`roots` and every definition they reach, sorted."""
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
        while (at := text.find('"' + DEF_PREFIX, start)) >= 0:
            end = text.index('"', at + 1)
            todo.append(text[at + 1 + len(DEF_PREFIX) : end])
            start = end
    return sorted(seen)


# --- checks ---------------------------------------------------------------------------------------------


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


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
            where = _join(path, key)
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


#: JSON Schema's type names -> whether a decoded YAML/JSON value is one (bool is not an integer; a YAML
#: timestamp is a string, as kubectl's YAML-to-JSON conversion makes it).
_IS_TYPE = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str | datetime.date),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def _types(schema: dict[str, Any]) -> list[str]:
    if "oneOf" in schema:
        return [t for option in schema["oneOf"] for t in _types(option)]
    kind = schema.get("type", [])
    return [t for t in ([kind] if isinstance(kind, str) else kind) if t != "null"]


def invalid_fields(obj: Any, definition: str) -> list[str]:
    """Field errors of `obj` against definition `definition`, in document order, as the API server words
    them (`path: Required value`, `path: Invalid value: ...`): a value of the wrong JSON type, a missing
    required field. A null is an absent field (it decodes to the zero value); unknown fields are
    `unknown_fields`' to report."""
    found: list[str] = []
    _check(obj, definitions()[definition], "", found)
    return found


def _check(value: Any, schema: dict[str, Any], path: str, found: list[str]) -> None:
    schema = resolve(schema)
    types = _types(schema)
    if value is None:
        return
    if types and not any(_IS_TYPE[t](value) for t in types):
        shown = (
            "object"
            if isinstance(value, dict)
            else "array"
            if isinstance(value, list)
            else json.dumps(value, default=str)
        )
        expected = " or ".join(("an " if t[0] in "aeiou" else "a ") + t for t in types)
        found.append(f"{path}: Invalid value: {shown}: must be {expected}")
        return
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key in schema.get("required", []):
            if value.get(key) is None:
                found.append(f"{_join(path, key)}: Required value")
        for key, item in value.items():
            if key in props:
                _check(item, props[key], _join(path, key), found)
            elif isinstance(extra, dict):
                _check(item, extra, _join(path, key), found)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{path}[{i}]", found)
