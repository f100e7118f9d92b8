"""One registry endpoint over HTTP(S): the distribution API calls podhost makes, with authentication.

Speaks the OCI distribution spec (`/v2/<name>/manifests/<reference>`, `/v2/<name>/blobs/<digest>`,
and for tests and benchmarks the upload calls) through urllib3, a pool of keep-alive connections per
endpoint shared by the download threads. TLS uses the system CAs plus the endpoint's `ca_file`; an
`insecure` endpoint skips verification and, if it turns out to speak plain HTTP, falls back to it
once. Requests go out without credentials; a 401 says how to authenticate (`auth.parse_challenges`),
and the answer (a Basic header or a bearer token per scope) is reused until it expires.

Blobs stream to a file with their sha256 computed on the way, never more bytes than the descriptor
says; a connection that drops mid-blob resumes with a `Range` request. What comes back is checked
here (digest, size) and never trusted before that.

This module never decides which endpoint to use nor where files live (that is `puller`), and never
logs a secret.
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError, ProtocolError, ReadTimeoutError, SSLError

from podhost.errors import FailedPrecondition, InvalidArgument, NotFound, PodhostError, Unavailable
from podhost.runtime.image.registry import auth, manifest
from podhost.runtime.image.registry.hosts import Endpoint

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # a quarter of the reads 256 KiB took (cold pull -15 %); still steady progress for a reader
USER_AGENT = "podhost/0.1 (+cri)"
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0
BLOB_ATTEMPTS = 3
_TOKEN_MARGIN = 10.0  # seconds: renew a token this long before it expires


class Cancelled(Unavailable):
    """The pull this download belonged to failed elsewhere, or was abandoned."""


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str
    digest_header: str  # Docker-Content-Digest, "" when the registry sent none


def _ssl_context(endpoint: Endpoint) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if endpoint.ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(endpoint.ca_file))
        except (OSError, ssl.SSLError) as e:
            raise FailedPrecondition(
                f"registry {endpoint.host}: cannot load ca_file {endpoint.ca_file}: {e}"
            ) from e
    if endpoint.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _error_text(body: bytes) -> str:
    """The registry's own error words (distribution spec error codes), else a short excerpt."""
    try:
        doc = json.loads(body)
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errors, list) and errors:
            return "; ".join(
                f"{e.get('code', '')}: {e.get('message', '')}" for e in errors if isinstance(e, dict)
            )
    except (ValueError, UnicodeDecodeError):
        pass
    return body[:200].decode("utf-8", "replace").strip()


def status_error(status: int, what: str, body: bytes) -> PodhostError:
    detail = _error_text(body)
    text = f"{what}: HTTP {status}" + (f" ({detail})" if detail else "")
    if status == 404:
        return NotFound(text)
    if status in (401, 403):
        return FailedPrecondition(text)
    if status in (408, 429) or status >= 500:
        return Unavailable(text)
    return InvalidArgument(text)


