"""The benchmark on a small synthetic dataset written in the shared format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learned_router.bench import run_bench, write_decisions
from learned_router.bench.cli import bench_command
from learned_router.bench import routers as R
from learned_router.bench.metrics import apgr, cost_to_reach, cpt, frontier, pgr_curve, quality_at
from learned_router.embedders import HashingEmbedder

MODELS = {
    "tiny-model": {"price_in_per_mtok": 0.1, "price_out_per_mtok": 0.2, "ttft_s": 0.1, "output_tokens_per_s": 200},
    "mid-model": {"price_in_per_mtok": 1.0, "price_out_per_mtok": 2.0, "ttft_s": 0.3, "output_tokens_per_s": 80},
    "big-model": {"price_in_per_mtok": 10.0, "price_out_per_mtok": 30.0, "ttft_s": 0.6, "output_tokens_per_s": 30},
}
TOPICS = {
    "easy": ("add these small numbers please", (0.9, 0.92, 0.95)),
    "medium": ("summarise this paragraph about history", (0.2, 0.85, 0.9)),
    "hard": ("prove the theorem about prime gaps rigorously", (0.05, 0.15, 0.9)),
}


def _write_dataset(root: Path, n: int = 150, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    prompts, outcomes = [], []
    names = list(TOPICS)
    for i in range(n):
        topic = names[i % 3]
        text, probs = TOPICS[topic]
        pid = f"p{i}"
        prompts.append({"prompt_id": pid, "prompt": f"{text} item {rng.integers(1000)}", "task": topic,
                        "split": "train" if i < int(n * 0.7) else "test"})
        for (model, info), p in zip(MODELS.items(), probs, strict=True):
            out_tok = int(rng.integers(20, 200))
            in_tok = len(text) / 4
            outcomes.append({"prompt_id": pid, "model": model, "quality": float(rng.random() < p),
                             "cost_usd": (in_tok * info["price_in_per_mtok"] + out_tok * info["price_out_per_mtok"])
                             / 1e6, "output_tokens": out_tok, "latency_s": 1.0})
    root.mkdir(parents=True)
    pd.DataFrame(prompts).to_parquet(root / "prompts.parquet")
    pd.DataFrame(outcomes).to_parquet(root / "outcomes.parquet")
    (root / "models.json").write_text(json.dumps(MODELS))
    (root / "meta.json").write_text(json.dumps({"name": "synthetic", "cost_kind": "estimated"}))
    return root


@pytest.fixture(scope="module")
def bench_result(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = _write_dataset(tmp_path_factory.mktemp("data") / "synthetic", n=300)
    result = run_bench(root, mode="all", points=8, embedder=HashingEmbedder(dim=64), progress=False,
                       cache_dir=tmp_path_factory.mktemp("cache"))
    return root, result


def test_result_has_every_router_and_mode(bench_result) -> None:  # type: ignore[no-untyped-def]
    _, result = bench_result
    names = set(result.routers)
    assert {f"model:{m}" for m in MODELS} <= names
    assert {"random", "oracle", "knn", "regression", "rule:cost", "rule:quality", "rule:balanced",
            "rule:latency", "learned (offline)", "learned (bandit)", "learned (online)"} <= names
    for name in ("knn", "regression", "learned (offline)", "learned (bandit)", "learned (online)"):
        assert len(result.routers[name].cost) == 8
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["reference"]["best_model"] == "big-model"
    assert set(payload["targets"]) == {"offline", "bandit", "online"}
    assert payload["online_learning_curve"]["step"]
    for mode, t in payload["targets"].items():  # the cost-share figure comes with its bootstrap interval
        lo, hi = t["cost_share_ci95"]
        share = t["cost_share_for_best_quality"]
        assert lo is None or hi is None or lo <= hi, mode
        if share is not None and lo is not None and hi is not None:
            assert lo - 0.05 <= share <= hi + 0.05, mode
        assert 0.0 <= t["p_cost_share_<=60%"] <= 1.0
        lo, hi = t["area_minus_knn_ci95"]  # and the comparison with kNN with its paired interval
        assert lo - 0.02 <= t["area"] - t["knn_area"] <= hi + 0.02, mode
        b_lo, b_hi = t["best_quality_ci95"]
        assert b_lo <= payload["reference"]["best_quality"] <= b_hi


def test_oracle_dominates_every_router(bench_result) -> None:  # type: ignore[no-untyped-def]
    _, result = bench_result
    oc, oq = frontier(result.routers["oracle"].cost, result.routers["oracle"].quality)
    for router in result.routers.values():
        for c, q in zip(router.cost, router.quality, strict=True):
            assert quality_at(c, oc, oq) >= q - 1e-9, router.name


def test_learned_router_routes_by_topic(bench_result) -> None:  # type: ignore[no-untyped-def]
    _, result = bench_result
    learned = result.routers["learned (offline)"].metrics
    big = result.routers["model:big-model"]
    # the easy third of the prompts can go to the cheap model without losing quality
    assert learned["savings_95"] is not None and learned["savings_95"] > 0.2
    assert learned["max_quality"] >= big.quality[0] - 0.05


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_decisions_out_file(bench_result, tmp_path: Path, suffix: str) -> None:  # type: ignore[no-untyped-def]
    root, result = bench_result
    path = write_decisions(result, tmp_path / f"decisions{suffix}")
    df = pd.read_parquet(path) if suffix == ".parquet" else pd.read_json(path, lines=True, dtype={"prompt_id": str})
    assert list(df.columns) == ["point", "prompt_id", "model"]
    test_ids = set(pd.read_parquet(root / "prompts.parquet").query("split == 'test'")["prompt_id"])
    assert len(df) == 8 * len(test_ids)
    assert set(df["prompt_id"]) == test_ids
    assert set(df["model"]) <= set(MODELS)
    assert df.groupby("point").size().eq(len(test_ids)).all()


def test_bench_command_writes_json_plot_and_decisions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _write_dataset(tmp_path / "d2", n=90)
    bench_command(root, mode="offline", json_out=tmp_path / "r.json", json_print=True,
                  decisions_out=tmp_path / "d.jsonl", plot=tmp_path / "f.png", embedder="hashing",
                  points=5, cache_dir=tmp_path / "cache")
    printed = json.loads(capsys.readouterr().out)
    assert printed["dataset"] == "synthetic"
    assert json.loads((tmp_path / "r.json").read_text())["routers"].keys() == printed["routers"].keys()
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert sum(1 for _ in (tmp_path / "d.jsonl").open()) == 5 * (90 - int(90 * 0.7))
    with pytest.raises(SystemExit):
        bench_command(tmp_path / "missing", embedder="hashing", json_print=True, cache_dir=None)


def test_frontier_metrics_on_known_points() -> None:
    fc, fq = frontier([1.0, 2.0, 3.0, 2.5], [0.5, 0.7, 0.8, 0.6])
    assert fc.tolist() == [1.0, 2.0, 3.0]
    assert quality_at(2.5, fc, fq) == pytest.approx(0.75)
    assert cost_to_reach(0.75, fc, fq) == pytest.approx(2.5)
    assert cost_to_reach(0.9, fc, fq) is None
    q = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    perfect = pgr_curve(q, q, strong=0, weak=1)
    assert apgr(*perfect) == pytest.approx(0.75)
    backwards = pgr_curve(-q, q, strong=0, weak=1)
    assert apgr(*backwards) < apgr(*perfect)


def test_free_model_and_graded_quality(tmp_path: Path) -> None:
    """A self-hosted model priced at zero and graded (not 0/1) quality: every mode runs, the learned router
    still routes hard prompts away from the free model, and nothing divides by a zero cost."""
    root = _write_dataset(tmp_path / "free", n=210, seed=3)
    models = {**MODELS, "tiny-model": {**MODELS["tiny-model"], "price_in_per_mtok": 0.0, "price_out_per_mtok": 0.0}}
    (root / "models.json").write_text(json.dumps(models))
    out = pd.read_parquet(root / "outcomes.parquet")
    out.loc[out["model"] == "tiny-model", "cost_usd"] = 0.0
    out["quality"] = 0.6 * out["quality"] + 0.4 * np.random.default_rng(0).random(len(out))
    out.to_parquet(root / "outcomes.parquet")
    result = run_bench(root, mode="all", points=6, embedder=HashingEmbedder(dim=64), progress=False,
                       cache_dir=tmp_path / "cache")
    for name, r in result.routers.items():
        assert all(np.isfinite(v) for v in r.cost + r.quality), name
    json.dumps(result.to_dict(), allow_nan=False)
    learned = result.routers["learned (offline)"]
    assert max(learned.quality) > result.routers["model:tiny-model"].quality[0]
    oc, oq = frontier(result.routers["oracle"].cost, result.routers["oracle"].quality)
    assert all(quality_at(c, oc, oq) >= q - 1e-9 for c, q in zip(learned.cost, learned.quality, strict=True))


def test_missing_prompts_and_outcomes(tmp_path: Path) -> None:
    """A missing prompt reads as empty and a missing task as 'unknown'; a missing outcome value is a clear
    error naming the column, not a NaN in every metric."""
    from learned_router.bench.dataset import load_dataset

    root = _write_dataset(tmp_path / "gaps", n=60)
    prompts = pd.read_parquet(root / "prompts.parquet")
    prompts.loc[0, "prompt"] = None
    prompts.loc[1, "task"] = None
    prompts.to_parquet(root / "prompts.parquet")
    data = load_dataset(root)
    assert data.prompts[0] == "" and data.tasks[1] == "unknown"
    assert run_bench(root, mode="offline", points=3, embedder=HashingEmbedder(dim=32), progress=False,
                     cache_dir=None).n_test == 60 - int(60 * 0.7)
    outcomes = pd.read_parquet(root / "outcomes.parquet")
    outcomes.loc[5, "quality"] = None
    outcomes.to_parquet(root / "outcomes.parquet")
    with pytest.raises(ValueError, match="'quality' has 1 missing"):
        load_dataset(root)


def test_a_dataset_without_task_column_is_benchmarked(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "untasked", n=60)
    pd.read_parquet(root / "prompts.parquet").drop(columns=["task"]).to_parquet(root / "prompts.parquet")
    result = run_bench(root, mode="offline", points=3, embedder=HashingEmbedder(dim=32), progress=False,
                       cache_dir=None)
    assert result.decisions["offline"].shape == (3, 60 - int(60 * 0.7))
    pd.read_parquet(root / "prompts.parquet").drop(columns=["split"]).to_parquet(root / "prompts.parquet")
    with pytest.raises(ValueError, match=r"missing columns \['split'\]"):
        run_bench(root, mode="offline", points=3, embedder=HashingEmbedder(dim=32), progress=False, cache_dir=None)


def test_prompts_of_another_split_are_neither_trained_on_nor_scored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    """A validation split (and split names in another case) in a dataset: only train and test prompts are
    used, the decisions name test prompts only, and the log says what was left out."""
    root = _write_dataset(tmp_path / "validated", n=90)
    prompts = pd.read_parquet(root / "prompts.parquet")
    prompts.loc[prompts.index % 10 == 0, "split"] = "validation"
    prompts.loc[prompts["split"] == "test", "split"] = " Test"
    prompts.to_parquet(root / "prompts.parquet")
    with caplog.at_level("WARNING"):
        result = run_bench(root, mode="offline", points=3, embedder=HashingEmbedder(dim=32), progress=False,
                           cache_dir=None)
    assert "ignoring 9 prompts whose split is not train or test: {'validation': 9}" in caplog.text
    test_ids = set(prompts.loc[prompts["split"] == " Test", "prompt_id"])
    assert set(result.test_prompt_ids) == test_ids and result.n_test == len(test_ids)
    assert result.n_train == int((prompts["split"] == "train").sum())
    capsys.readouterr()
    bench_command(root, points=3, embedder="hashing", cache_dir=None)  # the command prints the warning
    assert "warning: " in (err := capsys.readouterr().err) and "ignoring 9 prompts whose split" in err


def test_token_model_predicts_the_mean_of_skewed_answer_lengths_not_the_median() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    X = np.hstack([np.ones((n, 1)), rng.normal(size=(n, 3))])
    # answer lengths log-normal around a prompt-dependent median: mean = median * exp(sigma^2 / 2)
    sigma = np.array([0.3, 1.2])
    log_median = 5.0 + 0.3 * X[:, 1:2]
    tokens = np.exp(log_median + sigma * rng.normal(size=(n, 2)))
    test = np.hstack([np.ones((500, 1)), rng.normal(size=(500, 3))])
    expected_mean = np.exp(5.0 + 0.3 * test[:, 1:2] + sigma ** 2 / 2)
    for model in (R.TokenModel().fit_full(X, tokens),
                  R.TokenModel().fit(X, np.repeat([0, 1], n // 2), tokens[np.arange(n), np.repeat([0, 1], n // 2)], 2)):
        ratio = model.predict(test).mean(axis=0) / expected_mean.mean(axis=0)
        assert np.all(np.abs(ratio - 1) < 0.08), ratio  # the median would be 4% and 51% low


def test_max_dim_bounds_the_learned_context_and_names_the_narrowest(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "synthetic", n=300)
    result = run_bench(root, mode="offline", points=4, embedder=HashingEmbedder(dim=64), progress=False,
                       cache_dir=tmp_path / "cache", max_dim=20)
    assert result.hyperparameters["offline"]["dim"] <= 20 and result.settings["max_dim"] == 20
    with pytest.raises(ValueError, match="max_dim 3 is below the narrowest context"):
        run_bench(root, mode="bandit", points=4, embedder=HashingEmbedder(dim=64), progress=False,
                  cache_dir=tmp_path / "cache", max_dim=3)


def test_an_unwritable_embedding_cache_does_not_fail_the_benchmark(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "data", n=60)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would go")
    result = run_bench(root, mode="offline", points=3, embedder=HashingEmbedder(dim=32), progress=False,
                       cache_dir=blocked / "cache")
    assert result.decisions["offline"].shape == (3, 60 - int(60 * 0.7))
    assert not (blocked / "cache").exists()


def test_paired_intervals_against_knn() -> None:
    """The paired bootstrap: a router compared with itself differs by exactly 0 on every resample, a router
    that takes the oracle's choices is above one that always takes the weak model, and with every resample
    weight equal the APGR helper reproduces ``metrics.apgr`` of ``metrics.pgr_curve``."""
    from learned_router.bench.intervals import _apgr_cpt, paired_knn_intervals, resample_weights

    rng = np.random.default_rng(3)
    n = 400
    Q = np.stack([(rng.random(n) < 0.5).astype(float), (rng.random(n) < 0.8).astype(float)], axis=1)
    C = np.stack([np.full(n, 1e-4), np.full(n, 1e-3)], axis=1)
    weak_always = np.zeros((3, n), dtype=np.int64)
    oracle = np.stack([np.argmax(Q - 1e-6 * np.arange(2), axis=1)] * 3)
    W50 = resample_weights(n, 50)
    same = paired_knn_intervals(weak_always, weak_always, Q, C, W50, best=1, cheapest=0)
    assert same["area_minus_knn_ci95"] == [0.0, 0.0]
    better = paired_knn_intervals(oracle, weak_always, Q, C, W50, best=1, cheapest=0)
    assert better["area_minus_knn_ci95"][0] > 0.0
    q_hat = Q + rng.normal(0.0, 0.5, Q.shape)  # a noisy predictor, against an uninformative one
    flat = np.full_like(Q, 0.5)
    two = paired_knn_intervals(weak_always, weak_always, Q, C, resample_weights(n), best=1, cheapest=0,
                               q_hat=q_hat, knn_q_hat=flat)
    point = apgr(*pgr_curve(q_hat, Q, 1, 0)) - apgr(*pgr_curve(flat, Q, 1, 0))
    lo, hi = two["apgr_minus_knn_ci95"]
    assert lo < point < hi and lo > 0.0
    assert two["cpt50_minus_knn_ci95"][1] < 0.0  # the informed router needs fewer strong calls
    uniform = np.full((1, n), 1.0 / n)
    a, c = _apgr_cpt(q_hat[:, 1] - q_hat[:, 0], Q[:, 1] - Q[:, 0], uniform, seed=0)
    share, pgr = pgr_curve(q_hat, Q, 1, 0)
    assert a[0] == pytest.approx(apgr(share, pgr))
    assert c[0] == pytest.approx(cpt(share, pgr, 0.5))


def test_repeated_prompts_and_outcomes_are_read_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A prompt listed twice is read once (its first row); an outcome recorded twice for the same model is
    read as the mean of the two records. Both are logged."""
    from learned_router.bench.dataset import load_dataset

    root = _write_dataset(tmp_path / "repeats", n=30)
    prompts = pd.read_parquet(root / "prompts.parquet")
    outcomes = pd.read_parquet(root / "outcomes.parquet")
    first = outcomes.iloc[[0]]
    twice = first.assign(quality=1.0 - first["quality"], cost_usd=3 * first["cost_usd"])
    pd.concat([prompts, prompts.iloc[[4]]]).to_parquet(root / "prompts.parquet")
    pd.concat([outcomes, twice]).to_parquet(root / "outcomes.parquet")
    with caplog.at_level("WARNING"):
        data = load_dataset(root)
    assert "1 repeated prompt ids (e.g. p4)" in caplog.text and "1 repeated (prompt, model) outcomes" in caplog.text
    assert len(data.prompts) == 30
    i, j = data.prompt_ids.tolist().index(outcomes["prompt_id"].iloc[0]), data.models.index(outcomes["model"].iloc[0])
    assert data.quality[i, j] == 0.5
    assert data.cost_usd[i, j] == pytest.approx(2 * outcomes["cost_usd"].iloc[0])


