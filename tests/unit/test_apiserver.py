"""The Kubernetes API's pure parts: table printing, credentials on disk, patches and the pod update rule,
strict field validation and OpenAPI from the upstream schemas, resourceVersions and selectors, errors."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from podhost.apiserver import certs, logs, openapi_v3, patch, printers
from podhost.apiserver.status import BadRequest, Gone, code_and_reason, status_object
from podhost.apiserver.store import ResourceStore, field_selector, label_selector
from podhost.errors import AlreadyExists, InvalidArgument, NotFound, RuntimeFailure
from podhost.kubeapi import schema as sch

NOW = 1_800_000_000.0


def ts(seconds_ago: float) -> str:
    return datetime.datetime.fromtimestamp(NOW - seconds_ago, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(containers: list[dict[str, Any]], phase: str = "Pending", **extra: Any) -> dict[str, Any]:
    names = [c["name"] for c in containers]
    status: dict[str, Any] = {"phase": phase, "containerStatuses": containers, "conditions": []}
    status.update(extra.pop("status", {}))
    return {
        "metadata": {"name": "p", "creationTimestamp": ts(300), **extra.pop("metadata", {})},
        "spec": {"containers": [{"name": n} for n in names], "nodeName": "node1", **extra.pop("spec", {})},
        "status": status,
    }


def waiting(name: str, reason: str, restarts: int = 0, **cs: Any) -> dict[str, Any]:
    return {
        "name": name,
        "state": {"waiting": {"reason": reason}},
        "restartCount": restarts,
        "ready": False,
        **cs,
    }


def running(name: str, ready: bool = True) -> dict[str, Any]:
    return {"name": name, "state": {"running": {"startedAt": ts(60)}}, "restartCount": 0, "ready": ready}


# --- printing -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (5, "5s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (10 * 3600, "10h"),
        (50 * 3600, "2d2h"),
        (30 * 86400, "30d"),
        (3 * 365 * 86400, "3y"),
    ],
)
def test_human_duration_is_apimachinerys(seconds: float, text: str) -> None:
    assert printers.human_duration(seconds) == text


def test_pod_status_rules_follow_kubectls_printer() -> None:
    row = printers.pod_row(pod([waiting("a", "ContainerCreating")]), NOW)
    assert row[:5] == ["p", "0/1", "ContainerCreating", "0", "5m"]
    assert printers.pod_row(pod([waiting("a", "ImagePullBackOff")]), NOW)[2] == "ImagePullBackOff"
    crash = waiting(
        "a",
        "CrashLoopBackOff",
        3,
        lastState={"terminated": {"exitCode": 3, "reason": "Error", "finishedAt": ts(12)}},
    )
    assert printers.pod_row(pod([crash], "Running"), NOW)[2:4] == ["CrashLoopBackOff", "3 (12s ago)"]
    done = {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}, "restartCount": 0}
    assert printers.pod_row(pod([done], "Succeeded"), NOW)[2] == "Completed"
    # one container done, another still running and Ready: Running, as kubectl shows it
    ready = pod([done, running("b")], "Running", status={"conditions": [{"type": "Ready", "status": "True"}]})
    assert printers.pod_row(ready, NOW)[1:3] == ["1/2", "Running"]
    not_ready = pod([done, running("b")], "Running")
    assert printers.pod_row(not_ready, NOW)[2] == "NotReady"
    killed = {"name": "a", "state": {"terminated": {"exitCode": 137, "signal": 9}}, "restartCount": 0}
    assert printers.pod_row(pod([killed], "Failed"), NOW)[2] == "Signal:9"
    # two containers, both Running and Ready
    assert printers.pod_row(pod([running("a"), running("b")], "Running"), NOW)[1:3] == ["2/2", "Running"]


def test_terminating_and_init_containers() -> None:
    deleting = pod([running("a")], "Running", metadata={"deletionTimestamp": ts(1)})
    assert printers.pod_row(deleting, NOW)[2] == "Terminating"
    finished = pod([running("a")], "Succeeded", metadata={"deletionTimestamp": ts(1)})
    assert printers.pod_row(finished, NOW)[2] != "Terminating"
    init = pod([waiting("a", "PodInitializing")], spec={"initContainers": [{"name": "i"}]})
    init["status"]["initContainerStatuses"] = [
        {"name": "i", "state": {"running": {}}, "restartCount": 0, "ready": False}
    ]
    assert printers.pod_row(init, NOW)[2] == "Init:0/1"
    init["status"]["initContainerStatuses"] = [
        {"name": "i", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}, "restartCount": 2}
    ]
    assert printers.pod_row(init, NOW)[2:4] == ["Init:Error", "2"]


def test_wide_columns_and_readiness_gates() -> None:
    p = pod([running("a")], "Running", status={"podIPs": [{"ip": "10.0.0.5"}]})
    assert printers.pod_row(p, NOW)[5:] == ["10.0.0.5", "node1", "<none>", "<none>"]
    p["spec"]["readinessGates"] = [{"conditionType": "x/one"}, {"conditionType": "x/two"}]
    p["status"]["conditions"] = [{"type": "x/one", "status": "True"}]
    assert printers.pod_row(p, NOW)[8] == "1/2"
    table = printers.table("Pod", [p], NOW, resource_version="7", include_object="Object")
    names = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert names[:5] == [("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0)]
    assert ("IP", 1) in names and ("Readiness Gates", 1) in names
    assert table["rows"][0]["object"] is p and table["metadata"]["resourceVersion"] == "7"
    meta_only = printers.table("Pod", [p], NOW)["rows"][0]["object"]
    assert meta_only["kind"] == "PartialObjectMetadata"


# --- credentials ------------------------------------------------------------------------------------------------


def test_credentials_are_private_and_reused(tmp_path: Path) -> None:
    creds = certs.ensure_credentials(tmp_path / "kube-api")
    assert stat.S_IMODE((tmp_path / "kube-api").stat().st_mode) == 0o700
    for path in (
        creds.ca_cert,
        creds.ca_key,
        creds.server_cert,
        creds.server_key,
        creds.client_cert,
        creds.client_key,
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    ca = x509.load_pem_x509_certificate(creds.ca_cert.read_bytes())
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    for leaf_path in (creds.server_cert, creds.client_cert):
        leaf = x509.load_pem_x509_certificate(leaf_path.read_bytes())
        assert leaf.issuer == ca.subject
        assert leaf.signature_hash_algorithm is not None
        public.verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm))
    server = x509.load_pem_x509_certificate(creds.server_cert.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    client = x509.load_pem_x509_certificate(creds.client_cert.read_bytes())
    assert "O=system:masters" in client.subject.rfc4514_string()
    before = creds.ca_cert.read_bytes(), creds.client_cert.read_bytes()
    certs.ensure_credentials(tmp_path / "kube-api")
    assert (creds.ca_cert.read_bytes(), creds.client_cert.read_bytes()) == before


def test_credentials_are_looked_at_again_only_when_their_stamp_no_longer_holds(tmp_path: Path) -> None:
    import subprocess
    import sys

    creds = certs.ensure_credentials(tmp_path / "kube-api")
    stamp = tmp_path / "kube-api" / certs.STAMP
    assert stat.S_IMODE(stamp.stat().st_mode) == 0o600
    # A later start in a fresh process: the stamp holds, so cryptography is never imported.
    probe = (
        "import sys; from pathlib import Path; from podhost.apiserver import certs; "
        f"certs.ensure_credentials(Path({str(tmp_path / 'kube-api')!r})); "
        "print('cryptography' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    # A replaced server certificate (or new hosts) is noticed and made again.
    old_server = creds.server_cert.read_bytes()
    creds.server_cert.write_bytes(creds.client_cert.read_bytes())
    certs.ensure_credentials(tmp_path / "kube-api")
    assert creds.server_cert.read_bytes() not in (old_server, creds.client_cert.read_bytes())
    before = creds.server_cert.read_bytes()
    certs.ensure_credentials(tmp_path / "kube-api", hosts=("127.0.0.1", "localhost", "podhost.local"))
    assert creds.server_cert.read_bytes() != before


def test_credentials_are_made_in_a_child_that_cryptography_never_leaves(tmp_path: Path) -> None:
    import subprocess
    import sys

    # The first make, in a fresh process standing for the daemon: the certificates exist afterwards, and
    # cryptography (11 MiB resident once loaded) was loaded only by the certmaker child.
    probe = (
        "import sys; from pathlib import Path; from podhost.apiserver import certs; "
        f"c = certs.ensure_credentials(Path({str(tmp_path / 'kube-api')!r})); "
        "print(c.server_cert.exists(), 'cryptography' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
    # A child that fails is an error naming what it said, not a half-written stamp.
    broken = tmp_path / "broken"
    (broken / "ca.crt").mkdir(parents=True)
    with pytest.raises(RuntimeFailure, match="certificates in .*broken failed: IsADirectoryError"):
        certs.ensure_credentials(broken)
    assert not (broken / certs.STAMP).exists()


def test_kubeconfig_file_is_private_and_names_its_port(tmp_path: Path) -> None:
    creds = certs.ensure_credentials(tmp_path / "kube-api")
    path = tmp_path / "kubeconfig"
    certs.write_kubeconfig(path, certs.kubeconfig(creds, "https://127.0.0.1:16443"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert certs.port_in_kubeconfig(path) == 16443
    assert certs.port_in_kubeconfig(tmp_path / "missing") == 0
    text = path.read_text()
    assert "current-context: podhost" in text and "client-key-data" in text


# --- patches and the pod update rule ------------------------------------------------------------------------------

POD = sch.definition(sch.CORE + "Pod")


def test_strategic_merge_merges_containers_by_name_and_keeps_order() -> None:
    live = {
        "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}},
        "spec": {"containers": [{"name": "x", "image": "i1"}, {"name": "y", "image": "i2", "args": ["1"]}]},
    }
    p = {
        "metadata": {"labels": {"a": None, "c": "3"}},
        "spec": {
            "$setElementOrder/containers": [{"name": "y"}, {"name": "x"}],
            "containers": [{"name": "y", "args": ["2"]}],
        },
    }
    out = patch.strategic_merge(live, p, POD)
    assert out["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert out["spec"]["containers"] == [
        {"name": "y", "image": "i2", "args": ["2"]},
        {"name": "x", "image": "i1"},
    ]
    assert live["metadata"]["labels"] == {"a": "1", "b": "2"}  # the original is not touched
    deleted = patch.strategic_merge(live, {"spec": {"containers": [{"name": "x", "$patch": "delete"}]}}, POD)
    assert [c["name"] for c in deleted["spec"]["containers"]] == ["y"]
    # a list without a merge strategy (args) is replaced inside the container merged by name
    args = patch.strategic_merge(live, {"spec": {"containers": [{"name": "y", "args": ["9"]}]}}, POD)
    assert args["spec"]["containers"][1] == {"name": "y", "image": "i2", "args": ["9"]}


def test_merge_and_json_patches() -> None:
    doc = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert patch.merge_patch(doc, {"a": {"b": None, "e": 2}, "d": None}) == {"a": {"c": [1, 2], "e": 2}}
    ops = [
        {"op": "add", "path": "/a/c/-", "value": 3},
        {"op": "replace", "path": "/d", "value": 5},
        {"op": "remove", "path": "/a/b"},
        {"op": "test", "path": "/d", "value": 5},
    ]
    assert patch.json_patch(doc, ops) == {"a": {"c": [1, 2, 3]}, "d": 5}
    with pytest.raises(BadRequest):
        patch.json_patch(doc, [{"op": "remove", "path": "/nothing/here"}])


def test_pod_update_rule_names_the_change() -> None:
    spec = {"containers": [{"name": "c", "image": "i", "command": ["sleep", "1"]}]}
    assert (
        patch.pod_spec_change(spec, {"containers": [{"name": "c", "image": "i", "command": ["sleep", "1"]}]})
        == ""
    )
    message = patch.pod_spec_change(
        spec, {"containers": [{"name": "c", "image": "i", "command": ["sleep", "2"]}]}
    )
    assert message.startswith("spec: Forbidden: pod updates may not change fields other than")
    assert "spec.containers[0].command[1] differs" in message


# --- schemas ------------------------------------------------------------------------------------------------------


def test_unknown_fields_are_named_by_path_and_pruned() -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"any-key": "v"}, "annotations": {"x/y": "z"}},
        "spec": {
            "containers": [
                {"name": "c", "image": "i", "comand": ["x"], "resources": {"limits": {"cpu": "1"}}}
            ]
        },
        "bogus": 1,
    }
    assert sch.unknown_fields(obj, sch.CORE + "Pod") == ["spec.containers[0].comand", "bogus"]
    assert sch.unknown_fields(obj, sch.CORE + "Pod", prune=True)
    assert "comand" not in obj["spec"]["containers"][0] and "bogus" not in obj
    assert sch.unknown_fields(obj, sch.CORE + "Pod") == []


def test_openapi_v3_lets_kubectl_leave_validation_to_the_server() -> None:
    import json

    kinds = [
        openapi_v3.ServedKind("pods", "Pod", True, ("get", "list", "patch", "create", "delete", "update"))
    ]
    doc = json.loads(openapi_v3.core_v1_document(kinds))
    patches = [
        op["patch"]
        for op in doc["paths"].values()
        if "patch" in op
        and op["patch"]["x-kubernetes-group-version-kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    ]
    assert patches, "kubectl needs a PATCH operation for the Pod kind"
    for op in patches:
        assert {"fieldValidation"} <= {p["name"] for p in op["parameters"] if p["in"] == "query"}
    schemas = doc["components"]["schemas"]
    containers = schemas[sch.CORE + "PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["items"]["$ref"] == "#/components/schemas/" + sch.CORE + "Container"
    assert schemas[sch.INT_OR_STRING]["format"] == "int-or-string"
    assert "$defs" not in json.dumps(doc)
    root = openapi_v3.discovery_document(openapi_v3.core_v1_document(kinds))
    assert root["paths"]["api/v1"]["serverRelativeURL"].startswith("/openapi/v3/api/v1?hash=")


def test_openapi_v2_for_older_clients_json_and_gnostic_protobuf() -> None:
    import json

    from podhost.apiserver import openapi_v2
    from podhost.apiserver import openapiv2_pb2 as v2

    kinds = [
        openapi_v3.ServedKind("pods", "Pod", True, ("get", "list", "patch", "create", "delete", "update"))
    ]
    doc = openapi_v2.document(kinds)
    assert doc["swagger"] == "2.0" and "$defs" not in json.dumps(doc)
    defs = doc["definitions"]
    containers = defs[sch.CORE + "PodSpec"]["properties"]["containers"]
    assert containers["items"]["$ref"] == "#/definitions/" + sch.CORE + "Container"
    assert defs[sch.INT_OR_STRING] == {
        "description": defs[sch.INT_OR_STRING]["description"],
        "type": "string",
        "format": "int-or-string",
    }
    assert all(isinstance(d.get("type", ""), str) for d in defs.values())
    parsed = v2.Document.FromString(openapi_v2.protobuf_document(kinds))
    models = {n.name: n.value for n in parsed.definitions.additional_properties}
    assert set(models) == set(defs)
    pod = models[sch.CORE + "Pod"]
    (gvk,) = [e for e in pod.vendor_extension if e.name == "x-kubernetes-group-version-kind"]
    assert json.loads(gvk.value.yaml) == [{"group": "", "kind": "Pod", "version": "v1"}]
    spec = {p.name: p.value for p in models[sch.CORE + "PodSpec"].properties.additional_properties}
    assert list(spec["containers"].type.value) == ["array"]
    assert spec["containers"].items.schema[0]._ref == "#/definitions/" + sch.CORE + "Container"
    merge = {e.name: json.loads(e.value.yaml) for e in spec["containers"].vendor_extension}
    assert merge["x-kubernetes-patch-merge-key"] == "name"


# --- the store -------------------------------------------------------------------------------------------------


class FakeState:
    def __init__(self) -> None:
        self.version = 0
        self.pods: dict[str, dict[str, Any]] = {}

    def render(self) -> dict[str, list[dict[str, Any]]]:
        import copy

        return {"pods": [copy.deepcopy(p) for p in self.pods.values()]}

    def set(self, name: str, uid: str, phase: str) -> None:
        self.pods[name] = {
            "metadata": {"name": name, "namespace": "default", "uid": uid},
            "status": {"phase": phase},
        }
        self.version += 1


def test_resource_versions_move_only_with_changes() -> None:
    state = FakeState()
    store = ResourceStore(state.render, lambda: state.version, lambda v, t: state.version)
    state.set("a", "u1", "Pending")
    items, rv1 = store.list_objects("pods")
    assert [i["metadata"]["resourceVersion"] for i in items] == [str(rv1)]
    state.version += 1  # the manager moved, this object did not
    assert store.list_objects("pods")[0][0]["metadata"]["resourceVersion"] == str(rv1)
    state.set("a", "u1", "Running")
    items, rv2 = store.list_objects("pods")
    assert rv2 > rv1 and items[0]["metadata"]["resourceVersion"] == str(rv2)
    state.set("a", "u2", "Pending")  # deleted and created again under the same name between two syncs
    del state.pods["a"]
    state.set("b", "u3", "Pending")
    state.pods.pop("b")
    state.set("a", "u2", "Pending")
    store.sync()
    events = store.events_since(rv1, "pods")
    assert [(e.type, e.object["metadata"]["uid"]) for e in events] == [
        ("MODIFIED", "u1"),
        ("DELETED", "u1"),
        ("ADDED", "u2"),
    ]
    del state.pods["a"]
    state.version += 1
    store.sync()
    assert store.events_since(rv2 + 2, "pods")[-1].type == "DELETED"
    assert store.get("pods", "default", "a") is None


def test_a_watch_from_before_the_log_is_gone() -> None:
    state = FakeState()
    store = ResourceStore(state.render, lambda: state.version, lambda v, t: state.version, log_size=2)
    for phase in ("A", "B", "C", "D"):
        state.set("a", "u1", phase)
        store.sync()
    with pytest.raises(Gone):
        store.events_since(1, "pods")
    assert len(store.events_since(store.resource_version - 1, "pods")) == 1


def test_selectors() -> None:
    obj = {
        "metadata": {"name": "x", "namespace": "ns", "labels": {"app": "web", "tier": "f"}},
        "status": {"phase": "Running"},
    }
    assert field_selector("metadata.name=x,status.phase!=Pending")(obj)
    assert not field_selector("metadata.name==y")(obj)
    assert field_selector("")(obj)
    assert label_selector("app=web,tier in (f,g),!missing")(obj)
    assert not label_selector("app!=web")(obj)
    assert label_selector("tier notin (a),app")(obj)
    with pytest.raises(BadRequest):
        field_selector("metadata.name")


# --- errors and logs ----------------------------------------------------------------------------------------------


def test_errors_map_to_status_codes_and_reasons() -> None:
    assert code_and_reason(NotFound('pods "x" not found')) == (404, "NotFound")
    assert code_and_reason(AlreadyExists("x")) == (409, "AlreadyExists")
    assert code_and_reason(BadRequest("x")) == (400, "BadRequest")
    assert code_and_reason(InvalidArgument("x")) == (422, "Invalid")
    assert code_and_reason(RuntimeError("boom")) == (500, "InternalError")
    status = status_object(NotFound('pods "x" not found'))
    assert status["kind"] == "Status" and status["message"] == 'pods "x" not found' and status["code"] == 404


def test_log_records_and_default_container() -> None:
    options = logs.LogOptions()
    assert logs.render(b"2026-01-01T00:00:00.5Z stderr F err\n", options, 0) == b"err\n"
    assert logs.render(b"2026-01-01T00:00:00.5Z stdout P part", options, 0) == b"part"
    stamped = logs.render(b"2026-01-01T00:00:00.5Z stdout F x", logs.LogOptions(timestamps=True), 0)
    assert stamped == b"2026-01-01T00:00:00.5Z x\n"
    assert logs.render(b"garbage", options, 0) is None
    two = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}}
    with pytest.raises(BadRequest, match=r"choose one of: \[a b\]"):
        logs.default_container(two, "")
    two["metadata"]["annotations"] = {logs.DEFAULT_CONTAINER_ANNOTATION: "b"}
    assert logs.default_container(two, "") == "b"
    assert logs.default_container(two, "a") == "a"
    assert logs.tail(b"1\n2\n3\n", 2) == [b"2\n", b"3\n"]


def test_kubeconfig_merge_replaces_only_podhosts_entries() -> None:
    from podhost.cli.kubeconfig import merge

    mine = {
        "clusters": [{"name": "podhost", "cluster": {"server": "https://127.0.0.1:2"}}],
        "users": [{"name": "podhost-admin", "user": {}}],
        "contexts": [{"name": "podhost", "context": {"cluster": "podhost", "user": "podhost-admin"}}],
        "current-context": "podhost",
    }
    theirs = {
        "clusters": [
            {"name": "prod", "cluster": {}},
            {"name": "podhost", "cluster": {"server": "https://old:1"}},
        ],
        "users": [{"name": "me", "user": {}}],
        "contexts": [{"name": "prod", "context": {}}],
        "current-context": "prod",
    }
    out = merge(theirs, mine)
    assert [c["name"] for c in out["clusters"]] == ["prod", "podhost"]
    assert out["clusters"][1]["cluster"]["server"] == "https://127.0.0.1:2"
    assert [u["name"] for u in out["users"]] == ["me", "podhost-admin"]
    assert out["current-context"] == "podhost"


def test_daemon_flags_reach_the_config() -> None:
    from podhost.cli.parser import build_parser, daemon_overrides

    def api_settings(args: object) -> dict[str, object]:
        overrides = daemon_overrides(args)  # type: ignore[arg-type]
        return {k: overrides[k] for k in ("kube_api", "kube_api_port")}

    args = build_parser().parse_args(["daemon", "--no-kube-api", "--kube-api-port", "7443"])
    assert api_settings(args) == {"kube_api": False, "kube_api_port": 7443}
    defaults = build_parser().parse_args(["daemon"])
    assert api_settings(defaults) == {"kube_api": None, "kube_api_port": None}  # the config file decides


def test_invalid_carries_kube_apiservers_details() -> None:
    """kubectl prints a 422 from its details (`The Pod "web" is invalid: spec: Forbidden: ...`); older
    clients print only "The request is invalid" without them."""
    from podhost.apiserver.resources import invalid

    error = invalid("Pod", "web", "spec: Forbidden: pod updates may not change fields")
    assert str(error) == 'Pod "web" is invalid: spec: Forbidden: pod updates may not change fields'
    assert status_object(error, error.details)["details"] == {
        "name": "web",
        "kind": "Pod",
        "causes": [
            {
                "reason": "FieldValueForbidden",
                "message": "Forbidden: pod updates may not change fields",
                "field": "spec",
            }
        ],
    }
    assert code_and_reason(error) == (422, "Invalid")
