"""Callers racing each other on one daemon: what the CRI promises whatever the interleaving.

- CreateContainer reserves a name atomically: of many same-name calls exactly one succeeds, the others get
  ALREADY_EXISTS (the kubelet's retry after a timeout relies on it);
- StopPodSandbox and RemovePodSandbox are idempotent, so every concurrent caller gets OK, and so do Stop and
  Remove of ids the runtime never had (CRI api.proto: "If there are any running containers in the sandbox,
  they must be forcibly terminated"; "Remove... If the sandbox has already been removed, this must not
  return an error");
- RunPodSandbox calls for one pod (same metadata) in flight together make one sandbox.

The calls start together from a barrier, on one gRPC channel (as a kubelet's pod workers share one). After
each test everything is removed through CRI and nothing may be left (tests/leaks.py).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from podhost.cri import api_pb2 as pb
from podhost.errors import AlreadyExists, PodhostError
from podhost.runtime.image import build
from tests.instance import Instance, OrphanReaper, isolated_instance, leak_checked
from tests.reality import reality_problems

pytestmark = pytest.mark.root

BRIDGE = "ph4r0"
SUBNET = "10.231.4.64/26"
SLEEP = ["sleep", "3600"]

T = TypeVar("T")


@pytest.fixture(scope="module")
def instance(orphan_reaper: OrphanReaper) -> Iterator[Instance]:
    yield from isolated_instance("ph4-races", BRIDGE, SUBNET)


@pytest.fixture
def ph(instance: Instance) -> Iterator[Instance]:
    yield from leak_checked(instance)


def in_parallel(n: int, call: Callable[[int], T]) -> list[T | PodhostError]:
    """`call(i)` for i in range(n), all released at once; each result, or the PodhostError it raised."""
    barrier = threading.Barrier(n)

    def one(i: int) -> T | PodhostError:
        barrier.wait()
        try:
            return call(i)
        except PodhostError as e:
            return e

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def errors_of(results: Sequence[object]) -> list[PodhostError]:
    return [r for r in results if isinstance(r, PodhostError)]


def described(errors: list[PodhostError]) -> list[str]:
    return [f"{type(e).__name__} ({e.grpc_code}): {e}" for e in errors]


def assert_real(inst: Instance) -> None:
    problems = reality_problems(inst)
    assert problems == [], "\n".join(problems)


def pod_with_containers(inst: Instance, name: str, count: int) -> tuple[str, list[str]]:
    pod = inst.pod_config(name)
    pod_id = inst.client.run_pod_sandbox(pod)
    return pod_id, [inst.run_container(pod_id, pod, f"c{i}", SLEEP) for i in range(count)]


def test_same_name_create_container_race_has_one_winner(ph: Instance) -> None:
    pod = ph.pod_config("create-race")
    pod_id = ph.client.run_pod_sandbox(pod)
    config = ph.container_config("twin", SLEEP, attempt=0)
    results = in_parallel(20, lambda _: ph.client.create_container(pod_id, config, pod))
    created = [r for r in results if isinstance(r, str)]
    errors = errors_of(results)
    assert len(created) == 1, f"{len(created)} of 20 same-name CreateContainer calls succeeded"
    assert len(errors) == 19 and all(isinstance(e, AlreadyExists) for e in errors), described(
        [e for e in errors if not isinstance(e, AlreadyExists)]
    )
    listed = ph.client.list_containers(pb.ContainerFilter(pod_sandbox_id=pod_id))
    assert [c.id for c in listed] == created
    assert_real(ph)
    ph.client.start_container(created[0])
    assert ph.client.container_status(created[0]).status.state == pb.CONTAINER_RUNNING


def test_parallel_remove_pod_sandbox_all_ok_and_nothing_left(ph: Instance) -> None:
    pod_id, cids = pod_with_containers(ph, "remove-race", 3)
    results = in_parallel(10, lambda _: ph.client.remove_pod_sandbox(pod_id))
    assert described(errors_of(results)) == []
    assert ph.client.list_pod_sandbox() == []
    assert ph.client.list_containers() == []
    assert_real(ph)


def test_parallel_stop_pod_sandbox_all_ok(ph: Instance) -> None:
    pod_id, cids = pod_with_containers(ph, "stop-race", 3)
    results = in_parallel(10, lambda _: ph.client.stop_pod_sandbox(pod_id))
    assert described(errors_of(results)) == []
    assert ph.client.pod_sandbox_status(pod_id).status.state == pb.SANDBOX_NOTREADY
    states = {c.id: c.state for c in ph.client.list_containers(pb.ContainerFilter(pod_sandbox_id=pod_id))}
    assert states == dict.fromkeys(cids, pb.CONTAINER_EXITED)
    assert_real(ph)


def test_parallel_stop_and_remove_pod_sandbox_all_ok(ph: Instance) -> None:
    """The kubelet's pod worker and its garbage collector may stop and remove one pod at the same time."""
    pod_id, _ = pod_with_containers(ph, "stop-remove-race", 2)

    def stop_or_remove(i: int) -> None:
        if i % 2:
            ph.client.remove_pod_sandbox(pod_id)
        else:
            ph.client.stop_pod_sandbox(pod_id)

    results = in_parallel(10, stop_or_remove)
    # A stop that runs after the pod is gone is a stop of an unknown id: OK too.
    assert described(errors_of(results)) == []
    assert ph.client.list_pod_sandbox() == []
    assert ph.client.list_containers() == []
    assert_real(ph)


