"""Pre-flight checks for a node or a client (``inclavare doctor``): each a pass, warn or fail with
the fix, read-only, each bounded in time.

Users of every project in this field complain most about opaque failures; the pitfalls collected
here are the ones this kind of host actually has (research/environment.md): a runc too old or
missing, rune not where the engines look, containerd without the runtime entry or without the
annotation pass-through, hybrid cgroups, no CAP_SYS_RESOURCE, a node agent missing or started
twice, a key broker that cannot be reached, collateral about to expire, and no TEE at all (then
everything runs on the simulated one, which protects nothing).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

PASS, WARN, FAIL = "pass", "warn", "fail"
CAP_SYS_RESOURCE = 24
COLLATERAL_WARN_DAYS = 7


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # pass | warn | fail
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Options:
    runc: str | None = None  # default: runc on PATH
    rune: str = "/usr/local/bin/rune"
    containerd_config: str = "/etc/containerd/config.toml"
    handler: str = "rune"
    agent_socket: str = "/run/inclavare/agent.sock"
    kbs_url: str | None = None  # default: the one the node agent relays to, if any
    collateral: str | None = None
    timeout: float = 5.0


def run_checks(options: Options) -> list[Finding]:
    findings: list[Finding] = []
    health: dict[str, Any] = {}
    for check in (_runc, _rune, _containerd, _cgroups, _capabilities, _tee):
        findings.extend(check(options))
    findings.extend(_agent(options, health))
    kbs_url = options.kbs_url or health.get("kbs")
    if kbs_url:
        findings.extend(_kbs(kbs_url, options.timeout))
    if options.collateral:
        findings.extend(_collateral(options.collateral))
    return findings


# -- node ---------------------------------------------------------------------------------------

def _runc(options: Options) -> Iterator[Finding]:
    path = options.runc or shutil.which("runc") or "/usr/sbin/runc"
    if not os.access(path, os.X_OK):
        yield Finding("runc", FAIL, f"no runc at {path}", "install runc 1.1 or newer (Debian: apt-get install runc)")
        return
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        yield Finding("runc", FAIL, f"{path} --version failed: {exc}", "reinstall runc")
        return
    m = re.search(r"runc version (\d+)\.(\d+)\.(\d+)", out)
    if m is None:
        yield Finding("runc", WARN, f"{path}: cannot read its version", "check that it is runc")
    elif (int(m[1]), int(m[2])) < (1, 1):
        yield Finding("runc", FAIL, f"{path} is runc {m[1]}.{m[2]}.{m[3]}", "install runc 1.1 or newer")
    else:
        yield Finding("runc", PASS, f"{path}, runc {m[1]}.{m[2]}.{m[3]}")


def _rune(options: Options) -> Iterator[Finding]:
    path = options.rune
    if not os.path.exists(path):
        yield Finding("rune launcher", WARN, f"no rune at {path} (where the engines' configuration points)",
                      f"inclavare install-rune --output {path} (or `inclavare node install` on Kubernetes)")
        return
    with open(path, "rb") as f:
        head = f.read(4096)
    native = head.startswith(b"\x7fELF")
    if not (native or head.startswith(b"#!")) or not os.access(path, os.X_OK):
        yield Finding("rune launcher", FAIL, f"{path} is not an executable rune launcher",
                      f"inclavare install-rune --output {path}")
        return
    yield Finding("rune launcher", PASS, f"{path} ({'native' if native else 'Python'} launcher)")


def _containerd(options: Options) -> Iterator[Finding]:
    from inclavare.errors import ConfigError
    from inclavare.services.containerd_runtime import handler_status

    try:
        with open(options.containerd_config, "rb") as f:
            data = f.read(1 << 20)
    except FileNotFoundError:
        yield Finding("containerd", WARN, f"no containerd config at {options.containerd_config}",
                      "skip if this node has no containerd; else `inclavare node install`")
        return
    except OSError as exc:
        yield Finding("containerd", FAIL, f"cannot read {options.containerd_config}: {exc.strerror}")
        return
    try:
        status = handler_status(data, options.handler)
    except ConfigError as exc:
        yield Finding("containerd", FAIL, str(exc), "fix the config")
        return
    if not status.present:
        yield Finding("containerd", FAIL, f"no runtime handler '{options.handler}' in {options.containerd_config}",
                      "inclavare node install (adds the entry; uninstall restores the file exactly)")
        return
    if status.binary and not os.access(status.binary, os.X_OK):
        yield Finding("containerd", FAIL, f"handler '{options.handler}' runs {status.binary}, which does not exist",
                      f"inclavare install-rune --output {status.binary}")
    elif not status.passes_enclave_annotations:
        yield Finding("containerd", FAIL, f"handler '{options.handler}' does not pass enclave.* annotations "
                      "(pod_annotations and container_annotations)",
                      'add pod_annotations = ["enclave.*"] and container_annotations = ["enclave.*"] to it')
    else:
        yield Finding("containerd", PASS, f"handler '{options.handler}' runs {status.binary or 'runc'} and "
                      "passes enclave.* annotations")


def _cgroups(options: Options) -> Iterator[Finding]:
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        yield Finding("cgroups", PASS, "cgroup v2 (unified)")
    else:
        yield Finding("cgroups", WARN, "cgroup v1 or hybrid: crun fails here, runc works",
                      "keep runc as rune's runtime (the default)")
    if not os.path.isdir("/run/systemd/system"):
        yield Finding("cgroup driver", PASS, "no systemd: cgroupfs",
                      "containerd: SystemdCgroup = false; kubelet: cgroupDriver: cgroupfs")


def _capabilities(options: Options) -> Iterator[Finding]:
    effective = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                effective = int(line.split()[1], 16)
    if not effective >> CAP_SYS_RESOURCE & 1:
        yield Finding("capabilities", WARN, "CAP_SYS_RESOURCE is missing: negative oom_score_adj and rlimits "
                      "above the hard limit fail",
                      "containerd: restrict_oom_score_adj = true; podman: --ulimit nofile=20000:20000 "
                      "--ulimit nproc=4096:4096 (or default_ulimits)")
    else:
        yield Finding("capabilities", PASS, "CAP_SYS_RESOURCE present")


def _tee(options: Options) -> Iterator[Finding]:
    found = [name for name, path in (("SGX", "/dev/sgx_enclave"), ("TDX", "/dev/tdx_guest"),
                                     ("SEV-SNP", "/dev/sev-guest"), ("configfs-tsm", "/sys/kernel/config/tsm/report"))
             if os.path.exists(path)]
    if found:
        yield Finding("TEE", PASS, f"hardware present: {', '.join(found)}")
    else:
        yield Finding("TEE", WARN, "no TEE hardware: enclave containers run on the SIMULATED TEE, which "
                      "protects nothing", "for production, run on SGX hosts or in TDX/SNP guests")


def _agent(options: Options, health: dict[str, Any]) -> Iterator[Finding]:
    from inclavare.errors import AgentError
    from inclavare.services.agent import client

    try:
        health.update(client.call(options.agent_socket, "GET", "/v1/health", timeout=options.timeout))
    except AgentError as exc:
        yield Finding("node agent", FAIL, str(exc), "inclavare agent serve (once per node, as root)")
        return
    epc = health.get("epc") or {}
    detail = f"{options.agent_socket}: version {health.get('version')}, {health.get('containers')} enclave " \
             f"container(s), kbs {health.get('kbs') or '-'}"
    if epc.get("capacity_mib"):
        detail += f", EPC {epc.get('in_use_mib')}/{epc.get('capacity_mib')} MiB in use"
    yield Finding("node agent", PASS, detail)
    serving = _agent_processes()
    if len(serving) > 1:
        yield Finding("node agent", WARN, f"{len(serving)} `inclavare agent serve` processes (pids "
                      f"{', '.join(map(str, serving))})", "run one per node; stop the others")


def _agent_processes() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"inclavare") or a.endswith(b"inclavare.cli.main") for a in argv[:3]) \
                and b"agent" in argv and b"serve" in argv:
            pids.append(int(entry))
    return pids


# -- client -------------------------------------------------------------------------------------

def _kbs(url: str, timeout: float) -> Iterator[Finding]:
    from inclavare.errors import InclavareError
    from inclavare.services.http_transport import HttpTransport, parse_origin

    try:
        scheme, host, port = parse_origin(url)
    except InclavareError as exc:
        yield Finding("key broker", FAIL, f"{url}: {exc}", "give the broker's URL as http(s)://HOST:PORT")
        return
    started = time.monotonic()
    transport = HttpTransport(url, timeout=timeout)
    try:  # an empty /auth: a broker answers with Trustee's error body, without creating a session
        answer = transport.request("POST", "/kbs/v0/auth", b"{}", {"content-type": "application/json"})
    except (InclavareError, OSError) as exc:
        yield Finding("key broker", FAIL, f"{url} not reachable: {exc}", "check the URL, the broker and the network")
        return
    finally:
        transport.close()
    took = (time.monotonic() - started) * 1000
    if answer.status in (400, 401) and b'"type"' in answer.body:
        yield Finding("key broker", PASS, f"{url} answers the KBS protocol ({took:.0f} ms)")
    else:
        yield Finding("key broker", WARN, f"{url} answered {answer.status}, not like a KBS",
                      "check that the URL is the broker's, without a path")
    if scheme == "https":
        yield from _tls_certificate(host, port, timeout)


def _tls_certificate(host: str, port: int, timeout: float) -> Iterator[Finding]:
    from cryptography import x509

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we only read its dates here; clients pin the CA
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        yield Finding("key broker TLS", FAIL, f"TLS handshake with {host}:{port} failed: {exc}")
        return
    if der is None:
        return
    cert = x509.load_der_x509_certificate(der)
    days = (cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).days
    status = FAIL if days < 0 else WARN if days < COLLATERAL_WARN_DAYS else PASS
    yield Finding("key broker TLS", status, f"certificate {cert.subject.rfc4514_string()} valid for {days} more day(s)",
                  "renew the broker's certificate" if status != PASS else "")


def _collateral(path: str) -> Iterator[Finding]:
    from cryptography import x509

    from inclavare.errors import InclavareError
    from inclavare.formats.collateral import Collateral
    from inclavare.formats.qe_identity import parse_qe_identity
    from inclavare.formats.tcb_info import parse_tcb_info

    try:
        with open(path, "rb") as f:
            collateral = Collateral.from_json(f.read())
        next_updates: dict[str, float] = {
            "TCB info": parse_tcb_info(collateral.tcb_info).next_update,
            "QE identity": parse_qe_identity(collateral.qe_identity).next_update,
        }
        for name, crl in (("root CA CRL", collateral.root_ca_crl), ("PCK CRL", collateral.pck_crl)):
            parsed = x509.load_der_x509_crl(crl) if not crl.lstrip().startswith(b"-----") else x509.load_pem_x509_crl(crl)
            if parsed.next_update_utc is not None:
                next_updates[name] = parsed.next_update_utc.timestamp()
    except (OSError, InclavareError, ValueError) as exc:
        yield Finding("collateral", FAIL, f"{path}: {exc}", "fetch fresh collateral (PCCS, or `inclavare sim export`)")
        return
    name, soonest = min(next_updates.items(), key=lambda item: item[1])
    days = (soonest - time.time()) / 86400
    status = FAIL if days < 0 else WARN if days < COLLATERAL_WARN_DAYS else PASS
    yield Finding("collateral", status, f"{path}: next update due in {days:.1f} day(s) ({name} first)",
                  "refresh it before then (PCCS, or `inclavare sim export`)" if status != PASS else "")

