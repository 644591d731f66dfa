"""Enclave configuration of a container, read exactly as upstream rune reads it.

Sources (Inclavare rune ``libenclave/check.go`` ``CreateEnclaveConfig``, v0.6.4):

=============================  ==============================================
environment (``process.env``)  annotation
=============================  ==============================================
``ENCLAVE_TYPE``               ``enclave.type``
``ENCLAVE_RUNTIME_PATH``       ``enclave.runtime.path``
``ENCLAVE_RUNTIME_ARGS``       ``enclave.runtime.args``
``ENCLAVE_RUNTIME_LOGLEVEL``   ``enclave.runtime.loglevel``
``ENCLAVE_RA_TYPE``            ``enclave.attestation.ra_type``
``ENCLAVE_RA_EPID_SPID``       ``enclave.attestation.ra_epid_spid``
``ENCLAVE_RA_EPID_SUB_KEY``    ``enclave.attestation.ra_epid_subscription_key``
``ENCLAVE_IMAGE``              ``enclave.image`` (ours: the workload image the enclave pulls)
=============================  ==============================================

Upstream quirks kept on purpose (tests pin each one):

* The environment wins over the annotation. The first matching variable is removed from the
  container's environment (it only carries a parameter); its value counts only if it is longer
  than one character, otherwise the annotation is consulted.
* ``ENCLAVE_TYPE`` is looked at first; when no type results, nothing else is read or removed
  and the container is a plain runc container.
* ``enclave.runtime.args`` commas become spaces.
* An unknown log level falls back to ``info``.

Stricter than upstream (a container that asked for an enclave must never run outside one, and
a typo must not silently change behaviour): an unknown enclave type or attestation type is an
error rather than being ignored.

Beyond upstream: the VM TEE types ``tdx`` and ``snp`` (Trustee's names, from the TEE registry)
run only with ``enclave.runtime.path=sim`` — a simulated TD / SNP guest on the node agent's
simulated platform. A real TD or SNP guest is a confidential VM (Kata/CoCo), which this
installation does not launch, so any other runtime (or none) is refused. ``sim`` alone is the
simulated SGX enclave, as before.

This module is on rune's create path, so its values are plain immutable classes rather than
dataclasses (importing ``dataclasses`` costs more than the whole decision).
"""

from __future__ import annotations

from inclavare.errors import EnclaveConfigError
from inclavare.immutable import Immutable
from inclavare.tee.simulated import SIM_RUNTIME, SIM_TYPE, is_simulated, vm_tee_types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

TYPE_SIM = SIM_TYPE
TYPE_INTEL_SGX = "intelSgx"
TYPE_NITRO = "AwsNitroEnclaves"
TYPE_JAILHOUSE = "Jailhouse"
ENCLAVE_TYPES = (TYPE_SIM, TYPE_INTEL_SGX, TYPE_NITRO, TYPE_JAILHOUSE)
RUNTIME_SIM = SIM_RUNTIME  # the built-in runtime that simulates a TEE (enclave.runtime.path)

LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "fatal", "panic", "off")
DEFAULT_LOG_LEVEL = "info"

RA_TYPES = ("ecdsa", "epidUnlinkable", "epidLinkable")
EPID_RA_TYPES = ("epidUnlinkable", "epidLinkable")

# (environment variable, annotation) per setting, in the order upstream reads them.
SOURCES = {
    "type": ("ENCLAVE_TYPE", "enclave.type"),
    "runtime_path": ("ENCLAVE_RUNTIME_PATH", "enclave.runtime.path"),
    "runtime_args": ("ENCLAVE_RUNTIME_ARGS", "enclave.runtime.args"),
    "log_level": ("ENCLAVE_RUNTIME_LOGLEVEL", "enclave.runtime.loglevel"),
    "ra_type": ("ENCLAVE_RA_TYPE", "enclave.attestation.ra_type"),
    "ra_epid_spid": ("ENCLAVE_RA_EPID_SPID", "enclave.attestation.ra_epid_spid"),
    "ra_epid_subscription_key": (
        "ENCLAVE_RA_EPID_SUB_KEY", "enclave.attestation.ra_epid_subscription_key"),
    "image": ("ENCLAVE_IMAGE", "enclave.image"),
}


