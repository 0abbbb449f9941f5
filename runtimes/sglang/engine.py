"""The SGLang runtime in-process: ``sglang.Engine`` instead of an HTTP server.

Same bodies, same outputs: ``Engine.async_generate`` returns the dicts the HTTP server would
send (and, streaming, the same cumulative chunks), so :class:`.runtime.SGLangRuntime` runs on
an :class:`EngineBackend` unchanged. The engine starts its scheduler in a spawned subprocess
and owns the GPU; :meth:`EngineBackend.aclose` shuts it down.

``sglang`` is an extra (``pip install 'reasoning-orchestrator[sglang]'``, which pins its own
torch), imported only when an engine is started. ``Engine`` takes no ``session_params`` or
``return_text_in_logprobs``; a body with them is refused.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import AsyncGenerator, Mapping
from typing import Any, NoReturn

import anyio

from orchestrator import CapabilityMissing, ConfigError, RequestRejected

from .errors import error_for_payload
from .params import validate_generate_body

__all__ = ["EngineBackend"]

#: /generate body key -> Engine.async_generate argument.
_ARGUMENTS = {
    "text": "prompt",
    "input_ids": "input_ids",
    "sampling_params": "sampling_params",
    "return_logprob": "return_logprob",
    "logprob_start_len": "logprob_start_len",
    "top_logprobs_num": "top_logprobs_num",
    "token_ids_logprob": "token_ids_logprob",
    "lora_path": "lora_path",
    "custom_logit_processor": "custom_logit_processor",
    "return_hidden_states": "return_hidden_states",
    "data_parallel_rank": "data_parallel_rank",
    "rid": "rid",
    "stream": "stream",
}


class EngineBackend:
    """A :class:`.pool.Backend` on an ``sglang.Engine``.

    :param engine: a started ``sglang.Engine`` (see :meth:`start`).
    :param model_path: for names and errors.
    """

    def __init__(self, engine: Any, *, model_path: str) -> None:
        self._engine = engine
        self.url = f"engine:{model_path}"
        self.name = f"sglang-engine@{model_path}"
        accepted = inspect.signature(engine.async_generate).parameters
        self._accepted = {k for k, arg in _ARGUMENTS.items() if arg in accepted}

    @classmethod
    def start(cls, model_path: str, **server_args: Any) -> EngineBackend:
        """Start ``sglang.Engine(model_path=..., **server_args)`` (blocking: it loads the
        model and warms up).

        :raises ConfigError: if ``sglang`` is not installed.
        """
        try:
            sglang = importlib.import_module("sglang")
        except ImportError as exc:
            raise ConfigError(
                "the in-process SGLang runtime needs the sglang package: "
                "pip install 'reasoning-orchestrator[sglang]' (it brings its own torch)",
                field="sglang-engine",
            ) from exc
        return cls(sglang.Engine(model_path=model_path, **server_args), model_path=model_path)

    def _arguments(self, body: Mapping[str, Any]) -> dict[str, Any]:
        validate_generate_body(body, runtime=self.name)
        refused = sorted(set(body) - self._accepted)
        if refused:
            raise CapabilityMissing(f"/generate keys {refused} on sglang.Engine", runtime=self.name)
        return {_ARGUMENTS[k]: v for k, v in body.items()}

    async def generate(self, body: Mapping[str, Any]) -> Any:
        arguments = self._arguments({k: v for k, v in body.items() if k != "stream"})
        try:
            return await self._engine.async_generate(**arguments)
        except ValueError as exc:  # SGLang's validation errors (what HTTP answers with 400)
            self._raise_rejected(exc, body)

    async def stream(self, body: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        arguments = self._arguments({**body, "stream": True})
        try:
            chunks = await self._engine.async_generate(**arguments)
            async for chunk in chunks:
                yield chunk
        except ValueError as exc:
            self._raise_rejected(exc, body)

    async def abort(self, rid: str) -> None:
        self._engine.tokenizer_manager.abort_request(rid)

    async def aclose(self) -> None:
        """Shut the engine (and its scheduler process) down."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._engine.shutdown)

    def _raise_rejected(self, exc: ValueError, body: Mapping[str, Any]) -> NoReturn:
        """The one place an engine error becomes ours."""
        error = error_for_payload(
            {"error": {"message": str(exc)}},
            runtime=self.name,
            body=dict(body),
            where="sglang.Engine refused the request",
        )
        if isinstance(error.__cause__, RequestRejected):  # ContextOverflow <- the rejection
            error.__cause__.__cause__ = exc
            raise error
        raise error from exc
