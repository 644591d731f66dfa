"""``inclavare image``: encrypt a container image's layers under a key held by the KBS, and see
which layers are encrypted; also the ocicrypt key provider itself (cmd and gRPC forms)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from inclavare.errors import ConfigError


def _add_key_options(p: argparse.ArgumentParser, kbs: bool) -> None:
    from inclavare.images.skopeo import default_key_dir

    p.add_argument("--key-dir", default=default_key_dir(), metavar="DIR",
                   help="the tenant's copies of its image keys, one 0600 file per key id (default: %(default)s)")
    if kbs:
        p.add_argument("--kbs-url", metavar="URL", help="the KBS that will hold the key (created there if new)")
        p.add_argument("--admin-key", metavar="FILE", help="the KBS admin private key (PEM, Ed25519 or P-256)")
        p.add_argument("--kbs-audience", metavar="AUD",
                       help="the broker's admin_audience, when it is not --kbs-url itself")


def _add_grpc_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grpc", metavar="ADDRESS", help="use a running `inclavare image keyprovider-serve` "
                   "(unix:///PATH or HOST:PORT) instead of running the provider per layer")


def _add_plain_http(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plain-http", action="store_true", help="the registry speaks HTTP without TLS (loopback tests)")


def _copy_parser(isub: argparse._SubParsersAction, name: str, help_: str, description: str,  # type: ignore[type-arg]
                 operands: tuple[str, str], kbs: bool) -> argparse.ArgumentParser:
    """encrypt and decrypt: SRC DST, the tenant's keys, a gRPC provider, plain HTTP."""
    p: argparse.ArgumentParser = isub.add_parser(name, help=help_, description=description)
    p.add_argument("src", metavar="SRC", help=operands[0])
    p.add_argument("dst", metavar="DST", help=operands[1])
    _add_key_options(p, kbs=kbs)
    _add_grpc_option(p)
    _add_plain_http(p)
    return p


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("image", help="encrypt container images under KBS keys; inspect which layers are encrypted")
    isub = p.add_subparsers(dest="image_command", metavar="SUBCOMMAND")
    isub.required = True

    enc = _copy_parser(isub, "encrypt", "copy an image with every layer encrypted under a KBS key",
                       "Copy SRC to DST (skopeo transports: docker://, oci:, oci-archive:, dir:) with every layer "
                       "encrypted (ocicrypt AES-256-CTR + HMAC); each layer key is wrapped under the KBS resource "
                       "--key, which is created (random, 32 bytes) and stored in the KBS when the tenant has no "
                       "copy of it yet.", ("the plaintext image, e.g. oci-archive:busybox.tar",
                                          "where the encrypted image goes, e.g. docker://REGISTRY/REPO:TAG"), kbs=True)
    enc.add_argument("--key", required=True, metavar="kbs:///REPO/key/TAG", help="the KBS resource wrapping the "
                     "layer keys (enclaves obtain it from the KBS with their evidence)")
    enc.set_defaults(handler=_encrypt)
    dec = _copy_parser(isub, "decrypt", "copy an encrypted image back to plaintext with the tenant's keys",
                       "Tenant-side check that an image opens: unwraps each layer key with the tenant's copy in "
                       "--key-dir. Enclaves never use this path; they obtain the key from the KBS with their "
                       "evidence, and the host never sees it.",
                       ("the encrypted image", "where the plaintext image goes"), kbs=False)
    dec.set_defaults(handler=_decrypt)

    ins = isub.add_parser("inspect", help="list an image's layers: encrypted or not, provider and key id",
                          description="Read IMAGE's manifest and print each layer's digest, media type, and for "
                                      "encrypted layers the key providers and the key ids they wrapped under.")
    ins.add_argument("image", metavar="IMAGE", help="docker://REGISTRY/REPO:TAG, oci:DIR:TAG, oci-archive:FILE …")
    _add_plain_http(ins)
    ins.add_argument("--json", action="store_true", help="print one JSON object")
    ins.set_defaults(handler=_inspect)

    kp = isub.add_parser("keyprovider", help="the ocicrypt key provider, cmd form (JSON on stdin, answer on stdout)",
                         description="Run by ocicrypt (skopeo, containerd's imgcrypt) through "
                                     "OCICRYPT_KEYPROVIDER_CONFIG {\"key-providers\":{\"inclavare\":{\"cmd\":"
                                     "{\"path\":…,\"args\":[…]}}}}; see docs/confidential-images.md.")
    _add_key_options(kp, kbs=True)
    kp.set_defaults(handler=_keyprovider)

    kps = isub.add_parser("keyprovider-serve", help="the ocicrypt key provider, gRPC KeyProviderService form",
                          description="Serve keyprovider.KeyProviderService for ocicrypt's {\"grpc\": ADDRESS} "
                                      "configuration until SIGTERM/SIGINT.")
    kps.add_argument("--listen", required=True, metavar="ADDRESS",
                     help="unix:///PATH (socket made 0600) or a loopback HOST:PORT (port 0: any free port)")
    _add_key_options(kps, kbs=True)
    kps.set_defaults(handler=_keyprovider_serve)


