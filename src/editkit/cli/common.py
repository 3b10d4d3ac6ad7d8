"""What every `editkit` command shares: the one Typer `app`, the console, the error wrapper that
turns editkit's typed errors into one `error:` line, and the options several commands take.
`cli/app.py` (demo, ask, edits, export, serve) and `cli/experiments.py` (eval, train, bench)
register their commands on `app`."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from editkit.errors import EditkitError

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


# --engine / --engine-model of ask, eval and serve (docs/engines.md)
ENGINE_OPTION = typer.Option(None, "--engine", help="URL of an OpenAI-compatible engine "
                             "(http://host:port/v1) serving --model, an `editkit export` "
                             "directory; docs/engines.md")
ENGINE_MODEL_OPTION = typer.Option(None, "--engine-model", help="the id the engine serves the "
                                   "model under (default: the only one it lists)")
