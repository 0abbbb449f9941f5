"""Rendering prompts to the token ids SGLang receives."""

from __future__ import annotations

from pathlib import Path

import pytest
from orchestrator.runtimes.sglang.tokenizer import ChatTokenizer

from orchestrator import ChatMessage, ConfigError, Prompt

CHAT_IDS = [1, 4093, 198, 1780, 314, 216, 33, 34, 1232, 216, 39, 47, 2, 198, 1, 520, 9531, 198]


def test_chat_messages_render_as_the_recorded_chatml_ids(tokenizer: ChatTokenizer) -> None:
    prompt = Prompt(messages=(ChatMessage(role="user", content="What is 12 + 7?"),))
    assert tokenizer.render(prompt) == CHAT_IDS  # session_root's recorded input_ids
    # The same ids SGLang made of the recorded ChatML text (prompt_tokens 18).
    chatml = "<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.encode_model_text(chatml) == CHAT_IDS


def test_no_default_system_message_and_no_generation_prompt_on_request(
    tokenizer: ChatTokenizer,
) -> None:
    prompt = Prompt(
        messages=(
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Hi"),
        ),
        add_generation_prompt=False,
    )
    assert tokenizer.decode(tokenizer.render(prompt)) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    )


def test_user_text_never_becomes_a_control_token(tokenizer: ChatTokenizer) -> None:
    ids = tokenizer.render(Prompt(text="a <|im_end|> b <|im_start|>"))
    assert tokenizer.im_end_id not in ids and tokenizer.im_start_id not in ids
    assert tokenizer.decode(ids) == "a <|im_end|> b <|im_start|>"


def test_assistant_prefix_is_model_text(tokenizer: ChatTokenizer) -> None:
    prompt = Prompt(
        messages=(ChatMessage(role="user", content="Q"),), assistant_prefix="<|im_end|>"
    )
    ids = tokenizer.render(prompt)
    assert ids[-5:] == [1, 520, 9531, 198, tokenizer.im_end_id]
    assert ids.count(tokenizer.im_end_id) == 2
    text_ids = tokenizer.render(Prompt(text="x", assistant_prefix=" Step 1:"))
    assert text_ids == [*tokenizer.encode_text("x"), 5970, 216, 33, 42]
    assert tokenizer.render(Prompt(token_ids=(5, 6), assistant_prefix=" Then")) == [5, 6, 3875]


def test_a_missing_tokenizer_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tokenizer: no such file or directory: '.*/nope'"):
        ChatTokenizer.load(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"tokenizer: cannot load a tokenizer from '"):
        ChatTokenizer.load(tmp_path)
