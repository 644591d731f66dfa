"""The enclave agent's API: CoCo's attestation-agent and CDH REST paths, answered inside the enclave.

* ``GET /aa/evidence?runtime_data=...`` — evidence whose report data is the given bytes
  (zero-padded to 64): the quote comes from the host's quoting service over report data chosen
  here; ``{"quote": "<base64>"}`` as CoCo's SGX attester emits it;
* ``POST /aa/aael`` ``{"domain", "operation", "content", "register_index"?}`` — CoCo's
  ExtendRuntimeMeasurement (TDX): the event's SHA-384 extends the RTMR its PCR index maps to
  (:mod:`inclavare.tee.rtmr`), through the platform (the host channel's ``/v1/rtmr``);
* ``GET /aa/token?token_type=kbs`` — ``{"token": ...}``, an attestation token of the key broker;
* ``GET /cdh/resource/REPO/TYPE/TAG`` — the resource's plaintext bytes;
* ``POST /cdh/secret/unseal`` (body: a sealed secret) — its plaintext (CDH's UnsealSecret): the
  signature is checked with the JWK at the kid and the secret opened, all fetched from the KBS
  with this enclave's evidence; the host relays only ciphertext;
* ``POST /inclavare/seal?policy=mrenclave|mrsigner[&isv_svn=N]`` (body: at most 1 MiB) — the
  data sealed to this enclave's identity (:mod:`inclavare.secrets.identity_sealed`);
  ``POST /inclavare/unseal`` (body: a sealed blob) — its plaintext. Our paths: CoCo has no such
  call (its sealing is the LibOS's or the guest's own); ``/inclavare/`` stays clear of ``/aa``
  and ``/cdh``. The key is the node agent's simulated EGETKEY, asked over this container's
  channel, used here and dropped.

For the last two the agent itself is the key broker client: it generates the TEE key pair here,
runs the KBS protocol through the node agent's opaque relay with evidence binding its own key
and the broker's nonce, and decrypts the JWE here. The key and the token never leave this
process. Callers are admitted only if they are processes of this very container (same pid,
mount and cgroup namespaces as the agent); a neighbour that reaches the socket through
``/proc/N/root`` or a shared pid namespace is refused.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

from inclavare.services.enclave_agent.host_channel import HostChannel, HostChannelError
from inclavare.services.peer import Namespaces, Peer, own_namespaces
from inclavare.services.unix_http import HttpError, Request, Response
from inclavare.errors import ConfigError
from inclavare.tee.node_quote import NodeQuoteAttester, NodeQuoteError
from inclavare.tee.registry import TDX
from inclavare.tee.rtmr import runtime_measurement_request  # imported here: the runtime folder ships what this imports

log = logging.getLogger("inclavare.enclave_agent")

RESOURCE_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]+[A-Za-z0-9_\-.]*$")
UNSEAL_PATH = "/cdh/secret/unseal"
SEAL_DATA_PATH = "/inclavare/seal"
UNSEAL_DATA_PATH = "/inclavare/unseal"
AAEL_PATH = "/aa/aael"  # CoCo api-server-rest's ExtendRuntimeMeasurement
REFUSED = "refused: the enclave agent answers only the processes of its own enclave container"
# The key broker's CA, pinned by the image (so part of the measurement): an https broker must
# present a certificate under it. Without the file the image's system CAs apply.
KBS_CA_FILE = "/etc/inclavare/kbs-ca.pem"


class EnclaveAgent:
    def __init__(self, host: HostChannel, own: Namespaces | None = None, image: str = "") -> None:
        """``image``: the container's pulled image (``enclave.image``); its init-data goes with
        every attestation, so key-release policies can require it."""
        self.host = host
        self.image = image
        self.attester = _HostAttester(NodeQuoteAttester(host))
        self.own = own or own_namespaces()
        self._kbs: Any = None
        self._kbs_lock = threading.Lock()

    # -- admission ------------------------------------------------------------------------

    def admit(self, peer: Peer | None) -> None:
        if peer is None or peer.pid <= 0:
            # pid 0: the caller lives in a pid namespace this container cannot see (the host,
            # another container) and reached the socket through a bind mount or /proc/N/root
            raise HttpError(403, f"{REFUSED} (the caller is outside its pid namespace)")
        if peer.ns is None:
            raise HttpError(403, f"{REFUSED} (the caller could not be inspected: another user's process, "
                                 "or one with privileges the agent lacks)")
        differing = self.own.differing(peer.ns)
        if differing:
            raise HttpError(403, f"{REFUSED} (the caller's {', '.join(differing)} namespace differs)")

    # -- routes ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path == UNSEAL_PATH:
            if request.method != "POST":
                raise HttpError(405, f"{UNSEAL_PATH} takes POST with the sealed secret as the body")
            return Response(200, self._unseal(request.body), "application/octet-stream")
        if request.path in (SEAL_DATA_PATH, UNSEAL_DATA_PATH):
            if request.method != "POST":
                raise HttpError(405, f"{request.path} takes POST with the data as the body")
            return Response(200, self._identity_seal(request), "application/octet-stream")
        if request.path == AAEL_PATH:
            if request.method != "POST":
                raise HttpError(405, f"{AAEL_PATH} takes POST with the event as the body")
            return Response.json(200, self._extend_runtime_measurement(request))
        if request.method != "GET":
            raise HttpError(405, f"{request.method} is not supported here")
        path = request.path
        if path == "/aa/evidence":
            data = request.raw_query().get("runtime_data", b"")
            if len(data) > 64:
                raise HttpError(400, "runtime data longer than 64 bytes")
            return Response.json(200, self.attester.evidence(data))
        if path == "/aa/token":
            if request.query().get("token_type", "kbs") != "kbs":
                raise HttpError(400, "only token_type=kbs is supported")
            with self._kbs_lock:
                return Response.json(200, {"token": self._client().get_token()})
        if path.startswith("/cdh/resource/"):
            segments = path[len("/cdh/resource/"):].split("/")
            if len(segments) != 3 or not all(RESOURCE_SEGMENT.match(s) for s in segments):
                raise HttpError(400, "resource path must be /cdh/resource/REPO/TYPE/TAG")
            with self._kbs_lock:
                data = self._client().get_resource("kbs:///" + "/".join(segments))
            return Response(200, data, "application/octet-stream")
        raise HttpError(404, f"no such endpoint: {path}")

    def _extend_runtime_measurement(self, request: Request) -> dict[str, Any]:
        try:
            rtmr, digest, event = runtime_measurement_request(request.json())
        except ConfigError as exc:
            raise HttpError(400, str(exc)) from None
        if self.attester.tee != TDX:
            raise HttpError(400, f"runtime measurements extend TDX RTMRs; this enclave is {self.attester.tee}")
        try:
            value = self.host.extend_rtmr(rtmr, digest)
        except HostChannelError as exc:
            raise HttpError(502, str(exc)) from None
        return {"rtmr": rtmr, "digest": digest.hex(), "value": value.hex(), "event": event}

    def _unseal(self, body: bytes) -> bytes:
        from inclavare.secrets.sealed import SealedSecretError, unseal

        try:
            text = body.decode("ascii").strip()
        except UnicodeDecodeError:
            raise HttpError(400, "a sealed secret is ASCII (sealed.HEADER.PAYLOAD.SIGNATURE)") from None
        try:
            with self._kbs_lock:
                return unseal(text, self._client().get_resource)
        except SealedSecretError as exc:
            raise HttpError(400, str(exc)) from None

    def _identity_seal(self, request: Request) -> bytes:
        from inclavare.secrets import identity_sealed

        def get_key(policy: str, key_id: bytes, isv_svn: int | None) -> tuple[bytes, int, int]:
            try:
                return self.host.sealing_key(policy, key_id, isv_svn)
            except HostChannelError as exc:
                raise identity_sealed.SealedDataError(str(exc)) from None

        try:
            if request.path == UNSEAL_DATA_PATH:
                return identity_sealed.unseal(request.body, get_key)
            query = request.query()
            if set(query) - {"policy", "isv_svn"}:
                raise HttpError(400, "seal takes the query parameters policy and isv_svn only")
            svn = query.get("isv_svn")
            if svn is not None and not re.fullmatch(r"[0-9]{1,5}", svn):
                raise HttpError(400, "isv_svn must be an integer from 0 to 65535")
            return identity_sealed.seal(request.body, query.get("policy", "mrenclave"), get_key,
                                        None if svn is None else int(svn))
        except identity_sealed.SealedDataError as exc:
            raise HttpError(400, str(exc)) from None

    def _client(self) -> Any:
        """The key broker client, made on first use (its imports cost what a container that never
        asks for a secret should not pay)."""
        if self._kbs is None:
            from inclavare.services.http_transport import HttpTransport
            from inclavare.services.kbs_client import KbsClient

            url = self._relay_url()
            transport = HttpTransport(url, connect=self._tunnel, ssl_context=_kbs_ssl_context(url))
            self._kbs = KbsClient(url, self.attester, transport=transport, init_data=self._init_data())
        return self._kbs

    def _init_data(self) -> str | None:
        if not self.image:
            return None
        from inclavare.images.reference import init_data, parse_image_ref

        return init_data(parse_image_ref(self.image))

    def fetch_key(self, kid: str) -> bytes:
        """A KBS resource for the guest pull (an image layer's key-encryption key)."""
        with self._kbs_lock:
            return bytes(self._client().get_resource(kid))

    def _relay_url(self) -> str:
        try:
            info = self.host.info()
        except HostChannelError as exc:
            raise HttpError(502, str(exc)) from None
        kbs = info.get("kbs")
        url = kbs.get("url") if isinstance(kbs, dict) else None
        if not isinstance(url, str) or not url:
            raise HttpError(503, "no key broker is configured for this node (start the agent with --kbs-url URL)")
        return url

    def _tunnel(self, timeout: float) -> Any:
        from inclavare.services.http_transport import TransportError

        try:
            return self.host.tunnel(timeout)
        except HostChannelError as exc:
            raise TransportError(str(exc)) from None


class _HostAttester:
    """The node's attester, its failures answered 502 (the host, not the caller, failed)."""

    def __init__(self, inner: NodeQuoteAttester) -> None:
        self.inner = inner

    @property
    def tee(self) -> Any:
        try:
            return self.inner.tee  # asked of the platform on first use
        except (HostChannelError, NodeQuoteError) as exc:
            raise HttpError(502, str(exc)) from None

    def evidence(self, report_data: bytes) -> dict[str, Any]:
        try:
            return self.inner.evidence(report_data)
        except (HostChannelError, NodeQuoteError) as exc:
            raise HttpError(502, str(exc)) from None


def _kbs_ssl_context(url: str) -> Any:
    if not url.startswith("https:"):
        return None
    import ssl

    context = ssl.create_default_context()
    if os.path.exists(KBS_CA_FILE):
        try:
            context.load_verify_locations(KBS_CA_FILE)
        except (OSError, ssl.SSLError) as exc:
            raise HttpError(500, f"cannot load the key broker CA {KBS_CA_FILE}: {exc}") from None
    return context