UNKNOWN_ID_VERBS: dict[str, Callable[[Instance, str], None]] = {
    "StopPodSandbox": lambda inst, some_id: inst.client.stop_pod_sandbox(some_id),
    "RemovePodSandbox": lambda inst, some_id: inst.client.remove_pod_sandbox(some_id),
    "StopContainer": lambda inst, some_id: inst.client.stop_container(some_id, 0),
    "RemoveContainer": lambda inst, some_id: inst.client.remove_container(some_id),
}


@pytest.mark.parametrize("verb", list(UNKNOWN_ID_VERBS))
def test_stop_and_remove_of_an_unknown_id_is_ok(ph: Instance, verb: str) -> None:
    # A pod that exists makes sure the unknown id is not mistaken for a prefix of a known one.
    pod_id, cids = pod_with_containers(ph, "bystander", 1)
    unknown = secrets.token_hex(32)
    UNKNOWN_ID_VERBS[verb](ph, unknown)
    UNKNOWN_ID_VERBS[verb](ph, unknown)  # and again: still OK
    assert [p.id for p in ph.client.list_pod_sandbox()] == [pod_id]
    assert [(c.id, c.state) for c in ph.client.list_containers()] == [(cids[0], pb.CONTAINER_RUNNING)]


def test_parallel_run_pod_sandbox_same_metadata_makes_one_sandbox(ph: Instance) -> None:
    pod = ph.pod_config("run-race")
    results = in_parallel(10, lambda _: ph.client.run_pod_sandbox(pod))
    ids = {r for r in results if isinstance(r, str)}
    errors = errors_of(results)
    assert len(ids) == 1, (
        f"10 RunPodSandbox calls for one pod made sandboxes {sorted(ids)}; errors {errors[:3]}"
    )
    (pod_id,) = ids
    # A call that arrives after the first finished finds the name taken (the pod is listed): that is fine.
    unexpected = [e for e in errors if not (isinstance(e, AlreadyExists) and pod_id in str(e))]
    assert described(unexpected) == []
    listed = [p for p in ph.client.list_pod_sandbox() if p.metadata.name == "run-race"]
    assert [(p.id, p.state) for p in listed] == [(pod_id, pb.SANDBOX_READY)]
    assert_real(ph)


def test_parallel_remove_image_all_ok(ph: Instance) -> None:
    """critest's "should not fail on simultaneous RemoveImage calls": RemoveImage is idempotent, so every
    one of many concurrent calls for one image gets OK. The image is loaded back from the same bytes."""
    image = build.BUSYBOX_128_IMAGE  # a test image no other test of this module runs
    archive = build.test_image_archives(ph.root / "archives", ph.config.pause_path)[image]
    assert ph.client.image_status(image).image.id
    results = in_parallel(10, lambda _: ph.client.remove_image(image))
    assert described(errors_of(results)) == []
    assert not ph.client.image_status(image).image.id
    ph.client.load_image(str(archive))
    assert ph.client.image_status(image).image.id
