"""DCAP collateral in the JSON shape of dcap-qvl's ``QuoteCollateralV3``.

Keys: ``pck_crl_issuer_chain``, ``root_ca_crl`` (hex DER), ``pck_crl`` (hex DER),
``tcb_info_issuer_chain``, ``tcb_info`` (the signed ``tcbInfo`` JSON text), ``tcb_info_signature``
(hex r‖s), ``qe_identity_issuer_chain``, ``qe_identity`` (the signed ``enclaveIdentity`` text),
``qe_identity_signature``, and optionally ``pck_certificate_chain`` (PEM; when present it is used
instead of the chain inside the quote). Unknown keys are ignored, as dcap-qvl does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from inclavare.errors import FormatError
from inclavare.formats.hexadecimal import decode_hex
from inclavare.formats.strict_json import loads_strict, require_object, require_str

_TEXT_FIELDS = ("pck_crl_issuer_chain", "tcb_info_issuer_chain", "tcb_info",
                "qe_identity_issuer_chain", "qe_identity")
_HEX_FIELDS = ("root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature")
_KNOWN = frozenset(_TEXT_FIELDS + _HEX_FIELDS + ("pck_certificate_chain",))
_ORDER = ("pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain", "tcb_info",
          "tcb_info_signature", "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature")


@dataclass(frozen=True, slots=True)
class Collateral:
    """Everything besides the quote that DCAP verification needs, as issued by Intel's PCS/PCCS
    (or by the simulated authority)."""

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes
    pck_certificate_chain: str | None = None

    def __post_init__(self) -> None:
        for name in _TEXT_FIELDS:
            if not isinstance(getattr(self, name), str):
                raise FormatError(f"collateral {name} must be text")
        for name in _HEX_FIELDS:
            if not isinstance(getattr(self, name), bytes):
                raise FormatError(f"collateral {name} must be bytes")
        if self.pck_certificate_chain is not None and not isinstance(self.pck_certificate_chain, str):
            raise FormatError("collateral pck_certificate_chain must be text")

    @classmethod
    def from_json(cls, text: str | bytes) -> Collateral:
        obj: dict[str, Any] = require_object(loads_strict(text, "collateral", _KNOWN), "collateral")
        fields: dict[str, Any] = {name: require_str(obj, name, "collateral") for name in _TEXT_FIELDS}
        for name in _HEX_FIELDS:
            fields[name] = decode_hex(require_str(obj, name, "collateral"), f"collateral {name}")
        chain = obj.get("pck_certificate_chain")
        if chain is not None and not isinstance(chain, str):
            raise FormatError("collateral: 'pck_certificate_chain' must be a string or null")
        return cls(pck_certificate_chain=chain, **fields)

    def to_dict(self) -> dict[str, str]:
        out = {name: (value.hex() if isinstance(value := getattr(self, name), bytes) else value)
               for name in _ORDER}
        if self.pck_certificate_chain is not None:
            out["pck_certificate_chain"] = self.pck_certificate_chain
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"
