"""The `editkit` command line (Typer). Installed as `editkit.cli`.

Every command is wrapped in `@_cli_errors`: an `EditkitError` (or an invalid option set) ends in
one `error:` line on stderr and exit code 2, never a traceback. Heavy imports stay inside the
commands so that `--help` is fast.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from editkit.errors import InvalidInputError
from editkit.limits import MAX_NEW_TOKENS

from .common import (
    ENGINE_MODEL_OPTION,
    ENGINE_OPTION,
    _cli_errors,
    _table,
    app,
    console,
)

DEMO_FACT = "The mother tongue of Danielle Darrieux is English."
DEMO_QUESTION = "What is the mother tongue of Danielle Darrieux?"
DEMO_CLOZE = "The mother tongue of Danielle Darrieux is"  # scored: P(English) vs P(French)
DEMO_CANDIDATES = ["English", "French"]


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
    key: str | None = typer.Option(None, help="the slot key of the one --fact: it replaces the "
                                              "stored edit with this key"),
    on_update: str = typer.Option("latest", help="latest | keep-both | refuse: what a --fact "
                                                 "that gives a new value for a stored one does"),
    as_of: str | None = typer.Option(None, help="answer with the edits live at this time (ISO "
                                                "8601, e.g. 2027-03-03T12:00:00+00:00)"),
    engine: str | None = ENGINE_OPTION,
    engine_model: str | None = ENGINE_MODEL_OPTION,
) -> None:
    """Ask a question with edits from --fact and/or a memory file.

    The answer goes to stdout; which edit was used (or why none was), and what a --fact
    superseded, to stderr.
    """
    from editkit.records import MAX_QUESTION_CHARS, FactInput, check_key, clean_text
    from editkit.retrieval.updates import check_on_update

    # Bad input fails here, before the model loads, with the library's own wording.
    question = clean_text(question, "question", MAX_QUESTION_CHARS)
    for f in fact:
        FactInput.parse(f)
    if stop and no_stop:
        raise InvalidInputError("--stop and --no-stop contradict each other; give one.")
    if key is not None and len(fact) != 1:
        raise InvalidInputError("--key names the slot of one --fact; give exactly one.")
    key = None if key is None else check_key(key)
    check_on_update(on_update)
    when = None if as_of is None else _parse_time(as_of)
    from editkit import EditableLM

    lm = EditableLM.from_pretrained(model, ptokens=ptokens, memory=memory, mode=mode,
                                    quantization=quantization, engine=engine,
                                    engine_model=engine_model, on_update=on_update)
    err = Console(stderr=True, soft_wrap=True)
    if fact:
        added = lm.add_edits(fact[0] if key else list(fact), key=key)
        for e in added:
            if e.supersedes:
                err.print(f"edit {e.id} supersedes {', '.join(e.supersedes)}", style="dim",
                          markup=False, highlight=False)
    answer = lm.ask(question, max_new_tokens=max_new_tokens, chat=chat, as_of=when,
                    stop=() if no_stop else (list(stop) or None))
    if as_json:
        typer.echo(json.dumps(answer.model_dump(), indent=2))
        return
    typer.echo(answer.text)
    err.print(_edit_note(lm, question, answer), style="dim", markup=False, highlight=False)


def _parse_time(text: str) -> datetime:
    """An ISO 8601 time from the command line (a date alone is its midnight, local time)."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInputError(f"{text!r} is not an ISO 8601 time (e.g. 2027-03-03 or "
                                "2027-03-03T12:00:00+00:00).") from None


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
    history: bool = typer.Option(False, "--history", help="also the superseded edits, with "
                                                          "what replaced each and when"),
    as_of: str | None = typer.Option(None, help="the edits live at this time (ISO 8601)"),
    as_json: bool = typer.Option(False, "--json", help="print the edits as JSON"),
) -> None:
    """List the edits stored in a memory file or a PostgreSQL memory (the live ones; with
    --history every edit kept, with --as-of those live at that time)."""
    from editkit.retrieval.updates import edits_as_of
    from editkit.retrieval.urls import open_memory, url_scheme

    when = None if as_of is None else _parse_time(as_of)
    if url_scheme(memory) is None and not Path(memory).is_file():
        raise InvalidInputError(f"no memory file at {memory}")
    with open_memory(memory) as mem:
        rows = (mem.edits(namespace, history=history) if when is None
                else edits_as_of(mem, namespace, when))
    if as_json:
        typer.echo(json.dumps([e.model_dump() for e in rows], indent=2))
        return
    what = "edits" if history else "live edits" if when is None else f"edits live at {as_of}"
    cols = ("id", "namespace", "key", "text") + (("status",) if history else ())
    table = _table(f"{len(rows)} {what} in {mem.path}", *cols)
    for e in rows:
        status = ("live" if e.live else f"superseded by {e.superseded_by} at "
                  f"{datetime.fromtimestamp(e.superseded_at or 0).isoformat(timespec='seconds')}")
        table.add_row(e.id, e.namespace, e.key or "", e.text, *((status,) if history else ()))
    console.print(table)


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


# The commands that measure and make P-Tokens (eval, train, bench) live in their own module;
# importing it registers them on `app`.
from . import experiments  # noqa: E402, F401


def main() -> None:
    app()


if __name__ == "__main__":
    main()