def test_chat_style_prompts_stored_as_json_read_as_the_router_reads_them(tmp_path: Path) -> None:
    """A dataset of conversations stores each prompt as a JSON list of messages: the benchmark reads the
    messages' text, as the router reads that request in production, and estimates tokens from it."""
    from learned_router.bench.dataset import load_dataset
    from learned_router.types import ChatRequest

    root = _write_dataset(tmp_path / "chat", n=30)
    prompts = pd.read_parquet(root / "prompts.parquet")
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"},
            {"role": "assistant", "content": "Hi!"}, {"role": "user", "content": [{"type": "text", "text": "sum 2+2"}]}]
    prompts.loc[0, "prompt"] = json.dumps(chat)
    prompts.loc[1, "prompt"] = json.dumps({"messages": chat[1:2]})
    prompts.loc[2, "prompt"] = "[not json] a plain prompt in brackets"
    prompts.loc[3, "prompt"] = json.dumps([1, 2, 3])  # JSON, but not messages: read as it is
    prompts.to_parquet(root / "prompts.parquet")
    data = load_dataset(root)
    expected = ChatRequest.coerce({"messages": chat}).prompt_text()
    assert data.prompts[0] == expected == "Be brief.\nhello there\nHi!\nsum 2+2"
    assert data.prompts[1] == "hello there"
    assert data.prompts[2] == "[not json] a plain prompt in brackets"
    assert data.prompts[3] == "[1, 2, 3]"
    assert data.input_tokens[0] == len(expected) / 4


