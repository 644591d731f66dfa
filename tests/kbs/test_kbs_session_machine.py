"""Stateful property test of the RCAR handshake (in process, real components, controllable clock).

Invariants: no token without valid evidence bound to the session's nonce and key; nothing
succeeds on an expired session; a second attest returns the same token.
"""

from __future__ import annotations

import json
import os
import tempfile

import hypothesis.strategies as st
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from kbs_harness import sample_evidence

from inclavare.crypto.jwk import jwk_from_public_key
from inclavare.errors import KbsError
from inclavare.policy.rego_policy import PolicyCache
from inclavare.services.kbs.attestation_service import BuiltinAttestationService
from inclavare.services.kbs.protocol import runtime_data, runtime_data_digest
from inclavare.services.kbs.rcar import RcarHandshake
from inclavare.services.kbs.sessions import SessionMap
from inclavare.services.kbs.store_sqlite import SqliteStore

TIMEOUT = 10.0
_POLICIES = PolicyCache()
_DIR = tempfile.mkdtemp(prefix="kbs-machine-")
_PUB = jwk_from_public_key(ec.generate_private_key(ec.SECP256R1()).public_key(), alg="ECDH-ES+A256KW")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class RcarMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.store = SqliteStore(tempfile.mktemp(dir=_DIR, suffix=".db"))  # sessions live in the store
        service = BuiltinAttestationService(
            self.store, ec.generate_private_key(ec.SECP256R1()), allow_sample=True, token_lifetime_s=300,
            hardware_verifier=None, policies=_POLICIES, clock=self.clock)
        self.rcar = RcarHandshake(SessionMap(self.store, TIMEOUT, 50, clock=self.clock), service)
        self.sessions: dict[str, dict] = {}  # id -> model {"nonce", "created", "token"}

    def teardown(self) -> None:
        self.store.close()
        os.remove(self.store.path)

    def _body(self, nonce: str, *, good: bool) -> bytes:
        rd = runtime_data_digest(runtime_data(_PUB, nonce, ""), "sample")
        if not good:
            rd = bytes(48)
        return json.dumps({"init-data": None, "runtime-data": {"nonce": nonce, "tee-pubkey": _PUB},
                           "tee-evidence": {"primary_evidence": sample_evidence(rd), "additional_evidence": ""}}).encode()

    def _live(self, sid: str) -> bool:
        return self.clock.now < self.sessions[sid]["created"] + TIMEOUT

    @rule()
    def auth(self) -> None:
        session, challenge = self.rcar.auth(b'{"version":"0.4.0","tee":"sample","extra-params":{}}')
        assert challenge["nonce"] == session.nonce
        self.sessions[session.id] = {"nonce": session.nonce, "created": self.clock.now, "token": None}

    @precondition(lambda self: self.sessions)
    @rule(data=st.data(), good=st.booleans(), other_nonce=st.booleans())
    def attest(self, data: st.DataObject, good: bool, other_nonce: bool) -> None:
        sid = data.draw(st.sampled_from(sorted(self.sessions)))
        model = self.sessions[sid]
        nonce = "b3RoZXI=" if other_nonce else model["nonce"]
        should_pass = self._live(sid) and (model["token"] is not None or (good and not other_nonce))
        try:
            session = self.rcar.attest(sid, self._body(nonce, good=good))
        except KbsError as exc:
            assert not should_pass, exc
            assert exc.status == 401
            return
        assert should_pass
        if model["token"] is not None:
            assert session.token == model["token"]
        model["token"] = session.token

    @rule(seconds=st.floats(min_value=0, max_value=2 * TIMEOUT))
    def wait(self, seconds: float) -> None:
        self.clock.now += seconds

    @invariant()
    def tokens_only_on_live_attested_sessions(self) -> None:
        for sid, model in self.sessions.items():
            live = self.rcar.sessions.get(sid)
            if not self._live(sid):
                assert live is None
            elif live is not None:
                assert live.token == model["token"]


TestRcarMachine = RcarMachine.TestCase
TestRcarMachine.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)
