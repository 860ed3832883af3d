"""How the `pz-dagster` CLI reports a mistake: one line that says what to fix, with every URL and
secret-looking variable value redacted; `--verbose` (before or after the command) prints the
traceback above that line. Imported by `pz-dagster --help`: it imports no Dagster (that takes
seconds), and finds Dagster's errors only where Dagster was imported.

>>> one_line(ValueError("first\\n  second"))
'ValueError: first second'
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click
import yaml
from pydantic import ValidationError

from pz_dagster.errors import PzError
from pz_dagster.redact import redact_text

if TYPE_CHECKING:
    import dagster as dg

VERBOSE = "pz_dagster.verbose"  # key in the root click context's meta
VERBOSE_HELP = (
    "Show Dagster's INFO logs while running, and the full traceback of an error "
    "(also accepted before the command: pz-dagster --verbose run)."
)
# Names of variables whose values are secrets; their values are blanked in error output.
# (PWD, SSH_AUTH_SOCK and the like hold paths, not secrets: names must end in one of these.)
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.I)
# Pydantic loc parts that name a validator or a union branch rather than a field: Dagster's
# derived models accept every field as `<its type> | str` (a template), and that `str` branch
# fails beside the real problem.
_VALIDATOR_PART = re.compile(r"^[\w-]+\[.*\]$")


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_root().meta[VERBOSE] = True


def verbose_option(command: Any) -> Any:
    """``--verbose`` for the group and every command; it sets one flag, read by ``is_verbose``."""
    return click.option(
        "--verbose",
        is_flag=True,
        expose_value=False,
        callback=_set_verbose,
        help=VERBOSE_HELP,
    )(command)


def is_verbose() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().meta.get(VERBOSE))


def _secret_values() -> list[str]:
    return [
        v
        for k, v in os.environ.items()
        if _SECRET_NAME.search(k) and len(v) >= 8 and not v.startswith(("/", "."))
    ]


def clean(text: str) -> str:
    """One line: whitespace runs (newlines included) collapsed, URLs and secrets redacted."""
    return redact_text(" ".join(text.split()), _secret_values())


def validation_problems(exc: ValidationError) -> str:
    """``field: problem; ...`` without the input values (a value may be a key).

    Dagster's derived models take every field as ``<its type> | str`` (a template): the ``str``
    branch fails beside the real problem and is left out, and so is the branch's label (the
    member's class name) in the other errors' locations."""
    errors = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        path = ".".join(str(p) for p in err["loc"]).split(" at ")[0]  # Dagster adds " at <pos>"
        parts = [p for p in path.split(".") if not _VALIDATOR_PART.match(p)]
        errors.append((parts, err["msg"].removeprefix("Value error, ")))
    unions = {tuple(parts[:-1]) for parts, _ in errors if parts[-1:] == ["str"]}
    out = []
    for parts, msg in errors:
        if parts[-1:] == ["str"]:
            if any(q[: len(parts) - 1] == parts[:-1] and q[-1:] != ["str"] for q, _ in errors):
                continue  # the template branch, beside the real problem
            parts = parts[:-1]
        for n in range(len(parts) - 1, 0, -1):
            if tuple(parts[:n]) in unions and parts[n][:1].isupper():
                parts = parts[:n] + parts[n + 1 :]  # the union branch's label
                break
        out.append(f"{'.'.join(parts)}: {msg}" if parts else msg)
    return "; ".join(dict.fromkeys(out))


def yaml_problem(exc: yaml.YAMLError) -> str:
    """``YAML syntax error at line L, column C: problem`` (the position of the problem)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return f"YAML syntax error: {exc}"


def one_line(exc: BaseException) -> str:
    """What ``exc`` says, on one line, for a user: pz-dagster's own errors as they are (they say
    what to fix), others prefixed by their type."""
    if isinstance(exc, click.ClickException):
        return clean(exc.format_message())
    if isinstance(exc, ValidationError):
        return clean(f"{exc.title}: {validation_problems(exc)}")
    if isinstance(exc, yaml.YAMLError):
        name = getattr(getattr(exc, "problem_mark", None), "name", "") or ""
        where = f"{name}: " if name and not name.startswith("<") else ""
        return clean(where + yaml_problem(exc))
    dagster = sys.modules.get("dagster")  # not imported: no Dagster error can have been raised
    if dagster is not None and isinstance(exc, dagster.DagsterInvalidConfigError):
        return clean("; ".join(e.message for e in exc.errors) or str(exc))
    if isinstance(exc, PzError):
        return clean(str(exc))
    return clean(f"{type(exc).__name__}: {exc}")


def _print_traceback(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    click.echo(redact_text(text, _secret_values()).rstrip(), err=True)


class OneLineUsageError(click.ClickException):
    """A usage mistake (unknown command, bad option value) as one line, with where to look."""

    exit_code = 2


def _usage(exc: click.UsageError) -> OneLineUsageError:
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return OneLineUsageError(clean(exc.format_message()) + hint)


class PzGroup(click.Group):
    """The CLI group: every error of a command reaches the user as one line (exit status 1,
    2 for usage mistakes); with ``--verbose`` the traceback is printed first."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:  # the group's own options
            raise _usage(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        with _reported(ctx):
            return super().invoke(ctx)


@contextlib.contextmanager
def _reported(ctx: click.Context) -> Iterator[None]:
    """Turns what a command raises into one line; SystemExit (a failed partition's status) and
    KeyboardInterrupt are not Exceptions and pass."""
    try:
        yield
    except (click.exceptions.Exit, click.Abort, OneLineUsageError):
        raise
    except click.UsageError as exc:  # a command's options, or a bad value it found
        raise _usage(exc) from None
    except click.ClickException as exc:  # already one line; its cause is the traceback
        if ctx.meta.get(VERBOSE) and exc.__cause__ is not None:
            _print_traceback(exc.__cause__)
        raise
    except Exception as exc:
        verbose = bool(ctx.meta.get(VERBOSE))
        if verbose:
            _print_traceback(exc)
        # pz-dagster's errors say what to fix; for any other, where it happened may help
        hint = "" if verbose or isinstance(exc, PzError) else " (--verbose shows the traceback)"
        raise click.ClickException(one_line(exc) + hint) from None


def env_vars_of(resource: Any) -> Iterator[tuple[str, dg.EnvVar]]:
    """``(field, EnvVar)`` of a resource and the resources nested in it."""
    import dagster as dg  # here, not at the top: `--help` must not import Dagster

    if not isinstance(resource, dg.ConfigurableResource | dg.ConfigurableIOManager):
        return
    for name in type(resource).model_fields:
        value = getattr(resource, name, None)
        if isinstance(value, dg.EnvVar):
            yield name, value
        else:
            yield from env_vars_of(value)


def require_env_vars(resources: dict[str, Any]) -> None:
    """Every environment variable the resources read is set, else one line naming them (Dagster
    would fail the run with a config traceback); the failed lookup is the cause --verbose shows."""
    unset: list[tuple[str, str, str]] = []
    first: KeyError | None = None
    for key, resource in resources.items():
        for field, var in env_vars_of(resource):
            try:
                os.environ[var.env_var_name]
            except KeyError as exc:
                unset.append((key, field, var.env_var_name))
                first = first or exc
    if unset:
        names = ", ".join(f"{v} ({field} of resource {key})" for key, field, v in unset)
        plural, verb = ("s", "are") if len(unset) > 1 else ("", "is")
        raise click.ClickException(
            f"environment variable{plural} {names} {verb} not set; export it (export NAME=...) "
            "and run again"
        ) from first
