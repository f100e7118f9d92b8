"""The container process's uid, gid and supplementary gids, from CRI and the image's /etc/passwd and /etc/group.

Owns only the resolution rules, as pure functions over file *contents*, so tests need no rootfs and the
caller decides where the files come from. Rules follow containerd's CRI plugin: CRI run_as_user (or
run_as_username) wins over the image's `User`; a user given without a group gets its passwd gid (0 when it
has no passwd entry); run_as_group overrides the gid; the supplementary groups are the primary gid, the
groups that list the user's name in /etc/group, then CRI supplemental_groups.

SupplementalGroupsPolicy (KEP-3619; containerd 2 `containerSpecOpts`, CRI-O `setupContainerUser`): Merge
(the default) is the rule above; Strict leaves out the image's /etc/group memberships, so the process
gets only its primary gid and the spec's supplemental_groups (where the kubelet also puts fsGroup). The
primary gid itself may still come from the image's /etc/passwd in both, as both runtimes do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from podhost.errors import InvalidArgument
from podhost.runtime.model import SupplementalGroupsPolicy


@dataclass
class PasswdEntry:
    name: str
    uid: int
    gid: int


@dataclass
class GroupEntry:
    name: str
    gid: int
    members: list[str] = field(default_factory=list)


@dataclass
class ProcessUser:
    uid: int
    gid: int
    additional_gids: list[int]


def parse_passwd(text: str) -> list[PasswdEntry]:
    entries = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 4 or line.startswith("#"):
            continue
        try:
            entries.append(PasswdEntry(parts[0], int(parts[2]), int(parts[3])))
        except ValueError:
            continue
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    entries = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 3 or line.startswith("#"):
            continue
        try:
            gid = int(parts[2])
        except ValueError:
            continue
        members = [m for m in parts[3].split(",") if m] if len(parts) > 3 else []
        entries.append(GroupEntry(parts[0], gid, members))
    return entries


def _lookup_user(spec: str, users: list[PasswdEntry]) -> tuple[int, PasswdEntry | None]:
    if spec.isdigit():
        uid = int(spec)
        return uid, next((u for u in users if u.uid == uid), None)
    entry = next((u for u in users if u.name == spec), None)
    if entry is None:
        raise InvalidArgument(f"unable to find user {spec}: no matching entries in passwd file")
    return entry.uid, entry


def _lookup_group(spec: str, groups: list[GroupEntry]) -> int:
    if spec.isdigit():
        return int(spec)
    entry = next((g for g in groups if g.name == spec), None)
    if entry is None:
        raise InvalidArgument(f"unable to find group {spec}: no matching entries in group file")
    return entry.gid


def resolve_user(
    image_user: str,
    run_as_user: int | None,
    run_as_group: int | None,
    run_as_username: str,
    supplemental_groups: list[int],
    passwd: str,
    group: str,
    policy: SupplementalGroupsPolicy = SupplementalGroupsPolicy.Merge,
) -> ProcessUser:
    """The process user of a container (OCI `process.user`). Raises InvalidArgument for unknown names."""
    users, groups = parse_passwd(passwd), parse_group(group)
    group_spec = ""
    if run_as_user is not None:
        user_spec = str(run_as_user)
    elif run_as_username:
        user_spec = run_as_username
    else:
        user_spec, _, group_spec = (image_user or "0").partition(":")
        user_spec = user_spec or "0"
    uid, entry = _lookup_user(user_spec, users)
    if run_as_group is not None:
        gid = run_as_group
    elif group_spec:
        gid = _lookup_group(group_spec, groups)
    else:
        gid = entry.gid if entry is not None else 0
    gids = [gid]
    if entry is not None and policy == SupplementalGroupsPolicy.Merge:
        gids += [g.gid for g in groups if entry.name in g.members]
    gids += list(supplemental_groups)
    return ProcessUser(uid, gid, list(dict.fromkeys(gids)))
