"""Containers: OCI bundle -> conmon -> runc/crun.

Layering, bottom up: `user`, `seccomp` and `spec` are pure (CRI config + image + sandbox -> config.json);
`ocirt` (the runtime CLI) and `conmon` (the monitor) each wrap one outside thing (the overlay rootfs is
the image layer's `podhost.runtime.image.rootfs`);
`exits` turns conmon's exit files into events; `service` (ContainerService) drives them all and alone
writes container records.
"""
