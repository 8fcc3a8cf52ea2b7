"""The gateway over real HTTP, driven by the official OpenAI SDK, in front of the fake upstream.

Tests of the upstream call path run on both transports (`each_transport`); the rest run once.
"""

import json

import httpx
import openai
import pytest

PROMPT = [{"role": "user", "content": "Answer briefly."}]
PICK_LONGEST = {"kind": "python", "function": "tests.scorers:longest"}


@pytest.mark.each_transport
def test_best_of_returns_the_top_scored_candidate_and_logs_every_candidate(gateway, fake):
    upstream, _ = fake
    upstream.config.texts = ["mid answer", "the longest answer of all", "short", "a medium one"]
    with gateway(reward=PICK_LONGEST) as gw:
        reply = gw.client.chat.completions.create(model="mock", messages=PROMPT, extra_body={"best_of": 4})
        tao = reply.model_extra["tao"]
        assert reply.choices[0].message.content == "the longest answer of all"
        assert tao["best_of"] == 4 and tao["winner"] == 1 and tao["ranking"] == [1]
        assert tao["scores"] == [10.0, 25.0, 5.0, 12.0]
        assert tao["model_version"] == "openai/mock" and tao["arm"] == "base" and not tao["degraded"]
        assert upstream.calls == 1 and upstream.bodies[0]["n"] == 4  # one upstream call for all N
        [row] = gw.wait_for_rows(1)
        assert row["id"] == tao["request_id"] and row["status"] == "ok" and row["best_of"] == 4
        assert row["winner_index"] == 1 and row["upstream_calls"] == 1 and row["latency_ms"] > 0
        assert json.loads(row["messages"]) == PROMPT and row["prompt"] == "Answer briefly."
        candidates = list(gw.db()["candidates"].rows_where("request_id = ?", [row["id"]], order_by="idx"))
        assert [c["text"] for c in candidates] == upstream.config.texts
        assert [c["score"] for c in candidates] == [10.0, 25.0, 5.0, 12.0]
        assert [c["won"] for c in candidates] == [0, 1, 0, 0]


@pytest.mark.each_transport
def test_n_returns_the_top_n_of_best_of(gateway, fake):
    upstream, _ = fake
    upstream.config.texts = ["aa", "aaaa", "a", "aaa"]
    with gateway(reward=PICK_LONGEST) as gw:
        reply = gw.client.completions.create(model="mock", prompt="x", n=2, extra_body={"best_of": 4})
        assert [c.text for c in reply.choices] == ["aaaa", "aaa"]
        assert [c.index for c in reply.choices] == [0, 1]
        assert reply.model_extra["tao"]["ranking"] == [1, 3]
        gw.wait_for_rows(1)
        ranks = [c["returned_rank"] for c in gw.db()["candidates"].rows_where(order_by="idx")]
        assert ranks == [None, 0, None, 1]


def test_best_of_comes_from_body_then_header_then_model_default(gateway, fake):
    upstream, _ = fake
    with gateway(best_of=3) as gw:
        assert gw.client.chat.completions.create(model="mock", messages=PROMPT).model_extra["tao"]["best_of"] == 3
        via_header = gw.client.chat.completions.create(model="mock", messages=PROMPT,
                                                       extra_headers={"X-TAO-Best-Of": "5"})
        assert via_header.model_extra["tao"]["best_of"] == 5
        both = gw.client.chat.completions.create(model="mock", messages=PROMPT, extra_body={"best_of": 2},
                                                 extra_headers={"X-TAO-Best-Of": "5"})
        assert both.model_extra["tao"]["best_of"] == 2
        # n above the default raises N to n rather than failing
        assert gw.client.chat.completions.create(model="mock", messages=PROMPT, n=6).model_extra["tao"]["best_of"] == 6
    assert [b.get("n", 1) for b in upstream.bodies] == [3, 5, 2, 6]


@pytest.mark.parametrize(
    ("kwargs", "status", "param", "code"),
    [
        ({"extra_body": {"best_of": 17}}, 400, "best_of", "best_of_too_large"),
        ({"n": 3, "extra_body": {"best_of": 2}}, 400, "best_of", "invalid_best_of"),
        ({"extra_headers": {"X-TAO-Best-Of": "many"}}, 400, "best_of", "invalid_best_of"),
        ({"extra_body": {"temperature": "hot"}}, 422, "temperature", "invalid_value"),
        ({"n": 0}, 422, "n", "invalid_value"),
    ],
)
def test_client_mistakes_get_openai_error_objects(gateway, kwargs, status, param, code):
    with gateway() as gw:
        with pytest.raises(openai.APIStatusError) as info:
            gw.client.chat.completions.create(model="mock", messages=PROMPT, **kwargs)
        assert info.value.status_code == status
        error = info.value.body
        assert error["param"] == param and error["code"] == code
        assert error["type"] == "invalid_request_error" and error["message"]


