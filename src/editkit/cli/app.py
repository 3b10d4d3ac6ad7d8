"""The `editkit` command line (Typer). Installed as `editkit.cli`.

Every command is wrapped in `@_cli_errors`: an `EditkitError` (or an invalid option set) ends in
one `error:` line on stderr and exit code 2, never a traceback. Heavy imports stay inside the
commands so that `--help` is fast.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar  # Optional: only eval_ still uses it

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from editkit.errors import EditkitError, InvalidInputError
from editkit.limits import MAX_NEW_TOKENS
from editkit.ptokens.config import DEFAULT_M

# rich_markup_mode=None: help text is printed as written. Rich markup would read `[quant]` in
# "editkit[quant]" as a style tag and drop it, and Typer's rich panels label every flag `<bool>`.
# The plain (Click) layout is 80 columns at most unless allowed wider.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  context_settings={"max_content_width": 120},
                  help="Edit facts a language model believes, in context, and ask about them.")
console = Console()


@app.callback()
def _global_options(
    verbose: bool = typer.Option(False, "--verbose", help="show the libraries' progress bars "
                                 "(loading weights, the first run's GGUF conversion)"),
) -> None:
    if not verbose:
        from editkit.compat import quiet_progress_bars

        quiet_progress_bars()


DEMO_FACT = "The mother tongue of Danielle Darrieux is English."
DEMO_QUESTION = "What is the mother tongue of Danielle Darrieux?"
DEMO_CLOZE = "The mother tongue of Danielle Darrieux is"  # scored: P(English) vs P(French)
DEMO_CANDIDATES = ["English", "French"]


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    return table


def _error(message: str) -> NoReturn:
    """One line on stderr, never re-wrapped, user text never read as rich markup; exit 2."""
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(
        "[red]error:[/red] " + escape(" ".join(message.split())))
    raise typer.Exit(code=2)


def _invalid(exc: ValidationError) -> str:
    """A pydantic error as one line: `field: message; field: message`."""
    return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'value'}: {e['msg']}"
                     for e in exc.errors())


F = TypeVar("F", bound=Callable[..., Any])


def _cli_errors(invalid: str = "invalid options") -> Callable[[F], F]:
    """Report what the user can fix as one `error:` line and exit 2, for a whole command.

    EditkitError: its message. pydantic ValidationError (a config built from the options):
    `<invalid>: field: message; ...`. `typer.Exit` (and anything else) passes through.
    """
    def wrap(command: F) -> F:
        @functools.wraps(command)  # Typer reads the options from the wrapped signature
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except EditkitError as exc:
                _error(str(exc))
            except ValidationError as exc:
                _error(f"{invalid}: {_invalid(exc)}")
        return run  # type: ignore[return-value]
    return wrap


@app.command()
@_cli_errors()
def demo(
    fact: str = typer.Option(DEMO_FACT, help="the new fact to store"),
    question: str = typer.Option(DEMO_QUESTION, help="what to ask before and after the edit"),
    model: str | None = typer.Option(None, help="HF id, local path or .gguf (default: "
                                              "embedded SmolLM2-135M-Instruct)"),
    max_new_tokens: int = typer.Option(32, min=1, max=256, help="at most this many tokens"),
) -> None:
    """Edit one fact of the embedded default model and show the answers before and after."""
    from editkit import EditableLM
    from editkit.records import MAX_QUESTION_CHARS, FactInput, clean_text

    # Bad input fails here, before the model loads, with the library's own wording.
    clean_text(question, "question", MAX_QUESTION_CHARS)
    FactInput.parse(fact)
    console.print("[dim]loading the model (the first run converts it, ~30 s)...[/dim]")
    lm = EditableLM.from_pretrained(model)
    console.print(f"[dim]{lm!r}[/dim]")
    table = _table(f"Q: {question!r}", "mode", "before edit()", "after edit()", "edit used")
    modes = ["prompt", "ptokens"]
    before = {m: lm.ask(question, mode=m, max_new_tokens=max_new_tokens) for m in modes}
    lm.edit(fact)
    for m in modes:
        after = lm.ask(question, mode=m, max_new_tokens=max_new_tokens)
        used = after.fact or "(none applied)"
        table.add_row(m, before[m].text, after.text, used)
    console.print(f"edit(): [bold]{fact}[/bold]")
    console.print(table)
    if question == DEMO_QUESTION and fact == DEMO_FACT:
        s = lm.score(DEMO_CLOZE, DEMO_CANDIDATES, mode="ptokens")
        console.print(f"mean log-prob of {DEMO_CLOZE!r} + ... after the edit (ptokens): "
                      + ", ".join(f"{c.candidate}: {c.mean_logprob:.2f}" for c in s.scores))


# --engine / --engine-model of ask, eval and serve (docs/engines.md)
ENGINE_OPTION = typer.Option(None, "--engine", help="URL of an OpenAI-compatible engine "
                             "(http://host:port/v1) serving --model, an `editkit export` "
                             "directory; docs/engines.md")
ENGINE_MODEL_OPTION = typer.Option(None, "--engine-model", help="the id the engine serves the "
                                   "model under (default: the only one it lists)")


@app.command()
@_cli_errors()
def ask(
    question: str = typer.Argument(..., help="the question or prompt to complete"),
    fact: list[str] = typer.Option([], "--fact", "-f", help="a fact to edit in (repeatable)"),
    memory: str | None = typer.Option(None, help="edit memory to read (and add to): an SQLite "
                                                 "file or a postgresql:// URL"),
    mode: str = typer.Option("ptokens", help="ptokens | ike | prompt | none"),
    model: str | None = typer.Option(None, help="HF id, local path or .gguf"),
    quantization: str | None = typer.Option(None, help="8bit | 4bit: load the model quantized "
                                                       "(bitsandbytes, `editkit[quant]`)"),
    ptokens: Path | None = typer.Option(None, help="a P-Token directory"),
    chat: bool | None = typer.Option(None, "--chat/--no-chat",
                                     help="lay the question out in the model's chat template, "
                                          "or not (default: the template for a question, "
                                          "inline for a sentence to complete)"),
    max_new_tokens: int = typer.Option(32, min=1, max=MAX_NEW_TOKENS,
                                       help="at most this many tokens"),
    stop: list[str] = typer.Option([], "--stop", help="end the answer before this text "
                                   "(repeatable; default: the end of the answer: the model's "
                                   "end of turn in the chat template, the first line inline)"),
    no_stop: bool = typer.Option(False, "--no-stop", help="generate to EOS or --max-new-tokens"),
    as_json: bool = typer.Option(False, "--json", help="print the Answer as JSON"),
    engine: str | None = ENGINE_OPTION,
    engine_model: str | None = ENGINE_MODEL_OPTION,
) -> None:
    """Ask a question with edits from --fact and/or a memory file.

    The answer goes to stdout; which edit was used (or why none was) to stderr.
    """
    from editkit.records import MAX_QUESTION_CHARS, FactInput, clean_text

    # Bad input fails here, before the model loads, with the library's own wording.
    question = clean_text(question, "question", MAX_QUESTION_CHARS)
    for f in fact:
        FactInput.parse(f)
    if stop and no_stop:
        raise InvalidInputError("--stop and --no-stop contradict each other; give one.")
    from editkit import EditableLM

    lm = EditableLM.from_pretrained(model, ptokens=ptokens, memory=memory, mode=mode,
                                    quantization=quantization, engine=engine,
                                    engine_model=engine_model)
    if fact:
        lm.edit(list(fact))
    answer = lm.ask(question, max_new_tokens=max_new_tokens, chat=chat,
                    stop=() if no_stop else (list(stop) or None))
    if as_json:
        typer.echo(json.dumps(answer.model_dump(), indent=2))
        return
    typer.echo(answer.text)
    Console(stderr=True, soft_wrap=True).print(_edit_note(lm, question, answer), style="dim",
                                               markup=False, highlight=False)


def _edit_note(lm: Any, question: str, answer: Any) -> str:
    """Which edit the answer used, or why none was placed (the retrieval policy's reason)."""
    from editkit.retrieval import Selection

    if answer.mode == "none":
        return "no edit applied: mode none leaves edits out of the prompt"
    if answer.edit is not None:  # the answer carries the placed edit: no second retrieval
        return Selection(answer.edit, answer.distractors).explain()
    if not lm.edits(lm.retrieval.namespace):
        return "no edit applied: no edit is stored (add one with --fact or --memory)"
    return lm.select(question).explain()  # why none: the candidates and the gate's verdicts


@app.command()
@_cli_errors()
def edits(
    memory: str = typer.Argument(..., help="SQLite edit memory file, or a postgresql:// URL"),
    namespace: str | None = typer.Option(None, help="only this namespace"),
) -> None:
    """List the edits stored in a memory file or a PostgreSQL memory."""
    from editkit.memory_url import open_memory, url_scheme

    if url_scheme(memory) is None and not Path(memory).is_file():
        raise InvalidInputError(f"no memory file at {memory}")
    with open_memory(memory) as mem:
        rows = mem.edits(namespace)
    table = _table(f"{len(rows)} edits in {mem.path}", "id", "namespace", "text")
    for e in rows:
        table.add_row(e.id, e.namespace, e.text)
    console.print(table)


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
                                               "mquake, wild (questions answered freely, judged; "
                                               "zsRE or ROME CounterFact)"),
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
                     gate_file=gate_file, routing_only=routing_only, oracle=oracle)
    from editkit.eval import get_task
    from editkit.eval.registry import data_for

    # A missing data set, a bad data file or an unknown task fails here, before the model loads.
    path = data_for(cfg)
    fmt, _ = load_records(path)
    get_task(cfg.task or fmt, fmt)
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
    from editkit.training import TrainConfig, Trainer, load_training_records

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


