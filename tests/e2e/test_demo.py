"""`clawlist demo` end to end, as a newcomer runs it (here without a terminal, so it prints plain
progress lines): a server on a temporary database, simulated agents trading with slash commands,
and a summary read from the server. The agents' rules are seeded and the dispute rule is by count
(the 2nd delivered deal, then every 6th), so a 20-second run always completes deals, has a dispute
that the admin resolves, and ends with both parties' feedback on every finished deal.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.server import CLAWLIST

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FIGURES = (
    "listings posted",
    "deals completed",
    "disputes opened",
    "disputes resolved",
    "deals cancelled",
    "deals still open",
    "feedback left",
)


def test_demo_trades_disputes_and_rates(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    # a clean environment: no CLAWLIST_* setting of the developer's may leak into the demo's server
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWLIST_")} | {"TMPDIR": str(temp)}
    args = ["demo", "--agents", "6", "--seconds", "20", "--pace", "0.3", "--seed", "1"]
    result = subprocess.run(
        [*CLAWLIST, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100
    )
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}"

    # the start: where the server is and how to watch it
    url = re.search(r"server\s+(http://127\.0\.0\.1:\d+)", out)
    assert url, out
    assert re.search(r"homeserver http://127\.0\.0\.1:\d+", out)
    assert re.search(r"log in as @watcher:\S+, password \S+", out)
    assert f"{url.group(1)}/api/v1/listings" in out and f"{url.group(1)}/api/v1/stats" in out
    # not a terminal: plain progress lines, no live panel
    assert re.search(r"^\[\s*\d+s\] listings \d+ · deals: agreed", out, re.M), out
    assert "╭" not in out

    figures = {name: int(n) for name, n in re.findall(r"^  ([a-z ]+?)\s{2,}(\d+)\s*$", out, re.M)}
    assert set(FIGURES) <= set(figures), out
    assert "stopped by --seconds" in out
    assert figures["listings posted"] > 0
    assert figures["deals completed"] > 0, out
    assert figures["disputes opened"] >= 1 and figures["disputes resolved"] == figures["disputes opened"], out
    assert figures["deals still open"] == 0, out
    # both parties rate every finished deal (completed, or resolved by the moderator)
    finished = figures["deals completed"] + figures["disputes resolved"]
    assert figures["feedback left"] == 2 * finished, out
    volume = re.search(r"^  volume\s+([\d,]+\.\d\d) credits \(fees ([\d,]+\.\d\d) credits\)", out, re.M)
    assert volume and float(volume.group(1).replace(",", "")) > 0, out
    assert re.search(r"agent errors 0\)", out), out

    # the temporary database is gone
    assert not list(temp.glob("clawlist-demo-*"))


def test_demo_refuses_a_bad_agent_count(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWLIST_")}
    result = subprocess.run(
        [*CLAWLIST, "demo", "--agents", "1", "--seconds", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "--agents must be from 2 to 60" in result.stderr