def test_unknown_model_is_404_and_bad_json_is_400(gateway):
    with gateway() as gw:
        with pytest.raises(openai.NotFoundError) as info:
            gw.client.chat.completions.create(model="nope", messages=PROMPT)
        assert info.value.body["code"] == "model_not_found" and info.value.body["param"] == "model"
        raw = httpx.post(gw.url + "/v1/chat/completions", content=b"{not json",
                         headers={"content-type": "application/json"})
        assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"
        missing = httpx.post(gw.url + "/v1/chat/completions", json={"model": "mock"})
        assert missing.status_code == 422 and missing.json()["error"]["param"] == "messages"
        assert httpx.get(gw.url + "/v1/nothing").json()["error"]["type"] == "not_found_error"


@pytest.mark.each_transport
def test_unknown_openai_fields_pass_through_to_the_upstream(gateway, fake):
    upstream, _ = fake
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    with gateway(best_of=1) as gw:
        gw.client.chat.completions.create(model="mock", messages=PROMPT, tools=tools, seed=7, user="u1",
                                          stop=["\n\n"], response_format={"type": "json_object"},
                                          extra_body={"some_future_field": 1})
        [row] = gw.wait_for_rows(1)
        assert row["user"] == "u1"  # logged; forwarded by the direct transport (LiteLLM drops it)
    body = upstream.bodies[0]
    assert body.get("user") == ("u1" if gw.transport == "direct" else None)
    assert body["tools"] == tools and body["seed"] == 7 and body["stop"] == ["\n\n"]
    assert body["response_format"] == {"type": "json_object"} and body["some_future_field"] == 1


def test_api_keys_are_enforced_when_configured(gateway):
    with gateway(auth={"api_keys": ["secret"]}) as gw:
        with pytest.raises(openai.AuthenticationError) as info:
            gw.client.chat.completions.create(model="mock", messages=PROMPT)
        assert info.value.body["code"] == "invalid_api_key"
        ok = openai.OpenAI(base_url=gw.url + "/v1", api_key="secret", max_retries=0)
        assert ok.chat.completions.create(model="mock", messages=PROMPT).choices
        assert [m.id for m in ok.models.list()] == ["mock"]
        assert httpx.get(gw.url + "/healthz").status_code == 200  # probes need no key


@pytest.mark.each_transport
def test_streaming_at_n1_passes_tokens_through_and_carries_tao(gateway, fake):
    upstream, _ = fake
    upstream.config.texts = ["one two three four"]
    with gateway(best_of=1) as gw:
        stream = gw.client.chat.completions.create(model="mock", messages=PROMPT, stream=True,
                                                   stream_options={"include_usage": True})
        chunks = list(stream)
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert pieces == ["one", " two", " three", " four"]  # token by token, as the upstream sent them
        finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finals[-1].choices[0].finish_reason == "stop"
        tao = finals[-1].model_extra["tao"]
        assert tao["best_of"] == 1
        assert chunks[-1].usage.completion_tokens == 4
        [row] = gw.wait_for_rows(1)
        assert row["stream"] == 1 and row["id"] == tao["request_id"]
        [candidate] = gw.db()["candidates"].rows
        assert candidate["text"] == "one two three four" and candidate["score"] is not None


def test_streaming_best_of_streams_the_winner_once_chosen(gateway, fake):
    upstream, _ = fake
    upstream.config.texts = ["b", "WINNER here", "c"]
    with gateway(reward={"kind": "python", "function": "tests.scorers:prefers_keyword"}) as gw:
        chunks = list(gw.client.completions.create(model="mock", prompt="p", stream=True,
                                                   extra_body={"best_of": 3}))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        assert text == "WINNER here"
        assert chunks[-1].model_extra["tao"]["winner"] == 1


@pytest.mark.each_transport
def test_upstream_failure_is_502_and_logged(gateway, fake):
    upstream, _ = fake
    upstream.config.fail_calls = 100
    with gateway() as gw:
        with pytest.raises(openai.APIStatusError) as info:
            gw.client.chat.completions.create(model="mock", messages=PROMPT)
        assert info.value.status_code == 502 and info.value.body["type"] == "upstream_error"
        [row] = gw.wait_for_rows(1)
        assert row["status"] == "error" and row["http_status"] == 502 and "fake upstream failure" in row["error"]
        assert 'tao_upstream_failures_total{model="mock"} 1.0' in httpx.get(gw.url + "/metrics").text


