"""The `clawlist` command. User commands go through the HTTP API; admin commands that must work
with the server down (migrate, token minting) go to the database through the actions.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clawlist import __version__
from clawlist.cli.config import find_agent, save_agent, stored_agents
from clawlist.cli.credits import credits_app
from clawlist.cli.demo import demo as demo_command
from clawlist.cli.disputes import disputes_app
from clawlist.client import ApiError, ClawlistClient, Gateway, GatewayError, generate_key
from clawlist.core.errors import ClawlistError

T = TypeVar("T")

app = typer.Typer(
    help="clawlist: a homeserver where AI agents meet, talk and trade.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
agent_app = typer.Typer(help="Create agents, mint their tokens, list them.", no_args_is_help=True)
room_app = typer.Typer(help="Create, list and join rooms.", no_args_is_help=True)
regtoken_app = typer.Typer(
    help="Registration tokens (admin, works with the server down).", no_args_is_help=True
)
app.add_typer(agent_app, name="agent")
app.add_typer(room_app, name="room")
app.add_typer(regtoken_app, name="registration-token")
app.add_typer(credits_app, name="credits")
app.add_typer(disputes_app, name="disputes")
app.command("demo")(demo_command)

console = Console()
err = Console(stderr=True)

DEFAULT_SERVER = "http://127.0.0.1:8008"
ServerOpt = Annotated[str, typer.Option("--server", "-s", envvar="CLAWLIST_SERVER", help="Server URL.")]
AsOpt = Annotated[
    str | None,
    typer.Option("--as", envvar="CLAWLIST_AGENT", help="Which stored agent acts (handle or user id)."),
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default ./clawlist-data).")
]


def run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(_as_coroutine(coro))
    except ApiError as exc:
        err.print(f"[red]error[/red] {exc.errcode}: {exc.message}")
        raise typer.Exit(1) from None
    except ClawlistError as exc:
        err.print(f"[red]error[/red] {exc.errcode}: {exc.message}")
        raise typer.Exit(1) from None
    except GatewayError as exc:
        err.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        err.print(f"[red]error[/red] cannot reach the server: {exc}")
        raise typer.Exit(1) from None


async def _as_coroutine(aw: Awaitable[T]) -> T:
    return await aw


async def _client_as(server: str, who: str | None) -> ClawlistClient:
    stored = find_agent(server, who)
    client = ClawlistClient(server)
    try:
        await client.login(stored.user_id, stored.key)
    except BaseException:
        await client.close()
        raise
    return client


async def _with_client(server: str, who: str | None, work: Callable[[ClawlistClient], Awaitable[T]]) -> T:
    client = await _client_as(server, who)
    try:
        return await work(client)
    finally:
        await client.close()


@app.command()
def version() -> None:
    """Print the version."""
    console.print(f"clawlist {__version__}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8008).")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Run the server (migrates the database first)."""
    import uvicorn

    from clawlist.app import create_app
    from clawlist.cli import admin

    settings = admin.make_settings(data_dir, host=host, port=port)
    if port is not None and settings.public_base_url == f"http://{settings.host}:8008":
        settings.public_base_url = f"http://{settings.host}:{port}"
    err.print(
        f"clawlist {__version__} serving {settings.server_name} at http://{settings.host}:{settings.port} "
        f"(database: {_redact_url(settings.db_url)})"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
        ws="websockets-sansio",
        ws_max_size=settings.gateway_max_frame_bytes,
        # the gateway runs its own application-level heartbeats
        ws_ping_interval=None,
        # No permessage-deflate: a zlib pair costs ~45 KB per connection and compressing every
        # frame for every subscriber costs more CPU than the bytes it saves on a LAN.
        ws_per_message_deflate=False,
        # Open long-polls and gateway connections do not hold a shutdown for their whole timeout:
        # after this many seconds they are cancelled (clients retry or resume from their token).
        timeout_graceful_shutdown=3,
    )


def _redact_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


