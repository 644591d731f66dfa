"""``inclavare kbs serve`` configuration (TOML), typed and strict.

Unknown keys are errors; dangerous switches are named ``insecure_*``; relative paths are
resolved against the configuration file's directory. Every key is documented in docs/kbs.md.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inclavare.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_SESSION_TIMEOUT_S = 300.0
DEFAULT_PAYLOAD_LIMIT = 2 * 1024 * 1024
DEFAULT_TOKEN_LIFETIME_S = 300


@dataclass(frozen=True)
class Limits:
    """Bounds on what one client, or all of them, can hold of the broker (docs/kbs.md, "Limits").

    A whole request (headers and body) must arrive within ``request_timeout_seconds`` of its first
    byte, so stalled (slowloris) connections are closed; connections beyond the caps are refused
    at accept, before they can hold a file descriptor; ``/auth`` is rate-limited and its live
    sessions capped per client address, so one client cannot fill ``max_sessions`` for the others.
    """

    request_timeout_seconds: float = 10.0
    keep_alive_timeout_seconds: float = 15.0
    max_connections: int = 4096
    max_connections_per_client: int = 256
    auth_rate_per_second: float = 20.0
    auth_burst: int = 100
    max_sessions_per_client: int = 1000


@dataclass(frozen=True)
class AttestationConfig:
    token_signing_key: str | None = None
    token_lifetime_seconds: int = DEFAULT_TOKEN_LIFETIME_S
    insecure_sim_trust_anchor: str | None = None
    insecure_sim_collateral: str | None = None
    insecure_sim_amd_ask_ark: str | None = None
    sgx_collateral: str | None = None
    amd_ask_ark: tuple[str, ...] = ()
    amd_vceks: tuple[str, ...] = ()
    tpm_ek_ca: tuple[str, ...] = ()  # PEM files of the CAs TPM EK certificates chain to


@dataclass(frozen=True)
class KbsConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    store: str = "sqlite:////var/lib/inclavare/kbs.db"
    admin_public_key: str | None = None
    admin_audience: str | None = None
    admin_issuer: str | None = None
    insecure_allow_sample_tee: bool = False
    session_timeout_seconds: float = DEFAULT_SESSION_TIMEOUT_S
    payload_limit_bytes: int = DEFAULT_PAYLOAD_LIMIT
    max_sessions: int = 100_000
    log_level: str = "info"
    log_format: str = "text"  # "json": one JSON object per line, decisions as events with fields
    tls_cert: str | None = None
    tls_key: str | None = None
    workers: int = 1
    attestation: AttestationConfig = AttestationConfig()
    limits: Limits = Limits()

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"


_TOP = {
    "listen": str, "store": str, "admin_public_key": str, "admin_audience": str, "admin_issuer": str,
    "insecure_allow_sample_tee": bool, "limits": dict,
    "session_timeout_seconds": (int, float), "payload_limit_bytes": int, "max_sessions": int,
    "log_level": str, "log_format": str, "tls_certificate": str, "tls_private_key": str, "attestation": dict,
    "tls": dict, "workers": int,
}
_TLS = {"cert": str, "key": str}
# Old top-level names of the [tls] keys, still accepted (docs/kbs.md).
_TLS_ALIASES = {"cert": "tls_certificate", "key": "tls_private_key"}
MAX_WORKERS = 64
_ATTESTATION = {
    "token_signing_key": str, "token_lifetime_seconds": int, "insecure_sim_trust_anchor": str,
    "insecure_sim_collateral": str, "insecure_sim_amd_ask_ark": str, "sgx_collateral": str, "amd_ask_ark": list, "amd_vceks": list,
    "tpm_ek_ca": list,
}
_LIMITS = {
    "request_timeout_seconds": (int, float), "keep_alive_timeout_seconds": (int, float),
    "max_connections": int, "max_connections_per_client": int, "auth_rate_per_second": (int, float),
    "auth_burst": int, "max_sessions_per_client": int,
}
# (low, high) for each [limits] key; a value outside is a ConfigError.
_LIMIT_RANGES: dict[str, tuple[float, float]] = {
    "request_timeout_seconds": (0.1, 600), "keep_alive_timeout_seconds": (0.1, 600),
    "max_connections": (1, 1_000_000), "max_connections_per_client": (1, 1_000_000),
    "auth_rate_per_second": (0.01, 1_000_000), "auth_burst": (1, 1_000_000),
    "max_sessions_per_client": (1, 10_000_000),
}
_LOG_LEVELS = ("debug", "info", "warning", "error")


def _check_keys(table: Mapping[str, Any], schema: Mapping[str, Any], where: str) -> None:
    for key, value in table.items():
        if key not in schema:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(schema))})")
        expected = schema[key]
        if isinstance(value, bool) and expected is not bool and bool not in (
            expected if isinstance(expected, tuple) else (expected,)
        ):
            raise ConfigError(f"{where}: {key} must not be a boolean")
        if not isinstance(value, expected):
            names = expected.__name__ if isinstance(expected, type) else "number"
            raise ConfigError(f"{where}: {key} must be a {names}, got {type(value).__name__}")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port_s = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ConfigError(f"listen must be HOST:PORT (port 0-65535), got {text!r}")
    return host, int(port_s)


def _path(base: str, value: str | None) -> str | None:
    if value is None:
        return None
    return value if os.path.isabs(value) else os.path.normpath(os.path.join(base, value))


def _paths(base: str, values: list[Any], key: str) -> tuple[str, ...]:
    if not all(isinstance(v, str) for v in values):
        raise ConfigError(f"[attestation] {key} must be a list of file paths")
    return tuple(str(_path(base, v)) for v in values)


def _store_url(base: str, url: str) -> str:
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path:
            raise ConfigError("store: sqlite URL needs a path, e.g. sqlite:////var/lib/inclavare/kbs.db (absolute) or sqlite:///kbs.db (next to the config)")
        return "sqlite:///" + str(_path(base, path))
    if url.startswith(("postgresql://", "postgres://")):
        return url
    raise ConfigError(f"store must be sqlite:///PATH or postgresql://..., got {url!r}")


def _limits(table: Mapping[str, Any]) -> Limits:
    _check_keys(table, _LIMITS, "kbs config [limits]")
    for key, value in table.items():
        low, high = _LIMIT_RANGES[key]
        if not low <= value <= high:
            raise ConfigError(f"[limits] {key} must be in [{low:g}, {high:g}], got {value}")
    values: dict[str, Any] = {k: (float(v) if isinstance(_LIMITS[k], tuple) else v) for k, v in table.items()}
    return Limits(**values)


def _admin_identity(doc: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Fail closed: admin tokens are only accepted when they are bound to this broker."""
    audience, issuer = doc.get("admin_audience"), doc.get("admin_issuer")
    for key, value in (("admin_audience", audience), ("admin_issuer", issuer)):
        if value is not None and not value.strip():
            raise ConfigError(f"{key} must not be empty")
    if doc.get("admin_public_key") is not None and audience is None:
        raise ConfigError(
            "admin_public_key needs admin_audience (the name admin tokens must carry as 'aud', "
            "e.g. this broker's URL as admins reach it: \"https://kbs.example:8080\")"
        )
    return audience, issuer


