"""Real backing services for tests: a throwaway PostgreSQL cluster from Debian's packages.

with postgres_server() as pg:
    psycopg.connect(pg.dsn)
    pg.stop()   # an outage: connections break, new ones are refused
    pg.start()  # the same cluster (same data, same port) is back

The cluster lives in a fresh temporary folder, listens on 127.0.0.1 only (trust auth, no
password) with its unix socket in that folder, and runs with fsync off: fast, and gone at exit.
PostgreSQL refuses to run as root, so as root its tools run as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from servekit.testing.server import free_port

DATABASE = "servekit"
START_ATTEMPTS = 3


def postgres_bindir() -> Path:
    """The newest /usr/lib/postgresql/*/bin holding initdb and pg_ctl, installed if missing."""
    found = _find_bindir()
    if found is None:
        _apt_install("postgresql")
        found = _find_bindir()
    if found is None:
        raise RuntimeError("postgresql installed, yet no /usr/lib/postgresql/*/bin/pg_ctl found")
    return found


def _find_bindir() -> Path | None:
    candidates = [
        Path(d)
        for d in glob.glob("/usr/lib/postgresql/*/bin")
        if os.access(Path(d) / "initdb", os.X_OK) and os.access(Path(d) / "pg_ctl", os.X_OK)
    ]
    return max(candidates, key=_version, default=None)


def _version(bindir: Path) -> int:
    return int(bindir.parent.name) if bindir.parent.name.isdigit() else 0


def _apt_install(package: str) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(
            f"PostgreSQL is not installed and cannot be installed here (needs root and apt-get); "
            f"run: apt-get install -y --no-install-recommends {package}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    result = subprocess.run(install, env=env, capture_output=True, text=True)
    if result.returncode != 0:  # maybe the package lists are missing or stale
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"could not install PostgreSQL ({' '.join(install)} exited {result.returncode}):\n"
            f"{(result.stdout + result.stderr)[-2000:]}"
        )


class PostgresServer:
    """One cluster in ``root``: ``dsn`` to connect, ``stop()``/``start()`` for outages."""

    def __init__(self, bindir: Path, root: Path, port: int) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = port
        self.running = False

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> None:
        self._configure()
        result = self._run("pg_ctl", "start", "-w", "-t", "60", "-D", self.data, "-l", self.log)
        if result.returncode != 0:
            raise RuntimeError(
                f"pg_ctl start failed: {result.stdout}{result.stderr}\n{self.logs()}"
            )
        self.running = True

    def stop(self) -> None:
        """Stop fast: open sessions are terminated, as in a real outage or failover."""
        result = self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", self.data)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {result.stdout}{result.stderr}")
        self.running = False

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _initdb(self) -> None:
        result = self._run(
            "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-locale", "--no-sync", "--no-instructions",
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stdout}{result.stderr}")

    def _configure(self) -> None:
        """Settings in postgresql.auto.conf (read last), rewritten so ``port`` may change."""
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        text = "".join(f"{key} = {value}\n" for key, value in settings.items())
        (self.data / "postgresql.auto.conf").write_text(text)  # stays the postgres user's

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")

    def _run(self, tool: str, *args: object) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / tool), *map(str, args)]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        # cwd: the postgres user may not be able to read the caller's working directory.
        return subprocess.run(command, cwd=self.root, capture_output=True, text=True)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A running cluster with an empty database ``servekit``; stopped and deleted at exit."""
    bindir = postgres_bindir()
    root = Path(tempfile.mkdtemp(prefix="servekit-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    server = PostgresServer(bindir, root, free_port())
    try:
        server._initdb()
        for attempt in range(START_ATTEMPTS):  # the free port may be taken before we bind it
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == START_ATTEMPTS - 1:
                    raise
                server.port = free_port()
        server._create_database()
        yield server
    finally:
        if server.running:
            server._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", server.data)
        shutil.rmtree(root, ignore_errors=True)


__all__ = ["PostgresServer", "postgres_bindir", "postgres_server"]
