"""Request bodies in Kubernetes' protobuf encoding, for the kinds typed clients send that way (pure).

`kubectl create configmap|secret` go through client-go's typed clients, which send
`application/vnd.kubernetes.protobuf`: the 4-byte magic `k8s\\0`, then a runtime.Unknown (typeMeta,
raw) whose raw bytes are the object's message (k8s.io/api/core/v1/generated.proto). Decoded here into
the JSON shape, for ConfigMap and Secret (and the ObjectMeta fields a create sends); other kinds are
refused with 415, so a client sends JSON instead.
"""

from __future__ import annotations

import base64
from typing import Any

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"


class DecodeError(ValueError):
    pass


def _varint(buf: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(buf):
            raise DecodeError("truncated varint")
        b = buf[at]
        at += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, at
        shift += 7


def fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of a message: ints for varints, bytes for length-delimited."""
    out: list[tuple[int, int | bytes]] = []
    at = 0
    while at < len(buf):
        key, at = _varint(buf, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(buf, at)
            out.append((number, value))
        elif wire == 2:
            size, at = _varint(buf, at)
            out.append((number, buf[at : at + size]))
            at += size
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        else:
            raise DecodeError(f"unsupported wire type {wire}")
    return out


def _bytes(v: int | bytes) -> bytes:
    if not isinstance(v, bytes):
        raise DecodeError("expected a length-delimited field")
    return v


def _entry(buf: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for n, v in fields(buf):
        if n == 1:
            key = _bytes(v).decode()
        elif n == 2:
            value = _bytes(v)
    return key, value


def _meta(buf: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    names = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}
    for n, v in fields(buf):
        if n in names:
            meta[names[n]] = _bytes(v).decode()
        elif n in (11, 12):
            key, value = _entry(_bytes(v))
            meta.setdefault("labels" if n == 11 else "annotations", {})[key] = value.decode()
    return meta


def _config_map(raw: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap"}
    for n, v in fields(raw):
        if n == 1:
            obj["metadata"] = _meta(_bytes(v))
        elif n == 2:
            key, value = _entry(_bytes(v))
            obj.setdefault("data", {})[key] = value.decode()
        elif n == 3:
            key, value = _entry(_bytes(v))
            obj.setdefault("binaryData", {})[key] = base64.b64encode(value).decode()
        elif n == 4:
            obj["immutable"] = bool(v)
    return obj


def _secret(raw: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret"}
    for n, v in fields(raw):
        if n == 1:
            obj["metadata"] = _meta(_bytes(v))
        elif n == 2:
            key, value = _entry(_bytes(v))
            obj.setdefault("data", {})[key] = base64.b64encode(value).decode()
        elif n == 3:
            obj["type"] = _bytes(v).decode()
        elif n == 4:
            key, value = _entry(_bytes(v))
            obj.setdefault("stringData", {})[key] = value.decode()
        elif n == 5:
            obj["immutable"] = bool(v)
    return obj


DECODERS = {"ConfigMap": _config_map, "Secret": _secret}


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded ConfigMap or Secret as its JSON object; DecodeError for anything else (never
    with data in the message)."""
    if not body.startswith(MAGIC):
        raise DecodeError("missing the k8s protobuf magic")
    kind, raw = "", b""
    for n, v in fields(body[len(MAGIC) :]):
        if n == 1:
            kind = next((_bytes(x).decode() for m, x in fields(_bytes(v)) if m == 2), "")
        elif n == 2:
            raw = _bytes(v)
    if kind not in DECODERS:
        raise DecodeError(f"podhost decodes protobuf for {', '.join(DECODERS)} only, not {kind or 'this'}")
    return DECODERS[kind](raw)
