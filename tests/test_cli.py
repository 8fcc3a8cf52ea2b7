"""The `tao` command line: flags generated from the config models, validated overrides, `logs export`
against a real log, `distill --watch` as a real process. Nothing here trains a model: the distill
runs point at an empty log and stop at "too little data" (exit 2)."""

import argparse
import datetime as dt
import json
import os
import signal
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from distill.reward_model import RewardTrainOptions
from gateway.app import create_app
from gateway.config import load_settings
from tao.cli import build_parser, main
from tao.commands.common import parse_duration, parse_since
from tao.demo.config import DemoConfig
from tests.fake_upstream import FakeConfig, FakeUpstream
from tao.flags import field_values, show_default
from tao.server_thread import serve_in_thread

TOO_LITTLE_DATA = 2


def write_config(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "tao.yaml"
    config = {"store": {"path": str(tmp_path / "tao.db")},
              "distill": {"checkpoints_dir": str(tmp_path / "config-checkpoints")}}
    path.write_text(yaml.safe_dump({**config, **sections}))
    return path


def tao(*argv: str) -> int | str:
    """Run `tao` in this process; its exit code, or the message it exited with."""
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    return exited.value.code


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("6h", 21600), ("7d", 604800),
                                               ("1.5h", 5400), ("45", 45)])
def test_parse_duration(text: str, seconds: float):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "6x", "soon", "0", "-5m", "nan", "inf"])
def test_parse_duration_refuses_what_is_not_a_positive_time(text: str):
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        parse_duration(text)


def test_parse_since():
    assert parse_since("all") == 0.0
    assert parse_since("1700000000") == 1700000000.0
    assert abs(parse_since("24h") - (time.time() - 86400)) < 60
    assert parse_since("2026-11-30") == dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc).timestamp()
    assert parse_since("2026-11-30T12:00:00+02:00") == dt.datetime(2026, 11, 30, 10, tzinfo=dt.timezone.utc).timestamp()
    for bad in ("yesterday", "", "24x"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a time"):
            parse_since(bad)


def test_checkpoints_dir_flag_is_used_as_a_path(tmp_path: Path):
    config = write_config(tmp_path)
    assert tao("distill", "--config", str(config), "--checkpoints-dir", str(tmp_path / "flag-checkpoints")) \
        == TOO_LITTLE_DATA
    assert (tmp_path / "flag-checkpoints").is_dir()
    assert not (tmp_path / "config-checkpoints").exists()  # the flag overrides the config


def test_max_steps_below_one_is_a_usage_error_naming_the_flag(tmp_path: Path, capsys):
    config = write_config(tmp_path)
    assert tao("distill", "--config", str(config), "--max-steps", "0") == 2
    assert "argument --max-steps: '0': Input should be greater than or equal to 1" in capsys.readouterr().err
    assert not (tmp_path / "tao.db").exists()  # refused before the run began


def test_a_bad_config_value_ends_with_the_reason_not_a_traceback(tmp_path: Path):
    config = write_config(tmp_path, distill={"max_steps": 0})
    message = tao("distill", "--config", str(config))
    assert message == "tao: invalid configuration: distill.max_steps: Input should be greater than or equal to 1"
    assert tao("distill", "--config", str(tmp_path / "missing.yaml")) == (
        f"tao: config file not found: {tmp_path / 'missing.yaml'}")


def test_demo_flags_build_the_demo_config_and_show_its_defaults(capsys):
    args = build_parser().parse_args(["demo", "--best-of", "4", "--out", "elsewhere", "--method", "sft"])
    assert DemoConfig.model_validate(field_values(args, "demo")) == DemoConfig(
        best_of=4, out=Path("elsewhere"), method="sft")
    assert tao("demo", "--help") == 0
    help_text = " ".join(capsys.readouterr().out.split())
    for name, field in DemoConfig.model_fields.items():
        assert f"--{name.replace('_', '-')} " in help_text
        if field.default not in (None, False):  # a plain --switch is off unless given
            assert f"(default: {show_default(field.default)})" in help_text
    assert "(default: 80)" in help_text and "(default: ./tao-demo)" in help_text  # as the README says


def test_reward_train_flags_cover_the_options_and_do_not_touch_the_distill_section():
    args = build_parser().parse_args(["reward", "train", "--out", "rm", "--max-steps", "5", "--from-logs"])
    values = field_values(args, "reward")
    assert values["out_dir"] == Path("rm") and values["max_steps"] == 5 and values["from_logs"] is True
    options = RewardTrainOptions(base_model=Path("base"), **values)
    assert options.min_gap == RewardTrainOptions(base_model=Path("base")).min_gap  # the dataclass's default
    assert field_values(args, "distill") == {}  # its --max-steps is the reward trainer's, not distill.max_steps


@pytest.fixture
def logged(tmp_path: Path) -> Path:
    """A config whose log holds six best-of-2 requests to `mock` (a gateway in front of the fake
    upstream): each prompt asks for lowercase and gets one lowercase and one uppercase answer."""
    upstream = FakeUpstream(FakeConfig(texts=["the sea is calm and blue.", "THE SEA IS CALM AND BLUE."]))
    with serve_in_thread(upstream) as upstream_url:
        config = write_config(tmp_path, distill={"model": "mock"}, models=[{
            "name": "mock", "backend": "litellm", "model": "openai/mock", "api_base": upstream_url + "/v1",
            "api_key": "none", "best_of": 2, "num_retries": 0}])
        with serve_in_thread(create_app(load_settings(config))) as url:
            for i in range(6):
                reply = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={"model": "mock", "messages": [
                    {"role": "user", "content": f"Describe sea number {i}. Write in all lowercase letters."}]})
                assert reply.status_code == 200, reply.text
    return config  # the gateway has stopped: its log is flushed


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_logs_export_writes_each_format_from_a_real_log(logged: Path, tmp_path: Path):
    assert tao("logs", "export", "--config", str(logged), "--out", str(tmp_path / "raw.jsonl")) == 0
    raw = read_jsonl(tmp_path / "raw.jsonl")
    assert len(raw) == 6 and all(len(row["candidates"]) == 2 for row in raw)

    assert tao("logs", "export", "--config", str(logged), "--format", "dpo", "--out", str(tmp_path / "dpo.jsonl")) == 0
    dpo = read_jsonl(tmp_path / "dpo.jsonl")
    assert len(dpo) == 6
    assert {row["chosen"][0]["content"] for row in dpo} == {"the sea is calm and blue."}  # the scorer's choice
    assert {row["rejected"][0]["content"] for row in dpo} == {"THE SEA IS CALM AND BLUE."}

    counts = []
    for split in ("train", "heldout"):
        out = tmp_path / f"{split}.jsonl"
        assert tao("logs", "export", "--config", str(logged), "--split", split, "--out", str(out)) == 0
        counts.append(len(read_jsonl(out)))
    assert sum(counts) == 6

    assert tao("logs", "export", "--config", str(logged), "--model", "other", "--out", str(tmp_path / "o.jsonl")) == 0
    assert read_jsonl(tmp_path / "o.jsonl") == []


