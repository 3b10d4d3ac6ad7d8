"""The `editkit` command line (Typer). Installed as `editkit.cli`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from pydantic import ValidationError
from rich.table import Table

from editkit.errors import EditkitError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Edit facts a language model believes, in context, and ask about them.")
console = Console()

DEMO_FACT = "The mother tongue of Danielle Darrieux is English."
DEMO_QUESTION = "The mother tongue of Danielle Darrieux is"
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


def _fail(exc: EditkitError) -> NoReturn:
    _error(str(exc))


def _invalid(exc: ValidationError) -> str:
    """A pydantic error as one line: `field: message; field: message`."""
    return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'value'}: {e['msg']}"
                     for e in exc.errors())


@app.command()
def demo(
    fact: str = typer.Option(DEMO_FACT, help="the new fact to store"),
    question: str = typer.Option(DEMO_QUESTION, help="what to ask before and after the edit"),
    model: Optional[str] = typer.Option(None, help="HF id, local path or .gguf (default: "
                                                   "embedded SmolLM2-135M-Instruct)"),
    max_new_tokens: int = typer.Option(8, min=1, max=256),
) -> None:
    """Edit one fact of the embedded default model and show the answers before and after."""
    from editkit import EditableLM

    try:
        console.print("[dim]loading the model (the first run converts it, ~30 s)...[/dim]")
        lm = EditableLM.from_pretrained(model)
        console.print(f"[dim]{lm!r}[/dim]")
        table = _table(f"Q: {question!r}", "mode", "before edit()", "after edit()", "edit used")
        modes = ["prompt", "ptokens"]
        before = {m: lm.ask(question, mode=m, max_new_tokens=max_new_tokens) for m in modes}
        lm.edit(fact)
        for m in modes:
            after = lm.ask(question, mode=m, max_new_tokens=max_new_tokens)
            used = after.edit.edit.text if after.edit else "(none retrieved)"
            table.add_row(m, before[m].text, after.text, used)
        console.print(f"edit(): [bold]{fact}[/bold]")
        console.print(table)
        if question == DEMO_QUESTION and fact == DEMO_FACT:
            s = lm.score(question, DEMO_CANDIDATES, mode="ptokens")
            console.print("mean log-prob after the edit (ptokens): " + ", ".join(
                f"{c.candidate}: {c.mean_logprob:.2f}" for c in s.scores))
        console.print(f"[dim]P-Tokens: {lm.ptokens_source}[/dim]")
    except EditkitError as exc:
        _fail(exc)


@app.command()
def ask(
    question: str = typer.Argument(..., help="the question or prompt to complete"),
    fact: list[str] = typer.Option([], "--fact", "-f", help="a fact to edit in (repeatable)"),
    memory: Optional[Path] = typer.Option(None, help="SQLite edit memory to read (and add to)"),
    mode: str = typer.Option("ptokens", help="ptokens | ike | prompt | none"),
    model: Optional[str] = typer.Option(None, help="HF id, local path or .gguf"),
    ptokens: Optional[Path] = typer.Option(None, help="a P-Token directory"),
    max_new_tokens: int = typer.Option(32, min=1, max=4096),
    as_json: bool = typer.Option(False, "--json", help="print the Answer as JSON"),
) -> None:
    """Ask a question with edits from --fact and/or a memory file."""
    from editkit import EditableLM

    try:
        lm = EditableLM.from_pretrained(model, ptokens=ptokens, memory=memory, mode=mode)
        if fact:
            lm.edit(list(fact))
        answer = lm.ask(question, max_new_tokens=max_new_tokens)
    except EditkitError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(answer.model_dump(), indent=2))
    else:
        typer.echo(answer.text)


@app.command()
def edits(
    memory: Path = typer.Argument(..., help="SQLite edit memory file"),
    namespace: Optional[str] = typer.Option(None, help="only this namespace"),
) -> None:
    """List the edits stored in a memory file."""
    from editkit.memory import EditMemory

    if not memory.is_file():
        _error(f"no memory file at {memory}")
    try:
        with EditMemory(memory) as mem:
            rows = mem.edits(namespace)
    except EditkitError as exc:
        _fail(exc)
        return
    table = _table(f"{len(rows)} edits in {memory}", "id", "namespace", "text")
    for e in rows:
        table.add_row(e.id, e.namespace, e.text)
    console.print(table)


@app.command("eval")
def eval_(
    data: Path = typer.Option(..., help="data file: ROME/EasyEdit CounterFact, zsRE or MQuAKE"),
    mode: str = typer.Option("ptokens", help="ptokens | ike | prompt | none"),
    limit: Optional[int] = typer.Option(None, min=1, help="first N records only"),
    distractors: int = typer.Option(0, min=0, help="unrelated other edits in every prompt"),
    memory_size: int = typer.Option(0, min=0, help="answer through retrieval from a memory of "
                                                   "this many edits (0: fact given directly)"),
    out: Optional[Path] = typer.Option(None, help="write the full report (per record) as JSON"),
    plot: Optional[Path] = typer.Option(None, help="save a bar chart of the metrics (PNG)"),
    demos: Optional[Path] = typer.Option(None, help="IKE demonstration file (default: vendored "
                                                    "train split)"),
    model: Optional[str] = typer.Option(None, help="HF id, local path or .gguf"),
    ptokens: Optional[Path] = typer.Option(None, help="a P-Token directory"),
    seed: int = typer.Option(0),
    ike_self_copy: bool = typer.Option(False, "--ike-self-copy",
                                       help="IKE variant: also a copy demonstration of the fact "
                                            "itself (original IKE; default: EasyEdit's, without)"),
) -> None:
    """Evaluate one mode on a data set: an lm-eval-style table, and JSON with --out."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from editkit import EditableLM
    from editkit.datasets import load_records
    from editkit.eval import EvalConfig, evaluate

    try:
        cfg = EvalConfig(data=data, mode=mode, limit=limit, distractors=distractors,
                         memory_size=memory_size, demos=demos, seed=seed,
                         ike_self_copy=ike_self_copy)
        load_records(cfg.data)  # a bad data file fails here, before the model loads
        lm = EditableLM.from_pretrained(model, ptokens=ptokens)
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task(f"{mode} on {data.name}", total=None)
            report = evaluate(lm, cfg, progress=lambda i, n: bar.update(task, completed=i,
                                                                          total=n))
    except EditkitError as exc:
        _fail(exc)
        return
    except ValidationError as exc:
        _error(f"invalid options: {_invalid(exc)}")
    console.print(f"{report.format} | mode={mode} | distractors={distractors} | "
                  f"memory={memory_size} | records={int(report.timing['records'])} | "
                  f"{report.timing['seconds']:.0f} s | P-Tokens: {report.ptokens}")
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
def train(
    out: Path = typer.Option(..., help="directory for the trained P-Tokens (+ checkpoint/)"),
    m: Optional[int] = typer.Option(None, min=1, max=64, help="begin/end token pairs "
                                                            "(default: the config's, else 3)"),
    data: Optional[Path] = typer.Option(None, help="EasyEdit CounterFact training file"),
    config: Optional[Path] = typer.Option(None, help="JSON or YAML file of TrainConfig fields "
                                                     "(command-line options override it)"),
    n_train: Optional[int] = typer.Option(None, min=1, help="training records"),
    n_val: Optional[int] = typer.Option(None, min=1, help="validation records"),
    epochs: Optional[int] = typer.Option(None, min=1),
    lr: Optional[float] = typer.Option(None),
    model: Optional[str] = typer.Option(None, help="HF id, local path or .gguf"),
    resume: bool = typer.Option(False, help="continue from OUT/checkpoint"),
) -> None:
    """Train P-Tokens by distilling the IKE prompt (KL to the teacher at answer positions)."""
    from editkit.datasets import load_counterfact
    from editkit.loading import load_model
    from editkit.training import TrainConfig, Trainer

    try:
        fields: dict[str, Any] = {}
        if config is not None:
            fields = _read_config(config)
        given = {"m": m, "data": data, "n_train": n_train, "n_val": n_val, "epochs": epochs,
                 "lr": lr}
        fields.update({k: v for k, v in given.items() if v is not None})
        cfg = TrainConfig.model_validate(fields)
        if cfg.data is not None:
            load_counterfact(cfg.data)  # a bad data file fails here, before the model loads
        loaded = load_model(model)
    except ValidationError as exc:
        _error(f"invalid training config: {_invalid(exc)}")
        return
    except EditkitError as exc:
        _fail(exc)
        return
    table = _table(f"training m={cfg.m} on {cfg.n_train} records", "epoch", "train loss",
                   "val loss", "val ES", "val PS", "val NS", "val S")

    def log(row: dict[str, Any]) -> None:
        console.print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items()))
        table.add_row(str(row["epoch"]), f"{row.get('train_kl', float('nan')):.4f}",
                      f"{row['val_kl']:.4f}",
                      *(f"{row.get('val_' + k, float('nan')):.1f}" for k in ("ES", "PS", "NS", "S")))

    trainer = Trainer(loaded.model, loaded.tokenizer, loaded.name, cfg, log=log)
    try:
        with console.status("computing the teacher (cached after the first run)..."):
            pt = trainer.run(out, resume=resume)
    except EditkitError as exc:
        _fail(exc)
        return
    console.print(table)
    console.print(f"saved {out} (best epoch {pt.config.training['best_epoch']}, val KL "
                  f"{pt.config.training['best_val_kl']:.4f}, {pt.config.training['seconds']} s)")


