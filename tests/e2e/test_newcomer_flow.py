"""The newcomer's path, with a real server process and the real CLI: register two agents, put them
in a room and a DM, exchange messages; on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import secrets
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PG_URL, _drop_schema, require_postgres
from tests.e2e.server import cli, running_server

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_env(request: pytest.FixtureRequest) -> Any:
    if request.param == "sqlite":
        yield {}
        return
    require_postgres()
    schema = "e2e_" + secrets.token_hex(5)
    yield {"CLAWLIST_DATABASE_URL": PG_URL, "CLAWLIST_DATABASE_SCHEMA": schema}
    await _drop_schema(schema)


def test_two_agents_meet_in_a_room_and_a_dm(tmp_path: Path, db_env: dict[str, str]) -> None:
    with running_server(tmp_path, db_env) as server:
        out = server.output()
        assert "admin password:" in out and "registration token:" in out
        token = server.registration_token()
        env = {**server.env, "CLAWLIST_SERVER": server.url, "CLAWLIST_CONFIG_DIR": str(tmp_path / "cfg")}
        created = cli(["agent", "create", "alice", "--registration-token", token], env=env, cwd=tmp_path)
        assert "@alice:e2e.local" in created.stdout
        cli(["agent", "create", "bob", "--registration-token", token], env=env, cwd=tmp_path)
        key_file = tmp_path / "cfg" / "agents" / f"127.0.0.1_{server.port}" / "alice.json"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        for directory in (key_file.parent, key_file.parent.parent):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700

        room = cli(
            ["room", "create", "trading", "--public", "--alias", "trading", "--as", "alice"],
            env=env,
            cwd=tmp_path,
        ).stdout.strip()
        assert room.startswith("!") and room.endswith(":e2e.local")
        assert (
            cli(["room", "join", "#trading:e2e.local", "--as", "bob"], env=env, cwd=tmp_path).stdout.strip()
            == room
        )
        cli(["send", room, "selling a lamp, 40 credits", "--as", "alice"], env=env, cwd=tmp_path)
        cli(["send", "#trading:e2e.local", "I'll take it", "--as", "bob"], env=env, cwd=tmp_path)
        hist = cli(["history", room, "--as", "bob"], env=env, cwd=tmp_path).stdout
        assert hist.index("selling a lamp") < hist.index("I'll take it")

        dm = cli(["dm", "@bob:e2e.local", "--as", "alice"], env=env, cwd=tmp_path).stdout.strip()
        assert cli(["dm", "@alice:e2e.local", "--as", "bob"], env=env, cwd=tmp_path).stdout.strip() == dm
        cli(["send", dm, "payment sent", "--as", "alice"], env=env, cwd=tmp_path)
        assert "payment sent" in cli(["history", dm, "--as", "bob"], env=env, cwd=tmp_path).stdout

        listing = cli(["room", "list", "--as", "bob"], env=env, cwd=tmp_path).stdout
        assert "#trading:e2e.local" in listing

        # A long-lived token minted on the database works on the REST API.
        minted = cli(["agent", "token", "@bob:e2e.local"], env=env, cwd=tmp_path).stdout.strip()
        who = httpx.get(f"{server.url}/api/v1/auth/whoami", headers={"Authorization": f"Bearer {minted}"})
        assert who.status_code == 200 and who.json()["user_id"] == "@bob:e2e.local"
        r = httpx.get(
            f"{server.url}/api/v1/rooms/{dm}/messages", headers={"Authorization": f"Bearer {minted}"}
        )
        assert "payment sent" in [e["content"].get("body") for e in r.json()["chunk"]]

        # Secrets never reach the server's log output except the one-time first-start block.
        assert minted not in server.output()

    # A second start on the same data prints no credentials and keeps the data.
    with running_server(tmp_path, db_env) as again:
        assert "admin password:" not in again.output()
        env2 = {**env, "CLAWLIST_SERVER": again.url}
        # keys are stored per server URL; the port changed, so use the REST API with the minted token
        r = httpx.get(
            f"{again.url}/api/v1/rooms/{dm}/messages", headers={"Authorization": f"Bearer {minted}"}
        )
        assert r.status_code == 200
        assert "payment sent" in [e["content"].get("body") for e in r.json()["chunk"]]
        bad = cli(["send", dm, "x", "--as", "nobody"], env=env2, cwd=tmp_path, check=False)
        assert bad.returncode != 0


def test_migrate_and_admin_commands_work_with_the_server_down(tmp_path: Path, db_env: dict[str, str]) -> None:
    import os

    env = {
        **os.environ,
        "CLAWLIST_DATA_DIR": str(tmp_path / "data"),
        "CLAWLIST_SERVER_NAME": "e2e.local",
        **db_env,
    }
    first = cli(["migrate"], env=env, cwd=tmp_path).stdout
    assert "migrated database from empty to" in first
    assert "up to date" in cli(["migrate"], env=env, cwd=tmp_path).stdout
    token = cli(["registration-token", "create", "--uses", "1"], env=env, cwd=tmp_path).stdout.strip()
    assert token.startswith("clw_reg_")
    with running_server(tmp_path, db_env) as server:
        r = httpx.post(
            f"{server.url}/api/v1/agents",
            json={"handle": "carol", "password": "a-long-password-1", "registration_token": token},
        )
        assert r.status_code == 201, r.text
        r = httpx.post(
            f"{server.url}/api/v1/agents",
            json={"handle": "dave", "password": "a-long-password-1", "registration_token": token},
        )
        assert r.status_code == 401 and r.json()["errcode"] == "M_FORBIDDEN"
