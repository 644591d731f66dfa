"""An independent KBS protocol 0.4.0 client written only from research/attestation.md §1.

Deliberately imports nothing from ``inclavare``: httpx + jwcrypto + rfc8785 only, so a secret
fetched with it from our server shows the server speaks the protocol, not just our own client.
Uses Trustee's ``sample`` TEE (§1.10).
"""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import rfc8785
from jwcrypto import jwe, jwk


def fetch_secret(base_url: str, resource_path: str) -> tuple[bytes, str]:
    """auth -> attest -> GET resource; returns (plaintext, token)."""
    with httpx.Client(base_url=base_url.rstrip("/") + "/kbs/v0", timeout=30) as http:
        # §1.2 Request -> Challenge (+ session cookie)
        r = http.post("/auth", json={
            "version": "0.4.0", "tee": "sample",
            "extra-params": {"supported-hash-algorithms": ["sha256", "sha384", "sha512"]},
        })
        r.raise_for_status()
        challenge = r.json()
        assert challenge["extra-params"] == ""
        nonce = challenge["nonce"]
        # ephemeral EC P-256 TEE key
        key = jwk.JWK.generate(kty="EC", crv="P-256")
        public = json.loads(key.export_public())
        tee_pubkey = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": public["x"], "y": public["y"]}
        # §1.3 report_data = SHA-384(JCS({"tee-pubkey", "nonce", "additional-evidence"})), 48 bytes for sample
        runtime = {"tee-pubkey": tee_pubkey, "nonce": nonce, "additional-evidence": ""}
        report_data = hashlib.sha384(rfc8785.dumps(runtime)).digest()
        evidence = {"svn": "1", "report_data": base64.b64encode(report_data).decode()}
        r = http.post("/attest", json={
            "init-data": None,
            "runtime-data": {"nonce": nonce, "tee-pubkey": tee_pubkey},
            "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
        })
        r.raise_for_status()
        token = r.json()["token"]
        # §1.5 resource = flattened JSON JWE, ECDH-ES+A256KW / A256GCM
        r = http.get(f"/resource/{resource_path}")
        r.raise_for_status()
        body = r.json()
        assert set(body) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
        header = json.loads(base64.urlsafe_b64decode(body["protected"] + "=" * (-len(body["protected"]) % 4)))
        assert header["alg"] == "ECDH-ES+A256KW" and header["enc"] == "A256GCM"
        message = jwe.JWE()
        message.deserialize(json.dumps(body), key=key)
        return message.payload, token
