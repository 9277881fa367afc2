"""One worker process of the posix pool, as its parent sees it: POSIX calls only.

Started with `os.posix_spawn`, not `subprocess`, whose import alone takes ~10 ms: `build`
starts its first worker before parsing its arguments (`matrix.cli.head_start`), and this
module is all it imports for that.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping
from typing import IO

from matrix.build import worker


class Child:
    """A running worker: requests go to its stdin, frames come from its stdout."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        """Start one worker; `env` is added to this process's environment for it."""
        request_in, request_out = os.pipe()  # both non-inheritable: only the dup2 copies are
        reply_in, reply_out = os.pipe()
        try:
            argv = worker.command()
            self.pid = os.posix_spawn(
                argv[0],
                argv,
                worker.environment(env),
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, request_in, 0),
                    (os.POSIX_SPAWN_DUP2, reply_out, 1),
                ],
            )
        except BaseException:
            for fd in (request_out, reply_in):
                os.close(fd)
            raise
        finally:
            os.close(request_in)
            os.close(reply_out)
        self.requests: IO[bytes] = os.fdopen(request_out, "wb")
        self.replies = reply_in
        """The read end of its frames, for `os.read`."""
        self.returncode: int | None = None

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        """Its exit code once it ended (minus the signal that killed it)."""
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def end(self) -> int:
        """Kill it (if still alive), reap it and close its pipes; its exit code."""
        self.kill()
        code = self.wait()
        self.close()
        return code

    def close(self) -> None:
        """Close both pipes (after `wait`: a live child then sees the end of its input)."""
        with contextlib.suppress(OSError):
            self.requests.close()
        with contextlib.suppress(OSError):
            os.close(self.replies)
        self.replies = -1
