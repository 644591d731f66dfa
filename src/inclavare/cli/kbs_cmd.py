"""``inclavare kbs``: run the key broker, create admin keys, administer a running KBS.

    inclavare kbs serve --config kbs.toml
    inclavare kbs keygen --out DIR
    inclavare kbs admin --url URL --key admin.key resource set default/key/1 --file secret.bin
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("kbs", help="key broker service (Trustee KBS protocol 0.4.0)")
    kbs_sub = parser.add_subparsers(dest="kbs_command", metavar="ACTION")
    kbs_sub.required = True

    serve = kbs_sub.add_parser("serve", help="run the key broker + attestation service")
    serve.add_argument("--config", required=True, help="TOML configuration file (see docs/kbs.md)")
    serve.set_defaults(handler=_serve)

    keygen = kbs_sub.add_parser("keygen", help="write an Ed25519 admin key pair")
    keygen.add_argument("--out", required=True, help="directory for admin.key and admin.pub")
    keygen.add_argument("--force", action="store_true", help="overwrite existing files")
    keygen.set_defaults(handler=_keygen)

    admin = kbs_sub.add_parser("admin", help="administer a running KBS")
    admin.add_argument("--url", required=True, help="KBS base URL, e.g. http://127.0.0.1:8080")
    admin.add_argument("--key", required=True, help="admin private key (PEM, Ed25519 or P-256)")
    admin.add_argument("--audience", help="the token's 'aud': the broker's admin_audience "
                       "(default: --url without a trailing '/')")
    admin.add_argument("--issuer", default="inclavare-admin",
                       help="the token's 'iss' (checked when the broker sets admin_issuer; default: inclavare-admin)")
    objects = admin.add_subparsers(dest="object", metavar="OBJECT")
    objects.required = True

    res = objects.add_parser("resource", help="resources (repo/type/tag)")
    res_sub = res.add_subparsers(dest="action", metavar="ACTION")
    res_sub.required = True
    rset = res_sub.add_parser("set", help="store a resource")
    rset.add_argument("path", metavar="REPO/TYPE/TAG", help="where workloads find it (kbs:///REPO/TYPE/TAG)")
    src = rset.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="file holding the resource bytes")
    src.add_argument("--value", help="resource as a UTF-8 string")
    rdel = res_sub.add_parser("delete", help="delete a resource")
    rdel.add_argument("path", metavar="REPO/TYPE/TAG", help="the resource to delete")

    for name, help_text in (("resource-policy", "resource policy (Rego)"),
                            ("attestation-policy", "attestation (appraisal) policy (Rego)")):
        pol = objects.add_parser(name, help=help_text)
        pol_sub = pol.add_subparsers(dest="action", metavar="ACTION")
        pol_sub.required = True
        pset = pol_sub.add_parser("set", help="upload a policy")
        pset.add_argument("file", metavar="FILE.rego", help="the Rego policy (package policy)")
        if name == "attestation-policy":
            pset.add_argument("--id", default="default_cpu", help="policy id (default: default_cpu)")
        else:
            pol_sub.add_parser("get", help="print the current policy")

    rv = objects.add_parser("reference-value", help="reference values (RVPS sample format)")
    rv_sub = rv.add_subparsers(dest="action", metavar="ACTION")
    rv_sub.required = True
    rvset = rv_sub.add_parser("set", help="set NAME to the list of VALUEs")
    rvset.add_argument("name", help="the reference value's name (e.g. mr_enclave), as policies read it")
    rvset.add_argument("values", nargs="+", metavar="VALUE",
                       help="values; JSON literals (1, true) are parsed, anything else is a string")
    rvget = rv_sub.add_parser("get", help="print a reference value (all when NAME is omitted)")
    rvget.add_argument("name", nargs="?", help="the reference value to print (all when omitted)")
    admin.set_defaults(handler=_admin)


def _serve(args: argparse.Namespace) -> int:
    from inclavare.services.kbs.config import load_config
    from inclavare.services.kbs.server import serve

    return serve(load_config(args.config))


def _keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from inclavare.atomic_file import write_atomic
    from inclavare.errors import ConfigError

    priv_path, pub_path = os.path.join(args.out, "admin.key"), os.path.join(args.out, "admin.pub")
    for path in (priv_path, pub_path):
        if os.path.exists(path) and not args.force:
            raise ConfigError(f"{path} exists (use --force to overwrite)")
    key = ed25519.Ed25519PrivateKey.generate()
    write_atomic(priv_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ), mode=0o600)
    write_atomic(pub_path, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ), mode=0o644)
    print(f"admin private key: {priv_path}\nadmin public key:  {pub_path} "
          f"(set admin_public_key = \"{pub_path}\" and admin_audience = \"<the broker's URL>\" "
          f"in the KBS config)")
    return 0


def _load_signing_key(path: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from inclavare.crypto.key_files import load_private_key
    from inclavare.errors import ConfigError

    key = load_private_key(path, "admin key")
    if not isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)):
        raise ConfigError(f"admin key {path} must be Ed25519 or P-256")
    return key


def _read(path: str) -> bytes:
    from inclavare.errors import ConfigError

    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


def _rv_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _admin(args: argparse.Namespace) -> int:
    import httpx

    from inclavare.crypto.b64 import b64url_decode, b64url_encode
    from inclavare.errors import KbsError
    from inclavare.policy.reference_values import build_message
    from inclavare.services.kbs.admin_auth import make_admin_token
    from inclavare.services.kbs.resource_path import parse_resource_path

    audience = args.audience if args.audience is not None else args.url.rstrip("/")
    token = make_admin_token(_load_signing_key(args.key), audience, args.issuer)
    base = args.url.rstrip("/") + "/kbs/v0"
    headers = {"authorization": f"Bearer {token}"}
    method, path, body = "POST", "", b""
    content_type = "application/json"
    if args.object == "resource":
        rpath = str(parse_resource_path(args.path.strip("/")))
        path = f"/resource/{rpath}"
        content_type = "application/octet-stream"
        if args.action == "delete":
            method = "DELETE"
        else:
            body = _read(args.file) if args.file else args.value.encode()
    elif args.object in ("resource-policy", "attestation-policy"):
        path = f"/{args.object}"
        if args.action == "get":
            method = "GET"
        else:
            policy = b64url_encode(_read(args.file))
            doc = {"policy": policy}
            if args.object == "attestation-policy":
                doc = {"type": "rego", "policy_id": args.id, "policy": policy}
            body = json.dumps(doc).encode()
    else:
        if args.action == "get":
            method, path = "GET", "/reference-value" + (f"/{args.name}" if args.name else "")
        else:
            path = "/reference-value"
            body = build_message({args.name: [_rv_value(v) for v in args.values]})
    try:
        resp = httpx.request(method, base + path, content=body or None,
                             headers={**headers, "content-type": content_type}, timeout=30)
    except httpx.HTTPError as exc:
        raise KbsError(f"cannot reach KBS at {args.url}: {exc}", kind="Unreachable", status=0) from exc
    if resp.status_code != 200:
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text
        raise KbsError(f"KBS refused {method} {path} ({resp.status_code}): {detail}")
    if args.object == "resource-policy" and args.action == "get":
        try:
            sys.stdout.write(b64url_decode(resp.text.strip(), "policy").decode())
        except UnicodeDecodeError as exc:
            raise KbsError("the KBS returned a policy that is not UTF-8") from exc
    elif method == "GET":
        try:
            print(json.dumps(resp.json(), indent=2))
        except ValueError as exc:
            raise KbsError(f"KBS answered {path} with a body that is not JSON") from exc
    else:
        print(f"ok: {method} {path}")
    return 0
