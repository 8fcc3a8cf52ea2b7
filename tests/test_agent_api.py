"""The API agents use, through the real OpenAI SDK and the fake upstream answering like a tool-using model:
tool calls and structured outputs checked against the request's own contract at best-of-N, logprobs
returned, embeddings passed through."""

import asyncio
import json

import httpx
import openai
import pytest
from openai.types.responses import Response

PROMPT = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                                                "required": ["city"], "additionalProperties": False}}}


def call(arguments: str, name: str = "get_weather", call_id: str = "call_1") -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]}


BROKEN = call('{"city": "Paris", "unit": ')  # cut off: not JSON
WRONG_TYPE = call('{"city": 75}')
VALID = call('{"city": "Paris", "unit": "c"}')
PERSON = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": {
    "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"], "additionalProperties": False}}}


def candidates_of(gw, request_id: str) -> list[dict]:
    gw.wait_for_rows(1)
    return list(gw.db().query("SELECT * FROM candidates WHERE request_id = ? ORDER BY idx", [request_id]))


@pytest.mark.each_transport
def test_best_of_n_returns_a_tool_call_that_holds_the_schema_and_logs_why_the_others_broke(gateway, fake):
    upstream, _ = fake
    upstream.config.messages = [BROKEN, WRONG_TYPE, BROKEN, VALID]
    with gateway() as gw:
        reply = gw.client.chat.completions.create(model="mock", messages=PROMPT, tools=[WEATHER],
                                                  extra_body={"best_of": 4})
        tao = reply.model_extra["tao"]
        assert tao["winner"] == 3 and not tao["degraded"]
        assert reply.choices[0].finish_reason == "tool_calls"
        [tool_call] = reply.choices[0].message.tool_calls
        assert json.loads(tool_call.function.arguments) == {"city": "Paris", "unit": "c"}
        assert "not valid JSON" in tao["violations"][0] and "75 is not of type 'string'" in tao["violations"][1]
        assert tao["violations"][3] is None
        rows = candidates_of(gw, tao["request_id"])
        assert [r["won"] for r in rows] == [0, 0, 0, 1]
        assert rows[0]["violation"] == tao["violations"][0] and rows[3]["violation"] is None
        assert json.loads(rows[3]["message"])["tool_calls"][0]["function"]["arguments"] == VALID["tool_calls"][0]["function"]["arguments"]
        request = gw.db()["requests"].get(tao["request_id"])
        assert json.loads(request["params"])["tools"] == [WEATHER] and request["status"] == "ok"
        assert 'tao_contract_violations_total{model="mock"} 3.0' in httpx.get(gw.url + "/metrics").text


def test_when_no_candidate_holds_the_reply_is_degraded_with_the_reason_and_kept_out_of_training(gateway, fake):
    upstream, _ = fake
    upstream.config.messages = [BROKEN, WRONG_TYPE]
    with gateway() as gw:
        reply = gw.client.chat.completions.create(model="mock", messages=PROMPT, tools=[WEATHER],
                                                  extra_body={"best_of": 2})
        tao = reply.model_extra["tao"]
        assert tao["degraded"] and "no candidate held the request's contract" in tao["degraded_reason"]
        assert gw.wait_for_rows(1)[0]["status"] == "degraded"


@pytest.mark.parametrize("tool_choice, answers, winner", [
    ("none", [VALID, {"role": "assistant", "content": "It is sunny."}], 1),
    ("required", [{"role": "assistant", "content": "It is sunny."}, VALID], 1),
    ({"type": "function", "function": {"name": "get_weather"}},
     [call('{"city": "Paris"}', name="get_time"), VALID], 1),
])
def test_tool_choice_is_held(gateway, fake, tool_choice, answers, winner):
    upstream, _ = fake
    upstream.config.messages = answers
    time_tool = {"type": "function", "function": {"name": "get_time"}}
    with gateway() as gw:
        reply = gw.client.chat.completions.create(model="mock", messages=PROMPT, tools=[WEATHER, time_tool],
                                                  tool_choice=tool_choice, extra_body={"best_of": 2})
        tao = reply.model_extra["tao"]
        assert tao["winner"] == winner and not tao["degraded"], tao
        assert tao["violations"][1 - winner]


