"""The streaming server's request cache: a CRI Exec/Attach/PortForward request behind a one-time token.

Exec/Attach/PortForward answer with a URL; the client then connects to it. In between, the request
waits here under a random token, as in the kubelet's `cri/streaming/request_cache.go`: a token is
used once (`consume` removes it), expires after `ttl` seconds (1 minute there), and at most `max_in_flight`
requests wait at a time, oldest expired first. The token is the only credential the URL carries,
so it has 8 random bytes, URL-safe base64 without padding.

Pure bookkeeping: no sockets, no clock other than the one given.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from podhost.errors import Unavailable

T = TypeVar("T")

DEFAULT_TTL_S = 60.0
DEFAULT_MAX_IN_FLIGHT = 1000
TOKEN_BYTES = 8


def new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()


class TokenCache(Generic[T]):
    def __init__(
        self,
        ttl: float = DEFAULT_TTL_S,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()  # insertion order = expiry order

    def _expire(self, now: float) -> None:
        while self._entries:
            token, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                break
            del self._entries[token]

    def insert(self, request: T) -> str:
        """Store `request`; its token. Unavailable when too many requests are waiting."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            if len(self._entries) >= self.max_in_flight:
                raise Unavailable(
                    f"too many streaming requests in flight ({self.max_in_flight}); try again shortly"
                )
            token = new_token()
            while token in self._entries:
                token = new_token()
            self._entries[token] = (now + self.ttl, request)
            return token

    def consume(self, token: str) -> T | None:
        """The request behind `token`, once; None for an unknown, used or expired token."""
        with self._lock:
            entry = self._entries.pop(token, None)
            if entry is None:
                return None
            expires, request = entry
            return request if expires > self._clock() else None

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)