def _tls(doc: Mapping[str, Any], base_dir: str) -> tuple[str | None, str | None]:
    """``[tls] cert``/``key``, or their old top-level names ``tls_certificate``/``tls_private_key``."""
    table = doc.get("tls", {})
    _check_keys(table, _TLS, "kbs config [tls]")
    paths: dict[str, str | None] = {}
    for key, old in _TLS_ALIASES.items():
        if key in table and old in doc:
            raise ConfigError(f"[tls] {key} and {old} (its old name) are both set; keep [tls] {key}")
        paths[key] = _path(base_dir, table.get(key, doc.get(old)))
    if (paths["cert"] is None) != (paths["key"] is None):
        raise ConfigError("[tls] cert and key go together")
    for key, path in paths.items():
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"[tls] {key} {path} does not exist")
    return paths["cert"], paths["key"]


def parse_config(doc: Mapping[str, Any], base_dir: str) -> KbsConfig:
    _check_keys(doc, _TOP, "kbs config")
    att = doc.get("attestation", {})
    _check_keys(att, _ATTESTATION, "kbs config [attestation]")
    host, port = parse_listen(doc.get("listen", DEFAULT_LISTEN))
    timeout = float(doc.get("session_timeout_seconds", DEFAULT_SESSION_TIMEOUT_S))
    if not 0 < timeout <= 86400:
        raise ConfigError("session_timeout_seconds must be in (0, 86400]")
    limit = int(doc.get("payload_limit_bytes", DEFAULT_PAYLOAD_LIMIT))
    if not 1024 <= limit <= 1024 * 1024 * 1024:
        raise ConfigError("payload_limit_bytes must be between 1 KiB and 1 GiB")
    max_sessions = int(doc.get("max_sessions", 100_000))
    if max_sessions < 1:
        raise ConfigError("max_sessions must be at least 1")
    audience, issuer = _admin_identity(doc)
    level = doc.get("log_level", "info")
    if level not in _LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
    log_format = doc.get("log_format", "text")
    if log_format not in ("text", "json"):
        raise ConfigError("log_format must be text or json")
    lifetime = int(att.get("token_lifetime_seconds", DEFAULT_TOKEN_LIFETIME_S))
    if not 1 <= lifetime <= 86400:
        raise ConfigError("[attestation] token_lifetime_seconds must be in [1, 86400]")
    tls_cert, tls_key = _tls(doc, base_dir)
    workers = doc.get("workers", 1)
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"workers must be in [1, {MAX_WORKERS}], got {workers}")
    anchor = _path(base_dir, att.get("insecure_sim_trust_anchor"))
    collateral = _path(base_dir, att.get("insecure_sim_collateral"))
    if (anchor is None) != (collateral is None):
        raise ConfigError(
            "[attestation] insecure_sim_trust_anchor and insecure_sim_collateral go together"
        )
    return KbsConfig(
        listen_host=host,
        listen_port=port,
        store=_store_url(base_dir, doc.get("store", KbsConfig.store)),
        admin_public_key=_path(base_dir, doc.get("admin_public_key")),
        admin_audience=audience,
        admin_issuer=issuer,
        insecure_allow_sample_tee=bool(doc.get("insecure_allow_sample_tee", False)),
        session_timeout_seconds=timeout,
        payload_limit_bytes=limit,
        max_sessions=max_sessions,
        log_level=level,
        log_format=log_format,
        tls_cert=tls_cert,
        tls_key=tls_key,
        workers=workers,
        attestation=AttestationConfig(
            token_signing_key=_path(base_dir, att.get("token_signing_key")),
            token_lifetime_seconds=lifetime,
            insecure_sim_trust_anchor=anchor,
            insecure_sim_collateral=collateral,
            insecure_sim_amd_ask_ark=_path(base_dir, att.get("insecure_sim_amd_ask_ark")),
            sgx_collateral=_path(base_dir, att.get("sgx_collateral")),
            amd_ask_ark=_paths(base_dir, att.get("amd_ask_ark", []), "amd_ask_ark"),
            amd_vceks=_paths(base_dir, att.get("amd_vceks", []), "amd_vceks"),
            tpm_ek_ca=_paths(base_dir, att.get("tpm_ek_ca", []), "tpm_ek_ca"),
        ),
        limits=_limits(doc.get("limits", {})),
    )


def load_config(path: str) -> KbsConfig:
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read kbs config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"kbs config {path} is not valid TOML: {exc}") from exc
    return parse_config(doc, os.path.dirname(os.path.abspath(path)))
