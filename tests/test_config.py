from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config import EMBEDDED_MODEL, DistillConfig, load_settings

ISSUE_CONFIG = """
models:
  - name: mock
    backend: litellm
    model: openai/mock
    api_base: http://127.0.0.1:9100/v1
    api_key: none
    best_of: 4
    max_best_of: 16
reward: {kind: default}
store: {path: ./tao.db}
"""


def test_the_documented_yaml_loads(tmp_path: Path):
    path = tmp_path / "tao.yaml"
    path.write_text(ISSUE_CONFIG)
    settings = load_settings(path)
    [model] = settings.models
    assert (model.name, model.backend, model.model, model.best_of, model.max_best_of) == (
        "mock", "litellm", "openai/mock", 4, 16)
    assert settings.reward.kind == "default" and settings.store.path == Path("./tao.db")
    assert settings.auth.api_keys == []


def test_env_vars_override_the_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "tao.yaml"
    path.write_text(ISSUE_CONFIG)
    monkeypatch.setenv("TAO_STORE__PATH", "/data/x.db")
    monkeypatch.setenv("TAO_AUTH__API_KEYS", '["k1", "k2"]')
    settings = load_settings(path)
    assert settings.store.path == Path("/data/x.db") and settings.auth.api_keys == ["k1", "k2"]
    assert settings.models[0].name == "mock"


def test_no_config_serves_the_embedded_model(monkeypatch):
    monkeypatch.delenv("TAO_CONFIG", raising=False)
    [model] = load_settings().models
    assert model.name == "smollm2" and model.backend == "local" and model.model == EMBEDDED_MODEL


def test_bad_config_is_refused_with_the_reason(tmp_path: Path):
    path = tmp_path / "tao.yaml"
    path.write_text("models:\n  - {name: a, model: x, best_of: 9, max_best_of: 4}\n")
    with pytest.raises(ValidationError, match="exceeds max_best_of"):
        load_settings(path)
    path.write_text("models:\n  - {name: a, model: x}\n  - {name: a, model: y}\n")
    with pytest.raises(ValidationError, match="unique"):
        load_settings(path)
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.yaml")


def test_distill_bf16_follows_the_setting_and_unset_follows_the_hardware():
    from distill.train import uses_bf16
    from gateway.hardware import bf16_native

    assert uses_bf16(DistillConfig(bf16=False)) is False
    assert uses_bf16(DistillConfig(bf16=True)) is True
    assert uses_bf16(DistillConfig()) is bf16_native()
