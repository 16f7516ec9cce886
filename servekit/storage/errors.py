"""The one error storage raises: a repository URI that cannot be turned into a local folder."""

from __future__ import annotations

from servekit.errors import ConfigError


class StorageError(ConfigError):
    """A repository or artifact URI could not be fetched, listed or unpacked.

    A ConfigError because it surfaces when a repository is read (start-up or reload), never per
    request; the message always names the URI.
    """
