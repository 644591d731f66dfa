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


def _read(path: str) -> bytes:
    from inclavare.verify.trust_files import read_file

    return read_file(path, "file")


def _rv_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _admin(args: argparse.Namespace) -> int:
    from inclavare.services.kbs.admin_client import KbsAdmin, load_admin_signing_key

    admin = KbsAdmin(args.url, load_admin_signing_key(args.key), audience=args.audience, issuer=args.issuer)
    if args.object == "resource":
        if args.action == "delete":
            admin.delete_resource(args.path)
            print(f"ok: deleted {args.path}")
        else:
            admin.set_resource(args.path, _read(args.file) if args.file else args.value.encode())
            print(f"ok: set {args.path}")
    elif args.object == "resource-policy" and args.action == "get":
        sys.stdout.write(admin.resource_policy())
    elif args.object == "resource-policy":
        admin.set_resource_policy(_read(args.file))
        print("ok: resource policy set")
    elif args.object == "attestation-policy":
        admin.set_attestation_policy(_read(args.file), args.id)
        print(f"ok: attestation policy {args.id} set")
    elif args.action == "get":
        print(json.dumps(admin.reference_values(args.name), indent=2))
    else:
        admin.set_reference_value(args.name, [_rv_value(v) for v in args.values])
        print(f"ok: reference value {args.name} set")
    return 0
