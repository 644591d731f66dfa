"""A node agent whose simulated authorities a real key broker trusts (explicitly), both as processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inclavare.tee.sim_amd import SimAmdAuthority
from inclavare.tee.sim_authority import SimAuthority
from tests.kbs.kbs_harness import KbsProcess, config_text, write_admin_keys
from tests.support.agent import AgentProcess


@contextmanager
def agent_and_kbs(work: Path, attestation: str, amd: bool = False) -> Iterator[tuple[KbsProcess, AgentProcess]]:
    """The agent's Intel authority exported to ``<kbs>/sim`` (and its AMD one to ``<kbs>/amd``
    when ``amd``); ``attestation`` is the broker's ``[attestation]`` table body naming them."""
    kbs_dir = work / "kbs"
    kbs_dir.mkdir()
    (work / "agent-home").mkdir()
    agent = AgentProcess(work / "agent-home")
    SimAuthority.load_or_create(str(agent.state_dir / "sim")).export(str(kbs_dir / "sim"))
    if amd:
        SimAmdAuthority.load_or_create(str(agent.state_dir / "amd")).export(str(kbs_dir / "amd"))
    kbs = KbsProcess(str(kbs_dir), config_text("sqlite:///kbs.db", sample=False, extra="[attestation]\n" + attestation),
                     write_admin_keys(str(kbs_dir))).start()
    agent.kbs_url = kbs.url
    try:
        agent.start()
        yield kbs, agent
    finally:
        agent.stop()
        kbs.stop()