def test_a_subset_of_prompts_and_models_is_benchmarked_from_given_embeddings(tmp_path: Path) -> None:
    """``BenchDataset.take`` keeps the chosen prompts and models (matrices, prices and all), and run_bench
    scores it from embeddings computed once for the whole dataset (as benchmarks/model_pools.py does)."""
    from learned_router.bench.dataset import load_dataset

    data = load_dataset(_write_dataset(tmp_path / "pool", n=120))
    emb = HashingEmbedder(dim=32)
    E = np.asarray(emb.embed(data.prompts), dtype=np.float32)
    rows, models = np.arange(0, 120, 2), np.array([0, 2])
    part = data.take(rows, models)
    assert part.models == ("tiny-model", "big-model") and part.prompt_ids.tolist() == data.prompt_ids[rows].tolist()
    np.testing.assert_array_equal(part.quality, data.quality[rows][:, models])
    np.testing.assert_array_equal(part.price_out_per_mtok, data.price_out_per_mtok[models])
    result = run_bench(part, embeddings=E[rows], embedder=emb, points=3, progress=False, cache_dir=None)
    assert result.models == ["tiny-model", "big-model"] and result.n_train + result.n_test == 60
    assert "apgr" in result.routers["learned (offline)"].metrics  # two models: RouteLLM's metrics too


