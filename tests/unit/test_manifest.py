"""Pod manifests: the article's demo parses verbatim; broken ones name the field."""

from pathlib import Path

import pytest

from podhost.cri import api_pb2 as cri
from podhost.kubelet.manifest import ManifestError, load_documents, parse_pod, parse_quantity
from podhost.kubelet.podspec import container_config, sandbox_config

DEMO = Path(__file__).resolve().parents[2] / "examples" / "shared-namespace-demo.yaml"


def pod_doc(**spec: object) -> dict:
    base = {"containers": [{"name": "a", "image": "busybox"}]}
    base.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": base}


def test_the_articles_manifest_parses_verbatim() -> None:
    (doc,) = load_documents(DEMO.read_text())
    pod = parse_pod(doc)
    assert pod.name == "shared-namespace-demo" and pod.share_process_namespace
    assert [c.name for c in pod.containers] == ["nginx", "shell"]
    assert pod.containers[1].command == ["sleep", "3600"] and pod.containers[1].tty


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            pod_doc(containers=[{"name": "a", "image": "x"}, {"name": "b"}]),
            r"spec.containers\[1\].image: Required value",
        ),
        (pod_doc(containers=[]), "spec.containers: must have at least one container"),
        (
            pod_doc(containers=[{"name": "a", "image": "x", "bogus": 1}]),
            r'unknown field "spec.containers\[0\].bogus"',
        ),
        (pod_doc(nodeSelector={"a": "b"}), "spec.nodeSelector: not supported on this node"),
        (pod_doc(hostname="web", subdomain="db"), "spec.subdomain: not supported on this node"),
        (pod_doc(restartPolicy="Sometimes"), "spec.restartPolicy: unsupported value"),
        (pod_doc(containers=[{"name": "A_B", "image": "x"}]), r"spec.containers\[0\].name: .* DNS-1123"),
        (
            pod_doc(containers=[{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]),
            "duplicate container name",
        ),
        (
            pod_doc(containers=[{"name": "a", "image": "x", "resources": {"limits": {"memory": "lots"}}}]),
            r"spec.containers\[0\].resources.limits.memory: invalid quantity",
        ),
        (
            pod_doc(containers=[{"name": "a", "image": "x", "ports": [{"containerPort": 70000}]}]),
            r"ports\[0\].containerPort: must be between",
        ),
        ({"apiVersion": "apps/v1", "kind": "Deployment"}, "podhost runs v1 Pods"),
        ({"apiVersion": "v1", "kind": "Pod", "spec": {}}, "spec.containers: Required value"),
        ({**pod_doc(), "metadata": {}}, "metadata.name: Required value"),
        (
            pod_doc(containers=[{"name": "a", "image": 5}]),
            r"containers\[0\].image: Invalid value: 5: must be a string",
        ),
    ],
)
def test_broken_manifests_name_the_field(doc: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_pod(doc)


def test_invalid_yaml_and_lists() -> None:
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_documents("a: [")
    docs = load_documents("kind: List\nitems:\n- {kind: Pod}\n- {kind: Pod}\n---\nkind: Pod\n")
    assert len(docs) == 3


def test_quantities() -> None:
    assert parse_quantity("128Mi", "x.memory") == 128 * 2**20
    assert parse_quantity("1G", "x.memory") == 10**9
    assert parse_quantity("250m", "x.cpu") == 250
    assert parse_quantity("1.5", "x.cpu") == 1500


def test_cri_configs_follow_the_kubelet() -> None:
    doc = pod_doc(
        shareProcessNamespace=True,
        containers=[
            {
                "name": "a",
                "image": "busybox",
                "ports": [{"containerPort": 80, "hostPort": 8080}],
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "runAsUser": 1000},
            }
        ],
    )
    pod = parse_pod(doc)
    sb = sandbox_config(pod, attempt=1, log_directory="/logs/x")
    assert sb.metadata.attempt == 1 and sb.labels["io.kubernetes.pod.name"] == "p"
    assert sb.linux.security_context.namespace_options.pid == cri.POD
    assert [(p.container_port, p.host_port) for p in sb.port_mappings] == [(80, 8080)]
    cc = container_config(pod, pod.containers[0], attempt=3)
    assert cc.linux.resources.cpu_quota == 50_000 and cc.linux.resources.cpu_period == 100_000
    assert cc.linux.resources.cpu_shares == 512 and cc.linux.resources.memory_limit_in_bytes == 64 * 2**20
    assert cc.linux.security_context.no_new_privs and cc.linux.security_context.run_as_user.value == 1000
    assert cc.log_path == "a/3.log"


