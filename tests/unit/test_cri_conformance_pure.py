"""CRI edge rules critest checks, proved on the pure conversion (no root, no daemon)."""

from __future__ import annotations

import pytest

from podhost.cri import api_pb2 as pb
from podhost.cri import convert
from podhost.errors import InvalidArgument


def security_context(**fields: object) -> pb.LinuxContainerSecurityContext:
    return pb.LinuxContainerSecurityContext(**fields)  # type: ignore[arg-type]


def test_run_as_group_alone_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="run_as_group is set without run_as_user"):
        convert.container_security_context(security_context(run_as_group=pb.Int64Value(value=1002)))


@pytest.mark.parametrize(
    "user", [{"run_as_user": pb.Int64Value(value=0)}, {"run_as_username": "nobody"}], ids=["uid", "name"]
)
def test_run_as_group_with_a_user_is_kept(user: dict[str, object]) -> None:
    sc = convert.container_security_context(security_context(run_as_group=pb.Int64Value(value=0), **user))
    assert sc.run_as_group == 0  # gid 0 is a real value, not "unset"


def test_no_user_and_no_group_is_fine() -> None:
    sc = convert.container_security_context(security_context())
    assert (sc.run_as_user, sc.run_as_group, sc.run_as_username) == (None, None, "")
