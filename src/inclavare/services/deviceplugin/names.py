"""The names the device plugin, rune and the node agent agree on (no imports: rune reads them).

The allowance travels as a *container* annotation, which Allocate's response sets and the kubelet
copies into CRI's ContainerConfig; a pod annotation of the same name cannot raise it, because
containerd applies container annotations after the pod's (tests/integration/test_kubelet_path.py
checks this on a real containerd).
"""

RESOURCE_NAME = "alibabacloud.com/sgx_epc_MiB"  # Alibaba's name: pods written for ACK-TEE schedule unchanged
API_VERSION = "v1beta1"
DEFAULT_DIR = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET = "kubelet.sock"
SOCKET_NAME = "inclavare-epc.sock"
HEALTHY, UNHEALTHY = "Healthy", "Unhealthy"

# What the container asks for (pod or container annotation), in MiB.
NEED_ANNOTATION = "enclave.epc_mib"
# What Allocate gave the container, in MiB (set by the device plugin only).
ALLOWANCE_ANNOTATION = "enclave.epc_allowance_mib"
