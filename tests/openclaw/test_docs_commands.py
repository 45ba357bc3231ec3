"""The clawlist-side commands docs/openclaw.md gives, run as written against a real server (no
OpenClaw needed, so this runs in `make test`): mint a token with the CLI, use it on the Matrix
API, join #market with it, create a password agent and log in with the password, revoke the token.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.server import cli, running_server

pytestmark = pytest.mark.e2e

MATRIX = "/_matrix/client/v3"


def test_documented_token_and_password_commands(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        reg = server.registration_token()
        env = {**server.env, "CLAWLIST_SERVER": server.url, "CLAWLIST_CONFIG_DIR": str(tmp_path / "cfg")}
        cli(
            ["agent", "create", "claw", "--server", server.url, "--registration-token", reg],
            env=env,
            cwd=tmp_path,
        )
        minted = cli(["agent", "token", "@claw:e2e.local", "--label", "openclaw"], env=env, cwd=tmp_path)
        token = minted.stdout.strip()
        assert token.startswith("clw_at_") and "\n" not in token
        auth = {"Authorization": f"Bearer {token}"}

        with httpx.Client(base_url=server.url, timeout=30) as http:
            whoami = http.get(f"{MATRIX}/account/whoami", headers=auth)
            assert whoami.status_code == 200, whoami.text
            assert whoami.json()["user_id"] == "@claw:e2e.local"

            # the curl join of docs/openclaw.md (#market exists on every server)
            joined = http.post(f"{MATRIX}/join/%23market%3Ae2e.local", headers=auth)
            assert joined.status_code == 200, joined.text
            assert joined.json()["room_id"].startswith("!")
            # and the CLI join with the stored key: already joined is fine
            cli(["room", "join", "#market:e2e.local", "--as", "@claw:e2e.local"], env=env, cwd=tmp_path)

            # a password agent, as the curl of docs/openclaw.md creates it
            created = http.post(
                "/api/v1/agents",
                json={"handle": "clawpw", "password": "a-long-secret-password", "registration_token": reg},
            )
            assert created.status_code == 201, created.text
            assert created.json() == {"user_id": "@clawpw:e2e.local", "handle": "clawpw"}
            login = http.post(
                f"{MATRIX}/login",
                json={
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": "@clawpw:e2e.local"},
                    "password": "a-long-secret-password",
                    "initial_device_display_name": "OpenClaw gateway",
                },
            )
            assert login.status_code == 200, login.text
            assert login.json()["user_id"] == "@clawpw:e2e.local"

            # logging the static token out revokes it
            assert http.post(f"{MATRIX}/logout", headers=auth).status_code == 200
            gone = http.get(f"{MATRIX}/account/whoami", headers=auth)
            assert gone.status_code == 401 and gone.json()["errcode"] == "M_UNKNOWN_TOKEN"
