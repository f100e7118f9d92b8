"""Pod sandboxes: pause as the founder of the pod's namespaces, the pod's files, its cgroup, its network.

`service.SandboxService` implements the CRI RunPodSandbox / StopPodSandbox / RemovePodSandbox semantics;
`files` and `sysctls` are pure builders it uses; `pause` starts the pause process.
"""
