"""Embedders: the real MiniLM model (loaded once for this module) and the hashing embedder."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from learned_router.embedders import (
    EMBEDDERS,
    HashingEmbedder,
    MiniLMEmbedder,
    StaticEmbedder,
    default_static_table,
    make_embedder,
)
from learned_router.protocols import Embedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FILLER = "The committee reviewed the quarterly figures and discussed the schedule for the next audit. "
QUESTION = "Translate into French: where is the nearest train station?"


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder(cache_size=64).load()


def test_minilm_shapes_dtype_and_normalisation(minilm: MiniLMEmbedder) -> None:
    texts = ["hi", "How do I reverse a list in Python?", FILLER * 30, ""]
    vecs = minilm.embed(texts)
    assert isinstance(minilm, Embedder)
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    one = minilm.embed_one("hi")
    assert one.shape == (384,)
    np.testing.assert_allclose(one, vecs[0], atol=1e-6)
    assert minilm.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        minilm.embed("a single string")  # type: ignore[arg-type]


def test_minilm_matches_the_plain_model_on_short_prompts(minilm: MiniLMEmbedder) -> None:
    texts = ["What is the capital of Georgia?", "Write a haiku about autumn rain."]
    np.testing.assert_allclose(minilm.embed(texts), minilm.encode_raw(texts), atol=1e-5)


def test_minilm_embeddings_carry_meaning(minilm: MiniLMEmbedder) -> None:
    a, b, c = minilm.embed(["How do I reverse a list in Python?", "python list reversal code",
                            "a recipe for tomato pasta sauce"])
    assert a @ b > a @ c + 0.3


def test_cache_counts_hits_and_computes_each_distinct_text_once() -> None:
    emb = MiniLMEmbedder(cache_size=2)
    emb.embed(["alpha", "beta", "alpha"])  # the duplicate inside one batch is computed once
    info = emb.cache_info()
    assert (info.hits, info.misses, info.size, info.maxsize) == (0, 2, 2, 2)
    first = emb.embed_one("alpha")
    assert emb.cache_info().hits == 1
    first[:] = 0.0  # callers get copies: the cached vector is unchanged
    assert np.linalg.norm(emb.embed_one("alpha")) == pytest.approx(1.0, abs=1e-5)
    emb.embed(["gamma"])  # LRU: evicts "beta", the least recently used
    before = emb.cache_info().misses
    emb.embed(["beta"])
    assert emb.cache_info().misses == before + 1
    disabled = HashingEmbedder(cache_size=0)
    disabled.embed(["x", "x"])
    assert disabled.cache_info().size == 0


def test_long_prompt_windows_cover_head_and_tail(minilm: MiniLMEmbedder) -> None:
    text = "Answer the question at the end. " + FILLER * 40 + QUESTION
    windows = minilm.windows(text)
    assert len(windows) == 2
    assert text.startswith(windows[0]) and text.endswith(windows[1])
    for w in windows:
        assert len(minilm.tokenizer(w, add_special_tokens=False, verbose=False)["input_ids"]) <= 254
    assert minilm.windows("short prompt") == ["short prompt"]


def test_head_tail_sees_the_end_of_a_long_prompt(minilm: MiniLMEmbedder) -> None:
    head = FILLER * 40
    p1, p2 = head + QUESTION, head + "Write a Python function that merges two sorted lists."
    truncated = minilm.encode_raw([p1, p2])
    assert truncated[0] @ truncated[1] > 0.999  # the model alone cannot tell them apart
    ht = minilm.embed([p1, p2])
    assert ht[0] @ ht[1] < 0.95
    q = minilm.encode_raw([QUESTION])[0]
    assert ht[0] @ q > truncated[0] @ q + 0.1


def test_chunks_strategy_is_bounded_and_truncate_keeps_one_window() -> None:
    chunks = MiniLMEmbedder(long_strategy="chunks", max_chunks=3)
    text = FILLER * 200
    assert len(chunks.windows(text)) == 3
    vec = chunks.embed_one(text)
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    assert MiniLMEmbedder(long_strategy="truncate").windows(text) == [text]
    with pytest.raises(ValueError, match="long_strategy"):
        MiniLMEmbedder(long_strategy="middle")


def test_minilm_is_thread_safe(minilm: MiniLMEmbedder) -> None:
    texts = [f"question number {i} about databases" for i in range(12)]
    expected = minilm.encode_raw(texts)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(minilm.embed(texts))
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_allclose(r, expected, atol=1e-5)


def test_hashing_is_deterministic_normalised_and_seeded() -> None:
    a, b = HashingEmbedder(dim=64, seed=3), HashingEmbedder(dim=64, seed=3)
    texts = ["the cat sat on the mat", "", "Translate hello to German"]
    va, vb = a.embed(texts), b.embed(texts)
    np.testing.assert_array_equal(va, vb)
    np.testing.assert_allclose(np.linalg.norm(va, axis=1), 1.0, atol=1e-6)
    assert not np.allclose(HashingEmbedder(dim=64, seed=4).embed(texts), va)
    x, y, z = HashingEmbedder().embed(["the cat sat on the mat", "the cat sat on a mat", "quantum chromodynamics"])
    assert x @ y > x @ z
    assert a.name == "hashing-64-s3" and a.dim == 64


def test_hashing_is_stable_across_processes() -> None:
    code = ("from learned_router.embedders import HashingEmbedder;"
            "print(repr(float(HashingEmbedder(seed=1).embed_one('stable across runs')[:8].sum())))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    here = float(HashingEmbedder(seed=1).embed_one("stable across runs")[:8].sum())
    assert float(out) == pytest.approx(here, abs=1e-7)


def test_import_and_construction_load_no_heavy_modules() -> None:
    code = ("import sys; from learned_router.embedders import MiniLMEmbedder, make_embedder;"
            "MiniLMEmbedder(); make_embedder('hashing').embed(['x']);"
            "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_registry() -> None:
    assert {"minilm", "hashing", "static"} <= set(EMBEDDERS)
    assert isinstance(make_embedder("hashing", dim=16), HashingEmbedder)
    with pytest.raises(ValueError, match="unknown embedder"):
        make_embedder("word2vec")


def test_static_engine_approximates_minilm(minilm: MiniLMEmbedder) -> None:
    static = make_embedder("static")
    assert isinstance(static, StaticEmbedder) and static.dim == 384
    texts = ["How do I reverse a list in Python?", "Write a poem about the autumn rain in the city.",
             "What is the derivative of x squared times sine of x?", "Summarise the meeting notes below. " + FILLER,
             "Translate 'good night' into German.", "hello, how are you doing today?", ""]
    vecs = static.embed(texts)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    agreement = np.sum(vecs * minilm.embed(texts), axis=1)
    assert agreement.mean() > 0.6, agreement
    sims = vecs @ vecs.T
    assert sims[0, 1] < 0.9  # different prompts stay apart
    assert default_static_table().is_file()


def test_static_engine_rejects_a_wrong_table(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, q=np.zeros((10, 384), dtype=np.int8), scale=np.ones(10, dtype=np.float32))
    with pytest.raises(ValueError, match="does not match"):
        StaticEmbedder(bad).embed(["x"])
