"""Secrets a tenant hands to enclave workloads through untrusted hands (sealed secrets)."""
