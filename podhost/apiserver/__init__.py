"""The one-node Kubernetes API that the real kubectl speaks to (issue 11).

Layering: this package sits above `kubelet` (the pod manager) and below `cli`; it never talks CRI itself.
Its objects are the pod manager's state rendered in the Kubernetes shape on each change, not a second
copy of the truth:

    server      aiohttp on its own event loop in a daemon thread; HTTPS with client certificates
    certs       the instance's CA, serving and client certificates, and its kubeconfig
    routes      the URL space (discovery, OpenAPI, resources, subresources) -> handlers
    resources   list/get/watch/create/patch/update/delete over `store`, one table of resource kinds
    store       resourceVersions and the watch event log, by diffing renders of the manager's state
    objects     pure renderers: Pod, Node, Namespace, Event as kube-apiserver serves them
    printers    pure server-side printing (meta.k8s.io Table) with kubectl's columns and status rules
    patch       pure strategic-merge, JSON-merge and JSON patches; the pod update (immutability) check
    openapi_v2/v3  the OpenAPI documents kubectl reads, from the upstream definitions (`kubeapi.schema`,
                which also does strict field validation)
    status      the one place podhost errors become `Status` objects with an HTTP code and a reason
    logs        pods/log from the CRI log files the pod manager locates
    streaming   pods/exec, pods/attach, pods/portforward: a CRI streaming URL, the connection proxied to it
"""