@app.command()
def migrate(data_dir: DataDirOpt = None) -> None:
    """Apply database migrations (works with the server down)."""
    from clawlist.cli import admin

    before, after = run(admin.migrate(admin.make_settings(data_dir)))
    if before == after:
        console.print(f"database is up to date (revision {after})")
    else:
        console.print(f"migrated database from {before or 'empty'} to {after}")


@agent_app.command("create")
def agent_create(
    handle: str,
    server: ServerOpt = DEFAULT_SERVER,
    registration_token: Annotated[str | None, typer.Option(envvar="CLAWLIST_REGISTRATION_TOKEN")] = None,
    display_name: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Generate a key pair, register the agent, and store the key (0600) in the config dir."""
    key = generate_key()

    async def work() -> str:
        async with ClawlistClient(server) as client:
            user_id = await client.register(
                handle, key, registration_token=registration_token, display_name=display_name
            )
            await client.login(user_id, key)
            return user_id

    user_id = run(work())
    path = save_agent(server, user_id, key)
    console.print(f"created {user_id}")
    console.print(f"key stored in {path}")


@agent_app.command("token")
def agent_token(
    user_id: str,
    data_dir: DataDirOpt = None,
    label: Annotated[str, typer.Option(help="A label for the token's session.")] = "cli token",
) -> None:
    """Mint a long-lived access token for a bot (admin; goes to the database)."""
    from clawlist.cli import admin

    pair = run(admin.mint_agent_token(admin.make_settings(data_dir), user_id, label))
    err.print(f"long-lived token for {pair.user_id} (store it like a password):")
    console.print(pair.access_token)


@agent_app.command("login-token")
def agent_login_token(user_id: str, data_dir: DataDirOpt = None) -> None:
    """Mint a single-use Matrix login token (`m.login.token`), valid for a few minutes (admin)."""
    from clawlist.cli import admin

    settings = admin.make_settings(data_dir)
    minted = run(admin.mint_login_token(settings, user_id))
    err.print(f"single-use Matrix login token, valid {settings.challenge_ttl_seconds} s:")
    console.print(minted.nonce)


@agent_app.command("list")
def agent_list(
    server: ServerOpt = DEFAULT_SERVER,
    local: Annotated[
        bool, typer.Option("--local", help="Only the agents whose keys are stored here.")
    ] = False,
    who: AsOpt = None,
) -> None:
    """List agents: the ones with keys stored here, and (if one can log in) the server's directory."""
    table = Table("user id", "where")
    mine = {a.user_id for a in stored_agents(server)}
    for user_id in sorted(mine):
        table.add_row(user_id, "key stored here")
    if not local and mine:

        async def work(client: ClawlistClient) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            cursor = None
            while True:
                page = await client.agents(cursor=cursor, limit=200)
                items.extend(page["agents"])
                cursor = page["next_cursor"]
                if not cursor:
                    return items

        for agent in run(_with_client(server, who, work)):
            if agent["user_id"] not in mine:
                table.add_row(agent["user_id"], "server")
    console.print(table)


@regtoken_app.command("create")
def regtoken_create(
    uses: Annotated[
        int | None, typer.Option(help="How many registrations it allows (default unlimited).")
    ] = None,
    expires_in: Annotated[int | None, typer.Option(help="Seconds until it expires (default never).")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Mint a registration token (admin; goes to the database)."""
    from clawlist.cli import admin

    token = run(admin.create_registration_token(admin.make_settings(data_dir), uses, expires_in))
    console.print(token.token)


@room_app.command("create")
def room_create(
    name: str,
    public: Annotated[
        bool, typer.Option("--public/--private", help="Anyone may join a public room.")
    ] = False,
    alias: Annotated[str | None, typer.Option(help="Alias localpart, e.g. 'trading'.")] = None,
    topic: Annotated[str | None, typer.Option()] = None,
    server: ServerOpt = DEFAULT_SERVER,
    who: AsOpt = None,
) -> None:
    """Create a room."""
    room_id = run(
        _with_client(server, who, lambda c: c.create_room(name, public=public, alias=alias, topic=topic))
    )
    console.print(room_id)


@room_app.command("list")
def room_list(
    public: Annotated[
        bool, typer.Option("--public", help="Browse public rooms instead of your own.")
    ] = False,
    server: ServerOpt = DEFAULT_SERVER,
    who: AsOpt = None,
) -> None:
    """List your rooms (or the public ones)."""
    rooms = run(_with_client(server, who, lambda c: c.public_rooms() if public else c.rooms()))
    table = Table("room id", "alias", "name", "members", "membership")
    for room in rooms:
        table.add_row(
            room["room_id"],
            room.get("alias") or "",
            room.get("name") or "",
            str(room.get("joined_members", "")),
            room.get("membership") or "",
        )
    console.print(table)


@room_app.command("join")
def room_join(room: str, server: ServerOpt = DEFAULT_SERVER, who: AsOpt = None) -> None:
    """Join a room by id or alias (#name:server)."""
    console.print(run(_with_client(server, who, lambda c: c.join(room))))


@app.command()
def dm(user_id: str, server: ServerOpt = DEFAULT_SERVER, who: AsOpt = None) -> None:
    """Open (or find) the DM room with another agent; prints its room id."""
    console.print(run(_with_client(server, who, lambda c: c.open_dm(user_id))))


@app.command()
def send(room: str, text: str, server: ServerOpt = DEFAULT_SERVER, who: AsOpt = None) -> None:
    """Send a text message to a room (id or alias)."""
    console.print(run(_with_client(server, who, lambda c: c.send(room, text))))


@app.command()
def history(
    room: str,
    limit: Annotated[int, typer.Option(help="How many of the latest events.")] = 20,
    server: ServerOpt = DEFAULT_SERVER,
    who: AsOpt = None,
) -> None:
    """Show a room's latest events, oldest first."""
    page = run(_with_client(server, who, lambda c: c.history(room, limit=limit)))
    for event in reversed(page["chunk"]):
        console.print(_line(event), highlight=False)


@app.command()
def listen(
    room: str,
    since: Annotated[
        int | None, typer.Option("--since", help="Start after this position (printed when it stops).")
    ] = None,
    json_lines: Annotated[bool, typer.Option("--json", help="Print each event as one JSON line.")] = False,
    server: ServerOpt = DEFAULT_SERVER,
    who: AsOpt = None,
) -> None:
    """Stream a room's events live, across reconnects, until Ctrl-C."""
    stream: list[Gateway] = []

    async def work(client: ClawlistClient) -> None:
        room_id = await client.room_id(room)
        async with client.events(rooms=[room_id], since=since) as events:
            stream.append(events)
            position = await events.connected()
            err.print(f"listening to {room_id} from position {position}; Ctrl-C to stop")
            async for event in events:
                if json_lines:
                    sys.stdout.write(orjson.dumps(event).decode() + "\n")
                else:
                    console.print(_line(event), highlight=False)
                sys.stdout.flush()

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run(_with_client(server, who, work))
    except KeyboardInterrupt:
        pass
    finally:
        if stream and stream[0].position is not None:
            err.print(f"stopped at position {stream[0].position} (resume with --since {stream[0].position})")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _line(event: dict[str, Any]) -> str:
    ts = datetime.fromtimestamp(event["origin_server_ts"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"[dim]{ts}[/dim] [bold]{event['sender']}[/bold] {_describe(event)}"


def _describe(event: dict[str, Any]) -> str:
    content = event.get("content", {})
    if event["type"] == "m.room.message":
        return escape(str(content.get("body", "")))
    if event["type"] == "m.room.member":
        return f"[italic]{content.get('membership')} {event.get('state_key')}[/italic]"
    return f"[italic]{event['type']}[/italic]"


@app.command()
def whoami(server: ServerOpt = DEFAULT_SERVER, who: AsOpt = None) -> None:
    """Log in as the stored agent and print who the server says it is."""
    console.print(run(_with_client(server, who, lambda c: c.whoami())))


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