def _tenant_keys(args: argparse.Namespace) -> Any:
    from inclavare.images.keyprovider import TenantKeys

    admin = None
    if getattr(args, "kbs_url", None):
        from inclavare.services.kbs.admin_client import KbsAdmin, load_admin_signing_key

        if not args.admin_key:
            raise ConfigError("--kbs-url needs --admin-key")
        admin = KbsAdmin(args.kbs_url, load_admin_signing_key(args.admin_key), audience=args.kbs_audience)
    elif getattr(args, "admin_key", None):
        raise ConfigError("--admin-key needs --kbs-url")
    return TenantKeys(args.key_dir, admin)


def _settings(args: argparse.Namespace) -> Any:
    from inclavare.images.skopeo import ProviderSettings

    if args.grpc:
        from inclavare.images.keyprovider_grpc import check_listen

        check_listen(args.grpc)
    else:
        _tenant_keys(args)  # the same checks the provider will make, before skopeo runs
    return ProviderSettings(args.key_dir, getattr(args, "kbs_url", None), getattr(args, "admin_key", None),
                            getattr(args, "kbs_audience", None), args.grpc)


def _encrypt(args: argparse.Namespace) -> int:
    from inclavare.images.skopeo import encrypt

    n = encrypt(args.src, args.dst, args.key, _settings(args), args.plain_http)
    print(f"encrypted {n} layer(s): {args.src} -> {args.dst} under {args.key}")
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    from inclavare.images.skopeo import decrypt

    n = decrypt(args.src, args.dst, _settings(args), args.plain_http)
    print(f"decrypted {n} layer(s): {args.src} -> {args.dst}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from inclavare.images.skopeo import inspect

    layers = inspect(args.image, args.plain_http)
    if args.json:
        print(json.dumps({"image": args.image, "layers": [asdict(x) for x in layers]}))
        return 0
    for layer in layers:
        state = "encrypted" if layer.encrypted else "plain"
        keys = "; ".join(f"{name}: {', '.join(k or '(opaque)' for k in kids)}"
                         for name, kids in sorted(layer.providers.items()))
        print(f"{layer.digest}  {state:9}  {layer.size:>10}  {keys or layer.media_type}")
    return 0


def _keyprovider(args: argparse.Namespace) -> int:
    from inclavare.images.keyprovider import MAX_REQUEST, handle

    request = sys.stdin.buffer.read(MAX_REQUEST + 1)
    sys.stdout.buffer.write(handle(request, _tenant_keys(args)))
    sys.stdout.flush()
    return 0


def _keyprovider_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from inclavare.images.keyprovider_grpc import start_server

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server, address = start_server(args.listen, _tenant_keys(args))
    print(f"keyprovider listening on {address}", flush=True)
    stop.wait()
    server.stop(grace=2).wait()
    return 0
