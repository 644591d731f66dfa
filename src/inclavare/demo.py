"""The demo: a container lifecycle through rune, step by step, failing loudly on any surprise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from inclavare.errors import InclavareError
from inclavare.sample_images import make_bundle


def default_rune() -> str:
    return os.path.join(os.path.dirname(sys.executable), "rune")


class Steps:
    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []

    def step(self, title: str, detail: str = "") -> None:
        self.done.append((title, detail))
        print(f"[{len(self.done)}] {title}" + (f": {detail}" if detail else ""), flush=True)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def run_demo(rune: str | None = None, keep: bool = False) -> int:
    rune = rune or default_rune()
    work = tempfile.mkdtemp(prefix="inclavare-demo-")
    root = os.path.join(work, "state")
    steps = Steps()
    cid = f"demo-{os.getpid()}"
    try:
        bundle = make_bundle(os.path.join(work, "bundle"),
                             ["/bin/sh", "-c", "echo hello from a rune container; sleep 30"])
        steps.step("built a busybox bundle", bundle)
        base = [rune, "--root", root]
        output = os.path.join(work, "container.out")
        with open(output, "w") as out:  # the container inherits these: pipes would never close
            r = subprocess.run(base + ["create", "--bundle", bundle, cid], stdin=subprocess.DEVNULL,
                               stdout=out, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise InclavareError(f"rune create failed: {open(output).read().strip()}")
        status = json.loads(_run(base + ["state", cid]).stdout)["status"]
        steps.step("rune create", f"status {status}")
        _run(base + ["start", cid])
        time.sleep(0.2)
        status = json.loads(_run(base + ["state", cid]).stdout)["status"]
        steps.step("rune start", f"status {status}; container says: {open(output).read().strip()}")
        r = _run(base + ["exec", cid, "/bin/echo", "exec works"])
        steps.step("rune exec", r.stdout.strip() or r.stderr.strip())
        _run(base + ["kill", cid, "KILL"])
        for _ in range(50):
            status = json.loads(_run(base + ["state", cid]).stdout)["status"]
            if status == "stopped":
                break
            time.sleep(0.05)
        steps.step("rune kill", f"status {status}")
        if status != "stopped":
            raise InclavareError("container did not stop after SIGKILL")
        r = _run(base + ["delete", cid])
        if r.returncode != 0:
            raise InclavareError(f"rune delete failed: {r.stderr.strip()}")
        steps.step("rune delete", "container removed")
        r = _run([rune, "--root", root, "run", "--bundle",
                  make_bundle(os.path.join(work, "b2"), ["/bin/sh", "-c", "exit 3"]), cid + "-run"])
        steps.step("rune run (exit code passes through)", f"exit status {r.returncode}")
        if r.returncode != 3:
            raise InclavareError(f"expected exit status 3, got {r.returncode}")
        print(f"demo passed: {len(steps.done)} steps", flush=True)
        return 0
    except InclavareError as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        subprocess.run([rune, "--root", root, "delete", "--force", cid],
                       capture_output=True)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