class RegistryClient:
    """The distribution API of one endpoint, for the repositories of one pull (thread-safe)."""

    def __init__(self, endpoint: Endpoint, credentials: auth.Credentials | None, pool_size: int = 4) -> None:
        self.endpoint = endpoint
        self.credentials = credentials
        self._scheme = endpoint.scheme
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=max(pool_size, 1),
            ssl_context=_ssl_context(endpoint),
        )
        self._retries = urllib3.Retry(
            total=4, connect=2, read=0, redirect=5, status=0, other=0, raise_on_redirect=True
        )
        self._timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT)
        self._lock = threading.Lock()
        self._basic = False  # the endpoint asked for Basic: send it on every request
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (bearer token, expiry)

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport -----------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self._scheme}://{self.endpoint.host}{path}"

    def _send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, preload: bool
    ) -> urllib3.BaseHTTPResponse:
        try:
            return self._pool.request(
                method,
                url,
                headers=headers,
                body=body,
                preload_content=preload,
                decode_content=False,
                retries=self._retries,
                timeout=self._timeout,
            )
        except MaxRetryError as e:
            reason = e.reason
            if isinstance(reason, SSLError):
                raise reason from None
            raise Unavailable(f"registry {self.endpoint.host}: {reason or e}") from None
        except SSLError:
            raise
        except HTTPError as e:
            raise Unavailable(f"registry {self.endpoint.host}: {e}") from None

    def _send_with_fallback(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None, preload: bool
    ) -> urllib3.BaseHTTPResponse:
        try:
            return self._send(method, self.url(path), headers, body, preload)
        except SSLError as e:
            if self.endpoint.insecure and self._scheme == "https":
                log.warning(
                    "registry %s: TLS failed (%s); insecure endpoint, trying plain HTTP",
                    self.endpoint.host,
                    e,
                )
                self._scheme = "http"
                return self._send(method, self.url(path), headers, body, preload)
            raise Unavailable(f"registry {self.endpoint.host}: TLS: {e}") from None

    def _auth_header(self, scope: str) -> str | None:
        with self._lock:
            token = self._tokens.get(scope)
            if token and token[1] > time.monotonic():
                return "Bearer " + token[0]
            if self._basic and self.credentials is not None:
                return self.credentials.basic_header()
        return None

    def request(
        self,
        method: str,
        path: str,
        scope: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        preload: bool = True,
        ok: tuple[int, ...] = (200,),
        what: str = "",
    ) -> urllib3.BaseHTTPResponse:
        """A request that authenticates as the endpoint asks; raises for a status not in `ok`."""
        what = what or f"{method} {self.endpoint.host}{path}"
        for attempt in range(3):
            sent = {"User-Agent": USER_AGENT, **(headers or {})}
            if header := self._auth_header(scope):
                sent["Authorization"] = header
            resp = self._send_with_fallback(method, path, sent, body, preload)
            if resp.status in ok:
                return resp
            data = resp.data if preload else resp.read(64 << 10)
            resp.release_conn()
            if resp.status == 401 and attempt < 2:
                self._authenticate(resp.headers.get("WWW-Authenticate", ""), scope, had=bool(header))
                continue
            raise status_error(resp.status, what, data)
        raise FailedPrecondition(f"{what}: the registry keeps refusing the credentials")

    # --- authentication ------------------------------------------------------------------------------

    def _authenticate(self, header: str, scope: str, had: bool) -> None:
        challenges = {c.scheme: c for c in auth.parse_challenges(header)}
        creds = self.credentials
        if "bearer" in challenges:
            if creds is not None and creds.registry_token:
                with self._lock:
                    if had:
                        raise FailedPrecondition(f"registry {self.endpoint.host} refused the registry token")
                    self._tokens[scope] = (creds.registry_token, time.monotonic() + 3600)
                return
            token, lifetime = self._fetch_token(challenges["bearer"], scope)
            with self._lock:
                old = self._tokens.get(scope)
                if had and old and old[0] == token:
                    raise FailedPrecondition(f"registry {self.endpoint.host}: access to {scope} denied")
                self._tokens[scope] = (token, time.monotonic() + max(lifetime - _TOKEN_MARGIN, 1.0))
            return
        if "basic" in challenges:
            if creds is None or creds.basic_header() is None:
                raise FailedPrecondition(
                    f"registry {self.endpoint.host} requires credentials (HTTP 401, Basic): give them in the "
                    "pull's AuthConfig, the daemon config's [registries] table, or ~/.docker/config.json"
                )
            with self._lock:
                if had and self._basic:
                    raise FailedPrecondition(
                        f"registry {self.endpoint.host} refused the credentials of user {creds.username!r}"
                    )
                self._basic = True
            return
        raise FailedPrecondition(
            f"registry {self.endpoint.host}: HTTP 401 with no usable challenge ({header[:100]!r})"
        )

    def _fetch_token(self, challenge: auth.Challenge, scope: str) -> tuple[str, int]:
        realm = challenge.params.get("realm", "")
        parsed = urllib.parse.urlsplit(realm)
        if parsed.scheme not in ("https", "http") or not parsed.netloc:
            raise FailedPrecondition(
                f"registry {self.endpoint.host}: bearer challenge with a bad realm {realm!r}"
            )
        creds = self.credentials
        if parsed.scheme == "http" and creds is not None and not self.endpoint.insecure:
            raise FailedPrecondition(
                f"registry {self.endpoint.host}: token realm {realm} is plain HTTP; not sending credentials"
            )
        fields = auth.token_request_params(challenge, [scope], creds)
        headers = {"User-Agent": USER_AGENT}
        if creds is not None and creds.identity_token:
            body = urllib.parse.urlencode(fields, doseq=True).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            method, url = "POST", realm
        else:
            body = None
            sep = "&" if parsed.query else "?"
            url = realm + sep + urllib.parse.urlencode(fields, doseq=True) if fields else realm
            method = "GET"
            if creds is not None and (basic := creds.basic_header()):
                headers["Authorization"] = basic
        try:
            resp = self._send(method, url, headers, body, preload=True)
        except SSLError as e:
            raise Unavailable(f"token endpoint {realm}: TLS: {e}") from None
        if resp.status != 200:
            raise status_error(resp.status, f"token endpoint {realm} (for {scope})", resp.data)
        return auth.token_from_response(resp.data, realm)

    # --- reading -------------------------------------------------------------------------------------

    def get_manifest(self, repository_path: str, ref: str) -> Fetched:
        """A manifest or index by tag or digest, read whole (bounded); not yet verified."""
        scope = auth.scope_for(repository_path)
        path = f"/v2/{repository_path}/manifests/{ref}"
        resp = self.request(
            "GET",
            path,
            scope,
            headers={"Accept": manifest.ACCEPT},
            preload=False,
            what=f"manifest {self.endpoint.host}/{repository_path}:{ref}" if "@" not in ref else "",
        )
        try:
            data = _read_bounded(resp, manifest.MAX_DOCUMENT_BYTES, f"manifest {repository_path}:{ref}")
        finally:
            resp.release_conn()
        return Fetched(
            data, resp.headers.get("Content-Type", ""), resp.headers.get("Docker-Content-Digest", "")
        )

    def fetch_blob(self, repository_path: str, desc: manifest.Descriptor, what: str) -> bytes:
        """A small blob (an image config) in memory, verified against its descriptor."""
        if desc.size > manifest.MAX_DOCUMENT_BYTES:
            raise InvalidArgument(f"{what} {desc.digest}: {desc.size} bytes is too large")
        resp = self.request(
            "GET",
            f"/v2/{repository_path}/blobs/{desc.digest}",
            auth.scope_for(repository_path),
            preload=False,
        )
        try:
            data = _read_bounded(resp, desc.size, f"{what} {desc.digest}")
        finally:
            resp.release_conn()
        if len(data) != desc.size:
            raise InvalidArgument(
                f"{what} {desc.digest}: got {len(data)} bytes, its descriptor says {desc.size}"
            )
        manifest.verify(data, desc.digest, f"{what} {desc.digest} from {self.endpoint.host}")
        return data

    def download_blob(
        self,
        repository_path: str,
        desc: manifest.Descriptor,
        dest: Path,
        *,
        cancel: threading.Event | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Stream a blob into the new file `dest`, hashing as it goes; verified before returning.

        InvalidArgument when the content is not what the descriptor says (the file is then removed);
        Unavailable when the registry cannot be read after BLOB_ATTEMPTS tries.
        """
        path = f"/v2/{repository_path}/blobs/{desc.digest}"
        scope = auth.scope_for(repository_path)
        hasher = hashlib.sha256()
        got = 0
        failures = 0
        try:
            with open(dest, "xb", buffering=0) as f:  # unbuffered: readers follow the file as it grows
                while True:
                    headers = {"Range": f"bytes={got}-"} if got else {}
                    resp = self.request("GET", path, scope, headers=headers, preload=False, ok=(200, 206))
                    try:
                        if got and resp.status != 206:  # the server ignored Range: start over
                            f.seek(0)
                            f.truncate()
                            hasher, got = hashlib.sha256(), 0
                        for chunk in resp.stream(CHUNK, decode_content=False):
                            if cancel is not None and cancel.is_set():
                                raise Cancelled(f"download of {desc.digest} cancelled")
                            got += len(chunk)
                            if got > desc.size:
                                raise InvalidArgument(
                                    f"blob {desc.digest} from {self.endpoint.host} is larger than its descriptor "
                                    f"says ({desc.size} bytes)"
                                )
                            hasher.update(chunk)
                            view = memoryview(chunk)
                            while view:
                                view = view[f.write(view) or 0 :]
                            if on_bytes is not None:
                                on_bytes(len(chunk))
                        if got < desc.size:
                            raise ProtocolError(f"connection closed after {got} of {desc.size} bytes")
                        break
                    except (ProtocolError, ReadTimeoutError) as e:
                        failures += 1
                        if failures >= BLOB_ATTEMPTS:
                            raise Unavailable(
                                f"blob {desc.digest} from {self.endpoint.host}: {e} ({failures} attempts)"
                            ) from None
                        log.warning("blob %s: %s; resuming at byte %d", desc.digest, e, got)
                    finally:
                        resp.release_conn()
            digest = "sha256:" + hasher.hexdigest()
            if digest != desc.digest:
                raise InvalidArgument(
                    f"blob {desc.digest} from {self.endpoint.host} failed verification: its content hashes to "
                    f"{digest} (corrupted or tampered with in the registry or on the way)"
                )
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    # --- writing (tests and benchmarks push their images with these) ---------------------------------

    def blob_exists(self, repository_path: str, digest: str) -> bool:
        scope = auth.scope_for(repository_path, "pull,push")
        resp = self.request("HEAD", f"/v2/{repository_path}/blobs/{digest}", scope, ok=(200, 404))
        return resp.status == 200

    def upload_blob(self, repository_path: str, data: bytes) -> str:
        """Monolithic upload (POST then PUT with the digest); returns the digest."""
        digest = manifest.sha256_digest(data)
        if self.blob_exists(repository_path, digest):
            return digest
        scope = auth.scope_for(repository_path, "pull,push")
        resp = self.request("POST", f"/v2/{repository_path}/blobs/uploads/", scope, ok=(202,))
        location = resp.headers.get("Location", "")
        if not location:
            raise InvalidArgument(f"registry {self.endpoint.host}: upload started without a Location")
        target = urllib.parse.urlsplit(urllib.parse.urljoin(self.url("/"), location))
        query = (target.query + "&" if target.query else "") + urllib.parse.urlencode({"digest": digest})
        self.request(
            "PUT",
            f"{target.path}?{query}",
            scope,
            headers={"Content-Type": "application/octet-stream"},
            body=data,
            ok=(201, 204),
        )
        return digest

    def put_manifest(self, repository_path: str, ref: str, data: bytes, media_type: str) -> str:
        scope = auth.scope_for(repository_path, "pull,push")
        self.request(
            "PUT",
            f"/v2/{repository_path}/manifests/{ref}",
            scope,
            headers={"Content-Type": media_type},
            body=data,
            ok=(201, 200),
        )
        return manifest.sha256_digest(data)


def _read_bounded(resp: urllib3.BaseHTTPResponse, limit: int, what: str) -> bytes:
    out = bytearray()
    for chunk in resp.stream(64 << 10, decode_content=False):
        out += chunk
        if len(out) > limit:
            raise InvalidArgument(f"{what}: larger than {limit} bytes")
    return bytes(out)
