"""The Kubernetes API's own definitions, below both the pod manager (`kubelet`) and the API server.

    schema   the upstream OpenAPI definitions (the `kubernetes-validate` package) and the one check of an
             object against them: unknown fields, types, required fields

It imports nothing else of podhost, so the kubelet reads a static pod's manifest with the same schema
the API server serves and validates with.
"""