def test_pod_security_context_reaches_every_container_as_the_kubelet_passes_it() -> None:
    doc = pod_doc(
        securityContext={
            "runAsUser": 1000,
            "runAsGroup": 3000,
            "supplementalGroups": [4000],
            "fsGroup": 2000,
            "supplementalGroupsPolicy": "Strict",
        },
        containers=[
            {"name": "a", "image": "busybox"},
            {"name": "b", "image": "busybox", "securityContext": {"runAsUser": 1001}},
        ],
    )
    pod = parse_pod(doc)
    sb = sandbox_config(pod, attempt=0, log_directory="/logs/x").linux.security_context
    assert (sb.run_as_user.value, sb.run_as_group.value) == (1000, 3000)
    assert list(sb.supplemental_groups) == [4000, 2000]  # fsGroup joins the supplemental groups
    assert sb.supplemental_groups_policy == cri.Strict
    a, b = (container_config(pod, c, attempt=0).linux.security_context for c in pod.containers)
    assert (a.run_as_user.value, a.run_as_group.value) == (1000, 3000)
    assert b.run_as_user.value == 1001  # the container's own wins
    assert list(a.supplemental_groups) == list(b.supplemental_groups) == [4000, 2000]
    assert a.supplemental_groups_policy == b.supplemental_groups_policy == cri.Strict
    default = container_config(parse_pod(pod_doc()), parse_pod(pod_doc()).containers[0], attempt=0)
    assert default.linux.security_context.supplemental_groups_policy == cri.Merge
    assert not default.linux.security_context.HasField("run_as_user")


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ({"supplementalGroupsPolicy": "Loose"}, r"supplementalGroupsPolicy: Unsupported value: \"Loose\""),
        (
            {"supplementalGroups": ["wheel"]},
            r'supplementalGroups\[0\]: Invalid value: "wheel": must be an integer',
        ),
        ({"supplementalGroups": [-1]}, "supplementalGroups: must be a list of group ids"),
        ({"runAsNonRootish": True}, 'unknown field "spec.securityContext.runAsNonRootish"'),
    ],
)
def test_broken_pod_security_contexts_name_the_field(security: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_pod(pod_doc(securityContext=security))


def test_host_users_false_asks_for_the_pods_own_user_namespace() -> None:
    pod = parse_pod(pod_doc(hostUsers=False))
    assert not pod.host_users and pod.userns_host_id == 0  # the pod manager picks the ids
    pod.userns_host_id = 131072
    ns = sandbox_config(pod, attempt=0, log_directory="/l").linux.security_context.namespace_options
    assert ns.userns_options.mode == cri.POD
    assert [(m.container_id, m.host_id, m.length) for m in ns.userns_options.uids] == [(0, 131072, 65536)]
    assert list(ns.userns_options.gids) == list(ns.userns_options.uids)
    cc = container_config(pod, pod.containers[0], attempt=0).linux.security_context.namespace_options
    assert cc.userns_options == ns.userns_options  # containers join the pod's
    kept = pod_doc(hostUsers=False)
    kept["metadata"]["annotations"] = {"podhost.io/userns-host-id": "196608"}
    assert parse_pod(kept).userns_host_id == 196608  # as remembered across a restart
    plain = sandbox_config(parse_pod(pod_doc()), attempt=0, log_directory="/l")
    assert not plain.linux.security_context.namespace_options.HasField("userns_options")
    with pytest.raises(ManifestError, match="spec.hostUsers: Forbidden"):
        parse_pod(pod_doc(hostUsers=False, hostNetwork=True))