class EnclaveConfig(Immutable):
    """The validated enclave configuration of one container."""

    __slots__ = ("type", "runtime_path", "runtime_args", "log_level", "ra_type", "ra_epid_spid",
                 "ra_epid_subscription_key", "image")
    type: str
    runtime_path: str
    runtime_args: str
    log_level: str
    ra_type: str
    ra_epid_spid: str
    ra_epid_subscription_key: str
    image: str  # REGISTRY/REPO@sha256:… the enclave pulls and runs ("": the bundle's own process)

    def __init__(self, type: str, runtime_path: str = "", runtime_args: str = "",  # noqa: A002
                 log_level: str = DEFAULT_LOG_LEVEL, ra_type: str = "", ra_epid_spid: str = "",
                 ra_epid_subscription_key: str = "", image: str = "") -> None:
        self._set(type=type, runtime_path=runtime_path, runtime_args=runtime_args, log_level=log_level,
                  ra_type=ra_type, ra_epid_spid=ra_epid_spid, ra_epid_subscription_key=ra_epid_subscription_key,
                  image=image)

    @property
    def simulated(self) -> bool:
        """Run by the built-in sim runtime (the enclave side lives in the container)."""
        return is_simulated(self.type, self.runtime_path)

    def as_dict(self) -> dict[str, str]:
        """Upstream's ``InitEnclaveConfig`` JSON field names (what a runelet is handed), plus
        ``image`` when set (so it is measured, and the node agent's quotes bind it)."""
        doc = {
            "type": self.type,
            "path": self.runtime_path,
            "args": self.runtime_args,
            "loglevel": self.log_level,
            "ra_type": self.ra_type,
            "ra_epid_spid": self.ra_epid_spid,
            "ra_epid_subscription_key": self.ra_epid_subscription_key,
        }
        if self.image:
            doc["image"] = self.image
        return doc


class EnclaveRequest(Immutable):
    """What a container's spec asks for: the configuration (None: plain runc) and the
    process environment with the consumed ``ENCLAVE_*`` variables removed."""

    __slots__ = ("config", "env", "removed")
    config: EnclaveConfig | None
    env: tuple[str, ...]
    removed: tuple[str, ...]

    def __init__(self, config: EnclaveConfig | None, env: tuple[str, ...], removed: tuple[str, ...] = ()) -> None:
        self._set(config=config, env=env, removed=removed)

    @property
    def env_changed(self) -> bool:
        return bool(self.removed)


def _filter_out(env: list[str], name: str, removed: list[str]) -> str:
    for i, pair in enumerate(env):
        key, _, value = pair.partition("=")
        if key != name:
            continue
        del env[i]
        removed.append(name)
        return value if len(value) > 1 else ""
    return ""


def read_enclave_request(spec: Mapping[str, object]) -> EnclaveRequest:
    """Read the enclave settings of an OCI runtime spec (a parsed ``config.json``).

    Raises :class:`EnclaveConfigError` for malformed values; the result is validated except
    for checks that need the host (see :func:`validate_runtime_path`).
    """
    process = spec.get("process")
    raw_env = process.get("env") if isinstance(process, dict) else None
    if raw_env is None:
        raw_env = []
    if not isinstance(raw_env, list) or not all(isinstance(e, str) for e in raw_env):
        raise EnclaveConfigError("process.env in config.json must be a list of strings")
    annotations = spec.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise EnclaveConfigError("annotations in config.json must be an object")

    env = list(raw_env)
    removed: list[str] = []

    def setting(key: str) -> str:
        env_name, annotation = SOURCES[key]
        value = _filter_out(env, env_name, removed)
        if value == "":
            ann = annotations.get(annotation, "")
            if not isinstance(ann, str):
                raise EnclaveConfigError(f"annotation {annotation} must be a string")
            value = ann
        return value

    etype = setting("type")
    if etype == "":
        return EnclaveRequest(None, tuple(env), tuple(removed))
    values = {key: setting(key) for key in SOURCES if key != "type"}
    config = _validate(etype, values)
    return EnclaveRequest(config, tuple(env), tuple(removed))


