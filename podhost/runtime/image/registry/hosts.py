"""Where to fetch an image from: the endpoints of a registry host, mirrors first, from the daemon config.

A reference's domain (`docker.io`, `registry.k8s.io`, `127.0.0.1:5000`) names a registry. Its
`[registries."DOMAIN"]` table may list mirrors; they are tried in order, then the registry itself
(`docker.io` is served by `registry-1.docker.io`). Each endpoint's TLS settings come from its OWN table:
`https` with the system CAs plus its `ca_file`; `insecure` lets TLS go unverified and lets the
endpoint fall back to plain HTTP (an explicit `http://` mirror is plain HTTP, and only allowed when
that mirror's table says insecure). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from podhost.config import RegistryConfig
from podhost.errors import InvalidArgument
from podhost.runtime.image import reference

#: Docker Hub's API is not served at its reference domain.
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"


@dataclass(frozen=True)
class Endpoint:
    """One place that serves the distribution API (`/v2/`)."""

    host: str  # host[:port] to connect to; also the key of its credentials
    scheme: str  # "https" or "http"
    insecure: bool = False  # TLS unverified, and plain HTTP allowed as a fallback
    ca_file: Path | None = None
    mirror: bool = False

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def __str__(self) -> str:
        return self.base_url


def _settings(host: str, registries: dict[str, RegistryConfig]) -> RegistryConfig:
    if host in registries:
        return registries[host]
    if host in (DOCKER_HUB_ENDPOINT, reference.LEGACY_DEFAULT_DOMAIN):
        return registries.get(reference.DEFAULT_DOMAIN, RegistryConfig())
    return RegistryConfig()


def parse_endpoint(value: str, registries: dict[str, RegistryConfig], *, mirror: bool) -> Endpoint:
    """`host[:port]` or `scheme://host[:port]` (no path) as an endpoint with its own table's settings."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "", value
    host = rest.rstrip("/")
    if scheme not in ("", "http", "https") or not host or "/" in host:
        raise InvalidArgument(f"registry endpoint {value!r}: want host[:port] or http(s)://host[:port]")
    if not reference.DOMAIN_RE.match(host):
        raise InvalidArgument(f"registry endpoint {value!r}: bad host {host!r}")
    settings = _settings(host, registries)
    if scheme == "http" and not settings.insecure:
        raise InvalidArgument(
            f"registry endpoint {value!r} is plain HTTP: set insecure = true in [registries.{host!r}]"
        )
    return Endpoint(
        host=host,
        scheme=scheme or "https",
        insecure=settings.insecure,
        ca_file=Path(settings.ca_file) if settings.ca_file else None,
        mirror=mirror,
    )


def endpoints(domain: str, registries: dict[str, RegistryConfig]) -> list[Endpoint]:
    """The endpoints to try for a reference's `domain`, in order: its mirrors, then itself."""
    own = registries.get(domain, RegistryConfig())
    found = [parse_endpoint(m, registries, mirror=True) for m in own.mirrors]
    host = DOCKER_HUB_ENDPOINT if domain == reference.DEFAULT_DOMAIN else domain
    upstream = parse_endpoint(host, registries, mirror=False)
    if domain != host:
        # docker.io's settings (ca_file, insecure) apply to its API host.
        upstream = Endpoint(host, "https", own.insecure, own.ca_file, mirror=False)
    if upstream not in found:
        found.append(upstream)
    return found
