"""Start and stop an SGLang server: ``python -m sglang.launch_server`` as a child process.

The server runs in its own process group (``start_new_session``), because SGLang spawns its
scheduler and detokenizer as further processes: stopping sends SIGTERM to the whole group,
waits ``stop_timeout_s``, then SIGKILLs the group, so nothing is left behind. Start-up is
over when ``/health`` answers 200 (0.5.17 answers 503 while it loads and warms up: about
70-150 s on an H100); a server that exits first is reported with its exit status and the end
of its log.

Sync and async forms::

    with SGLangServer("/tmp/model", port=30000, extra_args=["--attention-backend", "triton"]) as s:
        ...  # s.url is ready
    async with SGLangServer("/tmp/model") as s:
        ...
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import anyio
import httpx

from orchestrator import RuntimeUnavailable

__all__ = ["SGLangServer", "free_port"]

_LOG_TAIL_LINES = 30


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (another process may take it before the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _live_group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies (read from ``/proc``)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            live.append(int(stat.parent.name))
    return live


class SGLangServer:
    """One ``sglang.launch_server`` process (see the module docstring).

    :param model_path: ``--model-path``.
    :param port: ``--port``; 0 picks a free one.
    :param extra_args: further server flags, passed as given.
    :param python: the interpreter that has ``sglang`` installed.
    :param log_path: where the server's output goes; default: a temporary file.
    :param inherit_output: send the output to this process's stdout/stderr instead (CLI).
    :param module: the module run with ``-m`` (a stand-in server in tests).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 30000,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        startup_timeout_s: float = 600.0,
        stop_timeout_s: float = 30.0,
        log_path: str | Path | None = None,
        inherit_output: bool = False,
        module: str = "sglang.launch_server",
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.command = [
            python, "-m", module,
            "--model-path", str(model_path),
            "--host", host,
            "--port", str(self.port),
            *extra_args,
        ]  # fmt: skip
        self._env = {**os.environ, **(env or {})}
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._inherit = inherit_output
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Launch the process (returns at once; see :meth:`wait_ready`)."""
        if self.process is not None:
            raise RuntimeError("this server was already started")
        output: IO[bytes] | None = None
        if not self._inherit:
            if self.log_path is None:
                fd, name = tempfile.mkstemp(prefix="sglang-", suffix=".log")
                os.close(fd)
                self.log_path = Path(name)
            # Held open for the server's lifetime, closed by stop().
            self._log = self.log_path.open("wb")
            output = self._log
        self.process = subprocess.Popen(
            self.command,
            env=self._env,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            start_new_session=True,  # its own process group: stop() reaches its children
        )

    def wait_ready(self) -> None:
        """Block until ``/health`` answers 200.

        :raises RuntimeUnavailable: if the process exits first or the timeout passes.
        """
        deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.1
        with httpx.Client(base_url=self.url, timeout=5.0) as http:
            while True:
                self._check_alive()
                try:
                    if http.get("/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet: keep polling
                if time.monotonic() > deadline:
                    self._fail(f"/health did not answer 200 within {self.startup_timeout_s:g} s")
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def await_ready(self) -> None:
        """:meth:`wait_ready` without blocking the event loop."""
        deadline = anyio.current_time() + self.startup_timeout_s
        delay = 0.1
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0) as http:
            while True:
                self._check_alive()
                try:
                    if (await http.get("/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet: keep polling
                if anyio.current_time() > deadline:
                    self._fail(f"/health did not answer 200 within {self.startup_timeout_s:g} s")
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def stop(self) -> int | None:
        """SIGTERM the process group, then SIGKILL after ``stop_timeout_s``. Idempotent.

        :return: the server's exit status (None if it was never started).
        """
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                process.wait()
        # Children that ignored SIGTERM while the leader exited: the group still exists.
        self._signal_group(signal.SIGKILL)
        self._wait_group_gone(process.pid)
        if self._log is not None:
            self._log.close()
            self._log = None
        return process.returncode

    def log_tail(self, num_lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server's output (empty when inherited)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-num_lines:])

    # -- context managers --------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        self.start()
        try:
            await self.await_ready()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.stop)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.stop)

    # -- helpers -----------------------------------------------------------------------

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(self.process.pid, sig)

    def _wait_group_gone(self, pgid: int) -> None:
        """Wait (up to ``stop_timeout_s``) until no live process is left in the group: a
        signalled process dies asynchronously. Linux only (``/proc``); elsewhere, no wait."""
        deadline = time.monotonic() + self.stop_timeout_s
        while _live_group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.01)

    def _check_alive(self) -> None:
        assert self.process is not None, "start() first"
        status = self.process.poll()
        if status is not None:
            self._fail(f"the server exited with status {status} before it was ready")

    def _fail(self, reason: str) -> None:
        tail = self.log_tail()
        detail = f"\n--- last lines of {self.log_path} ---\n{tail}" if tail else ""
        raise RuntimeUnavailable(
            f"{' '.join(self.command)}: {reason}{detail}", runtime=f"sglang@{self.url}"
        )
