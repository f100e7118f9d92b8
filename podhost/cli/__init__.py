"""podhost's command line: `podhost daemon` and the crictl-style `podhost cri <verb>` views.

The CLI speaks to a runtime only through `podhost.cri.client.CRIClient`, so every `podhost cri` verb works
as well against containerd's CRI socket as against podhost's own.
"""