@app.command()
def export(
    out: Path = typer.Argument(..., help="directory for the Hugging Face checkpoint"),
    format: str = typer.Option("hf", "--format", help="hf (the only format so far)"),
    model: Optional[str] = typer.Option(None, help="HF id, local path or .gguf"),
    ptokens: Optional[Path] = typer.Option(None, help="a P-Token directory (default: shipped)"),
    overwrite: bool = typer.Option(False, help="replace OUT if it exists"),
) -> None:
    """Write a plain HF checkpoint whose vocabulary holds the P-Tokens (for vLLM, TGI, ...)."""
    from editkit import EditableLM
    from editkit.export import export_hf

    if format != "hf":
        _error(f"unknown format {format!r}; supported: hf")
    try:
        lm = EditableLM.from_pretrained(model, ptokens=ptokens, mode="ptokens")
        path = export_hf(lm.model, lm.tokenizer, lm.ptokens, out, overwrite=overwrite)
    except EditkitError as exc:
        _fail(exc)
        return
    console.print(f"exported {path} (P-Tokens: {lm.ptokens_source}); prompt layout in "
                  f"{path / 'PROMPT_TEMPLATE.md'}")


BENCHMARKS = ("latency", "throughput", "memory_scale", "cold_start", "injection")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": []})  # --help goes to the benchmark
def bench(ctx: typer.Context,
          name: str = typer.Argument(..., help=f"one of: {', '.join(BENCHMARKS)}")) -> None:
    """Run a benchmark (a table on stdout, JSON in results/bench/); extra options go to it,
    e.g. `editkit bench latency --n 10`, `editkit bench memory_scale --help`."""
    import importlib

    if name not in BENCHMARKS:
        console.print(f"[red]error:[/red] unknown benchmark {name!r}; choose one of: "
                      f"{', '.join(BENCHMARKS)}")
        raise typer.Exit(code=2)
    importlib.import_module(f"editkit.benchmarks.{name}").main(list(ctx.args))


def _read_config(path: Path) -> dict[str, Any]:
    """The fields of a JSON or YAML training config; every problem exits 2 with one line."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        _error(f"invalid training config: cannot read {path}: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        _error(f"invalid training config: {path} is not UTF-8 text (byte {exc.start}).")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            fields = yaml.safe_load(text) or {}
        else:
            fields = json.loads(text)
    except ImportError:
        _error("invalid training config: YAML configs need PyYAML (pip install pyyaml).")
    except RecursionError:
        _error(f"invalid training config: {path} is nested too deeply.")
    except Exception as exc:  # noqa: BLE001 - JSONDecodeError, YAMLError: the parser's message
        _error(f"invalid training config: {path} does not parse: {exc}")
    if not isinstance(fields, dict) or not all(isinstance(k, str) for k in fields):
        what = type(fields).__name__ if not isinstance(fields, dict) else "non-text keys"
        _error(f"invalid training config: {path} must hold a mapping of TrainConfig field "
               f"names to values, not {what}.")
    return fields


def _plot(report: Any, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        console.print("[red]error:[/red] --plot needs matplotlib: pip install 'editkit[plot]'")
        raise typer.Exit(code=2) from None
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
