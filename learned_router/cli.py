"""The ``learned-router`` command line. Each command imports what it needs when it runs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from learned_router.errors import RouterError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Route LLM requests by learned trade-offs.")
ab_app = typer.Typer(add_completion=False, no_args_is_help=True, help="A/B experiments between policies.")
app.add_typer(ab_app, name="ab")


def _offline_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _fail(err: Exception, code: int = 2) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code)


@app.command()
def route(
    prompt: Annotated[str, typer.Argument(help="The user message to route.")],
    config: Annotated[Path, typer.Option("--config", "-c", help="Router YAML config.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
    strategy: Annotated[str | None, typer.Option(help="Override the configured strategy.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant name.")] = None,
    region: Annotated[str | None, typer.Option(help="Required region.")] = None,
    task: Annotated[str | None, typer.Option(help="Task hint.")] = None,
) -> None:
    """Explain where a prompt would be routed, without calling any provider."""
    _offline_env()
    from learned_router.router import Router

    try:
        router = Router.from_config(config, log=False)  # a dry run records nothing
        request: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]}
        for key, value in (("strategy", strategy), ("tenant", tenant), ("region", region), ("task_hint", task)):
            if value is not None:
                request[key] = value
        decision = router.route(request)
    except RouterError as err:
        _fail(err)
    if as_json:
        typer.echo(json.dumps(decision.to_dict(), indent=2))
        return
    from learned_router.reporting import print_decision

    print_decision(decision)


@app.command()
def report(
    log: Annotated[Path, typer.Option("--log", help="Decision log (SQLite file or postgresql:// URL).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Per-provider analytics from a decision log."""
    from learned_router.analytics import Analytics
    from learned_router.reporting import print_report
    from learned_router.stores import read_rows

    try:
        rows = read_rows(log)  # a SQLite file, or a postgresql:// URL
    except (FileNotFoundError, ConnectionError) as exc:
        _fail(exc)
    data = Analytics.from_rows(rows).report()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        print_report(data)


@app.command()
def demo(
    requests: Annotated[int, typer.Option(help="How many sample prompts to send.")] = 300,
    out: Annotated[Path, typer.Option(help="Folder for the plot, log and report.")] = Path("out/demo"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Run simulated providers on loopback and route sample traffic through the router (no API keys)."""
    _offline_env()
    from learned_router.demo import run_demo

    sys.exit(run_demo(requests=requests, out_dir=out, seed=seed))


@app.command()
def simulate(
    config_out: Annotated[Path, typer.Option(help="Where to write a router config for the providers.")] = Path(
        "out/sim.yaml"),
    port: Annotated[int, typer.Option(help="First port; the five providers take port..port+4.")] = 9101,
    log: Annotated[Path, typer.Option(help="Decision log path written into the config.")] = Path(
        "out/sim/decisions.sqlite"),
    strategy: Annotated[str, typer.Option(help="Routing strategy in the config.")] = "balanced",
    model: Annotated[str | None, typer.Option(help="routing.model_path (a model folder or models:/ URI).")] = None,
    ab_model: Annotated[str | None, typer.Option(help="Add an A/B experiment: this model vs balanced.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Run the demo's simulated providers on loopback and write a config for them (for serve, train, ab)."""
    _offline_env()
    from learned_router.playground import run_simulation

    run_simulation(port=port, config_out=config_out, log_path=log, strategy=strategy, model=model,
                   ab_model=ab_model, seed=seed, echo=typer.echo)


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="Router YAML config.")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Serve the OpenAI-compatible gateway."""
    _offline_env()
    from learned_router.gateway.serve import serve as run_server

    try:
        run_server(config, host=host, port=port)
    except RouterError as err:
        _fail(err)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    dataset_dir: Annotated[Path, typer.Argument(help="A dataset folder in the shared data format.")],
    mode: Annotated[str, typer.Option(help="offline, bandit, online or all.")] = "offline",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    json_out: Annotated[Path | None, typer.Option(help="Write the JSON result to this file.")] = None,
    decisions_out: Annotated[Path | None, typer.Option(help="Per (point, test prompt) choices.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the cost-quality frontier PNG here.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    embedder: Annotated[str, typer.Option(help="minilm, static or hashing.")] = "minilm",
    max_dim: Annotated[int | None, typer.Option(
        help="Widest context the learned router may use (its route() cost grows with width²).")] = None,
) -> None:
    """Train on a dataset's train split and score routers on its test split."""
    _offline_env()
    from learned_router.bench.cli import bench_command

    bench_command(dataset_dir, mode=mode, json_out=json_out, json_print=as_json, decisions_out=decisions_out,
                  plot=plot, seed=seed, embedder=embedder, max_dim=max_dim)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(ctx: typer.Context) -> None:
    """Train a policy from a decision log (same options as training/train.py; see --help there)."""
    _offline_env()
    from learned_router.training_entry import run_train

    sys.exit(run_train(list(ctx.args)))


@ab_app.command("report")
def ab_report(
    log: Annotated[Path, typer.Option("--log", help="Decision log (SQLite file or postgresql:// URL).")],
    experiment: Annotated[str | None, typer.Option(help="Experiment name (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Per-variant quality, cost, latency and utility with intervals and a sequential verdict."""
    from learned_router.experiments import ab_report as compute, print_ab_report
    from learned_router.stores import open_log_path

    try:
        store = open_log_path(log)  # a SQLite file, or a postgresql:// URL
    except (FileNotFoundError, ConnectionError) as exc:
        _fail(exc)
    try:
        data = compute(store, experiment=experiment)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        print_ab_report(data)


def main() -> None:
    app()
