"""Key broker service + built-in attestation service, speaking Trustee's KBS protocol 0.4.0."""