def test_streaming_at_best_of_n_sends_the_winning_tool_call_in_chunks_the_sdk_assembles(gateway, fake):
    upstream, _ = fake
    upstream.config.messages = [BROKEN, VALID]
    with gateway() as gw:
        with gw.client.chat.completions.stream(model="mock", messages=PROMPT, tools=[WEATHER],
                                               extra_body={"best_of": 2}) as stream:
            final = stream.get_final_completion()
        [tool_call] = final.choices[0].message.tool_calls
        assert tool_call.function.name == "get_weather"
        assert json.loads(tool_call.function.arguments) == {"city": "Paris", "unit": "c"}
        assert final.choices[0].finish_reason == "tool_calls"


def test_a_streamed_single_tool_call_is_assembled_checked_and_logged(gateway, fake):
    upstream, _ = fake
    upstream.config.messages = [WRONG_TYPE]
    with gateway() as gw:
        with gw.client.chat.completions.stream(model="mock", messages=PROMPT, tools=[WEATHER],
                                               extra_body={"best_of": 1}) as stream:
            final = stream.get_final_completion()
        assert final.choices[0].message.tool_calls[0].function.arguments == '{"city": 75}'
        [row] = gw.wait_for_rows(1)
        [candidate] = candidates_of(gw, row["id"])
        assert json.loads(candidate["message"])["tool_calls"][0]["function"] == {"name": "get_weather",
                                                                                 "arguments": '{"city": 75}'}
        assert "75 is not of type 'string'" in candidate["violation"] and row["status"] == "degraded"


@pytest.mark.parametrize("response_format, texts, winner", [
    (PERSON, ['{"name": "Ada", "age": "thirty-six"}', '{"name": "Ada", "age": 36}'], 1),
    ({"type": "json_object"}, ["Here it is: {name: Ada}", '{"name": "Ada"}'], 1),
])
def test_structured_outputs_are_checked_whatever_the_prompt_says(gateway, fake, response_format, texts, winner):
    upstream, _ = fake
    upstream.config.texts = texts
    with gateway(reward={"kind": "python", "function": "tests.scorers:longest"}) as gw:  # it prefers the broken one
        reply = gw.client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "Who is Ada?"}],
                                                  response_format=response_format, extra_body={"best_of": 2})
        tao = reply.model_extra["tao"]
        assert tao["winner"] == winner and reply.choices[0].message.content == texts[winner]
        assert tao["violations"][1 - winner] and tao["violations"][winner] is None


def bad_request(gw, **fields) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client.chat.completions.create(model="mock", messages=PROMPT, **fields)
    return caught.value


def test_a_contract_that_cannot_be_checked_gets_400_naming_the_field(gateway):
    broken_schema = {"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}
    with gateway() as gw:
        error = bad_request(gw, tools=[broken_schema])
        assert error.body["param"] == "tools[0].function.parameters" and "not a valid JSON Schema" in error.message
        error = bad_request(gw, response_format={"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object", "required": "name"}}})
        assert error.body["param"] == "response_format.json_schema.schema"
        error = bad_request(gw, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}})
        assert error.body["param"] == "tool_choice" and "'nope'" in error.message
        assert gw.client.chat.completions.create(model="mock", messages=PROMPT).choices[0].message.content
        assert [r["http_status"] for r in gw.wait_for_rows(4)] == [400, 400, 400, 200]


def test_a_runaway_candidate_breaks_the_contract_unread(gateway, fake):
    upstream, _ = fake
    many_calls = {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"c{i}", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "x"}'}}
        for i in range(10_000)]}
    huge_arguments = call(json.dumps({"city": "x" * 1_000_000}))
    upstream.config.messages = [many_calls, huge_arguments, VALID]
    with gateway() as gw:
        reply = gw.client.chat.completions.create(model="mock", messages=PROMPT, tools=[WEATHER],
                                                  extra_body={"best_of": 3})
        tao = reply.model_extra["tao"]
        assert tao["winner"] == 2
        assert "10000 tool calls: more than the 128 checked" in tao["violations"][0]
        assert "bytes of tool call arguments: more than" in tao["violations"][1]