@app.command()
@_cli_errors()
def export(
    out: Path = typer.Argument(..., help="directory for the Hugging Face checkpoint"),
    format: str = typer.Option("hf", "--format", help="hf (the only format so far)"),
    model: str | None = typer.Option(None, help="HF id, local path or .gguf"),
    ptokens: Path | None = typer.Option(None, help="a P-Token directory (default: shipped)"),
    overwrite: bool = typer.Option(False, help="replace OUT if it exists"),
) -> None:
    """Write a plain HF checkpoint whose vocabulary holds the P-Tokens (for vLLM, TGI, ...)."""
    from editkit import EditableLM
    from editkit.export import export_hf

    if format != "hf":
        raise InvalidInputError(f"unknown format {format!r}; supported: hf")
    lm = EditableLM.from_pretrained(model, ptokens=ptokens, mode="ptokens")
    path = export_hf(lm.model, lm.tokenizer, lm.ptokens, out, overwrite=overwrite)
    console.print(f"exported {path} (P-Tokens: {lm.ptokens_source}); prompt layout in "
                  f"{path / 'PROMPT_TEMPLATE.md'}")


@app.command()
@_cli_errors()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8000, min=1, max=65535),
    model: str | None = typer.Option(None, help="HF id, local path, .gguf or short name"),
    memory: str | None = typer.Option(None, help="edit memory: an SQLite file or a "
                                                 "postgresql:// URL shared by replicas "
                                                 "(default: in RAM)"),
    keys: Path | None = typer.Option(None, help="JSON file {api key: namespace}; without it "
                                                "the server is open (default namespace)"),
    prefix_store_mb: float = typer.Option(64.0, min=0.0,
                                          help="memory for the keys and values of edit prefixes "
                                               "reused across a tenant's requests (0: off)"),
    engine: str | None = ENGINE_OPTION,
    engine_model: str | None = ENGINE_MODEL_OPTION,
) -> None:
    """Serve the OpenAI API (/v1/chat/completions, /v1/completions) plus /v1/edits."""
    import json

    import uvicorn

    from editkit import EditableLM
    from editkit.serve import create_app

    key_map = None
    if keys is not None:
        try:
            key_map = json.loads(keys.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"--keys {keys}: not a readable JSON file ({exc}).") from exc
        if not isinstance(key_map, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in key_map.items()):
            raise InvalidInputError(f"--keys {keys}: expected {{\"api key\": \"namespace\"}}.")
    lm = EditableLM.from_pretrained(model, memory=memory, prefix_store_mb=prefix_store_mb,
                                    engine=engine, engine_model=engine_model)
    console.print(f"editkit serve: {lm.name} on http://{host}:{port}/v1 "
                  f"{'(engine ' + engine + ') ' if engine else ''}"
                  f"({'keys: ' + str(len(key_map)) if key_map else 'open, no keys'})")
    uvicorn.run(create_app(lm, key_map), host=host, port=port, log_level="warning")


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
