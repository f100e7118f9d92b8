"""Image references: parse, check and normalise names the way containerd and the kubelet do.

A reference is `[domain/]path[:tag][@digest]`. Short Docker Hub names are expanded exactly as the
distribution library's `ParseNormalizedNamed` + `TagNameOnly` do (what containerd's CRI plugin stores):
`busybox` -> `docker.io/library/busybox:latest`, `foo/bar` -> `docker.io/foo/bar:latest`,
`index.docker.io/x` -> `docker.io/library/x:latest`. The first component is a domain when it contains
`.` or `:`, is `localhost`, or has an upper-case letter (grammar of distribution/reference, regexp.go).

This module is pure: no I/O, no store. It never guesses: a malformed reference is InvalidArgument.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from podhost.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"

PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
DIGEST_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
SHA256_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


class Reference(NamedTuple):
    """A parsed, normalised reference. `tag` is "" only when a digest pins the image."""

    domain: str
    path: str
    tag: str
    digest: str

    @property
    def repository(self) -> str:
        """`domain/path`, the name without tag or digest (the key of a repo digest)."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost" and first == first.lower()):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    return domain, path


def parse(ref: str) -> Reference:
    """Split `ref` into (domain, path, tag, digest), normalised; `:latest` is added only when the
    reference has neither tag nor digest."""
    if not isinstance(ref, str) or not ref:
        raise InvalidArgument("image reference is empty")
    if ref != ref.strip() or any(c.isspace() for c in ref):
        raise InvalidArgument(f"invalid image reference {ref!r}: contains white space")
    if _HEX64_RE.match(ref):
        raise InvalidArgument(f"invalid image reference {ref!r}: cannot be a 64-byte hexadecimal string")
    remainder, _, digest = ref.partition("@")
    if "@" in ref and not DIGEST_RE.match(digest):
        raise InvalidArgument(f"invalid image reference {ref!r}: bad digest {digest!r}")
    if digest.startswith("sha256:") and not SHA256_DIGEST_RE.match(digest):
        raise InvalidArgument(f"invalid image reference {ref!r}: sha256 digest must be 64 lower-case hex")
    # A tag is what follows the last ':' when that ':' comes after the last '/' (else it is a port).
    name, tag = remainder, ""
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        name, tag = remainder[:colon], remainder[colon + 1 :]
        if not TAG_RE.match(tag):
            raise InvalidArgument(f"invalid image reference {ref!r}: bad tag {tag!r}")
    if not name:
        raise InvalidArgument(f"invalid image reference {ref!r}: no repository name")
    domain, path = _split_domain(name)
    if not DOMAIN_RE.match(domain):
        raise InvalidArgument(f"invalid image reference {ref!r}: bad domain {domain!r}")
    if not PATH_RE.match(path):
        if path.lower() != path and PATH_RE.match(path.lower()):
            raise InvalidArgument(f"invalid image reference {ref!r}: repository name must be lowercase")
        raise InvalidArgument(f"invalid image reference {ref!r}: bad repository path {path!r}")
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(f"invalid image reference {ref!r}: name longer than {NAME_TOTAL_LENGTH_MAX}")
    if not tag and not digest:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def normalize(ref: str) -> str:
    """The fully qualified form of `ref` ("busybox" -> "docker.io/library/busybox:latest")."""
    return str(parse(ref))


def is_valid(ref: str) -> bool:
    try:
        parse(ref)
    except InvalidArgument:
        return False
    return True


def repo_digest(ref: str, digest: str) -> str:
    """`domain/path@digest` for `ref`, as CRI's `repo_digests` lists them."""
    return f"{parse(ref).repository}@{digest}"


def check_digest(digest: str) -> str:
    """`digest` if it is a well-formed sha256 digest (the only algorithm the store accepts)."""
    if not isinstance(digest, str) or not SHA256_DIGEST_RE.match(digest):
        raise InvalidArgument(f"unsupported or malformed digest {digest!r} (want sha256:<64 hex>)")
    return digest
