"""Config in pods without root: the atomic writer's layout and swaps, config volume payloads, env
resolution (valueFrom, envFrom, $(VAR)), the downward API's formats, ConfigMap/Secret parsing, and the
protobuf bodies of `kubectl create configmap|secret`."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from podhost.apiserver import k8s_protobuf, printers
from podhost.kubelet import atomic_writer
from podhost.kubelet.atomic_writer import DATA, FileProjection, PayloadError
from podhost.kubelet.config_volumes import VolumeError, memory_size, volume_payload
from podhost.kubelet.configobjects import ConfigObjects, immutable_change, parse_config_object
from podhost.kubelet.downward_api import NodeInfo, PodFacts, format_map
from podhost.kubelet.envvars import ContainerConfigError, expand, make_environment
from podhost.kubelet.manifest import ManifestError, Pod, parse_pod
from podhost.kubelet.podspec import container_config

# --- the atomic writer ------------------------------------------------------------------------------------


def _tree(target: Path) -> dict[str, str]:
    """Every entry of `target`: symlinks as '-> dest', files as their content."""
    out = {}
    for path in sorted(target.rglob("*")):
        rel = str(path.relative_to(target))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_text()
    return out


def test_atomic_writer_layout_then_a_swap_that_drops_a_key(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    payload = {"a": FileProjection(b"1", 0o644), "dir/b": FileProjection(b"2", 0o400)}
    assert atomic_writer.write(target, payload) is True
    first = os.readlink(target / DATA)
    assert first.startswith("..") and first != DATA
    tree = _tree(target)
    assert tree[DATA] == "-> " + first
    assert tree["a"] == "-> ..data/a" and tree["dir"] == "-> ..data/dir"
    assert (target / "a").read_text() == "1" and (target / "dir" / "b").read_text() == "2"
    assert (target / "dir" / "b").stat().st_mode & 0o777 == 0o400
    assert (target / "a").stat().st_mode & 0o777 == 0o644

    assert atomic_writer.write(target, payload) is False  # the same payload writes nothing
    assert os.readlink(target / DATA) == first

    assert atomic_writer.write(target, {"a": FileProjection(b"new", 0o644)}) is True
    second = os.readlink(target / DATA)
    assert second != first and not (target / first).exists()  # the old version is gone
    assert (target / "a").read_text() == "new"
    assert not (target / "dir").is_symlink()  # a path the payload no longer has goes
    assert sorted(p.name for p in target.iterdir()) == sorted([DATA, second, "a"])


def test_atomic_writer_a_mode_change_alone_is_a_change(tmp_path: Path) -> None:
    atomic_writer.write(tmp_path, {"k": FileProjection(b"v", 0o644)})
    assert atomic_writer.write(tmp_path, {"k": FileProjection(b"v", 0o600)}) is True
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600


def test_a_reader_holding_the_old_file_keeps_reading_it(tmp_path: Path) -> None:
    atomic_writer.write(tmp_path, {"k": FileProjection(b"old", 0o644)})
    with open(tmp_path / "k", "rb") as held:
        atomic_writer.write(tmp_path, {"k": FileProjection(b"new", 0o644)})
        assert held.read() == b"old"
    assert (tmp_path / "k").read_bytes() == b"new"


@pytest.mark.parametrize("path", ["/abs", "../up", "a/../../b", "..hidden", ""])
def test_atomic_writer_refuses_paths_that_escape(tmp_path: Path, path: str) -> None:
    with pytest.raises(PayloadError):
        atomic_writer.write(tmp_path, {path: FileProjection(b"x", 0o644)})
    assert not (tmp_path / DATA).exists()


# --- objects and the pods that read them ------------------------------------------------------------------


def _objects(**docs: dict[str, Any]) -> ConfigObjects:
    store = ConfigObjects()
    for doc in docs.values():
        store.put(parse_config_object(doc), 0.0)
    return store


def _cm(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}


def _pod(spec: dict[str, Any], **meta: Any) -> Pod:
    spec.setdefault("containers", [{"name": "c", "image": "i"}])
    return parse_pod({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **meta}, "spec": spec})


def test_secret_parsing_merges_string_data_and_never_echoes_a_value() -> None:
    doc = _secret("s", {"a": "1"})
    doc["stringData"] = {"b": "two", "a": "won"}
    obj = parse_config_object(doc)
    assert obj.data == {"a": b"won", "b": b"two"} and obj.doc["type"] == "Opaque"
    assert "stringData" not in obj.doc and base64.b64decode(obj.doc["data"]["b"]) == b"two"
    bad = _secret("s", {})
    bad["data"] = {"k": "not base64 TOPSECRET!"}
    with pytest.raises(ManifestError) as caught:
        parse_config_object(bad)
    assert "TOPSECRET" not in str(caught.value) and "data[k]" in str(caught.value)
    with pytest.raises(ManifestError, match=r"data\[tls.key\]: Required value"):
        parse_config_object({**_secret("t", {"tls.crt": "x"}), "type": "kubernetes.io/tls"})
    with pytest.raises(ManifestError, match="a valid config key"):
        parse_config_object(_cm("c", {"bad/key": "v"}))


def test_immutable_objects_refuse_changes() -> None:
    old = parse_config_object({**_cm("c", {"k": "v"}), "immutable": True})
    assert immutable_change(old, parse_config_object({**_cm("c", {"k": "v"}), "immutable": True})) == ""
    assert "immutable" in immutable_change(
        old, parse_config_object({**_cm("c", {"k": "w"}), "immutable": True})
    )
    assert "immutable" in immutable_change(old, parse_config_object(_cm("c", {"k": "v"})))


def test_env_from_objects_fields_resources_and_expansion() -> None:
    source = _objects(a=_cm("cfg", {"greeting": "hi", "color": "red"}), b=_secret("sec", {"password": "pw"}))
    pod = _pod(
        {
            "serviceAccountName": "robot",
            "containers": [
                {
                    "name": "c",
                    "image": "i",
                    "command": ["echo", "$(GREETING)", "$$(GREETING)", "$(NOPE)"],
                    "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}},
                    "envFrom": [
                        {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
                        {"secretRef": {"name": "missing", "optional": True}},
                    ],
                    "env": [
                        {
                            "name": "GREETING",
                            "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}},
                        },
                        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
                        {"name": "MSG", "value": "$(GREETING) $(CFG_color)"},
                        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                        {"name": "IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
                        {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {
                            "name": "MEM",
                            "valueFrom": {
                                "resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}
                            },
                        },
                        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
                        {
                            "name": "OPT",
                            "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "x", "optional": True}},
                        },
                    ],
                }
            ],
        },
        labels={"app": "web"},
    )
    facts = PodFacts(NodeInfo("node-1", "10.0.0.1", 2000, 2**30), ("10.0.0.7", "fd00::7"))
    env = make_environment(pod, pod.containers[0], source, facts)
    assert env == [
        ("CFG_greeting", "hi"),
        ("CFG_color", "red"),
        ("GREETING", "hi"),
        ("PW", "pw"),
        ("MSG", "hi red"),
        ("NAME", "p"),
        ("APP", "web"),
        ("SA", "robot"),
        ("IPS", "10.0.0.7,fd00::7"),
        ("HOST", "10.0.0.1"),
        ("NODE", "node-1"),
        ("MEM", "64"),
        ("CPU", "1"),  # 250m in cores, rounded up (the default divisor is 1)
    ]
    config = container_config(pod, pod.containers[0], 0, (), envs=env)
    assert list(config.command) == ["echo", "hi", "$(GREETING)", "$(NOPE)"]
    assert ("PW", b"pw") in [(kv.key, kv.value) for kv in config.envs]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"configMapKeyRef": {"name": "nope", "key": "k"}}, 'configmap "nope" not found'),
        (
            {"secretKeyRef": {"name": "sec", "key": "absent"}},
            "couldn't find key absent in Secret default/sec",
        ),
        (
            {"configMapKeyRef": {"name": "cfg", "key": "absent"}},
            "couldn't find key absent in ConfigMap default/cfg",
        ),
    ],
)
def test_missing_objects_and_keys_are_config_errors(env: dict[str, Any], message: str) -> None:
    source = _objects(a=_cm("cfg", {"k": "v"}), b=_secret("sec", {"password": "hidden-value"}))
    pod = _pod({"containers": [{"name": "c", "image": "i", "env": [{"name": "X", "valueFrom": env}]}]})
    with pytest.raises(ContainerConfigError) as caught:
        make_environment(pod, pod.containers[0], source, PodFacts())
    assert str(caught.value) == message


def test_env_reads_a_configmaps_data_not_its_binary_data() -> None:
    doc = {**_cm("cfg", {"text": "t"}), "binaryData": {"blob": base64.b64encode(b"\x00").decode()}}
    pod = _pod({"containers": [{"name": "c", "image": "i", "envFrom": [{"configMapRef": {"name": "cfg"}}]}]})
    assert make_environment(pod, pod.containers[0], _objects(a=doc), PodFacts()) == [("text", "t")]
    volume = _pod({"volumes": [{"name": "v", "configMap": {"name": "cfg"}}]}).volumes[0]
    assert set(volume_payload(volume, pod, _objects(a=doc), PodFacts())) == {"text", "blob"}


def test_envfrom_of_a_missing_object_unless_optional() -> None:
    pod = _pod({"containers": [{"name": "c", "image": "i", "envFrom": [{"secretRef": {"name": "s"}}]}]})
    with pytest.raises(ContainerConfigError, match='secret "s" not found'):
        make_environment(pod, pod.containers[0], ConfigObjects(), PodFacts())


def test_expansion_rules() -> None:
    env = {"A": "x"}
    assert expand("$(A)-$$(A)-$(B)-$A-$(", env) == "x-$(A)-$(B)-$A-$("


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"fieldRef": {"fieldPath": "spec.hostname"}}, r'fieldPath: Unsupported value: "spec.hostname"'),
        ({"resourceFieldRef": {"resource": "limits.gpu"}}, r'resource: Unsupported value: "limits.gpu"'),
        (
            {"configMapKeyRef": {"name": "c", "key": "k"}, "fieldRef": {"fieldPath": "metadata.name"}},
            "exactly one",
        ),
    ],
)
def test_bad_value_from_names_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        _pod({"containers": [{"name": "c", "image": "i", "env": [{"name": "X", "valueFrom": spec}]}]})


# --- volume payloads ----------------------------------------------------------------------------------------


def test_config_volume_payloads_items_modes_and_optional() -> None:
    source = _objects(a=_cm("cfg", {"a": "1", "b": "2"}), b=_secret("sec", {"pw": "s"}))
    pod = _pod(
        {
            "volumes": [
                {"name": "whole", "configMap": {"name": "cfg"}},
                {
                    "name": "some",
                    "secret": {
                        "secretName": "sec",
                        "defaultMode": 0o400,
                        "items": [{"key": "pw", "path": "x/pw"}],
                    },
                },
                {"name": "opt", "configMap": {"name": "none", "optional": True}},
                {
                    "name": "proj",
                    "projected": {
                        "defaultMode": 0o440,
                        "sources": [
                            {
                                "configMap": {
                                    "name": "cfg",
                                    "items": [{"key": "a", "path": "a", "mode": 0o600}],
                                }
                            },
                            {"secret": {"name": "sec"}},
                            {
                                "downwardAPI": {
                                    "items": [
                                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}
                                    ]
                                }
                            },
                        ],
                    },
                },
            ]
        },
        labels={"b": "2", "a": 'q"uote'},
    )
    payloads = {v.name: volume_payload(v, pod, source, PodFacts()) for v in pod.volumes}
    assert payloads["whole"] == {"a": FileProjection(b"1", 0o644), "b": FileProjection(b"2", 0o644)}
    assert payloads["some"] == {"x/pw": FileProjection(b"s", 0o400)}
    assert payloads["opt"] == {}
    assert payloads["proj"] == {
        "a": FileProjection(b"1", 0o600),
        "pw": FileProjection(b"s", 0o440),
        "labels": FileProjection(b'a="q\\"uote"\nb="2"', 0o440),
    }
    assert [v.tmpfs for v in pod.volumes] == [False, True, False, True]


def test_fs_group_makes_every_file_group_readable() -> None:
    source = _objects(b=_secret("sec", {"pw": "s"}))
    pod = _pod(
        {
            "securityContext": {"fsGroup": 2000},
            "volumes": [{"name": "v", "secret": {"secretName": "sec", "defaultMode": 0o400}}],
        }
    )
    assert volume_payload(pod.volumes[0], pod, source, PodFacts()) == {"pw": FileProjection(b"s", 0o440)}


def test_atomic_writer_gives_files_the_group(tmp_path: Path) -> None:
    gid = os.getgid()
    atomic_writer.write(tmp_path, {"d/k": FileProjection(b"v", 0o440)}, gid)
    assert (tmp_path / "d" / "k").stat().st_gid == gid


def test_missing_objects_and_keys_fail_the_volume_with_the_plugins_words() -> None:
    source = _objects(a=_cm("cfg", {"a": "1"}))
    pod = _pod(
        {
            "volumes": [
                {"name": "v", "configMap": {"name": "gone"}},
                {"name": "k", "configMap": {"name": "cfg", "items": [{"key": "zz", "path": "z"}]}},
                {
                    "name": "p",
                    "projected": {"sources": [{"configMap": {"name": "x"}}, {"secret": {"name": "y"}}]},
                },
            ]
        }
    )
    messages = []
    for v in pod.volumes:
        with pytest.raises(VolumeError) as caught:
            volume_payload(v, pod, source, PodFacts())
        messages.append(str(caught.value))
    assert messages == [
        'configmap "gone" not found',
        "configmap references non-existent config key: zz",
        '[configmap "x" not found, secret "y" not found]',
    ]


def test_memory_empty_dir_size() -> None:
    node = NodeInfo(memory=2**33)
    spec = {"volumes": [{"name": "m", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}]}
    pod = _pod(spec)
    assert memory_size(pod.volumes[0], pod, node) == 16 * 2**20
    limited = _pod(
        {
            **spec,
            "containers": [{"name": "c", "image": "i", "resources": {"limits": {"memory": "8Mi"}}}],
        }
    )
    assert memory_size(limited.volumes[0], limited, node) == 8 * 2**20
    with pytest.raises(ManifestError, match="emptyDir.medium: Unsupported value"):
        _pod({"volumes": [{"name": "m", "emptyDir": {"medium": "HugePages"}}]})


def test_format_map_sorts_and_quotes() -> None:
    assert format_map({"b": "x", "a": "y z"}) == 'a="y z"\nb="x"'


# --- the API side ------------------------------------------------------------------------------------------


def _field(number: int, value: bytes) -> bytes:
    return bytes([number << 3 | 2, len(value)]) + value


def test_protobuf_bodies_of_typed_clients_decode() -> None:
    meta = _field(1, b"db") + _field(3, b"default")
    entry = _field(1, b"pw") + _field(2, b"\x00bin")
    raw = _field(1, meta) + _field(2, entry) + _field(3, b"Opaque")
    body = k8s_protobuf.MAGIC + _field(1, _field(1, b"v1") + _field(2, b"Secret")) + _field(2, raw)
    obj = k8s_protobuf.decode(body)
    assert obj["metadata"] == {"name": "db", "namespace": "default"}
    assert obj["type"] == "Opaque" and base64.b64decode(obj["data"]["pw"]) == b"\x00bin"
    with pytest.raises(k8s_protobuf.DecodeError):
        k8s_protobuf.decode(k8s_protobuf.MAGIC + _field(1, _field(2, b"Pod")))


def test_tables_count_keys_and_never_show_data() -> None:
    cm = {
        "metadata": {"name": "c", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "data": {"a": "1"},
        "binaryData": {"b": "AA=="},
    }
    secret = {
        "metadata": {"name": "s", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "type": "Opaque",
        "data": {"k": "c2VjcmV0"},
    }
    now = 1767225600.0 + 120
    cm_table = printers.table("ConfigMap", [cm], now)
    assert [c["name"] for c in cm_table["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert cm_table["rows"][0]["cells"] == ["c", 2, "2m"]
    s_table = printers.table("Secret", [secret], now)
    assert [c["name"] for c in s_table["columnDefinitions"]] == ["Name", "Type", "Data", "Age"]
    assert s_table["rows"][0]["cells"] == ["s", "Opaque", 1, "2m"]
