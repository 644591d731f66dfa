"""Interop proof: a client written from the protocol notes alone gets a secret from our server."""

from __future__ import annotations

import ast
import base64
import json
import os

import spec_client


def test_spec_client_imports_nothing_of_ours() -> None:
    tree = ast.parse(open(spec_client.__file__).read())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.startswith("inclavare") for m in modules)


def test_spec_client_gets_secret_from_our_server(kbs) -> None:
    secret = os.urandom(64)
    assert kbs.admin("POST", "/resource/interop/key/1", secret).status_code == 200
    plaintext, token = spec_client.fetch_secret(kbs.url, "interop/key/1")
    assert plaintext == secret
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    pub = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["runtime_data_claims"]["tee-pubkey"]
    assert pub["alg"] == "ECDH-ES+A256KW"
