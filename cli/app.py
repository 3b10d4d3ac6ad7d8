"""The `editkit` command line (Typer). Installed as `editkit.cli`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from editkit.errors import EditkitError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Edit facts a language model believes, in context, and ask about them.")
console = Console()

DEMO_FACT = "The mother tongue of Danielle Darrieux is English."
DEMO_QUESTION = "The mother tongue of Danielle Darrieux is"
DEMO_CANDIDATES = ["English", "French"]


def _fail(exc: EditkitError) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(code=2)


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
        table = Table(title=f"Q: {question!r}")
        for col in ("mode", "before edit()", "after edit()", "edit used"):
            table.add_column(col)
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
        console.print(f"[red]error:[/red] no memory file at {memory}")
        raise typer.Exit(code=2)
    try:
        with EditMemory(memory) as mem:
            rows = mem.edits(namespace)
    except EditkitError as exc:
        _fail(exc)
        return
    table = Table(title=f"{len(rows)} edits in {memory}")
    for col in ("id", "namespace", "text"):
        table.add_column(col)
    for e in rows:
        table.add_row(e.id, e.namespace, e.text)
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
