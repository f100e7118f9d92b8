"""OpenAPI v2 (swagger 2.0) for older clients: the same upstream definitions as the v3 document.

kubectl before 1.24 or so (Debian's kubernetes-client is 1.20) fetches `/openapi/v2` for `apply`'s
validation and patch metadata and for `explain`, asking for the protobuf form only: gnostic's
`openapi.v2.Document` (openapiv2.proto, copied from github.com/google/gnostic-models, Apache 2.0; the
Python module is generated with grpcio-tools as podhost/cri/codegen.py does for CRI). This module derives
both forms from `schema.definitions()` (kubernetes-validate's `_definitions.json`), for the definitions the
served kinds reach:

- swagger 2.0 spellings: `#/definitions/` refs; one `type` (the JSON-Schema `null` dropped);
  IntOrString and Quantity as upstream publishes them (a string, IntOrString of format int-or-string);
  the `x-kubernetes-*` extensions kept (group-version-kind, patch strategy and merge key, list types).
- the protobuf Document carries what kube-openapi's proto reader uses: each definition's `$ref`, type,
  format, description, required, properties, additionalProperties, items and vendor extensions (as YAML,
  which JSON is). Paths are left out: these clients look models up by group-version-kind.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from podhost.apiserver.openapi_v3 import ServedKind
from podhost.kubeapi import schema as sch

#: The media type older clients ask for (client-go's discovery `mimePb`), and newer ones' spelling.
PROTOBUF_TYPES = (
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
)
#: What kube-openapi's handler answers with either way: "@" is no token character for Go's
#: mime.ParseMediaType, which client-go runs on the response.
PROTOBUF_CONTENT_TYPE = PROTOBUF_TYPES[1]
_V2_PREFIX = "#/definitions/"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
#: JSON-Schema keywords with no swagger 2.0 (or gnostic) field; `enum` is dropped too (old validators
#: compare it strictly and upstream's v2 carried none for these fields).
_DROPPED = ("oneOf", "anyOf", "not", "enum", "$schema", "$id", "const")


def _swagger(node: Any) -> Any:
    if isinstance(node, list):
        return [_swagger(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "$ref" and isinstance(value, str) and value.startswith(sch.DEF_PREFIX):
            out[key] = _V2_PREFIX + value[len(sch.DEF_PREFIX) :]
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            if types:
                out[key] = types[0]
        elif key in ("properties", "patternProperties"):
            out[key] = {k: _swagger(v) for k, v in value.items()}
        else:
            out[key] = _swagger(value)
    if "$ref" not in out and len(node.get("allOf") or []) == 1 and "$ref" in node["allOf"][0]:
        out["$ref"] = out.pop("allOf")[0]["$ref"]
    return out


def definition(name: str) -> dict[str, Any]:
    source = sch.definitions()[name]
    if name in (sch.INT_OR_STRING, QUANTITY):
        out: dict[str, Any] = {"description": source.get("description", ""), "type": "string"}
        if name == sch.INT_OR_STRING:
            out["format"] = "int-or-string"
        return out
    converted: dict[str, Any] = _swagger(source)
    return converted


@functools.cache
def _document(roots: tuple[str, ...]) -> dict[str, Any]:
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": f"v{sch.KUBERNETES_VERSION}"},
        "paths": {},
        "definitions": {name: definition(name) for name in sch.closure(list(roots))},
    }


def roots(kinds: list[ServedKind]) -> tuple[str, ...]:
    names = [sch.CORE + k.kind for k in kinds] + [sch.CORE + k.kind + "List" for k in kinds]
    names += [sch.META + n for n in ("Status", "DeleteOptions", "Patch", "WatchEvent", "APIResourceList")]
    return tuple(names)


def document(kinds: list[ServedKind]) -> dict[str, Any]:
    """`/openapi/v2` as JSON: swagger 2.0 with the served kinds' definitions."""
    return _document(roots(kinds))


# --- gnostic's protobuf form -------------------------------------------------------------------------------


def _any(value: Any) -> Any:
    from podhost.apiserver import openapiv2_pb2 as pb

    return pb.Any(yaml=json.dumps(value))


def _schema(node: dict[str, Any]) -> Any:
    from podhost.apiserver import openapiv2_pb2 as pb

    s = pb.Schema()
    for key, value in node.items():
        if key == "$ref":
            s._ref = value
        elif key in ("format", "title", "description", "pattern", "discriminator") and isinstance(value, str):
            setattr(s, key, value)
        elif key == "required":
            s.required.extend(str(x) for x in value)
        elif key == "type":
            s.type.value.extend([value] if isinstance(value, str) else list(value))
        elif key == "items" and isinstance(value, dict):
            s.items.schema.append(_schema(value))
        elif key == "allOf":
            s.all_of.extend(_schema(x) for x in value)
        elif key == "properties":
            s.properties.SetInParent()
            for name, sub in value.items():
                s.properties.additional_properties.add(name=name, value=_schema(sub))
        elif key == "additionalProperties":
            if isinstance(value, bool):
                s.additional_properties.boolean = value
            else:
                s.additional_properties.schema.CopyFrom(_schema(value))
        elif key == "default":
            s.default.CopyFrom(_any(value))
        elif key == "readOnly":
            s.read_only = bool(value)
        elif key.startswith("x-"):
            s.vendor_extension.add(name=key, value=_any(value))
    return s


@functools.cache
def _protobuf(roots: tuple[str, ...]) -> bytes:
    from podhost.apiserver import openapiv2_pb2 as pb

    doc = _document(roots)
    out = pb.Document(swagger=doc["swagger"], info=pb.Info(**doc["info"]), paths=pb.Paths())
    out.definitions.SetInParent()
    for name, node in doc["definitions"].items():
        out.definitions.additional_properties.add(name=name, value=_schema(node))
    data: bytes = out.SerializeToString()
    return data


def protobuf_document(kinds: list[ServedKind]) -> bytes:
    """`/openapi/v2` as gnostic's `openapi.v2.Document`, serialized."""
    return _protobuf(roots(kinds))