@pytest.mark.each_transport
def test_logprobs_pass_through_at_n1_and_each_returned_choice_keeps_its_own(gateway):
    with gateway() as gw:
        single = gw.client.chat.completions.create(model="mock", messages=PROMPT, logprobs=True, top_logprobs=1,
                                                   extra_body={"best_of": 1})
        content = single.choices[0].logprobs.content
        assert [t.token for t in content] == "Hello from the fake upstream.".split(" ")
        assert content[0].top_logprobs[0].logprob == content[0].logprob
        several = gw.client.chat.completions.create(model="mock", messages=PROMPT, logprobs=True, n=2,
                                                    extra_body={"best_of": 4})
        ranking = several.model_extra["tao"]["ranking"]
        for choice, generated in zip(several.choices, ranking):  # the fake's values tell its choices apart
            assert choice.logprobs.content[0].logprob == pytest.approx(-0.01 * (generated + 1))
        completion = gw.client.completions.create(model="mock", prompt="Say hi", logprobs=1, extra_body={"best_of": 2})
        assert completion.choices[0].logprobs.tokens == "Hello from the fake upstream.".split(" ")
        streamed = [c.choices[0].logprobs for c in gw.client.chat.completions.create(
            model="mock", messages=PROMPT, logprobs=True, stream=True, extra_body={"best_of": 1})
            if c.choices and c.choices[0].logprobs]
        assert [lp.content[0].token for lp in streamed] == ["Hello", " from", " the", " fake", " upstream."]


@pytest.mark.each_transport
def test_embeddings_pass_through_to_the_upstream(gateway, fake):
    upstream, _ = fake
    with gateway() as gw:
        answer = gw.client.embeddings.create(model="mock", input=["a cat", "a dog"], encoding_format="float")
        assert [len(d.embedding) for d in answer.data] == [4, 4] and answer.model == "mock"
        assert upstream.bodies[-1]["input"] == ["a cat", "a dog"] and upstream.bodies[-1]["model"] == "mock"
        upstream.config.embedding_dims = None  # a server without embeddings
        with pytest.raises(openai.NotFoundError) as caught:
            gw.client.embeddings.create(model="mock", input="a cat")
        assert caught.value.body["code"] == "embeddings_not_supported"
        with pytest.raises(openai.NotFoundError):
            gw.client.embeddings.create(model="nope", input="a cat")
        text = httpx.get(gw.url + "/metrics").text
        assert 'tao_embedding_requests_total{model="mock",status="200"} 1.0' in text
        assert 'tao_embedding_requests_total{model="mock",status="404"} 1.0' in text


# ---- the Responses API ---------------------------------------------------------------------------
RESPONSES_WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
                     "parameters": WEATHER["function"]["parameters"], "strict": True}


def test_responses_text_with_instructions_best_of_and_the_log(gateway, fake):
    upstream, _ = fake
    with gateway() as gw:
        response = gw.client.responses.create(model="mock", input="Say hello.", instructions="Be brief.",
                                              max_output_tokens=50, extra_body={"best_of": 3})
        Response.model_validate(response.model_dump())  # the SDK's own type, strictly
        assert response.output_text == "Hello from the fake upstream." and response.status == "completed"
        assert response.model_extra["tao"]["best_of"] == 3 and response.usage.output_tokens > 0
        sent = upstream.bodies[-1]
        assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
        assert sent["max_tokens"] == 50 and sent["n"] == 3
        [row] = gw.wait_for_rows(1)
        assert row["id"] == response.id and row["endpoint"] == "responses" and row["best_of"] == 3


