"""Images from registries: the distribution API client and the puller behind CRI PullImage.

Layering, bottom up (each module imports only those above it in this list):

- `manifest`  pure: media types, manifest/index parsing, platform choice, digest checks;
- `hosts`     pure: which endpoints serve a registry (mirrors first) and with which TLS settings;
- `auth`      credentials (CRI AuthConfig, the daemon config, ~/.docker/config.json) and challenges;
- `client`    one endpoint over HTTP(S) (urllib3): authenticated requests, verified blob streaming;
- `puller`    a whole pull into `ImageStore`: resolve, download concurrently, commit atomically.

podhost never pushes (CRI has no push): the local registry of tests and benchmarks and the pushing that
fills it are `bench.local_registry` and `bench.push`.

Nothing here mounts, runs containers or decides what is in use (that is `image.gc` with the runtime).
"""

from podhost.runtime.image.registry.auth import AuthConfig
from podhost.runtime.image.registry.puller import Puller

__all__ = ["AuthConfig", "Puller"]
