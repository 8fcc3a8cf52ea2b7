"""The hf, judge and vllm scorers against real local models and real HTTP servers."""

import asyncio
from pathlib import Path

import orjson
import pytest

from gateway.config import HFReward, JudgeReward, VLLMReward
from gateway.rewards import build_scorer
from gateway.rewards.base import ScorerOutputError
from tests.fake_upstream import FakeConfig, FakeUpstream
from tests.servers import running


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory) -> Path:
    """A tiny Llama sequence classifier (random weights) with the embedded model's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from gateway.embedded import embedded_model_dir

    path = tmp_path_factory.mktemp("rm")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_hf_scores_all_candidates_in_one_batch_like_one_at_a_time(tiny_reward_model: Path):
    scorer = build_scorer(HFReward(path=str(tiny_reward_model)))
    candidates = ["short", "a somewhat longer answer", "short"]
    batched = asyncio.run(scorer.score("Say something.", candidates))
    singles = [asyncio.run(scorer.score("Say something.", [c]))[0] for c in candidates]
    assert batched == pytest.approx(singles, abs=1e-4)  # padding does not change a score
    assert batched[0] == pytest.approx(batched[2]) and batched[0] != pytest.approx(batched[1])
    with pytest.raises(ValueError, match="not a model directory"):
        build_scorer(HFReward(path="/nonexistent/model"))


def test_hf_scorer_ranks_best_of_n_in_the_gateway(gateway, fake, tiny_reward_model: Path):
    upstream, _ = fake
    upstream.config.texts = ["alpha", "beta gamma", "delta epsilon zeta"]
    with gateway(reward={"kind": "hf", "path": str(tiny_reward_model)}) as gw:
        tao = gw.client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "x"}],
                                                extra_body={"best_of": 3}).model_extra["tao"]
    direct = asyncio.run(build_scorer(HFReward(path=str(tiny_reward_model))).score("x", upstream.config.texts))
    assert tao["scores"] == pytest.approx(direct, abs=1e-4)
    assert tao["winner"] == max(range(3), key=lambda i: direct[i])


def judge_scores(judge_texts: list[str], candidates: list[str], **options) -> tuple[list[float], FakeUpstream]:
    judge = FakeUpstream(FakeConfig(texts=judge_texts))
    with running(judge) as url:
        scorer = build_scorer(JudgeReward(model="openai/judge", api_base=url + "/v1",
                                           api_key="none", **options))
        try:
            return asyncio.run(scorer.score("Answer in lowercase.", candidates)), judge
        except ScorerOutputError as exc:
            raise ScorerOutputError(f"{exc} after {judge.calls} calls") from exc


def test_listwise_judge_scores_every_distinct_candidate_in_one_call():
    scores, judge = judge_scores(['{"scores": [0.2, 0.9]}'], ["Bad", "good", "Bad"])
    assert scores == [0.2, 0.9, 0.2] and judge.calls == 1
    prompt = judge.bodies[0]["messages"][-1]["content"]
    assert prompt.count("[1]") == 1 and "[2]" in prompt and "[3]" not in prompt  # the duplicate was sent once
    assert "Answer in lowercase." in prompt


def test_malformed_judge_output_is_retried_once_then_fails():
    scores, judge = judge_scores(["I think the second one.", 'Here: {"scores": [1, 0]}'], ["a", "b"])
    assert scores == [1.0, 0.0] and judge.calls == 2
    with pytest.raises(ScorerOutputError, match="after 2 calls"):
        judge_scores(["no json", '{"scores": [0.5]}'], ["a", "b"])  # wrong count, twice
    with pytest.raises(ScorerOutputError):
        judge_scores(['{"scores": [3, 0]}'], ["a", "b"])  # outside [0, 1], twice


def test_pointwise_judge_asks_once_per_distinct_candidate():
    scores, judge = judge_scores(['{"score": 0.75}'], ["a", "b", "a"], mode="pointwise")
    assert scores == [0.75, 0.75, 0.75] and judge.calls == 2


def test_a_broken_judge_degrades_the_reply(gateway, fake):
    upstream, _ = fake
    upstream.config.texts = ["one", "two"]
    judge = FakeUpstream(FakeConfig(texts=["not json at all"]))
    with running(judge) as url:
        reward = {"kind": "judge", "model": "openai/judge", "api_base": url + "/v1", "api_key": "none"}
        with gateway(reward=reward) as gw:
            reply = gw.client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "x"}],
                                                      extra_body={"best_of": 2})
    tao = reply.model_extra["tao"]
    assert tao["degraded"] and "judge" in tao["degraded_reason"] and reply.choices[0].message.content == "one"


class FakePooling:
    """A vLLM pooling server's /classify: probs = [sigmoid-ish of text length], returned out of order."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = (await receive())["body"]
        request = orjson.loads(body)
        self.bodies.append({"path": scope["path"], **request})
        data = [{"index": i, "label": "LABEL_0", "probs": [len(t) / 100], "num_classes": 1}
                for i, t in enumerate(request["input"])]
        payload = orjson.dumps({"object": "list", "data": list(reversed(data))})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


def test_vllm_scorer_scores_all_candidates_in_one_request():
    server = FakePooling()
    with running(server) as url:
        scorer = build_scorer(VLLMReward(api_base=url + "/v1", model="Skywork/Skywork-Reward-V2"))
        scores = asyncio.run(scorer.score("p", ["a", "abc", "ab"]))
    assert scores == pytest.approx([0.04, 0.06, 0.05])  # "p\n\n" + candidate, in candidate order
    [call] = server.bodies
    assert call["path"] == "/classify" and call["model"] == "Skywork/Skywork-Reward-V2" and len(call["input"]) == 3


def test_a_long_prompt_reaches_each_scorer_fitted_to_its_context(tiny_reward_model: Path, caplog):
    """A 2 MB prompt and a 200 kB candidate: the config's read window, then each scorer's own fit.
    The judge reads at most max_prompt_chars of the instruction and max_chars of the reply, with a
    notice; the hf model cuts the start, so the reply itself is still what it scores; vLLM is asked
    to truncate (it keeps the last tokens)."""
    prompt = "Rules first. " + "Background paragraph. " * 100_000 + "Answer in one word."
    candidate = "Yes. " * 40_000
    judge = FakeUpstream(FakeConfig(texts=['{"scores": [0.5]}']))
    with running(judge) as url, caplog.at_level("INFO"):
        scorer = build_scorer(JudgeReward(model="openai/judge", api_base=url + "/v1",
                                           api_key="none", max_chars=1000, max_prompt_chars=2000))
        assert asyncio.run(scorer.score(prompt, [candidate])) == [0.5]
    sent = judge.bodies[0]["messages"][-1]["content"]
    assert len(sent) < 4000 and "Rules first." in sent and "Answer in one word." in sent
    assert "read 2000 of the" in caplog.text and "read 1000 of the" in caplog.text

    hf = build_scorer(HFReward(path=str(tiny_reward_model), max_length=64))
    with caplog.at_level("INFO"):
        yes, no = asyncio.run(hf.score(prompt, ["Yes.", "No, never."]))
    assert yes != pytest.approx(no, abs=1e-6)  # cut at the end, both would read the same 64 prompt tokens
    assert "cut at their start" in caplog.text

    server = FakePooling()
    with running(server) as url:
        asyncio.run(build_scorer(VLLMReward(api_base=url + "/v1", model="rm")).score(prompt, ["a"]))
    [call] = server.bodies
    assert call["truncate_prompt_tokens"] == -1 and len(call["input"][0]) < 20_000
