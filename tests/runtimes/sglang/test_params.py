"""Local validation of /generate bodies and the mapping of the core's sampling params."""

from __future__ import annotations

import pytest
from orchestrator.runtimes.sglang.params import sampling_to_sglang, validate_generate_body

from orchestrator import Grammar, RequestRejected, SamplingParams


def test_explicit_form_states_every_sampling_knob() -> None:
    assert sampling_to_sglang(SamplingParams()) == {
        "max_new_tokens": 128,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": -1,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
    }


def test_server_form_sends_only_what_differs_from_sglangs_defaults() -> None:
    assert sampling_to_sglang(SamplingParams(), explicit=False) == {"max_new_tokens": 128}
    assert sampling_to_sglang(
        SamplingParams(max_new_tokens=16, temperature=0.8, n=4, seed=7), explicit=False
    ) == {"max_new_tokens": 16, "temperature": 0.8, "n": 4, "sampling_seed": 7}


def test_every_core_field_maps_to_its_sglang_key() -> None:
    params = SamplingParams(
        max_new_tokens=8,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        seed=3,
        stop=["\n\n", "."],
        stop_token_ids=[30],
        ignore_eos=True,
        include_stop=True,
        grammar=Grammar(
            json_schema={
                "type": "object",
                "properties": {"answer": {"type": "integer"}},
                "required": ["answer"],
            }
        ),
    )
    assert sampling_to_sglang(params, explicit=False) == {
        "max_new_tokens": 8,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "sampling_seed": 3,
        "stop": ["\n\n", "."],
        "stop_token_ids": [30],
        "ignore_eos": True,
        "no_stop_trim": True,
        # The exact string the recorded request (generate_json_schema) sent.
        "json_schema": '{"type": "object", "properties": {"answer": {"type": "integer"}}, '
        '"required": ["answer"]}',
    }
    assert sampling_to_sglang(
        SamplingParams(grammar=Grammar(regex="[0-9]+")), explicit=False, seed=11
    ) == {"max_new_tokens": 128, "regex": "[0-9]+", "sampling_seed": 11}
    assert (
        sampling_to_sglang(SamplingParams(grammar=Grammar(ebnf='root ::= "a"')), explicit=False)[
            "ebnf"
        ]
        == 'root ::= "a"'
    )


@pytest.mark.parametrize(
    ("sampling", "message"),
    [
        (
            {"max_new_tokens": 4, "no_such_param": 1},
            "no_such_param: Extra inputs are not permitted",
        ),
        ({"max_new_tokens": -3}, "max_new_tokens: Input should be greater than or equal to 0"),
        ({"temperature": -1}, "temperature: Input should be greater than or equal to 0"),
        ({"temperature": float("inf")}, "temperature: Input should be a finite number"),
        ({"top_p": 0}, "top_p: Input should be greater than 0"),
        ({"top_k": 0}, "top_k must be -1 \\(disable\\) or at least 1, got 0"),
        ({"max_new_tokens": "5"}, "max_new_tokens: Input should be a valid integer"),
        ({"ignore_eos": 1}, "ignore_eos: Input should be a valid boolean"),
        (
            {"regex": "a", "ebnf": "b"},
            "only one of json_schema, regex, ebnf can be set \\(got \\['regex', 'ebnf'\\]\\)",
        ),
        ({"json_schema": "{not json"}, "json_schema is not valid JSON: Expecting property"),
        (
            {"max_new_tokens": 2, "min_new_tokens": 3},
            "min_new_tokens \\(3\\) exceeds max_new_tokens \\(2\\)",
        ),
    ],
)
def test_bad_sampling_params_are_refused_naming_the_field(
    sampling: dict[str, object], message: str
) -> None:
    body = {"input_ids": [1, 2], "sampling_params": sampling}
    with pytest.raises(
        RequestRejected, match="runtime 'sglang@x': invalid sampling_params: .*" + message
    ) as info:
        validate_generate_body(body, runtime="sglang@x")
    assert (info.value.status, info.value.request) == (None, body)


def test_batch_sampling_params_are_each_checked() -> None:
    body = {"input_ids": [[1], [2]], "sampling_params": [{"top_k": 5}, {"top_k": -2}]}
    with pytest.raises(
        RequestRejected, match="top_k must be -1 \\(disable\\) or at least 1, got -2"
    ):
        validate_generate_body(body, runtime="r")


def test_unknown_top_level_keys_and_prompt_count_are_checked() -> None:
    with pytest.raises(RequestRejected, match=r"unknown /generate key\(s\) \['return_logprobs'\]"):
        validate_generate_body({"text": "x", "return_logprobs": True}, runtime="r")
    with pytest.raises(RequestRejected, match=r"exactly one of text, input_ids \(got none\)"):
        validate_generate_body({"sampling_params": {}}, runtime="r")


def test_valid_bodies_pass() -> None:
    validate_generate_body(
        {"input_ids": [1], "sampling_params": {"max_new_tokens": 0}}, runtime="r"
    )
    validate_generate_body(
        {
            "text": "x",
            "rid": "a",
            "stream": True,
            "return_logprob": True,
            "top_logprobs_num": 5,
            "logprob_start_len": 0,
            "session_params": {"id": "s"},
            "sampling_params": {
                "temperature": 0,
                "stop": ".",
                "json_schema": "{}",
                "top_k": -1,
                "sampling_seed": 7,
                "n": 4,
            },
        },
        runtime="r",
    )
