"""`editkit eval`, `editkit train` and `editkit bench`: the commands that measure P-Tokens and make
them. They register on the one Typer `app` (`cli/common.py`); `cli/app.py` imports this module."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from editkit.errors import InvalidInputError
from editkit.ptokens.config import DEFAULT_M

from .common import ENGINE_MODEL_OPTION, ENGINE_OPTION, _cli_errors, _table, app, console


@app.command("eval")
@_cli_errors()
def eval_(
    data: Path | None = typer.Option(None, help="data file: ROME/EasyEdit CounterFact, zsRE or "
                                              "MQuAKE (default: the task's data set, shipped with "
                                              "editkit; $EDITKIT_DATA overrides the folder)"),
    mode: str = typer.Option("ptokens", help="ptokens | ike | prompt | none"),
    limit: int | None = typer.Option(None, min=1, help="first N records only"),
    distractors: int = typer.Option(0, min=0, help="unrelated other edits in every prompt"),
    memory_size: int = typer.Option(0, min=0, help="answer through retrieval from a memory of "
                                                   "this many edits (0: fact given directly)"),
    out: Path | None = typer.Option(None, help="write the full report (per record) as JSON"),
    plot: Path | None = typer.Option(None, help="save a bar chart of the metrics (PNG)"),
    demos: Path | None = typer.Option(None, help="IKE demonstration file (default: vendored "
                                                    "train split)"),
    model: str | None = typer.Option(None, help="HF id, local path or .gguf"),
    quantization: str | None = typer.Option(None, help="8bit | 4bit: load the model quantized "
                                                       "(bitsandbytes, `editkit[quant]`)"),
    ptokens: Path | None = typer.Option(None, help="a P-Token directory"),
    seed: int = typer.Option(0),
    ike_self_copy: bool = typer.Option(False, "--ike-self-copy",
                                       help="IKE variant: also a copy demonstration of the fact "
                                            "itself (original IKE; default: EasyEdit's, without)"),
    gate: str | None = typer.Option(None, help="memory setting: the retrieval policy's relevance "
                                               "gate, learned | threshold (default: the model's)"),
    gate_file: Path | None = typer.Option(None, help="memory setting: a relevance gate artifact "
                                                     "(train_gate) instead of the shipped one"),
    routing_only: bool = typer.Option(False, "--routing-only",
                                      help="memory setting: only what reached the prompt (no "
                                           "scoring; seconds instead of minutes)"),
    oracle: bool = typer.Option(True, "--oracle/--no-oracle",
                                help="memory setting: also score each record with its own edit "
                                     "given (the oracle_* rows; doubles the scoring)"),
    task: str | None = typer.Option(None, help="evaluation task (default: the file format's; "
                                               "without --data, counterfact-rome): "
                                               "counterfact-rome, counterfact, counterfact-probes "
                                               "(ROME ES/PS/NS/S on EasyEdit CounterFact), zsre, "
                                               "mquake, mquake-multihop, wild (questions answered "
                                               "freely, judged; zsRE or ROME CounterFact), "
                                               "wild-questions (ROME CounterFact asked as "
                                               "questions), updates (a fact edited again: "
                                               "newest value shown, forget restores)"),
    judge_model: str | None = typer.Option(None, help="wild tasks: also grade each answer with "
                                                      "this model ('self': the evaluated model, "
                                                      "unedited; an alias, Hub id or path)"),
    app_facts: int = typer.Option(0, min=0, help="updates task: also evaluate the first N "
                                                 "app-style facts (test split) after the data "
                                                 "file's records"),
    engine: str | None = ENGINE_OPTION,
    engine_model: str | None = ENGINE_MODEL_OPTION,
) -> None:
    """Evaluate one mode on a data set: an lm-eval-style table, and JSON with --out."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from editkit import EditableLM
    from editkit.datasets import load_records
    from editkit.eval import EvalConfig, evaluate

    cfg = EvalConfig(data=data, mode=mode, limit=limit, distractors=distractors,
                     memory_size=memory_size, demos=demos, seed=seed,
                     ike_self_copy=ike_self_copy, gate=gate, task=task,
                     gate_file=gate_file, routing_only=routing_only, oracle=oracle,
                     judge_model=judge_model, app_facts=app_facts)
    from editkit.eval import get_task
    from editkit.eval.registry import check_judge, data_for

    # A missing data set, a bad data file or an unknown task fails here, before the model loads.
    path = data_for(cfg)
    fmt, _ = load_records(path)
    check_judge(cfg, get_task(cfg.task or fmt, fmt))
    lm = EditableLM.from_pretrained(model, ptokens=ptokens, quantization=quantization,
                                    engine=engine, engine_model=engine_model)
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(f"{mode} on {path.name}", total=None)
        report = evaluate(lm, cfg, progress=lambda i, n: bar.update(task, completed=i,
                                                                      total=n))
    # only P-Token mode puts the P-Tokens in a prompt: elsewhere naming them would mislead
    used = f" | P-Tokens: {report.ptokens}" if cfg.mode == "ptokens" else ""
    console.print(f"{report.format} | mode={mode} | distractors={distractors} | "
                  f"memory={memory_size} | records={int(report.timing['records'])} | "
                  f"{report.timing['seconds']:.0f} s{used}")
    console.print(report.settings_line())
    if report.settings.get("skipped"):
        skipped = report.settings["skipped"]
        console.print(f"skipped {len(skipped)} record(s): {skipped[0]['reason']} "
                      f"(first: record {skipped[0]['index']})")
    typer.echo(report.table())
    if out:
        console.print(f"wrote {report.save(out)}")
    if plot:
        _plot(report, plot)


