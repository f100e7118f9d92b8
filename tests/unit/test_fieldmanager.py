"""Field managers and server-side apply (podhost.apiserver.fieldmanager). Pure."""

from __future__ import annotations

from typing import Any

import pytest

from podhost.apiserver import fieldmanager as fm
from podhost.kubeapi import schema as sch

POD = sch.definition(sch.CORE + "Pod")


def pod(image: str = "nginx", labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "web", "namespace": "default"}
    if labels:
        meta["labels"] = labels
    containers = [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": containers, **spec}}


WEB = 'k:{"name":"web"}'


def test_a_field_set_has_leaves_and_list_elements_by_key() -> None:
    paths = fm.field_set(pod(labels={"app": "web"}, tolerations=[{"key": "a"}]), POD)
    assert paths == {
        ("f:metadata", "f:labels", "f:app"),
        ("f:spec", "f:containers", WEB),
        ("f:spec", "f:containers", WEB, "f:name"),
        ("f:spec", "f:containers", WEB, "f:image"),
        ("f:spec", "f:containers", WEB, "f:ports", 'k:{"containerPort":80}'),
        ("f:spec", "f:containers", WEB, "f:ports", 'k:{"containerPort":80}', "f:containerPort"),
        ("f:spec", "f:tolerations"),  # atomic
    }


def test_fields_v1_round_trip_and_notation() -> None:
    paths = fm.field_set(pod(labels={"app": "web"}), POD)
    trie = fm.to_fields_v1(paths)
    assert trie["f:spec"]["f:containers"][WEB]["."] == {}
    assert trie["f:metadata"]["f:labels"] == {"f:app": {}}
    assert fm.from_fields_v1(trie) == paths
    assert fm.path_string(("f:spec", "f:containers", WEB, "f:image")) == '.spec.containers[name="web"].image'


def test_an_update_takes_the_fields_it_changes() -> None:
    created = fm.update(None, pod(labels={"app": "web"}), "kubectl-create", [], POD)
    assert [(m.manager, m.operation) for m in created] == [("kubectl-create", "Update")]
    changed = fm.update(pod(labels={"app": "web"}), pod(labels={"app": "db"}), "editor", created, POD)
    owners = {m.manager: m.fields for m in changed}
    assert owners["editor"] == {("f:metadata", "f:labels", "f:app")}
    assert ("f:metadata", "f:labels", "f:app") not in owners["kubectl-create"]


def test_apply_owns_its_configuration_and_co_owns_equal_values() -> None:
    live = pod(labels={"app": "web"})
    entries = fm.update(None, live, "kubectl-create", [], POD)
    new, managed = fm.apply(live, pod(labels={"app": "web", "tier": "a"}), "kubectl", entries, POD)
    assert new["metadata"]["labels"] == {"app": "web", "tier": "a"}
    owners = {m.manager: m for m in managed}
    assert owners["kubectl"].operation == "Apply"
    assert ("f:metadata", "f:labels", "f:app") in owners["kubectl-create"].fields  # same value: shared
    assert ("f:metadata", "f:labels", "f:app") in owners["kubectl"].fields


def test_a_changed_field_of_another_manager_conflicts_unless_forced() -> None:
    live = pod(labels={"tier": "a"})
    _, entries = fm.apply(None, live, "kubectl", [], POD)
    with pytest.raises(fm.ApplyConflict) as e:
        fm.apply(live, pod(labels={"tier": "b"}), "other", entries, POD)
    assert str(e.value) == 'Apply failed with 1 conflict: conflict with "kubectl": .metadata.labels.tier'
    assert e.value.details["causes"] == [
        {
            "type": "FieldManagerConflict",
            "message": 'conflict with "kubectl"',
            "field": ".metadata.labels.tier",
        }
    ]
    new, managed = fm.apply(live, pod(labels={"tier": "b"}), "other", entries, POD, force=True)
    assert new["metadata"]["labels"] == {"tier": "b"}
    owners = {m.manager: m.fields for m in managed}
    assert ("f:metadata", "f:labels", "f:tier") in owners["other"]
    assert ("f:metadata", "f:labels", "f:tier") not in owners["kubectl"]


def test_conflicts_with_an_update_manager_name_its_api_version_and_group_by_manager() -> None:
    live = pod("nginx", labels={"tier": "a"})
    entries = fm.update(None, live, "kubectl-client-side-apply", [], POD)
    with pytest.raises(fm.ApplyConflict) as e:
        fm.apply(live, pod("busybox", labels={"tier": "b"}), "kubectl", entries, POD)
    assert str(e.value) == (
        'Apply failed with 2 conflicts: conflicts with "kubectl-client-side-apply" using v1:\n'
        "- .metadata.labels.tier\n"
        '- .spec.containers[name="web"].image'
    )


def test_a_field_no_longer_applied_goes_unless_another_manager_owns_it() -> None:
    live = pod(labels={"a": "1", "b": "2"})
    _, entries = fm.apply(None, live, "kubectl", [], POD)
    new, managed = fm.apply(live, pod(labels={"a": "1"}), "kubectl", entries, POD)
    assert new["metadata"]["labels"] == {"a": "1"}
    shared = fm.update(None, pod(labels={"b": "2"}), "other", [], POD) + entries
    new, _ = fm.apply(live, pod(labels={"a": "1"}), "kubectl", shared, POD)
    assert new["metadata"]["labels"] == {"a": "1", "b": "2"}


def test_apply_leaves_what_the_server_set_alone() -> None:
    live = pod(labels={"app": "web"})
    live["metadata"]["uid"] = "u"
    live["spec"]["dnsPolicy"] = "ClusterFirst"  # a default: nobody applied it
    live["status"] = {"phase": "Running"}
    _, entries = fm.apply(None, pod(labels={"app": "web"}), "kubectl", [], POD)
    new, _ = fm.apply(live, pod(labels={"app": "web"}), "kubectl", entries, POD)
    assert new == live


def test_kubectl_takes_over_what_client_side_apply_made() -> None:
    """lastAppliedManager: manager `kubectl` conflicting only on fields of the last-applied annotation
    goes ahead; another manager, or a field outside the annotation, still conflicts."""
    import json

    applied = pod(labels={"tier": "a"})
    live = pod(labels={"tier": "a", "extra": "x"})
    live["metadata"]["annotations"] = {fm.LAST_APPLIED: json.dumps(applied)}
    entries = fm.update(None, live, "kubectl-client-side-apply", [], POD)
    new, managed = fm.apply(live, pod(labels={"tier": "b", "extra": "x"}), "kubectl", entries, POD)
    assert new["metadata"]["labels"] == {"tier": "b", "extra": "x"}
    with pytest.raises(fm.ApplyConflict):
        fm.apply(live, pod(labels={"tier": "b"}), "other", entries, POD)
    with pytest.raises(fm.ApplyConflict):
        fm.apply(live, pod(labels={"tier": "a", "extra": "y"}), "kubectl", entries, POD)
