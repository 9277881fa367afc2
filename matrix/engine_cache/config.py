"""Which engine cache a run uses, and what its URL says: pure, no fsspec import.

Precedence, strongest first: `--no-cache`, `--cache URL`, RTX_MATRIX_CACHE, the manifest's
`cache:`. Pushing: `--push`/`--no-push`, RTX_MATRIX_CACHE_PUSH, the manifest's `push:`
(default true); a read-only backend (http, https) never pushes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from matrix.errors import UsageError
from matrix.manifest.types import CacheSpec

ENV_URL = "RTX_MATRIX_CACHE"
ENV_PUSH = "RTX_MATRIX_CACHE_PUSH"
READ_ONLY_PROTOCOLS = ("http", "https")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def choose_cache(
    manifest: CacheSpec | None,
    *,
    url: str | None = None,
    disabled: bool = False,
    push: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> CacheSpec | None:
    """The cache of this run, or None. `url` and `push` are the command line's (None: not
    given); a folder path given there or in the environment is taken from the current
    folder (the manifest's own was resolved against its folder by the loader)."""
    env = os.environ if environ is None else environ
    if disabled:
        return None
    chosen: CacheSpec | None = manifest
    given = url or env.get(ENV_URL) or None
    if given is not None:
        refused = credentials_in(given)
        if refused:
            raise UsageError(f"cache URL {display_url(given)}: {refused}")
        chosen = CacheSpec(folder_or_url(given, os.getcwd()), manifest.push if manifest else True)
    if chosen is None:
        return None
    wanted = push if push is not None else _env_flag(env, ENV_PUSH, chosen.push)
    return CacheSpec(chosen.url, wanted and not read_only(chosen.url))


def _env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"{name}={env[name]!r}: use 1 or 0")


def is_url(text: str) -> bool:
    """`s3://b/p`, `file:///x`, `memory://x`: anything with a protocol; else a folder path."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.replace("+", "").replace("-", "").isalnum()


def protocol(url: str) -> str:
    return url.split("://", 1)[0].lower() if is_url(url) else "file"


def read_only(url: str) -> bool:
    return protocol(url) in READ_ONLY_PROTOCOLS


def folder_or_url(text: str, base: str) -> str:
    """A URL as given; a folder path made absolute against `base` (`~` expanded)."""
    if is_url(text):
        return text
    return os.path.normpath(os.path.join(base, os.path.expanduser(text)))


def credentials_in(url: str) -> str | None:
    """Why `url` may not be used as written: it carries credentials (a user or password, or
    a query string such as a signed token). They belong in the backend's environment."""
    if not is_url(url):
        return None
    parts = urlsplit(url)
    if parts.username or parts.password or "@" in parts.netloc:
        return "credentials do not belong in a cache URL: use the backend's environment"
    if parts.query:
        return "a query string (a token?) does not belong in a cache URL: use the " \
               "backend's environment"
    return None


def display_url(url: str) -> str:
    """`url` without any credentials, as messages and the lockfile show it."""
    if not is_url(url):
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