def test_responses_function_tools_are_checked_and_their_calls_continue_from_previous_response_id(gateway, fake):
    upstream, _ = fake
    upstream.config.messages = [BROKEN, VALID]
    with gateway() as gw:
        first = gw.client.responses.create(model="mock", input="What is the weather in Paris?",
                                           tools=[RESPONSES_WEATHER], extra_body={"best_of": 2})
        [item] = first.output
        assert item.type == "function_call" and json.loads(item.arguments) == {"city": "Paris", "unit": "c"}
        assert first.model_extra["tao"]["winner"] == 1
        assert upstream.bodies[-1]["tools"] == [WEATHER | {"function": {**WEATHER["function"], "strict": True}}]
        second = gw.client.responses.create(model="mock", previous_response_id=first.id, tools=[RESPONSES_WEATHER],
                                            input=[{"type": "function_call_output", "call_id": item.call_id,
                                                    "output": "18 C and sunny"}])
        assert second.output_text == "Done: the tool answered."
        history = upstream.bodies[-1]["messages"]
        assert [m["role"] for m in history] == ["user", "assistant", "tool"]
        assert history[1]["tool_calls"][0]["function"]["arguments"] == VALID["tool_calls"][0]["function"]["arguments"]
        assert history[2] == {"role": "tool", "content": "18 C and sunny", "tool_call_id": item.call_id}
        gw.wait_for_rows(2)
        third = gw.client.responses.create(model="mock", previous_response_id=first.id, input="And in Rome?")
        assert [m["role"] for m in upstream.bodies[-1]["messages"]] == ["user", "assistant", "user"]  # from the log now
        assert third.previous_response_id == first.id


def test_responses_structured_output_is_checked(gateway, fake):
    upstream, _ = fake
    upstream.config.texts = ['{"name": "Ada", "age": "thirty-six"}', '{"name": "Ada", "age": 36}']
    text_format = {"format": {"type": "json_schema", "name": "person", "strict": True,
                              "schema": PERSON["json_schema"]["schema"]}}
    with gateway(reward={"kind": "python", "function": "tests.scorers:longest"}) as gw:
        response = gw.client.responses.create(model="mock", input="Who is Ada?", text=text_format,
                                              extra_body={"best_of": 2})
        assert json.loads(response.output_text) == {"name": "Ada", "age": 36}
        assert upstream.bodies[-1]["response_format"]["json_schema"]["schema"] == PERSON["json_schema"]["schema"]


def test_responses_stream_in_the_responses_event_shape(gateway, fake):
    upstream, _ = fake
    with gateway() as gw:
        with gw.client.responses.stream(model="mock", input="Say hello.", extra_body={"best_of": 2}) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_response()
        assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
        assert "response.output_text.delta" in kinds and final.output_text == "Hello from the fake upstream."
        upstream.config.messages = [VALID]
        with gw.client.responses.stream(model="mock", input="Weather in Paris?", tools=[RESPONSES_WEATHER]) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_response()
        assert "response.function_call_arguments.delta" in kinds
        assert json.loads(final.output[0].arguments) == {"city": "Paris", "unit": "c"}


def test_responses_bad_input_gets_400_naming_the_field(gateway):
    with gateway(auth={"api_keys": ["key-a", "key-b"]}) as gw:
        a = openai.OpenAI(base_url=gw.url + "/v1", api_key="key-a", max_retries=0)
        b = openai.OpenAI(base_url=gw.url + "/v1", api_key="key-b", max_retries=0)
        mine = a.responses.create(model="mock", input="Say hello.")
        for client, previous in ((a, "tao-does-not-exist"), (b, mine.id)):
            with pytest.raises(openai.BadRequestError) as caught:
                client.responses.create(model="mock", input="Go on.", previous_response_id=previous)
            assert caught.value.body["param"] == "previous_response_id"
        with pytest.raises(openai.BadRequestError) as caught:
            a.responses.create(model="mock", input="Hi", tools=[{"type": "function", "name": "f",
                                                                 "parameters": {"type": "objekt"}}])
        assert caught.value.body["param"] == "tools[0].function.parameters"
        with pytest.raises(openai.BadRequestError) as caught:
            a.responses.create(model="mock", input="Hi", tools=[{"type": "web_search"}])
        assert caught.value.body["param"] == "tools[0].type"
        assert a.responses.create(model="mock", input="Go on.", previous_response_id=mine.id).output_text


def test_an_openai_agents_sdk_agent_runs_its_tool_through_the_gateway(gateway, fake):
    import agents  # openai-agents, in the dev extra: a missing install fails the test, it is not skipped
    upstream, _ = fake
    upstream.config.messages = [BROKEN, VALID]
    called = []

    @agents.function_tool
    def get_weather(city: str, unit: str = "c") -> str:
        """The weather in a city."""
        called.append(city)
        return f"18 {unit.upper()} and sunny in {city}"

    agents.set_tracing_disabled(True)
    with gateway(best_of=2) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        agent = agents.Agent(name="weather", instructions="Answer with the tool.", tools=[get_weather],
                             model=agents.OpenAIResponsesModel(model="mock", openai_client=client))
        result = asyncio.run(agents.Runner.run(agent, "What is the weather in Paris?"))
        assert called == ["Paris"] and result.final_output == "Done: the tool answered."
        rows = gw.wait_for_rows(2)
        assert [r["endpoint"] for r in rows] == ["responses", "responses"]
        assert upstream.bodies[-1]["messages"][-1]["content"] == "18 C and sunny in Paris"


