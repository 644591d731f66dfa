"""``inclavare secret``: seal a secret (tenant side) so that only an attested enclave opens it.

    inclavare secret jwk --signing-key seal.key > seal.jwk      # publish at the kid in the KBS
    inclavare secret seal --vault kbs:///tenant/key/db --signing-key seal.key --kid kbs:///tenant/key/seal
    inclavare secret seal --envelope --value s3cret --kek kbs:///tenant/key/kek \\
        --kbs-url URL --admin-key admin.key --signing-key seal.key --kid kbs:///tenant/key/seal
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("secret", help="sealed secrets (CoCo format) for enclave workloads")
    ssub = p.add_subparsers(dest="secret_command", metavar="ACTION")
    ssub.required = True
    seal = ssub.add_parser("seal", help="print a sealed secret (vault or envelope), signed with ES256")
    kind = seal.add_mutually_exclusive_group(required=True)
    kind.add_argument("--vault", metavar="kbs:///REPO/TYPE/TAG", help="the KBS resource that is the secret")
    kind.add_argument("--envelope", action="store_true", help="encrypt the secret itself under a KEK")
    src = seal.add_mutually_exclusive_group()
    src.add_argument("--file", help="(envelope) file holding the secret")
    src.add_argument("--value", help="(envelope) the secret as a UTF-8 string")
    seal.add_argument("--kek", metavar="kbs:///REPO/TYPE/TAG", help="(envelope) the KBS resource holding the KEK")
    seal.add_argument("--kek-file", help="(envelope) the 32-byte KEK, already stored at --kek in the KBS")
    seal.add_argument("--kbs-url", help="(envelope) store a fresh KEK at --kek through this broker's admin API")
    seal.add_argument("--admin-key", help="(envelope) the broker's admin private key (with --kbs-url)")
    seal.add_argument("--audience", help="(envelope) the broker's admin_audience, when not its URL")
    seal.add_argument("--signing-key", required=True, help="PEM EC P-256 private key signing the secret")
    seal.add_argument("--kid", required=True, metavar="kbs:///REPO/TYPE/TAG",
                      help="the KBS resource holding the signing key's public JWK")
    seal.set_defaults(handler=_seal)
    jwk = ssub.add_parser("jwk", help="print the public JWK of a signing key (to store at the kid)")
    jwk.add_argument("--signing-key", required=True, help="PEM EC P-256 private key")
    jwk.set_defaults(handler=_jwk)


def _signing_key(path: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    from inclavare.crypto.key_files import load_private_key
    from inclavare.errors import ConfigError

    key = load_private_key(path, "signing key")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(f"signing key {path} must be an EC P-256 key (sealed secrets use ES256)")
    return key


def _jwk(args: argparse.Namespace) -> int:
    from inclavare.crypto.jwk import jwk_from_public_key

    print(json.dumps(jwk_from_public_key(_signing_key(args.signing_key).public_key(), "ES256")))
    return 0


def _seal(args: argparse.Namespace) -> int:
    from inclavare.cli.kbs_cmd import _read
    from inclavare.errors import ConfigError
    from inclavare.secrets import sealed

    key = _signing_key(args.signing_key)
    payload: sealed.Payload
    if args.vault:
        if args.file or args.value is not None or args.kek or args.kek_file or args.kbs_url:
            raise ConfigError("--vault names the secret; --file/--value/--kek* /--kbs-url belong to --envelope")
        payload = sealed.Vault(args.vault)
    else:
        if args.file is None and args.value is None:
            raise ConfigError("--envelope needs the secret: --file FILE or --value STRING")
        if not args.kek:
            raise ConfigError("--envelope needs --kek kbs:///REPO/TYPE/TAG (where the enclave finds the KEK)")
        plaintext = _read(args.file) if args.file else args.value.encode()
        payload = sealed.envelope(plaintext, _kek(args), args.kek)
    print(sealed.seal(payload, key, args.kid))
    return 0


def _kek(args: argparse.Namespace) -> bytes:
    """The KEK: read from --kek-file, or made here and stored in the broker at --kek."""
    from inclavare.errors import ConfigError
    from inclavare.services.kbs_client import parse_resource_uri

    if args.kek_file and args.kbs_url:
        raise ConfigError("give --kek-file (a KEK already in the broker) or --kbs-url (store a fresh one), not both")
    if args.kek_file:
        from inclavare.cli.kbs_cmd import _read

        return _read(args.kek_file)
    if not args.kbs_url or not args.admin_key:
        raise ConfigError("--envelope needs --kek-file FILE, or --kbs-url URL with --admin-key KEY")
    from inclavare.services.kbs.admin_client import KbsAdmin, load_admin_signing_key

    kek = os.urandom(32)
    KbsAdmin(args.kbs_url, load_admin_signing_key(args.admin_key), audience=args.audience).set_resource(parse_resource_uri(args.kek), kek)
    sys.stderr.write(f"stored a fresh 32-byte KEK at {args.kek}\n")
    return kek

