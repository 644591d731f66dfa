"""Small C programs the project compiles on the host (the in-container attest client)."""