@app.command()
@_cli_errors(invalid="invalid training config")
def train(
    out: Path = typer.Option(..., help="directory for the trained P-Tokens (+ checkpoint/)"),
    m: int | None = typer.Option(None, min=1, max=64, help="begin/end token pairs "
                                 f"(default: the config's, else {DEFAULT_M})"),
    data: list[Path] | None = typer.Option(None, help="training file, EasyEdit CounterFact or "
                                           "zsRE; repeat it to mix files (they take turns)"),
    config: Path | None = typer.Option(None, help="JSON or YAML file of TrainConfig fields "
                                                  "(command-line options override it)"),
    n_train: int | None = typer.Option(None, min=1, help="training records"),
    n_val: int | None = typer.Option(None, min=1, help="validation records"),
    epochs: int | None = typer.Option(None, min=1),
    lr: float | None = typer.Option(None),
    model: str | None = typer.Option(None, help="HF id, local path or .gguf"),
    quantization: str | None = typer.Option(None, help="8bit | 4bit: train on the quantized "
                                                       "model (frozen; the P-Token rows stay "
                                                       "float32)"),
    simulate_quantization: bool = typer.Option(
        False, help="with --quantization 4bit: train on a float32 copy holding the 4-bit "
        "weights dequantized (several times faster on a CPU; filed as 4bit tokens)"),
    init_from: Path | None = typer.Option(None, help="start from this P-Token directory's rows "
                                          "(same model and m), e.g. the full-precision set"),
    resume: bool = typer.Option(False, help="continue from OUT/checkpoint"),
) -> None:
    """Train P-Tokens by distilling the IKE prompt (KL to the teacher at answer positions)."""
    from editkit.loading import load_model
    from editkit.train import TrainConfig, Trainer, load_training_records

    fields = _read_config(config) if config is not None else {}
    given = {"m": m, "data": data or None, "n_train": n_train, "n_val": n_val, "epochs": epochs,
             "lr": lr, "init_from": str(init_from) if init_from is not None else None}
    fields.update({k: v for k, v in given.items() if v is not None})
    cfg = TrainConfig.model_validate(fields)
    load_training_records(cfg)  # a bad data file or impossible sizes fail before the model loads
    if simulate_quantization and quantization != "4bit":
        raise InvalidInputError("--simulate-quantization needs --quantization 4bit.")
    loaded = load_model(model, quantization=quantization)
    if simulate_quantization:
        from editkit.loading import simulate_quantized

        loaded = simulate_quantized(load_model(model), loaded)
    table = _table(f"training m={cfg.m} on {cfg.n_train} records", "epoch", "records seen",
                   "train loss", "val loss", "val ES", "val PS", "val NS", "val S")

    def log(row: dict[str, Any]) -> None:
        console.print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items()))
        table.add_row(str(row["epoch"]), str(row["records_seen"]),
                      f"{row.get('train_kl', float('nan')):.4f}",
                      f"{row['val_kl']:.4f}",
                      *(f"{row.get('val_' + k, float('nan')):.1f}"
                        for k in ("ES", "PS", "NS", "S")))

    trainer = Trainer(loaded.model, loaded.tokenizer, loaded.name, cfg, log=log)
    with console.status("computing the teacher (cached after the first run)..."):
        pt = trainer.run(out, resume=resume)
    console.print(table)
    info = pt.config.training
    console.print(f"saved {out} (best: epoch {info['best_epoch']}, {info['best_records_seen']} "
                  f"records seen, val S {info['best_val_scores']['S']:.1f}, val KL "
                  f"{info['best_val_kl']:.4f}; {info['seconds']} s)")