def _one_line(value: str) -> str:
    return value if len(value) <= 80 and value.isprintable() else repr(value[:80])


def _validate(etype: str, v: dict[str, str]) -> EnclaveConfig:
    if etype not in ENCLAVE_TYPES:
        vm_types = vm_tee_types()
        if etype not in vm_types:
            raise EnclaveConfigError(
                f"enclave type {_one_line(etype)!s} is not supported "
                f"(enclave.type / ENCLAVE_TYPE must be one of: {', '.join(ENCLAVE_TYPES + vm_types)})")
        if v["runtime_path"] and v["runtime_path"] != RUNTIME_SIM:
            raise EnclaveConfigError(
                f"enclave type {etype} is a confidential VM, which this installation does not launch: "
                f"only its simulation runs here (enclave.runtime.path={RUNTIME_SIM})")
    args = v["runtime_args"]
    if args:
        args = " ".join(args.split(","))
    log_level = v["log_level"] if v["log_level"] in LOG_LEVELS else DEFAULT_LOG_LEVEL
    ra_type = ""
    if v["ra_type"]:
        matches = [t for t in RA_TYPES if t.lower() == v["ra_type"].lower()]
        if not matches:
            raise EnclaveConfigError(
                f"attestation type {_one_line(v['ra_type'])} is not supported "
                f"(enclave.attestation.ra_type must be one of: {', '.join(RA_TYPES)})")
        ra_type = matches[0]
    if ra_type in EPID_RA_TYPES:
        if not v["ra_epid_spid"]:
            raise EnclaveConfigError("enclave.attestation.ra_epid_spid is required for EPID attestation")
        if not v["ra_epid_subscription_key"]:
            raise EnclaveConfigError(
                "enclave.attestation.ra_epid_subscription_key is required for EPID attestation")
    if etype != TYPE_SIM and not v["runtime_path"]:
        raise EnclaveConfigError(
            "enclave runtime path is not configured (set enclave.runtime.path or ENCLAVE_RUNTIME_PATH)")
    path = v["runtime_path"]
    if "/" in path and not path.startswith("/"):
        raise EnclaveConfigError(f"enclave runtime path {_one_line(path)} must be absolute "
                                 "(or the name of an installed enclave runtime)")
    for key in ("runtime_path", "runtime_args", "ra_epid_spid", "ra_epid_subscription_key"):
        if "\x00" in v[key]:
            raise EnclaveConfigError(f"{SOURCES[key][1]} must not contain NUL bytes")
    image = v["image"]
    if image:
        from inclavare.images.reference import parse_image_ref

        if etype != TYPE_SIM:
            raise EnclaveConfigError(f"enclave.image (guest pull) is supported for enclave.type=sim only; an "
                                     f"{etype} enclave pulls its image with its LibOS's or guest's own tools")
        image = str(parse_image_ref(image))
    return EnclaveConfig(
        type=etype,
        runtime_path=v["runtime_path"],
        runtime_args=args,
        log_level=log_level,
        ra_type=ra_type,
        ra_epid_spid=v["ra_epid_spid"],
        ra_epid_subscription_key=v["ra_epid_subscription_key"],
        image=image,
    )


def is_plugin_name(runtime_path: str) -> bool:
    """``enclave.runtime.path`` names a file when it contains a slash, else a Python plugin."""
    return "/" not in runtime_path


def validate_runtime_path(
    config: EnclaveConfig,
    exists: Callable[[str], bool] | None = None,
    plugin_names: Sequence[str] = (),
) -> None:
    """Host-dependent checks: a runtime file must exist; a plugin name must be registered."""
    import os.path

    exists = exists or os.path.isfile
    path = config.runtime_path
    if not path:
        return
    if is_plugin_name(path):
        if plugin_names and path not in plugin_names:
            raise EnclaveConfigError(
                f"enclave runtime {_one_line(path)} is not installed "
                f"(known: {', '.join(sorted(plugin_names))}; a PAL library is given by its path)")
        return
    if not exists(path):
        raise EnclaveConfigError(f"enclave runtime {_one_line(path)} does not exist or is not a file")