@pytest.mark.each_transport
def test_upstream_timeout_is_504(gateway, fake):
    upstream, _ = fake
    upstream.config.hang_s = 3
    with gateway(timeout_s=0.3) as gw:
        with pytest.raises(openai.APIStatusError) as info:
            gw.client.chat.completions.create(model="mock", messages=PROMPT)
        assert info.value.status_code == 504 and info.value.body["code"] == "upstream_timeout"


@pytest.mark.each_transport
def test_partial_upstream_failure_serves_the_best_of_the_rest(gateway, fake):
    upstream, _ = fake
    upstream.config.texts = ["a", "bbb", "cc", "dddd"]
    upstream.config.fail_every = 2  # every second call fails
    with gateway(n_strategy="fanout", reward=PICK_LONGEST) as gw:
        reply = gw.client.chat.completions.create(model="mock", messages=PROMPT, extra_body={"best_of": 4})
        assert len(reply.model_extra["tao"]["scores"]) == 2
        assert upstream.calls == 4
        [row] = gw.wait_for_rows(1)
        assert row["status"] == "ok" and "2 candidates failed upstream" in row["error"]


@pytest.mark.each_transport
def test_provider_without_n_support_is_fanned_out(gateway, fake):
    upstream, _ = fake
    upstream.config.supports_n = False
    upstream.config.texts = ["a", "b", "c", "d", "e", "f", "g", "h"]
    with gateway(reward=PICK_LONGEST) as gw:
        first = gw.client.chat.completions.create(model="mock", messages=PROMPT, extra_body={"best_of": 4})
        assert len(first.model_extra["tao"]["scores"]) == 4
        assert upstream.calls == 4  # 1 call that returned one choice, then 3 more
        gw.client.chat.completions.create(model="mock", messages=PROMPT, extra_body={"best_of": 4})
        assert upstream.calls == 8  # learned: 4 concurrent calls, none wasted on n
        rows = gw.wait_for_rows(2)
        assert [r["upstream_calls"] for r in rows] == [4, 4]


@pytest.mark.parametrize("function", ["tests.scorers:broken", "tests.scorers:wrong_length", "tests.scorers:slow"])
def test_failing_scorer_degrades_to_the_first_candidate_and_still_logs(gateway, fake, function):
    upstream, _ = fake
    upstream.config.texts = ["first", "second", "third"]
    with gateway(reward={"kind": "python", "function": function, "timeout_s": 0.5}) as gw:
        reply = gw.client.chat.completions.create(model="mock", messages=PROMPT, extra_body={"best_of": 3})
        tao = reply.model_extra["tao"]
        assert reply.choices[0].message.content == "first"
        assert tao["degraded"] and tao["degraded_reason"] and tao["scores"] == [None, None, None]
        [row] = gw.wait_for_rows(1)
        assert row["status"] == "degraded" and row["error"] == tao["degraded_reason"]
        assert gw.db()["candidates"].count == 3
        assert 'tao_degraded_replies_total{model="mock",reason="scorer"} 1.0' in httpx.get(gw.url + "/metrics").text


def test_metrics_show_requests_latency_candidates_and_rewards(gateway, fake):
    upstream, _ = fake
    upstream.config.texts = ["x", "xxxx"]
    with gateway(reward=PICK_LONGEST) as gw:
        for _ in range(3):
            gw.client.chat.completions.create(model="mock", messages=PROMPT, extra_body={"best_of": 2})
        gw.wait_for_rows(3)
        text = httpx.get(gw.url + "/metrics").text
    assert 'tao_requests_total{model="mock",status="200"} 3.0' in text
    assert 'tao_candidates_generated_total{model="mock"} 6.0' in text
    assert 'tao_upstream_calls_total{model="mock"} 3.0' in text
    assert 'tao_request_latency_seconds_count{model="mock"} 3.0' in text
    assert 'tao_scoring_latency_seconds_count{model="mock"} 3.0' in text
    assert 'tao_winner_reward_sum{model="mock"} 12.0' in text  # "xxxx" won every time
    assert 'tao_first_candidate_reward_sum{model="mock"} 3.0' in text
    assert "tao_store_write_errors_total 0.0" in text


def test_models_and_health(gateway):
    with gateway(best_of=2, max_best_of=8) as gw:
        [card] = gw.client.models.list().data
        assert card.id == "mock" and card.model_extra["best_of"] == 2 and card.model_extra["max_best_of"] == 8
        assert httpx.get(gw.url + "/healthz").json()["status"] == "ok"


