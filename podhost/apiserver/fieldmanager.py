"""Field managers: `metadata.managedFields` and server-side apply, as kube-apiserver's fieldmanager does them
(k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager over sigs.k8s.io/structured-merge-diff). Pure: no
I/O, no state; the API keeps the entries per object and hands them in.

Theory of operation. A field set is a set of paths; a path is a tuple of FieldsV1 keys: `f:<field>` for a
field of an object or a map, `k:{"name":"web"}` for an element of an associative list
(`x-kubernetes-list-type: map`, keyed by `x-kubernetes-list-map-keys`), `v:<json>` for an element of a
set (`x-kubernetes-list-type: set`); any other list is atomic, one leaf. A set holds the leaves of an
object and the elements of its associative lists and sets, as structured-merge-diff's ToFieldSet does,
without the fields every object has and no manager owns (apiVersion, kind, metadata.name/namespace/uid/
resourceVersion/..., status: the pod's status is the kubelet's).

- An update (create, update, patch: operation `Update`) gives its manager the fields it changed, taken
  from every other manager; fields it removed leave every set.
- An apply (operation `Apply`, `application/apply-patch+yaml`) owns exactly the fields of its
  configuration: they are merged into the live object (associative lists by key, atomic lists whole);
  fields it applied before and no longer applies are removed unless another manager owns them. A field
  whose value the apply changes and that another manager owns is a conflict (409 with kube-apiserver's
  message and one `FieldManagerConflict` cause per field), unless forced: then the others lose it.
  Applying the value a field already has makes its managers co-owners.
- Upgrading from client-side apply (kube-apiserver's lastAppliedManager): an apply by manager `kubectl`
  whose conflicts are all fields of the object's `kubectl.kubernetes.io/last-applied-configuration`
  goes ahead as if forced, so `kubectl apply --server-side` takes over what `kubectl apply` made.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from podhost.apiserver import patch as patches
from podhost.apiserver.status import Conflict
from podhost.kubeapi import schema as sch

Path = tuple[str, ...]
APPLY = "Apply"
UPDATE = "Update"
#: Fields no manager owns (structured-merge-diff's managers never see them: fieldmanager strips them).
_UNOWNED_META = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
)
_MISSING = object()
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: The manager whose applies may take over the fields of the last-applied configuration.
UPGRADING_MANAGER = "kubectl"


class ApplyConflict(Conflict):
    """409 Conflict of an apply; its Status details carry one cause (type, message, field) per field."""

    def __init__(self, message: str, causes: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.details = {"causes": causes}


@dataclass
class Manager:
    """One managedFields entry."""

    manager: str
    operation: str
    fields: set[Path] = field(default_factory=set)
    time: str = ""
    api_version: str = "v1"

    def to_entry(self) -> dict[str, Any]:
        return {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(self.fields),
        }

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> Manager:
        return cls(
            str(entry.get("manager", "")),
            str(entry.get("operation", UPDATE)),
            from_fields_v1(entry.get("fieldsV1") or {}),
            str(entry.get("time", "")),
            str(entry.get("apiVersion", "v1")),
        )

    def describe(self) -> str:
        """How a conflict names this manager (fieldmanager's printManager)."""
        if self.operation == UPDATE:
            return f'"{self.manager}" using {self.api_version}'
        return f'"{self.manager}"'


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- field sets ------------------------------------------------------------------------------------------


def owned_part(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` without what no manager owns."""
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _UNOWNED_META}
    out.pop("metadata", None)
    if meta:
        out["metadata"] = meta
    return out


def _key(item: dict[str, Any], keys: list[str]) -> str:
    return "k:" + json.dumps({k: item[k] for k in keys if k in item}, sort_keys=True, separators=(",", ":"))


def _list_keys(schema: dict[str, Any]) -> tuple[str, list[str]]:
    """("map", keys) for an associative list, ("set", []) for a set, ("atomic", []) otherwise."""
    kind = str(schema.get("x-kubernetes-list-type", ""))
    keys = [str(k) for k in schema.get("x-kubernetes-list-map-keys") or []]
    if not kind and "merge" in str(schema.get("x-kubernetes-patch-strategy", "")).split(","):
        merge_key = str(schema.get("x-kubernetes-patch-merge-key", ""))
        kind, keys = ("map", [merge_key]) if merge_key else ("set", [])
    if kind == "map" and keys:
        return "map", keys
    return ("set", []) if kind == "set" else ("atomic", [])


def field_set(obj: dict[str, Any], schema: dict[str, Any]) -> set[Path]:
    """The paths of `obj` (an object of `schema`) a manager can own."""
    out: set[Path] = set()
    _collect(owned_part(obj), schema, (), out)
    return out


def _collect(value: Any, schema: dict[str, Any], prefix: Path, out: set[Path]) -> None:
    schema = sch.resolve(schema)
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _collect(v, sch.field_schema(schema, k), (*prefix, "f:" + k), out)
    elif isinstance(value, list):
        kind, keys = _list_keys(schema)
        if kind == "map" and all(isinstance(x, dict) for x in value):
            for item in value:
                element = (*prefix, _key(item, keys))
                out.add(element)
                _collect(item, sch.items_schema(schema), element, out)
        elif kind == "set":
            out.update((*prefix, "v:" + json.dumps(x, sort_keys=True, separators=(",", ":"))) for x in value)
        else:
            out.add(prefix)
    elif prefix:
        out.add(prefix)


def to_fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    """The FieldsV1 trie: a member with members below it is marked by "." ({})."""
    paths = set(paths)
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for part in path:
            node = node.setdefault(part, {})
    for path in paths:
        node = root
        for part in path:
            node = node[part]
        if node:
            node["."] = {}
    return root


def from_fields_v1(trie: dict[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(trie, dict):
        return out
    if prefix and (not trie or "." in trie):
        out.add(prefix)
    for part, sub in trie.items():
        if part != ".":
            out |= from_fields_v1(sub, (*prefix, part))
    return out


def path_string(path: Path) -> str:
    """structured-merge-diff's notation: `.spec.containers[name="web"].image`."""
    out = []
    for part in path:
        kind, text = part[:2], part[2:]
        if kind == "f:":
            out.append("." + text)
        elif kind == "k:":
            keys = json.loads(text)
            out.append("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]")
        else:
            out.append(f"[={text}]")
    return "".join(out)


# --- values at paths -------------------------------------------------------------------------------------


def _child(node: Any, part: str) -> Any:
    kind, text = part[:2], part[2:]
    if kind == "f:":
        return node.get(text, _MISSING) if isinstance(node, dict) else _MISSING
    if not isinstance(node, list):
        return _MISSING
    if kind == "k:":
        keys = json.loads(text)
        return next(
            (x for x in node if isinstance(x, dict) and all(x.get(k) == v for k, v in keys.items())), _MISSING
        )
    value = json.loads(text)
    return value if value in node else _MISSING


def value_at(obj: Any, path: Path) -> Any:
    node = obj
    for part in path:
        node = _child(node, part)
        if node is _MISSING:
            return _MISSING
    return node


def differs(a: Any, b: Any, path: Path) -> bool:
    """Whether `path` changed from `a` to `b`: a leaf by value, an element of a list by presence (what
    changed inside it is its own fields')."""
    x, y = value_at(a, path), value_at(b, path)
    if path and path[-1].startswith("k:"):
        return (x is _MISSING) != (y is _MISSING)
    return bool(x != y)


def remove(obj: dict[str, Any], path: Path) -> None:
    """Remove the field or element at `path` from `obj` (nothing when it is not there)."""
    parent = value_at(obj, path[:-1])
    part = path[-1]
    if isinstance(parent, dict) and part.startswith("f:"):
        parent.pop(part[2:], None)
    elif isinstance(parent, list):
        found = _child(parent, part)
        if found is not _MISSING:
            parent.remove(found)


# --- operations ------------------------------------------------------------------------------------------


def managers(obj: dict[str, Any] | None) -> list[Manager]:
    return [Manager.from_entry(e) for e in ((obj or {}).get("metadata") or {}).get("managedFields") or []]


def _entry(entries: list[Manager], name: str, operation: str, stamp: str) -> Manager:
    for m in entries:
        if (m.manager, m.operation) == (name, operation):
            m.time = stamp
            return m
    entries.append(Manager(name, operation, set(), stamp))
    return entries[-1]


def update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    manager: str,
    entries: list[Manager],
    schema: dict[str, Any],
) -> list[Manager]:
    """The entries after an update by `manager` from `old` (None: a create) to `new`."""
    entries = copy.deepcopy(entries)
    old_set = field_set(old, schema) if old else set()
    new_set = field_set(new, schema)
    changed = {p for p in new_set if p not in old_set or differs(old, new, p)}
    gone = old_set - new_set
    for m in entries:
        m.fields -= changed | gone
    if changed:
        _entry(entries, manager, UPDATE, now_rfc3339()).fields |= changed
    return [m for m in entries if m.fields]


def apply(
    live: dict[str, Any] | None,
    config: dict[str, Any],
    manager: str,
    entries: list[Manager],
    schema: dict[str, Any],
    force: bool = False,
) -> tuple[dict[str, Any], list[Manager]]:
    """Server-side apply of `config` by `manager` to `live` (None: the object does not exist): the new
    object and its entries. Raises ApplyConflict."""
    upgradable = last_applied_fields(live, schema) if manager == UPGRADING_MANAGER else set()
    entries = copy.deepcopy(entries)
    base = copy.deepcopy(live) if live else {}
    applied = field_set(config, schema)
    merged = patches.strategic_merge(base, owned_part(config), schema) if base else copy.deepcopy(config)
    if base:
        merged.setdefault("metadata", {}).update(
            {k: v for k, v in (config.get("metadata") or {}).items() if k in ("name", "namespace")}
        )
    mine = next((m for m in entries if (m.manager, m.operation) == (manager, APPLY)), None)
    others = [m for m in entries if m is not mine]
    owned_by_others = set().union(*(m.fields for m in others)) if others else set()
    for path in sorted((mine.fields if mine else set()) - applied, key=len, reverse=True):
        kept = applied | owned_by_others  # a field or element still applied or owned below it stays
        if not any(p[: len(path)] == path for p in kept):
            remove(merged, path)
    changed = {p for p in applied if differs(base, merged, p)}
    conflicts = [(m, p) for m in others for p in sorted(changed & m.fields)]
    if conflicts and not force and not {p for _, p in conflicts} <= upgradable:
        raise conflict_error(conflicts)
    for m in others:
        m.fields -= changed
    _entry(entries, manager, APPLY, now_rfc3339()).fields = applied
    return merged, [m for m in entries if m.fields]


def last_applied_fields(live: dict[str, Any] | None, schema: dict[str, Any]) -> set[Path]:
    """The fields of `live`'s last-applied configuration (client-side apply's annotation), or none."""
    text = (((live or {}).get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    try:
        last = json.loads(text) if text else None
    except ValueError:
        return set()
    return field_set(last, schema) if isinstance(last, dict) else set()


def conflict_error(conflicts: list[tuple[Manager, Path]]) -> ApplyConflict:
    """kube-apiserver's words (fieldmanager.NewConflictError): one conflict inline, more by manager."""
    causes = [
        {"type": "FieldManagerConflict", "message": f"conflict with {m.describe()}", "field": path_string(p)}
        for m, p in conflicts
    ]
    if len(conflicts) == 1:
        ((m, p),) = conflicts
        return ApplyConflict(
            f"Apply failed with 1 conflict: conflict with {m.describe()}: {path_string(p)}", causes
        )
    by_manager: dict[str, list[Path]] = {}
    for m, p in conflicts:
        by_manager.setdefault(m.describe(), []).append(p)
    lines = []
    for name in sorted(by_manager):
        lines.append(f"conflicts with {name}:")
        lines += [f"- {path_string(p)}" for p in by_manager[name]]
    return ApplyConflict(f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines), causes)
