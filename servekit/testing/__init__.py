"""Public test harness: run a real server on free ports."""

from servekit.testing.server import ServerProcess, free_port

__all__ = ["ServerProcess", "free_port"]
