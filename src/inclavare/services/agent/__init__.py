"""The node agent: enclave container registry, workload identification, evidence and secrets."""
