"""Patches as kube-apiserver applies them, and the pod update rule. Pure: no I/O, no state.

- `strategic_merge` (`application/strategic-merge-patch+json`, what `kubectl apply` sends): maps merge
  key by key; a list merges by the schema's `x-kubernetes-patch-merge-key` when its
  `x-kubernetes-patch-strategy` says `merge`, and is replaced otherwise; `null` deletes; the directives
  `$patch` (replace, delete, merge), `$retainKeys`, `$setElementOrder/<list>` and
  `$deleteFromPrimitiveList/<list>` are honoured (k8s.io/apimachinery/pkg/util/strategicpatch).
- `merge_patch`: RFC 7386 JSON merge patch (`application/merge-patch+json`).
- `json_patch`: RFC 6902 JSON patch (`application/json-patch+json`).
- `pod_spec_change`: the first path where an update changes a Pod's spec. The pod manager runs a pod as
  it was created, so any spec change is refused, in kube-apiserver's words ("Forbidden: pod updates may
  not change fields other than ...") naming what podhost allows.
- `ephemeral_containers_update` and `resize_update`: what a write to `pods/ephemeralcontainers` and to
  `pods/resize` may change, as kube-apiserver's strategies for them take it (dropNonEphemeralContainerUpdates,
  dropNonResizeUpdates: everything but that part is the stored pod's) and validate it.
"""

from __future__ import annotations

import copy
from typing import Any

from podhost.apiserver.objects import qos_class
from podhost.apiserver.status import BadRequest, Conflict
from podhost.kubeapi import schema as sch

_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def strategic_merge(
    original: dict[str, Any], patch: dict[str, Any], schema: dict[str, Any]
) -> dict[str, Any]:
    """`original` with `patch` applied; `schema` is the object's (e.g. `schema.definition(...Pod)`)."""
    if not isinstance(patch, dict):
        raise BadRequest("the patch is not a JSON object")
    merged = _merge_map(original if isinstance(original, dict) else {}, patch, schema)
    return merged if merged is not None else {}


def _merge_map(
    original: dict[str, Any], patch: dict[str, Any], schema: dict[str, Any]
) -> dict[str, Any] | None:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip(patch)
    result = copy.deepcopy(original)
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith(_ORDER):
            orders[key[len(_ORDER) :]] = value if isinstance(value, list) else []
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            name = key[len(_DELETE_PRIMITIVE) :]
            drop = value if isinstance(value, list) else []
            result[name] = [x for x in result.get(name) or [] if x not in drop]
            continue
        sub = sch.field_schema(schema, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            merged = _merge_map(result[key], value, sub)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                result[key] = _strip(value)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, sub)
        else:
            result[key] = value
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    for name, order in orders.items():
        if isinstance(result.get(name), list):
            result[name] = _reorder(result[name], order, sch.field_schema(schema, name))
    return result


def _strategy(schema: dict[str, Any]) -> tuple[bool, str]:
    strategy = str(schema.get("x-kubernetes-patch-strategy", ""))
    return "merge" in strategy.split(","), str(schema.get("x-kubernetes-patch-merge-key", ""))


def _merge_list(original: Any, patch: list[Any], schema: dict[str, Any]) -> list[Any]:
    merge, key = _strategy(schema)
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [_strip(x) if isinstance(x, dict) else x for x in patch if not _is_directive(x, "replace")]
    if not merge or not isinstance(original, list):
        return [_strip(x) if isinstance(x, dict) else x for x in patch if not _is_directive(x, "delete")]
    result = copy.deepcopy(original)
    if not key:  # a list of primitives: a union that keeps the original's order
        return result + [x for x in patch if x not in result]
    item_schema = sch.items_schema(schema)
    for element in patch:
        if not isinstance(element, dict) or key not in element:
            raise BadRequest(f"map: {element!r} does not contain declared merge key: {key}")
        at = next(
            (i for i, x in enumerate(result) if isinstance(x, dict) and x.get(key) == element[key]), None
        )
        if element.get("$patch") == "delete":
            if at is not None:
                del result[at]
        elif at is None:
            result.append(_strip(element))
        else:
            merged = _merge_map(result[at], element, item_schema)
            if merged is None:
                del result[at]
            else:
                result[at] = merged
    return result


def _reorder(items: list[Any], order: list[Any], schema: dict[str, Any]) -> list[Any]:
    _, key = _strategy(schema)

    def ident(x: Any) -> Any:
        return x.get(key) if key and isinstance(x, dict) else x

    wanted = [ident(x) for x in order]
    ranked = sorted(
        enumerate(items),
        key=lambda ix: (wanted.index(ident(ix[1])) if ident(ix[1]) in wanted else len(wanted), ix[0]),
    )
    return [x for _, x in ranked]


def _is_directive(x: Any, which: str) -> bool:
    return isinstance(x, dict) and x.get("$patch") == which


