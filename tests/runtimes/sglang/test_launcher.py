"""The launcher and ``orchestrator sglang serve``, with a stand-in ``sglang.launch_server``.

SGLang cannot run here, so a small stand-in module (written to a temporary directory put
on the child's PYTHONPATH) plays the server: it records its argv, starts a child process of
its own (as SGLang starts its scheduler), answers ``/health`` 503 twice and then 200. The
tests check that the launcher passes the flags, waits for health, and leaves no process
behind.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from orchestrator.runtimes.sglang.cli import sglang_command
from orchestrator.runtimes.sglang.launcher import SGLangServer

from orchestrator import RuntimeUnavailable

FAKE_SERVER = """
import http.server, json, os, signal, subprocess, sys

args = sys.argv[1:]
out = os.environ["FAKE_SGLANG_OUT"]
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
with open(out, "w") as f:
    json.dump({"argv": args, "pid": os.getpid(), "child": child.pid}, f)
print("fake sglang starting", flush=True)
if os.environ.get("FAKE_EXIT"):
    sys.exit(int(os.environ["FAKE_EXIT"]))
if os.environ.get("FAKE_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
calls = {"n": 0}

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        calls["n"] += 1
        self.send_response(200 if calls["n"] > 2 else 503)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass

port = int(args[args.index("--port") + 1])
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


@pytest.fixture
def fake_sglang(tmp_path: Path) -> dict[str, str]:
    package = tmp_path / "fake" / "sglang"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "launch_server.py").write_text(textwrap.dedent(FAKE_SERVER))
    return {"PYTHONPATH": str(tmp_path / "fake"), "FAKE_SGLANG_OUT": str(tmp_path / "out.json")}


def started(env: dict[str, str]) -> dict[str, Any]:
    """What the stand-in recorded: its argv, its pid and its child's pid."""
    return dict(json.loads(Path(env["FAKE_SGLANG_OUT"]).read_text()))


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def test_serves_until_stopped_and_leaves_no_process(fake_sglang: dict[str, str]) -> None:
    server = SGLangServer(
        "/models/smol",
        port=0,
        env=fake_sglang,
        stop_timeout_s=10,
        extra_args=["--attention-backend", "triton"],
    )
    with server:
        info = started(fake_sglang)
        assert info["argv"] == [
            "--model-path",
            "/models/smol",
            "--host",
            "127.0.0.1",
            "--port",
            str(server.port),
            "--attention-backend",
            "triton",
        ]
        assert not gone(int(info["pid"])) and not gone(int(info["child"]))
    assert server.process is not None and server.process.returncode == -15
    assert gone(int(info["pid"])) and gone(int(info["child"]))
    assert server.stop() == -15  # idempotent
    assert server.log_tail() == "fake sglang starting"


def test_a_server_that_ignores_sigterm_is_killed(fake_sglang: dict[str, str]) -> None:
    env = {**fake_sglang, "FAKE_IGNORE_TERM": "1"}
    with SGLangServer("/m", port=0, env=env, stop_timeout_s=0.5) as server:
        info = started(env)
    assert server.process is not None and server.process.returncode == -9
    assert gone(int(info["child"]))


def test_a_server_that_exits_while_starting_is_reported_with_its_log(
    fake_sglang: dict[str, str],
) -> None:
    env = {**fake_sglang, "FAKE_EXIT": "3"}
    with (
        pytest.raises(
            RuntimeUnavailable,
            match=r"-m sglang\.launch_server --model-path /m .*"
            r"the server exited with status 3 before it was ready\n--- last lines "
            r"of .*\.log ---\nfake sglang starting",
        ),
        SGLangServer("/m", port=0, env=env),
    ):
        pass


@pytest.mark.anyio
async def test_async_form(fake_sglang: dict[str, str]) -> None:
    async with SGLangServer("/m", port=0, env=fake_sglang) as server:
        info = started(fake_sglang)
        assert server.url == f"http://127.0.0.1:{server.port}"
    assert gone(int(info["pid"])) and gone(int(info["child"]))


def test_cli_serve_check(
    fake_sglang: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in fake_sglang.items():
        monkeypatch.setenv(key, value)
    command = sglang_command()
    parser = argparse.ArgumentParser(prog="orchestrator sglang")
    command.configure(parser)
    args = parser.parse_args(
        [
            "serve",
            "--model",
            "/models/smol",
            "--port",
            "0",
            "--check",
            "--",
            "--mem-fraction-static",
            "0.5",
        ]
    )
    assert command.run(args) == 0
    argv = started(fake_sglang)["argv"]
    assert isinstance(argv, list) and argv[-2:] == ["--mem-fraction-static", "0.5"]
    port = argv[argv.index("--port") + 1]
    out = capsys.readouterr().out
    assert f"runtime spec: sglang:http://127.0.0.1:{port}?tokenizer=/models/smol" in out
    assert command.name == "sglang"