# ---- distill: tool calls only with their tools, never a broken answer ------------------------------
TOOLS_TEMPLATE = ("{% if tools %}<tools>{% for t in tools %}{{ t['function']['name'] }} {% endfor %}</tools>{% endif %}"
                  "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] or '' }}"
                  "{% for c in m.get('tool_calls') or [] %}<call>{{ c['function']['name'] }} "
                  "{{ c['function']['arguments'] }}</call>{% endfor %}</{{ m['role'] }}>{% endfor %}")


def test_distill_learns_tool_calls_only_with_their_tools_and_never_a_broken_one(gateway, fake):
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template

    from distill.dataset import dpo_rows, load_prompts, renders_tools, to_dataset
    from distill.job import learnable_tool_prompts
    from gateway.config import DistillConfig, Settings
    from gateway.embedded import embedded_model_dir

    upstream, _ = fake
    upstream.config.messages = [BROKEN, VALID, WRONG_TYPE, call('{"city": "Paris"}', call_id="call_2")]
    with gateway() as gw:
        gw.client.chat.completions.create(model="mock", messages=PROMPT, tools=[WEATHER], extra_body={"best_of": 4})
        upstream.config.messages = None
        gw.client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "Hi"}],
                                          extra_body={"best_of": 2})
        gw.wait_for_rows(2)
        db = gw.db()
        assert [p.messages for p in load_prompts(db, "mock")] == [[{"role": "user", "content": "Hi"}]]
        [tool_prompt] = [p for p in load_prompts(db, "mock", with_tools=True) if p.uses_tools]
    assert tool_prompt.tools == [WEATHER] and [c.index for c in tool_prompt.candidates] == [1, 3]  # the broken left out
    tool_prompt.candidates[0].score, tool_prompt.candidates[1].score = 1.0, 0.0
    [row] = dpo_rows([tool_prompt], DistillConfig(dpo={"min_gap": 0.5}))
    assert row["tools"] == [WEATHER] and row["chosen"][0]["tool_calls"] == VALID["tool_calls"]
    assert to_dataset([row])[0]["tools"][0]["function"]["name"] == "get_weather"

    smollm2 = AutoTokenizer.from_pretrained(embedded_model_dir())
    assert not renders_tools(smollm2)  # so the embedded model's distill leaves them out, and says how many
    kept, skipped = learnable_tool_prompts(Settings(), [tool_prompt])
    assert kept == [] and skipped == 1
    smollm2.chat_template = TOOLS_TEMPLATE  # a template that renders tools: the row trains with them
    assert renders_tools(smollm2)
    rendered = apply_chat_template({"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]},
                                   smollm2, tools=row["tools"])
    assert "<tools>get_weather" in rendered["prompt"] and '<call>get_weather {"city": "Paris", "unit": "c"}' in rendered["chosen"]


def test_adaptive_n_spends_the_rest_of_the_budget_when_no_first_candidate_holds(gateway, fake):
    upstream, _ = fake
    upstream.config.messages = [BROKEN, WRONG_TYPE, VALID, VALID]
    with gateway(adaptive={"first": 2, "spread": 0.5}) as gw:  # equal scores: without the contract, 2 would do
        reply = gw.client.chat.completions.create(model="mock", messages=PROMPT, tools=[WEATHER],
                                                  extra_body={"best_of": 4})
        tao = reply.model_extra["tao"]
        assert len(tao["scores"]) == 4 and tao["winner"] == 2 and not tao["degraded"]
        upstream.config.messages = [VALID, BROKEN]
        reply = gw.client.chat.completions.create(model="mock", messages=PROMPT, tools=[WEATHER],
                                                  extra_body={"best_of": 4})
        assert len(reply.model_extra["tao"]["scores"]) == 2  # one held, and the scores agree: no second batch
