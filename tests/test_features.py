"""FeatureExtractor: token estimates, embeddings, task probabilities, hints and error propagation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from learned_router.classifier import TaskClassifier
from learned_router.config import parse_config
from learned_router.embedders import HashingEmbedder
from learned_router.errors import ConfigError
from learned_router.features import MESSAGE_OVERHEAD_TOKENS, FeatureExtractor, build_feature_extractor
from learned_router.types import ChatRequest

TRAIN = {
    "code": ["write a python function to sort a list", "fix this javascript bug in my loop",
             "implement a binary search in java", "python code to parse a csv file"],
    "math": ["solve the equation 3x + 2 = 11", "what is the integral of x squared",
             "compute 17 times 23", "find the derivative of sin x"],
    "translation": ["translate hello into french", "translate this sentence to german",
                    "how do you say thank you in spanish", "translate good night to italian"],
}


def _req(text: str, **kw: object) -> ChatRequest:
    return ChatRequest.coerce({"messages": [{"role": "user", "content": text}], **kw})


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    emb = HashingEmbedder(dim=128)
    texts = [t for ts in TRAIN.values() for t in ts]
    labels = [k for k, ts in TRAIN.items() for _ in ts]
    clf = TaskClassifier(C=10.0, calibrate=False).fit(emb.embed(texts), labels, embedder_name=emb.name)
    return FeatureExtractor(emb, clf)


def test_extract(extractor: FeatureExtractor) -> None:
    req = _req("please write a python function to reverse a list")
    f = extractor.extract(req)
    assert f.embedding is not None and f.embedding.shape == (128,) and f.embedding.dtype == np.float32
    assert set(f.task_probs) == set(TRAIN)
    assert sum(f.task_probs.values()) == pytest.approx(1.0)
    assert f.task == "code"
    assert f.input_tokens == -(-len(req.prompt_text()) // 4) + MESSAGE_OVERHEAD_TOKENS
    assert f.output_tokens_est == 256


def test_task_hint_is_one_hot(extractor: FeatureExtractor) -> None:
    f = extractor.extract(_req("write a python function", task_hint="math"))
    assert dict(f.task_probs) == {"math": 1.0}
    assert f.embedding is not None


def test_extract_many_matches_extract(extractor: FeatureExtractor) -> None:
    reqs = [_req("translate hello to german"), _req("solve 2x = 4", task_hint="math"), _req("sort a list in python")]
    many = extractor.extract_many(reqs)
    assert len(many) == 3
    for req, f in zip(reqs, many, strict=True):
        one = extractor.extract(req)
        assert one.task_probs == pytest.approx(f.task_probs)
        np.testing.assert_allclose(one.embedding, f.embedding)
        assert one.embedder == f.embedder == extractor.embedder.name
    assert extractor.extract_many([]) == []


def test_output_estimate_caps_and_task_weighting() -> None:
    emb = HashingEmbedder(dim=32)
    fx = FeatureExtractor(emb, None, chars_per_token=2.0, default_output_tokens=300,
                          output_tokens_by_task={"summarization": 100, "creative_writing": 900})
    assert fx.extract(_req("abcd", max_tokens=50)).output_tokens_est == 50
    assert fx.extract(_req("abcd")).task_probs == {}
    assert fx.output_tokens(_req("x"), {"summarization": 0.5, "creative_writing": 0.5}) == 500
    assert fx.output_tokens(_req("x"), {"chat": 1.0}) == 300
    assert fx.input_tokens(_req("abcdefgh")) == 4 + MESSAGE_OVERHEAD_TOKENS


def test_no_embedder_gives_token_estimates_only() -> None:
    f = FeatureExtractor(None, None).extract(_req("hello there", task_hint="chat"))
    assert f.embedding is None and f.embedder is None and dict(f.task_probs) == {"chat": 1.0}
    with pytest.raises(ValueError, match="needs an embedder"):
        FeatureExtractor(None, TaskClassifier())


class _BrokenEmbedder:
    name = "broken"
    dim = 8

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise RuntimeError("model weights unavailable")


def test_embedder_errors_propagate_unchanged() -> None:
    fx = FeatureExtractor(_BrokenEmbedder(), None)
    with pytest.raises(RuntimeError, match="model weights unavailable"):
        fx.extract(_req("hi"))


def test_unfitted_classifier_error_propagates() -> None:
    from learned_router.errors import NotFittedError

    fx = FeatureExtractor(HashingEmbedder(dim=16), TaskClassifier())
    with pytest.raises(NotFittedError):
        fx.extract(_req("hi"))


def _config(tmp_path: Path, embedder: dict[str, object], model_path: str | None = None) -> object:
    routing: dict[str, object] = {"strategy": "task"}
    if model_path:
        routing["model_path"] = model_path
    return parse_config({
        "providers": [{"name": "p", "kind": "openai", "base_url": "http://127.0.0.1:1", "model": "m",
                       "price_in_per_mtok": 1.0, "price_out_per_mtok": 2.0}],
        "routing": routing, "embedder": embedder,
    }, base_dir=tmp_path)


def test_build_from_config(tmp_path: Path, extractor: FeatureExtractor) -> None:
    cfg = _config(tmp_path, {"kind": "hashing", "dim": 128})
    fx = build_feature_extractor(cfg)  # type: ignore[arg-type]
    assert isinstance(fx.embedder, HashingEmbedder) and fx.embedder.dim == 128
    assert fx.classifier is None  # the shipped MiniLM classifier does not fit hashing embeddings
    assert extractor.classifier is not None
    extractor.classifier.save(tmp_path / "model" / "task_classifier")
    fx = build_feature_extractor(_config(tmp_path, {"kind": "hashing", "dim": 128}, "model"))  # type: ignore[arg-type]
    assert fx.classifier is not None and fx.extract(_req("translate hi to french")).task == "translation"
    with pytest.raises(ConfigError):
        build_feature_extractor(_config(tmp_path, {"kind": "hashing", "dim": 64}, "model"))  # type: ignore[arg-type]


def test_build_from_config_uses_the_shipped_classifier_with_minilm(tmp_path: Path) -> None:
    fx = build_feature_extractor(_config(tmp_path, {"kind": "minilm"}))  # type: ignore[arg-type]
    assert fx.classifier is not None and fx.embedder is not None
    assert fx.embedder.name == fx.classifier.manifest_["embedder"]["name"]


def test_build_from_config_picks_the_static_classifier(tmp_path: Path) -> None:
    fx = build_feature_extractor(_config(tmp_path, {"kind": "static"}))  # type: ignore[arg-type]
    assert fx.embedder is not None and fx.embedder.name == "static-all-MiniLM-L6-v2"
    assert fx.classifier is not None and fx.classifier.manifest_["embedder"]["name"] == fx.embedder.name
    f = fx.extract(_req("Write a Python function that parses a CSV file into a list of dicts."))
    assert f.task == "code"