def _strip(value: Any) -> Any:
    """A patch fragment as plain data (directives removed), for places where there is nothing to merge."""
    if isinstance(value, dict):
        return {
            k: _strip(v)
            for k, v in value.items()
            if not k.startswith("$") and not (isinstance(v, dict) and v.get("$patch") == "delete")
        }
    if isinstance(value, list):
        return [_strip(x) for x in value if not _is_directive(x, "delete")]
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise BadRequest(f"json patch: path {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise BadRequest(f"json patch: {path!r}: no such location") from None
    return node, parts[-1]


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902: add, remove, replace, move, copy and test."""
    if not isinstance(operations, list):
        raise BadRequest("json patch: expected a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise BadRequest(f"json patch: bad operation {op!r}")
        kind, path = op["op"], str(op["path"])
        if kind in ("move", "copy"):
            source = _get(doc, str(op.get("from", "")))
            if kind == "move":
                doc = _remove(doc, str(op.get("from", "")))
            doc = _add(doc, path, copy.deepcopy(source))
        elif kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            doc = _add(_remove(doc, path), path, copy.deepcopy(op.get("value")))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise Conflict(f"json patch: test at {path!r} failed")
        else:
            raise BadRequest(f"json patch: unknown operation {kind!r}")
    return doc


def _get(doc: Any, path: str) -> Any:
    node = doc
    for part in _pointer(path):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise BadRequest(f"json patch: {path!r}: no such location") from None
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent, last = _parent(doc, parts, path)
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if not 0 <= index <= len(parent):
            raise BadRequest(f"json patch: {path!r}: index out of range")
        parent.insert(index, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise BadRequest(f"json patch: {path!r}: no such location")
    return doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    parent, last = _parent(doc, parts, path)
    try:
        if isinstance(parent, list):
            del parent[int(last)]
        else:
            del parent[last]
    except (KeyError, IndexError, ValueError, TypeError):
        raise BadRequest(f"json patch: {path!r}: no such location") from None
    return doc


# --- the pod update rule --------------------------------------------------------------------------------

#: What a Pod update may change on podhost; kube-apiserver also allows image, activeDeadlineSeconds and
#: toleration changes, which the pod manager does not carry out on a running pod.
POD_MUTABLE = "`metadata.labels`, `metadata.annotations`"


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The path of the first place where `a` and `b` differ (None when equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            found = first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            found = first_difference(
                a[i] if i < len(a) else None, b[i] if i < len(b) else None, f"{path}[{i}]"
            )
            if found is not None:
                return found
        return None
    return None if a == b else path


def pod_spec_change(old_spec: dict[str, Any], new_spec: dict[str, Any]) -> str:
    """ "" when the update keeps the spec; otherwise kube-apiserver's Forbidden message for it."""
    where = first_difference(old_spec or {}, new_spec or {})
    if where is None:
        return ""
    return (
        f"spec: Forbidden: pod updates may not change fields other than {POD_MUTABLE} "
        f"(podhost runs a pod as it was created; delete it and create it again); spec.{where} differs"
    )


# --- the pods/ephemeralcontainers and pods/resize subresources ----------------------------------------


def ephemeral_containers_update(
    old_spec: dict[str, Any], new_spec: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """(the spec to store, "" or kube-apiserver's refusal) for a write to `pods/ephemeralcontainers`: the
    stored spec with the written `ephemeralContainers`; one already there may not be removed or changed
    (ValidatePodEphemeralContainersUpdate). Everything else the write changed is ignored, as there."""
    spec = copy.deepcopy(old_spec)
    written = [c for c in new_spec.get("ephemeralContainers") or [] if isinstance(c, dict)]
    if written:
        spec["ephemeralContainers"] = copy.deepcopy(written)
    else:
        spec.pop("ephemeralContainers", None)
    by_name = {c.get("name"): c for c in written}
    for old in old_spec.get("ephemeralContainers") or []:
        name = old.get("name")
        if name not in by_name:
            return (
                spec,
                f'spec.ephemeralContainers: Forbidden: existing ephemeral containers "{name}" may not be removed',
            )
        where = first_difference(old, by_name[name])
        if where is not None:
            return spec, (
                f'spec.ephemeralContainers: Forbidden: existing ephemeral containers "{name}" may not be '
                f"changed ({where} differs)"
            )
    return spec, ""


#: The resources a resize may change (ValidatePodResize: "only cpu and memory resources are mutable").
RESIZABLE = ("cpu", "memory")


def resize_update(old_spec: dict[str, Any], new_spec: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(the spec to store, "" or kube-apiserver's refusal) for a write to `pods/resize`: the stored spec
    with each container's written `resources` and `resizePolicy` (by name; nothing else is taken), checked
    as ValidatePodResize checks it: requests and limits are not removed, the QoS class stays."""
    spec = copy.deepcopy(old_spec)
    written = {c.get("name"): c for c in new_spec.get("containers") or [] if isinstance(c, dict)}
    for i, c in enumerate(spec.get("containers") or []):
        new = written.get(c.get("name"))
        if new is None:
            continue
        for key in ("resources", "resizePolicy"):
            if new.get(key) is not None:
                c[key] = copy.deepcopy(new[key])
            else:
                c.pop(key, None)
        old = (old_spec.get("containers") or [])[i].get("resources") or {}
        for kind in ("requests", "limits"):
            for name in old.get(kind) or {}:
                if name not in ((c.get("resources") or {}).get(kind) or {}):
                    return (
                        spec,
                        f"spec.containers[{i}].resources.{kind}[{name}]: Forbidden: resource removal is not supported",
                    )
            for name in (c.get("resources") or {}).get(kind) or {}:
                if name not in RESIZABLE and (old.get(kind) or {}).get(name) != c["resources"][kind][name]:
                    return spec, "spec: Forbidden: only cpu and memory resources are mutable"
    before, after = qos_class(old_spec), qos_class(spec)
    if before != after:
        return spec, f'spec: Invalid value: "{after}": Pod QOS Class may not change as a result of resizing'
    return spec, ""
