"""The enclave agent: attestation and secrets inside the enclave boundary (CoCo's AA/CDH API)."""