def test_logs_export_without_a_log_says_so(tmp_path: Path):
    assert tao("logs", "export", "--config", str(write_config(tmp_path)), "--out", str(tmp_path / "x.jsonl")) == (
        f"tao: no log at {tmp_path / 'tao.db'} (store.path)")
    assert not (tmp_path / "tao.db").exists()


def wait_for_output(proc: subprocess.Popen, text: str, timeout_s: float = 120) -> str:
    """The process's output up to and including the first line containing `text`; fails loudly
    (with the output so far) if the process ends or the time runs out first."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no {text!r} within {timeout_s} s; output so far:\n{''.join(seen)}")
        if line is None:
            pytest.fail(f"exited ({proc.wait()}) before printing {text!r}:\n{''.join(seen)}")
        seen.append(line)
        if text in line:
            return "".join(seen)


def test_distill_watch_reports_each_run_and_waits_for_the_next(tmp_path: Path):
    config = write_config(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "tao", "distill", "--config", str(config), "--watch",
                             "--every", "1h"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    try:
        # too little data: the next try comes after --retry-every (10 min), not a whole period
        output = wait_for_output(proc, "next distill run in 0:10:00")
        assert "too little data" in output  # the first run's outcome, printed before the wait
        assert proc.poll() is None  # still watching
    finally:
        proc.terminate()
        assert proc.wait(30) == 128 + signal.SIGTERM  # SIGTERM is handled: a clean exit, also as PID 1


def test_distill_watch_survives_failing_runs(tmp_path: Path):
    (tmp_path / "not-a-directory").write_text("")
    config = write_config(tmp_path, store={"path": str(tmp_path / "not-a-directory" / "tao.db")})  # never opens
    proc = subprocess.Popen([sys.executable, "-m", "tao", "distill", "--config", str(config), "--watch",
                             "--every", "1h", "--retry-every", "1s"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    try:
        output = wait_for_output(proc, "(2 failed runs so far)")
        assert "FileExistsError" in output and proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.slow
def test_model_export_writes_a_servable_directory(tmp_path: Path):
    out = tmp_path / "models" / "SmolLM2-135M-Instruct"
    assert tao("model", "export", "--out", str(out)) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert tao("model", "export", "--out", str(out)) == f"tao model export: {out} exists and is not empty"


def test_answers_can_exit_zero_and_every_run_is_counted(tmp_path: Path):
    config = write_config(tmp_path)
    assert tao("distill", "--config", str(config)) == 2  # too little data: an answer, exit 2 by default
    assert tao("distill", "--config", str(config), "--answers-exit-zero") == 0  # for a scheduler's eyes
    import sqlite_utils

    rows = list(sqlite_utils.Database(tmp_path / "tao.db")["distill_runs"].rows)
    assert [(r["outcome"], r["exit_code"]) for r in rows] == [("too_little_data", 2)] * 2
