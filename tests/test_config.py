from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from learned_router.config import load_config, parse_config
from learned_router.errors import ConfigError

BASE = {
    "providers": [
        {"name": "a", "kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m1",
         "price_in_per_mtok": 1.0, "price_out_per_mtok": 2.0},
        {"name": "b", "kind": "anthropic", "base_url": "http://127.0.0.1:2", "model": "m2",
         "price_in_per_mtok": 3.0, "price_out_per_mtok": 4.0, "api_key": "env:B_KEY"},
    ],
}


def with_(path: list, value, base=None):
    import copy

    data = copy.deepcopy(base or BASE)
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    node[path[-1]] = value
    return data


def test_minimal_config_parses_with_defaults():
    cfg = parse_config(BASE)
    assert cfg.routing.strategy == "balanced"
    assert cfg.routing.quality_threshold == 0.8
    assert cfg.breaker.failure_threshold == 5 and cfg.breaker.reset_timeout_s == 60
    assert [p.arm for p in cfg.providers] == ["a::m1", "b::m2"]


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        (with_(["providers", 0, "colour"], "red"), "providers[0](a).colour", "unknown key"),
        (with_(["routing", "stratgy"], "cost"), "routing.stratgy", "unknown key"),
        (with_(["routing", "strategy"], "fastest"), "routing.strategy", "Input should be"),
        (with_(["providers", 1, "price_in_per_mtok"], "cheap"), "providers[1](b).price_in_per_mtok", "number"),
        (with_(["breaker", "failure_threshold"], 0), "breaker.failure_threshold", "greater than or equal"),
        (with_(["providers", 0, "api_key"], "sk-live-123"), "providers[0](a).api_key", "env:"),
        (with_(["routing", "task_preferences"], {"code": ["a", "zzz"]}), "routing.task_preferences.code[1]",
         "unknown provider 'zzz'"),
        (with_(["budgets", "providers"], {"nope": 1.0}), "budgets.providers.nope", "unknown provider"),
    ],
)
def test_config_errors_name_the_key_and_problem(data, key, problem):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.key == key
    assert problem in str(info.value)


def test_missing_price_is_an_error():
    data = with_(["providers", 0, "name"], "a")
    del data["providers"][0]["price_out_per_mtok"]
    with pytest.raises(ConfigError, match=r"providers\[0\]\(a\)\.price_out_per_mtok.*required"):
        parse_config(data)


def test_duplicate_names_are_an_error():
    data = with_(["providers", 1, "name"], "a")
    with pytest.raises(ConfigError, match=r"providers\[1\]\.name.*duplicate provider name 'a'"):
        parse_config(data)


def test_no_providers_is_an_error():
    with pytest.raises(ConfigError, match="providers"):
        parse_config({"providers": []})


def test_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(top)


def test_relative_paths_are_taken_from_the_file(tmp_path: Path):
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(with_(["log"], {"path": "decisions.sqlite"})))
    assert load_config(f).log.path == str(tmp_path / "decisions.sqlite")


@settings(max_examples=40, deadline=None)
@given(
    q=st.floats(min_value=0, max_value=1),
    price=st.floats(min_value=0, max_value=1000, allow_nan=False),
    threshold=st.integers(min_value=1, max_value=50),
)
def test_config_round_trips(q, price, threshold):
    data = with_(["providers", 0, "quality_prior"], q)
    data["providers"][0]["price_in_per_mtok"] = price
    data["breaker"] = {"failure_threshold": threshold}
    cfg = parse_config(data)
    again = parse_config(cfg.model_dump(exclude_defaults=True))
    assert again == cfg


@settings(max_examples=30, deadline=None)
@given(st.floats().filter(lambda x: not 0 <= x <= 1))
def test_invalid_quality_prior_is_rejected(q):
    with pytest.raises(ConfigError, match=r"providers\[0\]\(a\)\.quality_prior"):
        parse_config(with_(["providers", 0, "quality_prior"], q))
