"""The SGLang runtime: the core's runtime protocol on one or several SGLang servers.

Target: SGLang 0.5.17 (the version on the GPU machine). SGLang itself is an extra
(``pip install 'reasoning-orchestrator[sglang]'``): the runtime only speaks HTTP to a
server; the launcher and the in-process engine import ``sglang`` when used.

Runtime specs (``orchestrator run --runtime NAME=SPEC``; options in :mod:`.config`)::

    sglang:http://127.0.0.1:30000                      one server
    sglang:http://gpu1:30000,http://gpu2:30000         several: trees spread, failover
    sglang-router:http://127.0.0.1:30000               an SGLang router (it balances)
    sglang-engine:/path/to/model?tokenizer=...         in-process sglang.Engine

Start a server: ``orchestrator sglang serve --model PATH [-- server flags]``, or in Python::

    with SGLangServer("/models/smol", port=30000) as server:
        runtime = SGLangRuntime.connect([server.url])

Modules: :mod:`.client` (HTTP, retries), :mod:`.params` (body validation), :mod:`.errors`,
:mod:`.sse`, :mod:`.runtime` (the protocol), :mod:`.tokenizer`, :mod:`.convert`,
:mod:`.scoring`, :mod:`.dispatch` and :mod:`.fanout` (prefix-aware fan-out), :mod:`.pool`
(affinity, failover), :mod:`.session`, :mod:`.launcher` and :mod:`.cli`, :mod:`.engine`,
:mod:`.plugin`, :mod:`.recordings` and :mod:`.replay` (a recorded server for tests).
"""

from __future__ import annotations

from .client import RetryPolicy, SGLangClient
from .config import SGLangConfig
from .dispatch import SGLangStatistics
from .launcher import SGLangServer
from .pool import ServerPool
from .runtime import SGLangRuntime
from .session import SGLangSession
from .tokenizer import ChatTokenizer

__all__ = [
    "ChatTokenizer",
    "RetryPolicy",
    "SGLangClient",
    "SGLangConfig",
    "SGLangRuntime",
    "SGLangServer",
    "SGLangSession",
    "SGLangStatistics",
    "ServerPool",
]
