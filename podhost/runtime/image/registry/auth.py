"""Registry credentials and authentication challenges: which secret to use for a host, and how.

Where credentials come from, first found wins (what containerd's CRI plugin and the kubelet do):
1. the CRI `AuthConfig` of the PullImage request, when its `server_address` is empty or names the host;
2. the daemon config's `[registries."HOST"]` table (`username`/`password`, or `auth`);
3. `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`): `auths."HOST".auth`, also under the
   legacy keys `https://HOST` and, for Docker Hub, `https://index.docker.io/v1/`.

How they are used is the registry's choice, told by `WWW-Authenticate` on a 401 (RFC 7235 challenge
syntax; the distribution "token authentication" spec for Bearer): `Basic` sends them on every request;
`Bearer realm=...,service=...,scope=...` exchanges them at the realm for a short-lived token (HTTP
Basic to the realm, or an OAuth2 refresh-token POST for an `identity_token`). A CRI `registry_token`
is used as the bearer token directly.

Pure except `docker_config_credentials`, which reads one JSON file. Secrets never go to logs: `repr` of
`Credentials` hides them.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podhost.config import RegistryConfig
from podhost.errors import InvalidArgument
from podhost.runtime.image import reference

log = logging.getLogger(__name__)

DOCKER_HUB_LEGACY_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class AuthConfig:
    """CRI `AuthConfig` (runtime.v1), the credentials a kubelet passes with PullImage."""

    username: str = ""
    password: str = field(default="", repr=False)
    auth: str = field(default="", repr=False)
    server_address: str = ""
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)  # OAuth2 refresh token
    registry_token: str = field(default="", repr=False)  # a bearer token to send as is

    def basic_header(self) -> str | None:
        if not self.username and not self.password:
            return None
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def decode_auth(value: str, what: str) -> tuple[str, str]:
    """`base64("user:password")` as docker's config.json and CRI's `auth` carry it."""
    try:
        raw = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as e:
        raise InvalidArgument(f"{what}: auth is not base64 of 'user:password'") from e
    user, sep, password = raw.partition(":")
    if not sep:
        raise InvalidArgument(f"{what}: auth is not base64 of 'user:password'")
    return user, password


def normalize_server(address: str) -> str:
    """A server address as clients write it (`https://index.docker.io/v1/`, `host:5000/`) -> a domain."""
    host = address.strip()
    for prefix in ("https://", "http://"):
        host = host.removeprefix(prefix)
    host = host.split("/", 1)[0]
    if host in (reference.LEGACY_DEFAULT_DOMAIN, "registry-1.docker.io"):
        return reference.DEFAULT_DOMAIN
    return host


def from_cri(auth: AuthConfig, host: str) -> Credentials | None:
    if auth.server_address and normalize_server(auth.server_address) != normalize_server(host):
        return None
    username, password = auth.username, auth.password
    if auth.auth:
        username, password = decode_auth(auth.auth, "CRI AuthConfig")
    creds = Credentials(username, password, auth.identity_token, auth.registry_token)
    return creds if creds != Credentials() else None


def from_settings(settings: RegistryConfig | None, host: str) -> Credentials | None:
    if settings is None:
        return None
    username, password = settings.username, settings.password
    if settings.auth:
        username, password = decode_auth(settings.auth, f"config registries.{host!r}")
    return Credentials(username, password) if username or password else None


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(base) / "config.json"


def docker_config_credentials(host: str, path: Path | None = None) -> Credentials | None:
    """Credentials for `host` in a docker config.json (`auths` only: credential helpers are not run)."""
    path = path or docker_config_path()
    try:
        doc: Any = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("ignoring docker config %s: %s", path, e)
        return None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return None
    want = normalize_server(host)
    for key, entry in auths.items():
        if not isinstance(entry, dict) or normalize_server(str(key)) != want:
            continue
        if entry.get("auth"):
            user, password = decode_auth(str(entry["auth"]), f"{path} auths.{key}")
            return Credentials(user, password, str(entry.get("identitytoken") or ""))
        if entry.get("username") or entry.get("identitytoken"):
            return Credentials(
                str(entry.get("username") or ""),
                str(entry.get("password") or ""),
                str(entry.get("identitytoken") or ""),
            )
    return None


def credentials_for(
    host: str,
    cri_auth: AuthConfig | None,
    registries: dict[str, RegistryConfig],
    docker_config: Path | None = None,
) -> Credentials | None:
    """The credentials to present to endpoint `host`, by the precedence in the module docstring."""
    if cri_auth is not None and (found := from_cri(cri_auth, host)):
        return found
    settings = registries.get(host)
    if settings is None and normalize_server(host) == reference.DEFAULT_DOMAIN:
        settings = registries.get(reference.DEFAULT_DOMAIN)
    return from_settings(settings, host) or docker_config_credentials(host, docker_config)


# --- challenges ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower-case: "basic", "bearer"
    params: dict[str, str]


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM_RE = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*(,)?')
_SCHEME_RE = re.compile(rf"\s*,?\s*({_TOKEN})(?:\s+|$)")


def parse_challenges(header: str) -> list[Challenge]:
    """The challenges of a `WWW-Authenticate` value, e.g. `Bearer realm="https://a/token",service="r"`."""
    out: list[Challenge] = []
    pos = 0
    while pos < len(header):
        m = _SCHEME_RE.match(header, pos)
        if not m:
            break
        scheme, pos = m.group(1).lower(), m.end()
        params: dict[str, str] = {}
        while pos < len(header):
            p = _PARAM_RE.match(header, pos)
            if not p:
                break
            value = p.group(2) if p.group(2) is not None else p.group(3)
            params[p.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            pos = p.end()
            if not p.group(4):
                break
        out.append(Challenge(scheme, params))
    return out


def scope_for(repository_path: str, actions: str = "pull") -> str:
    """A token scope (distribution token-scope spec): `repository:library/busybox:pull`."""
    return f"repository:{repository_path}:{actions}"


def token_request_params(
    challenge: Challenge, scopes: list[str], creds: Credentials | None
) -> dict[str, Any]:
    """The query (GET) or form (POST, refresh token) fields of a token request."""
    fields: dict[str, Any] = {}
    if challenge.params.get("service"):
        fields["service"] = challenge.params["service"]
    wanted = [s for s in [challenge.params.get("scope", ""), *scopes] if s]
    if wanted:
        fields["scope"] = list(dict.fromkeys(wanted))
    if creds is not None and creds.identity_token:
        fields.update(grant_type="refresh_token", refresh_token=creds.identity_token, client_id="podhost")
    return fields


def token_from_response(body: bytes, realm: str) -> tuple[str, int]:
    """(token, lifetime in seconds) from a token endpoint's JSON answer."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"token endpoint {realm} answered with something that is not JSON") from e
    token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise InvalidArgument(f"token endpoint {realm} answered without a token")
    expires = doc.get("expires_in", 60)
    return token, int(expires) if isinstance(expires, int | float) and expires > 0 else 60
