"""Issue 10, observations 6 and 7: malformed or mistyped config.json of an enclave container.

Each call must end as runc ends its errors: exit 1, one plain line on stderr, one entry in the
``--log`` file in the chosen ``--log-format``, no traceback anywhere (rune, the node agent) and
nothing of the container left behind, checked right after the call (not after the agent's GC):
no registration, no rune record or private bundle, no channel, no runc state, no mount.
Both launchers: the native one (planned by the node agent, ``/v1/prepare``) and the Python one
(planned in rune's own process).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BundleFactory
from tests.support.agent import AgentProcess

pytestmark = pytest.mark.root

SIM = {"enclave.type": "sim"}
TEXT_LINE = re.compile(r'^time="[0-9TZ:-]+" level=error msg="(.*)"$')


def _edit(change: Callable[[dict], None]) -> Callable[[str], str]:  # type: ignore[type-arg]
    def rewrite(text: str) -> str:
        spec = json.loads(text)
        change(spec)
        return json.dumps(spec)
    return rewrite


# name -> (rewrite of the bundle's config.json text, expected start of the one error line)
CASES: dict[str, tuple[Callable[[str], str], str]] = {
    # observation 6: malformed JSON
    "unterminated object": (lambda t: t.rstrip()[:-1], "rune: bundle "),
    "trailing comma": (lambda t: t.rstrip()[:-1] + ",}", "rune: bundle "),
    "invalid escape": (lambda t: t.replace('"sim"', '"s\\qim"'), "rune: bundle "),
    "100k-deep nesting": (lambda t: t.rstrip()[:-1] + ',"x":' + "[" * 100_000 + "]" * 100_000 + "}",
                          "rune: bundle "),
    # observation 7: type confusion in what rune reads
    "process a string": (_edit(lambda s: s.__setitem__("process", "x")), "rune: config.json: process "),
    "linux a string": (_edit(lambda s: s.__setitem__("linux", "x")), "rune: config.json: linux "),
    "mounts an object": (_edit(lambda s: s.__setitem__("mounts", {})), "rune: config.json: mounts "),
    "process.user a string": (_edit(lambda s: s["process"].__setitem__("user", "root")),
                              "rune: config.json: process.user "),
    "200-deep nesting": (_edit(lambda s: s.__setitem__("x", json.loads("[" * 200 + "]" * 200))),
                         "rune: config.json is nested"),
    "Process key (runc reads it as process)": (_edit(lambda s: s.__setitem__("Process", s["process"])),
                                                "rune: config.json: key 'Process'"),
    # observation 7: what runc rejected after the plan is refused before it
    "a mount entry a string": (_edit(lambda s: s["mounts"].append("x")), "rune: config.json: mounts["),
    "process.args not a list": (_edit(lambda s: s["process"].__setitem__("args", "/bin/true")),
                                "rune: config.json: process.args "),
    "process.cwd an integer": (_edit(lambda s: s["process"].__setitem__("cwd", 5)),
                               "rune: config.json: process.cwd "),
    # runc still rejects after the plan (fields rune does not read): everything is released
    "noNewPrivileges a string (runc refuses)": (
        _edit(lambda s: s["process"].__setitem__("noNewPrivileges", "yes")), "runc create failed: "),
    "unknown filesystem type (runc init fails)": (
        _edit(lambda s: s["mounts"].append({"destination": "/mnt", "type": "bogusfs", "source": "none"})),
        "runc create failed: "),
}


def _mounts() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()


@pytest.mark.parametrize("command", ["create", "run"])
@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("kind", ["native", "python"])
@pytest.mark.parametrize("case", list(CASES))
def test_malformed_spec_is_one_runc_style_line_and_leaves_nothing(
        agent: AgentProcess, launchers: dict[str, str], runc_bin: str, runc_root: str, tmp_path: Path,
        bundle_factory: BundleFactory, case: str, kind: str, log_format: str, command: str) -> None:
    rewrite, expected = CASES[case]
    expected = expected.replace("runc create", f"runc {command}")
    bundle = bundle_factory(["/bin/echo", "must not run"], annotations=SIM)
    config = Path(bundle, "config.json")
    config.write_text(rewrite(config.read_text()))
    log = tmp_path / "rune.log"
    agent_log_before = agent.log.read_text()
    mounts_before = _mounts()
    cid = "bad-" + str(abs(hash((case, kind, log_format, command))))[:10]

    r = subprocess.run([launchers[kind], "--root", runc_root, "--log", str(log), "--log-format", log_format,
                        command, "--bundle", bundle, cid], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, env={**os.environ, **agent.env}, timeout=60)

    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), r.stderr
    entries = log.read_text().splitlines()
    assert len(entries) == 1, entries
    if log_format == "json":
        entry = json.loads(entries[0])
        assert set(entry) == {"level", "msg", "time"} and entry["level"] == "error"
        assert entry["msg"] == lines[0].removeprefix("rune: ")  # podman adds "rune: " itself
    else:
        match = TEXT_LINE.match(entries[0])
        assert match and json.loads(f'"{match.group(1)}"') == lines[0], entries[0]
    agent_log = agent.log.read_text()[len(agent_log_before):]
    assert "Traceback" not in agent_log and "internal error" not in agent_log, agent_log
    assert "Traceback" not in r.stderr + log.read_text()

    # nothing left behind, right now
    assert [c["id"] for c in agent.containers() if c["id"] == cid] == []
    state_dir = Path(agent.env["INCLAVARE_RUNE_STATE"] + runc_root, cid)
    assert not state_dir.exists(), sorted(str(p) for p in state_dir.rglob("*"))
    assert not list(Path(agent.channels_dir).glob("*")) if Path(agent.channels_dir).exists() else True
    listing = subprocess.run([runc_bin, "--root", runc_root, "list", "-q"], capture_output=True, text=True)
    assert listing.stdout.split() == []
    assert _mounts() == mounts_before
