"""The ocicrypt keyprovider protocol (``keywrap``/``keyunwrap`` JSON), shared by the cmd and gRPC forms.

ocicrypt hands a provider the layer's private options (symmetric key, nonce, digest) and stores
whatever annotation comes back; here that is CoCo's AnnotationPacket wrapped under the KBS
resource the key id names. Go's ``[]byte`` travels as standard base64 in both directions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from inclavare.crypto.b64 import b64std_decode, b64std_encode
from inclavare.errors import FormatError
from inclavare.formats.strict_json import loads_strict, require_object
from inclavare.images.annotation_packet import KEY_SIZE, AnnotationPacket, ImageKeyError, parse_kid, unwrap, wrap

PROVIDER_NAME = "inclavare"  # the name in provider:inclavare:… and in ...enc.keys.provider.inclavare
MAX_REQUEST = 1 << 20  # ocicrypt's requests are a few hundred bytes; this bounds a hostile caller


@dataclass
class TenantKeys:
    """Where the tenant's key-encryption keys live: a local copy (0600 files under ``key_dir``)
    and, when ``admin`` is set, the KBS that will release them to attested enclaves.

    The KBS's admin API can store a resource but never read one back (only attested workloads
    can), so the tenant keeps its own copy, as CoCo's coco_keyprovider does with ``keypath``.
    """

    key_dir: str
    admin: Any = None  # inclavare.services.kbs.admin_client.KbsAdmin

    def _path(self, kid: str) -> str:
        p = parse_kid(kid)
        return os.path.join(self.key_dir, p.repo, p.type, p.tag)

    def for_wrap(self, kid: str) -> bytes:
        """The key for ``kid``, created (random, 32 bytes) when the tenant has none; the KBS
        is given it first, so no image is ever encrypted under a key the broker lacks."""
        path = self._path(kid)
        kek = self._read(path, kid)
        if kek is None:
            if self.admin is None:
                raise ImageKeyError(f"no key {kid} in {self.key_dir}, and no KBS (--kbs-url) to create it in")
            kek = os.urandom(KEY_SIZE)
        if self.admin is not None:
            self.admin.set_resource(str(parse_kid(kid)), kek)
        if not os.path.exists(path):
            from inclavare.atomic_file import write_atomic

            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            write_atomic(path, kek, mode=0o600)
        return kek

    def for_unwrap(self, kid: str) -> bytes:
        kek = self._read(self._path(kid), kid)
        if kek is None:
            raise ImageKeyError(f"no key {kid} in {self.key_dir}: this image was encrypted under a key "
                                "this tenant does not hold")
        return kek

    @staticmethod
    def _read(path: str, kid: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read(KEY_SIZE + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ImageKeyError(f"cannot read key {kid} from {path}: {exc.strerror}") from None


def _kid_from_parameters(ec: dict[str, Any], name: str) -> str:
    params = ec.get("Parameters")
    values = params.get(name) if isinstance(params, dict) else None
    if not isinstance(values, list) or not values:
        raise ImageKeyError(f"no key id given: use --encryption-key provider:{name}:kbs:///REPO/key/TAG")
    kids = {b64std_decode(v, "encryption parameter").decode("utf-8", "replace") for v in values}
    if len(kids) != 1:
        raise ImageKeyError(f"one key id per image, got {len(kids)}")
    kid = kids.pop()
    parse_kid(kid)
    return kid


def handle(request: bytes, keys: TenantKeys, name: str = PROVIDER_NAME) -> bytes:
    """One keyprovider request -> its JSON answer; every refusal is one ``InclavareError`` line."""
    if len(request) > MAX_REQUEST:
        raise ImageKeyError(f"keyprovider request larger than {MAX_REQUEST} bytes")
    try:
        doc = require_object(loads_strict(request, "keyprovider request"), "keyprovider request")
        op = doc.get("op")
        if op == "keywrap":
            params = require_object(doc.get("keywrapparams"), "keywrapparams")
            kid = _kid_from_parameters(require_object(params.get("ec"), "keywrapparams.ec"), name)
            opts = b64std_decode(params.get("optsdata"), "keywrapparams.optsdata")
            packet = wrap(kid, keys.for_wrap(kid), opts)
            return _answer({"keywrapresults": {"annotation": b64std_encode(packet.to_json())}})
        if op == "keyunwrap":
            params = require_object(doc.get("keyunwrapparams"), "keyunwrapparams")
            packet = AnnotationPacket.from_json(b64std_decode(params.get("annotation"), "keyunwrapparams.annotation"))
            opts = unwrap(packet, keys.for_unwrap(packet.kid))
            return _answer({"keyunwrapresults": {"optsdata": b64std_encode(opts)}})
    except FormatError as exc:
        raise ImageKeyError(str(exc)) from None
    raise ImageKeyError(f"keyprovider op {str(op)[:40]!r} is neither keywrap nor keyunwrap")


def _answer(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()

