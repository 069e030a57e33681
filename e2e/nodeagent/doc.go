// Package nodeagent is the simulated kubelet of the local environment: one Node, named by its configuration, whose
// pods run as local processes.
//
// It owns, and only owns:
//   - the Node object and its Lease in kube-node-lease, kept fresh so that the node lifecycle controller of
//     kube-controller-manager never marks the node NotReady and evicts its pods;
//   - scheduling: every pending Pod without a nodeName (and for the default scheduler) is bound to the node;
//   - the pods bound to the node: their per-pod folder under StateDir/pods/<namespace>/<name>/ (volumes, logs,
//     generated /etc/hosts), their container processes, restarts, readiness probes, status and graceful deletion;
//   - the kubelet API on a TLS listener: /exec/{namespace}/{pod}/{container} (SPDY and WebSocket, served by
//     k8s.io/kubelet's streaming remotecommand code), /portForward/{namespace}/{pod} (SPDY and WebSocket, served by
//     k8s.io/kubelet's streaming portforward code; each forwarded stream is a TCP connection to the pod's localhost
//     address, see localhostFor, where a kubelet dials localhost in the pod's network namespace),
//     /containerLogs/{namespace}/{pod}/{container} and /healthz;
//   - fault injection (faults.go): the faults file in StateDir, read at every exec, probe and forwarded stream, cuts
//     exec streams (CutExec) and forwarded streams (CutPortForward) and holds pods not Ready;
//   - the sandbox helper (SandboxMain): every process of a pod, containers and execs alike, is started by
//     re-executing the current binary with the hidden sandbox-exec subcommand in a new, private mount namespace.
//     The helper bind-mounts the pod's volumes and its hosts file at their mount paths, creating missing mount
//     points on a tmpfs-backed overlay, and then executes the command. Nothing is created on the host outside
//     StateDir and nothing stays mounted on the host: every mount lives and dies with the namespace.
//   - images (image.go, sandbox_image.go): a container whose image is <anything>@sha256:<digest>, with a digest listed
//     in one of the configured OCI layouts (Config.ImageLayouts), runs from that image. Its layers are unpacked once
//     per digest under StateDir/images/<hex>/rootfs; the helper lays an overlay with a tmpfs upper layer over it,
//     mounts /proc, a minimal /dev, the volumes and the hosts file, makes it read-only when the container asks
//     (readOnlyRootFilesystem), pivots into it and executes the command as the user Kubernetes would pick
//     (runAsUser/runAsGroup, else the image's User). Every other container runs host binaries, as before.
//
// The contract it implements is written down in e2e/README.md ("The node agent's pod contract"). It is a test
// fixture, not a kubelet: there is no registry (an image is found by digest in a local layout, never pulled),
// no cgroups, network namespaces, liveness probes or resource limits.
package nodeagent