BENCHMARKS = ("latency", "throughput", "memory_scale", "cold_start", "injection", "retrieval",
              "batched", "serve_load", "engines")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": []},  # --help goes to the benchmark
             short_help="Run a benchmark (a table on stdout, JSON in results/bench/); extra "
                        "options go to it.")
@_cli_errors()
def bench(ctx: typer.Context,
          name: str = typer.Argument(..., help=f"one of: {', '.join(BENCHMARKS)}")) -> None:
    """Run a benchmark (a table on stdout, JSON in results/bench/); extra options go to it,
    e.g. `editkit bench latency --n 10`, `editkit bench memory_scale --help`."""
    import importlib

    if name not in BENCHMARKS:
        raise InvalidInputError(f"unknown benchmark {name!r}; choose one of: "
                                f"{', '.join(BENCHMARKS)}")
    importlib.import_module(f"editkit.benchmarks.{name}").main(list(ctx.args))


def _read_config(path: Path) -> dict[str, Any]:
    """The fields of a JSON or YAML training config; every problem is one InvalidInputError."""
    from editkit.fileio import read_utf8

    def bad(why: str) -> InvalidInputError:
        return InvalidInputError(f"invalid training config: {why}")

    try:
        text = read_utf8(path, what="Training config")
    except InvalidInputError as exc:
        raise bad(str(exc)) from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            fields = yaml.safe_load(text) or {}
        else:
            fields = json.loads(text)
    except ImportError:
        raise bad("YAML configs need PyYAML (pip install pyyaml).") from None
    except RecursionError:
        raise bad(f"{path} is nested too deeply.") from None
    except Exception as exc:  # noqa: BLE001 - JSONDecodeError, YAMLError: the parser's message
        raise bad(f"{path} does not parse: {exc}") from None
    if not isinstance(fields, dict) or not all(isinstance(k, str) for k in fields):
        what = type(fields).__name__ if not isinstance(fields, dict) else "non-text keys"
        raise bad(f"{path} must hold a mapping of TrainConfig field names to values, not {what}.")
    return fields


def _plot(report: Any, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidInputError("--plot needs matplotlib: pip install 'editkit[plot]'") from None
    names = [m.name for m in report.metrics.values()]
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(names), 3))
    ax.bar(names, [m.value for m in report.metrics.values()],
           yerr=[m.stderr for m in report.metrics.values()])
    ax.set_title(f"{report.format}, mode={report.config['mode']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    console.print(f"wrote {path}")