def test_adaptive_n_draws_more_only_when_the_first_scores_disagree(gateway, fake):
    upstream, _ = fake
    adaptive = {"first": 2, "spread": 0.5}
    with gateway(reward=PICK_LONGEST, adaptive=adaptive) as gw:
        upstream.config.texts = ["same", "same"]
        agreed = gw.client.chat.completions.create(model="mock", messages=PROMPT, extra_body={"best_of": 6})
        assert len(agreed.model_extra["tao"]["scores"]) == 2 and upstream.calls == 1
        upstream.config.texts = ["a", "aaaaaaaa", "aaa", "aa", "aaaaaaaaaaaa", "b"]
        disputed = gw.client.chat.completions.create(model="mock", messages=PROMPT, extra_body={"best_of": 6})
        tao = disputed.model_extra["tao"]
        assert len(tao["scores"]) == 6 and upstream.calls == 3  # the first 2, then the other 4 in one call
        assert disputed.choices[0].message.content == "aaaaaaaaaaaa" and tao["best_of"] == 6
        rows = gw.wait_for_rows(2)
        assert [(r["best_of"], r["n_generated"], r["upstream_calls"]) for r in rows] == [(6, 2, 1), (6, 6, 2)]


def test_the_log_holds_the_params_sent_upstream(gateway, fake):
    upstream, _ = fake
    with gateway(temperature=0.3) as gw:
        gw.client.chat.completions.create(model="mock", messages=PROMPT, max_tokens=20, seed=7,
                                          extra_body={"best_of": 2, "some_future_field": 1})
        [row] = gw.wait_for_rows(1)
    [sent] = upstream.bodies
    params = json.loads(row["params"])
    assert params == {k: v for k, v in sent.items() if k not in ("model", "messages", "n")}
    assert params["temperature"] == 0.3 and params["top_p"] == 0.95 and "best_of" not in params


@pytest.mark.parametrize("best_of", [1, 3])
def test_streamed_completions_are_text_completion_chunks_to_the_usage_chunk(gateway, fake, best_of):
    upstream, _ = fake
    upstream.config.texts = ["one two three"]
    with gateway() as gw:
        chunks = list(gw.client.completions.create(model="mock", prompt="p", stream=True,
                                                   stream_options={"include_usage": True},
                                                   extra_body={"best_of": best_of}))
    assert chunks[-1].usage.completion_tokens > 0
    assert {c.object for c in chunks} == {"text_completion"}


def test_metrics_count_distill_runs_by_outcome(gateway):
    import time as _time

    from gateway.store import connection, record_distill_run

    with gateway() as gw:
        with connection(gw.db_path) as db:
            record_distill_run(db, "rejected", 3, "rejected by the eval gate", _time.time())
            record_distill_run(db, "too_little_data", 2, "too little data", _time.time())
            record_distill_run(db, "rejected", 3, "rejected by the eval gate", _time.time())
        metrics = httpx.get(gw.url + "/metrics").text
    assert 'tao_distill_runs{outcome="rejected"} 2.0' in metrics
    assert 'tao_distill_runs{outcome="too_little_data"} 1.0' in metrics


def test_readings_say_what_the_scorer_read_and_what_each_candidate_met(gateway, fake):
    """One request is enough to debug a reading: which instructions were read (kind and arguments),
    which sentences could not be verified, and per candidate which instruction it met; logged always,
    in the reply on request."""
    upstream, _ = fake
    upstream.config.texts = ["Tea is a calm drink, and I like it very much today.", "tea is good for you always."]
    prompt = [{"role": "user", "content": "Write about tea in all lowercase letters. Use no commas. Make each "
                                          "sentence 2 words longer than the one before."}]
    with gateway(best_of=2) as gw:
        plain = gw.client.chat.completions.create(model="mock", messages=prompt)
        assert plain.model_extra["tao"]["readings"] is None  # not asked for
        reply = gw.client.chat.completions.create(model="mock", messages=prompt, extra_body={"tao_readings": True})
        readings = reply.model_extra["tao"]["readings"]
        assert [r["kind"] for r in readings["instructions"]] == ["change_case:english_lowercase", "punctuation:no_comma"]
        assert readings["unverifiable"] == ["Make each sentence 2 words longer than the one before."]
        assert readings["met"] == [[False, False], [True, True]]
        assert reply.choices[0].message.content == upstream.config.texts[1]
        row = gw.wait_for_rows(2)[-1]
        assert json.loads(row["readings"]) == {"instructions": readings["instructions"],
                                               "unverifiable": readings["unverifiable"]}
        met = [json.loads(c["met"]) for c in gw.db()["candidates"].rows_where("request_id = ?", [row["id"]],
                                                                             order_by="idx")]
        assert met == readings["met"]
        assert 'tao_unverifiable_constraints_total{model="mock"} 2.0' in httpx.get(gw.url + "/metrics").text