def test_decisions_do_not_depend_on_the_quality_scale(tmp_path: Path) -> None:
    """The same outcomes on a 1-10 scale (quality 1 + 9q) give the same decisions in every mode and for kNN:
    the sweep of trade-off settings and the online router's prior follow the data's scale. Before, the
    sweep was set for [0, 1] and never reached the cheap end of a 1-10 frontier."""
    root = _write_dataset(tmp_path / "unit", n=210, seed=5)
    out = pd.read_parquet(root / "outcomes.parquet")
    assert set(out["quality"]) == {0.0, 1.0}
    scaled = tmp_path / "scaled"
    scaled.mkdir()
    for f in root.iterdir():
        (scaled / f.name).write_bytes(f.read_bytes())
    out.assign(quality=1.0 + 9.0 * out["quality"]).to_parquet(scaled / "outcomes.parquet")
    unit, ten = (run_bench(d, mode="all", points=8, embedder=HashingEmbedder(dim=64), progress=False,
                           cache_dir=None) for d in (root, scaled))
    assert np.allclose(np.asarray(ten.sweep), 9.0 * np.asarray(unit.sweep))
    for mode in ("offline", "bandit", "online"):
        assert (ten.decisions[mode] == unit.decisions[mode]).mean() > 0.99, mode
    assert (ten.baseline_decisions["knn"] == unit.baseline_decisions["knn"]).mean() > 0.99
    for name in ("learned (offline)", "learned (online)", "knn", "regression"):
        assert np.allclose(ten.routers[name].quality, 1.0 + 9.0 * np.asarray(unit.routers[name].quality),
                           atol=0.05), name
    # the 1-10 sweep reaches the cheapest model's cost, as the [0, 1] one does
    cheapest = min(unit.routers[f"model:{m}"].cost[0] for m in unit.models)
    assert min(ten.routers["learned (offline)"].cost) <= cheapest * 1.05


def test_quality_outside_the_unit_scale_is_benchmarked_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Graded quality on a 1-10 scale (the format says [0, 1]): a warning names the range, and the regression
    baseline predicts on the data's own scale instead of being clipped to [0, 1]."""
    root = _write_dataset(tmp_path / "scaled", n=210, seed=4)
    out = pd.read_parquet(root / "outcomes.parquet")
    out["quality"] = 1.0 + 9.0 * (0.6 * out["quality"] + 0.4 * np.random.default_rng(1).random(len(out)))
    out.to_parquet(root / "outcomes.parquet")
    with caplog.at_level("WARNING", logger="learned_router.bench.dataset"):
        result = run_bench(root, points=6, embedder=HashingEmbedder(dim=64), progress=False, cache_dir=None)
    assert any("outside the format's [0, 1]" in r.getMessage() for r in caplog.records)
    regression = result.routers["regression"]
    cheapest = result.routers["model:tiny-model"].quality[0]
    # clipped to [0, 1], every prediction is 1 and the tie goes to the cheapest model at every setting
    assert max(regression.quality) > cheapest + 1.0
