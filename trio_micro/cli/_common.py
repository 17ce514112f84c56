"""What every ``trio-micro`` command shares: one error type, one runner, one signal policy,
the argument types and the environment defaults (output: :mod:`._output`).

Theory of operation
-------------------
A command's ``run_*`` function hands its body to :func:`run_command` (a synchronous
body) or :func:`run_trio` (a body that runs under ``trio.run``). The runner turns how the
body ended into the exit code, the same way for every command:

* the body returns an exit code: that code;
* :class:`CommandError` (alone or as the only kind in an exception group): its message,
  one line per error on stderr as ``trio-micro COMMAND: error: ...``, and its code;
* a signal: ``128 + N`` (:data:`EXIT_SIGNAL_BASE`), with one line on stderr;
* ``BrokenPipeError`` (the reader of stdout went away, ``| head``): 0, quietly;
* anything else is a bug and propagates with its traceback.

The signal policy, for SIGINT and SIGTERM alike: the first signal stops the command. A
body that serves (it called :meth:`Stopper.serving`) stops gracefully: :meth:`Stopper.wait`
returns and the body drains; any other body is cancelled at once. A second signal cancels
everything at once (a synchronous body is then killed by it). The exit code is
``128 +`` the number of the first signal either way: 130 for SIGINT (Ctrl-C), 143 for
SIGTERM.

This module imports neither Trio nor structlog at import time (``trio-micro logs`` and
``--version`` must start fast); :func:`run_trio` imports Trio when it runs.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, final

from ._output import safe_text

if TYPE_CHECKING:
    import trio

__all__: list[str] = []  # internal to the cli package

#: Success.
EXIT_OK: Final = 0
#: The command failed (the line on stderr says why).
EXIT_ERROR: Final = 1
#: Malformed arguments or input (argparse uses 2 too).
EXIT_USAGE: Final = 2
#: ``call``, ``list`` (and ``bench``'s method lookup): an RPC ended with status code N:
#: exit ``64 + N``, as grpcurl does (64 keeps clear of 1 and 2, which are CANCELLED and
#: UNKNOWN).
EXIT_STATUS_BASE: Final = 64
#: Stopped by signal N: exit ``128 + N``, as a shell reports it.
EXIT_SIGNAL_BASE: Final = 128

_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def epilog(*sections: str, ok: str | None = None, more: str = "") -> str:
    """An ``--help`` epilog: ``sections`` (paragraphs or titled blocks), then the exit codes.

    Args:
        sections: Text before the exit codes.
        ok: What exit code 0 means for the command (None: it never exits 0).
        more: Lines (``"  64+N ..."`` style) for codes particular to the command, listed
            between the shared 1 and 2 and the signal codes.
    """
    codes = [f"  0    {ok}"] if ok else []
    codes += [
        "  1    an error, printed as one line on stderr: trio-micro COMMAND: error: ...",
        "  2    malformed arguments or input",
    ]
    codes += [more.rstrip()] if more else []
    codes.append("  130  stopped by SIGINT (Ctrl-C); 143 by SIGTERM (128 + the signal number)")
    head = "".join(f"{section.rstrip()}\n\n" for section in sections)
    return head + "exit codes:\n" + "\n".join(codes) + "\n"


# ---------------------------------------------------------------------- errors


class CommandError(Exception):
    """Something the user can fix: printed as one line on stderr, then exit ``code``.

    Attributes:
        code: The exit code, :data:`EXIT_ERROR` unless said otherwise.
    """

    def __init__(self, message: str, *, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def usage_error(message: str) -> CommandError:
    """A :class:`CommandError` for malformed input: exit :data:`EXIT_USAGE`."""
    return CommandError(message, code=EXIT_USAGE)


class Interrupted(BaseException):
    """A signal stopped a synchronous command (raised by the runner's signal handler)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _report(command: str, message: str) -> None:
    """Print ``trio-micro COMMAND: error: message`` on stderr, as one safe line."""
    print(safe_text(f"trio-micro {command}: error: {message}"), file=sys.stderr, flush=True)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions that ``exc`` is or holds, in exception groups at any depth."""
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _stopped(command: str, signum: int) -> int:
    print(f"trio-micro {command}: stopped by {_signal_name(signum)}", file=sys.stderr, flush=True)
    return EXIT_SIGNAL_BASE + signum


def _exit_code(command: str, exc: BaseException) -> int | None:
    """The exit code for a body that raised ``exc``; None for a bug (to be re-raised)."""
    leaves = _leaves(exc)
    if all(isinstance(e, CommandError) for e in leaves):
        for error in leaves:
            _report(command, str(error))
        return max(e.code for e in leaves if isinstance(e, CommandError))
    if all(isinstance(e, Interrupted | KeyboardInterrupt) for e in leaves):
        first = leaves[0]
        return _stopped(command, first.signum if isinstance(first, Interrupted) else signal.SIGINT)
    if all(isinstance(e, BrokenPipeError) for e in leaves):
        # The reader went away (`| head`): stop quietly, and keep Python from complaining
        # again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return None


# ---------------------------------------------------------------------- the runner


def run_command(command: str, body: Callable[[], int], *, handle_signals: bool = True) -> int:
    """Run ``body()`` and return its exit code (see the module docs for the rules).

    Args:
        command: The command's name, for the messages (``"logs"``).
        body: Returns the exit code.
        handle_signals: Turn the first SIGINT/SIGTERM into :class:`Interrupted` (exit
            ``128 + N``) and let a second one kill the process (in the main thread
            only). Off when ``body`` runs Trio, which handles them itself
            (:func:`run_trio`).

    Raises:
        BaseException: Whatever ``body`` raised that is not a command error, a signal or
            a broken pipe (a bug).
    """

    owner = os.getpid()
    received: list[int] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        for number in _SIGNALS:  # the second signal kills
            signal.signal(number, signal.SIG_DFL)
        if os.getpid() != owner:
            # A forked worker (the process pool of `logs`) inherited this handler: it dies
            # of the signal quietly, and the command in the parent reports the stop.
            os.kill(os.getpid(), signum)
        received.append(signum)
        raise Interrupted(signum)

    def unraisable(info: Any) -> None:
        # Python runs a signal handler between any two bytecodes; where an exception can't
        # propagate (an at-fork hook, a __del__), Python drops it and reports it here. The
        # stop is recorded in `received`: say nothing more.
        if not isinstance(info.exc_value, Interrupted):
            hook(info)

    previous: dict[int, Any] = {}
    hook = sys.unraisablehook
    try:
        if handle_signals and _main_thread():
            for number in _SIGNALS:
                previous[number] = signal.signal(number, interrupt)
            sys.unraisablehook = unraisable
        code = body()
    except BaseException as exc:
        if received:  # a signal wins over what it caused (a pool broken by its workers' death)
            return _stopped(command, received[0])
        error = _exit_code(command, exc)
        if error is None:
            raise
        return error
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = hook
    # A dropped Interrupted (see `unraisable`) is still a stop.
    return _stopped(command, received[0]) if received else code


@final
class Stopper:
    """The signal policy of a body run by :func:`run_trio` (see the module docs).

    Attributes:
        signum: Number of the first signal received, or None.
        signal: Its name (``"SIGTERM"``), or None.
        forced: A second signal cancelled a graceful stop.
        fields: Extra fields for the stop log records (the body may add some).
    """

    def __init__(self, scope: trio.CancelScope, events: str | None) -> None:
        import trio

        self._scope = scope
        self._events = events
        self._requested = trio.Event()
        self._serving = False
        self.signum: int | None = None
        self.signal: str | None = None
        self.forced = False
        self.fields: dict[str, Any] = {}
        self._on_forced: list[Callable[[], object]] = []

    def serving(self) -> None:
        """Mark the start of serving: a signal from now on drains instead of cancelling."""
        self._serving = True

    async def wait(self) -> None:
        """Wait for the first signal. A checkpoint; cancellation just stops the wait."""
        await self._requested.wait()

    def on_forced(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` on a second signal, before everything is cancelled (e.g. to
        SIGKILL worker processes whose drain would otherwise be waited for)."""
        self._on_forced.append(callback)

    def _log(self, level: str, event: str, **fields: Any) -> None:
        if self._events is not None:
            import structlog

            getattr(structlog.get_logger(self._events), level)(
                f"{self._events}.{event}", **fields, **self.fields
            )

    def receive(self, signum: int) -> None:
        """Act on signal ``signum`` as the policy says (drain, or cancel). Not a checkpoint."""
        name = _signal_name(signum)
        if self.signum is None:
            self.signum, self.signal = signum, name
            self._requested.set()
            if self._serving:
                self._log("info", "stopping", signal=name)
                return
            # Nothing is served (yet): nothing to drain.
        else:
            self.forced = True
            self._log("warning", "forced", signal=name)
            for callback in self._on_forced:
                callback()
        self._scope.cancel()


async def _under_signals(
    body: Callable[[Stopper], Awaitable[int]], events: str | None
) -> tuple[int, Stopper]:
    from contextlib import nullcontext

    import trio

    started = time.monotonic()
    code: int | None = None
    # Only the main thread receives signals; tests run commands in worker threads too.
    receiver = trio.open_signal_receiver(*_SIGNALS) if _main_thread() else nullcontext(None)
    with receiver as signals:
        async with trio.open_nursery() as nursery:
            stopper = Stopper(nursery.cancel_scope, events)
            if signals is not None:

                async def watch() -> None:
                    async for signum in signals:
                        stopper.receive(signum)

                nursery.start_soon(watch)
            code = await body(stopper)
            nursery.cancel_scope.cancel()
    stopper._log(
        "info",
        "stopped",
        signal=stopper.signal,
        forced=stopper.forced,
        uptime_s=round(time.monotonic() - started, 3),
    )
    return (EXIT_ERROR if code is None else code), stopper


def run_trio(
    command: str, body: Callable[[Stopper], Awaitable[int]], *, events: str | None = None
) -> int:
    """``trio.run`` ``body(stopper)`` under the signal policy; return the exit code.

    The body returns its exit code; a signal makes it ``128 + N`` (see the module docs).
    With ``events``, the stop is logged as ``EVENTS.stopping`` (first signal while
    serving), ``EVENTS.forced`` (second signal) and ``EVENTS.stopped`` (the end, with the
    signal, ``forced`` and the uptime). Signals are handled in the main thread only (in
    another one, as in tests, the body simply runs).

    Raises:
        BaseException: What ``body`` raised that is not a command error (a bug).
    """
    import trio

    def main() -> int:
        code, stopper = trio.run(_under_signals, body, events)
        return code if stopper.signum is None else _stopped(command, stopper.signum)

    return run_command(command, main, handle_signals=False)


# ---------------------------------------------------------------------- argument types


def integer(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def worker_count(text: str) -> int:
    """argparse type: a number of worker processes, 1 to 256, or ``auto`` (one per CPU)."""
    if text == "auto":
        return min(os.cpu_count() or 1, 256)
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(
            f"expected a number of workers from 1 to 256, or 'auto', got {text!r}"
        )
    return value


def number(what: str, *, zero: bool = False, inf: bool = False) -> Callable[[str], float]:
    """argparse type: a number > 0 (``zero``: >= 0), finite unless ``inf``.

    ``what`` names it in the message: ``expected {what} > 0, got '...'``.
    """
    bound = ">= 0" if zero else "> 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (value >= 0 if zero else value > 0) or (math.isinf(value) and not inf):
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text!r}")
        return value

    return parse


def seconds(*, zero: bool = False, inf: bool = False) -> Callable[[str], float]:
    """argparse type: a number of seconds (see :func:`number`)."""
    return number("a number of seconds", zero=zero, inf=inf)


def port(text: str) -> int:
    """argparse type: a TCP port in [0, 65535]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port in [0, 65535], got {text!r}")
    return value


def compression(text: str) -> str:
    """argparse type: a payload encoding this process supports, or ``none``."""
    from ..protocol import SUPPORTED_COMPRESSION, check_compression

    try:
        check_compression(text)
    except ValueError:
        known = ", ".join(("none", *SUPPORTED_COMPRESSION))
        raise argparse.ArgumentTypeError(
            f"expected one of {known}, got {text!r}"
            + (" (pip install trio-micro[zstd])" if text == "zstd" else "")
        ) from None
    return text


def key_value(text: str) -> tuple[str, str]:
    """argparse type: ``KEY=VALUE``; the value may be empty or hold ``=``, the key may not
    be empty or hold whitespace."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(c.isspace() for c in key):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def timestamp(text: str) -> datetime:
    """argparse type: an ISO-8601 time; UTC when it names no zone."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO-8601 time like 2026-11-26T10:00:00Z, got {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------------- environment defaults

#: The environment variables that give the common flags their default, in every command
#: that has the flag: ``TRIO_MICRO_TIMEOUT=3 trio-micro call ...`` is ``call --timeout 3``.
#: A flag on the command line wins; ``--help`` shows each as ``[env: NAME]``.
ENV_DEFAULTS: Final[dict[str, str]] = {
    "--registry": "TRIO_MICRO_REGISTRY",
    # The registry's shared token: the server's and its registrants' (issue #15).
    "--token-file": "TRIO_MICRO_REGISTRY_TOKEN_FILE",
    "--registry-token-file": "TRIO_MICRO_REGISTRY_TOKEN_FILE",
    "--timeout": "TRIO_MICRO_TIMEOUT",
    "--log-level": "TRIO_MICRO_LOG_LEVEL",
    "--log-file": "TRIO_MICRO_LOG_FILE",
    "--debug-port": "TRIO_MICRO_DEBUG_PORT",
    "--tls-ca": "TRIO_MICRO_TLS_CA",
    "--tls-cert": "TRIO_MICRO_TLS_CERT",
    "--tls-key": "TRIO_MICRO_TLS_KEY",
    "--tls-server-name": "TRIO_MICRO_TLS_SERVER_NAME",
    "--compress": "TRIO_MICRO_COMPRESS",
}


class _FromEnvironment(str):
    """A default read from environment variable ``variable`` (argparse parses string
    defaults with the flag's type, which then names the variable in its error)."""

    __slots__ = ("variable",)
    variable: str


def _environment_type(action: argparse.Action, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def from_text(text: str) -> Any:
        if not isinstance(text, _FromEnvironment):
            return parse(text)
        try:
            value = parse(str(text))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(f"{text.variable}: {exc}") from None
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(repr, action.choices))
            raise argparse.ArgumentTypeError(
                f"{text.variable}: invalid choice {str(text)!r} (choose from {choices})"
            )
        return value

    from_text.__name__ = getattr(parse, "__name__", "value")
    return from_text


def apply_environment_defaults(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    """Give the flags of :data:`ENV_DEFAULTS`, in ``parser`` and its sub-parsers at any
    depth, their default from ``environ`` (default: :data:`os.environ`), and add
    ``[env: NAME]`` to their help. Call it once on a parser that is fully built."""
    environ = os.environ if environ is None else environ
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in dict.fromkeys(action.choices.values()):  # aliases once
                apply_environment_defaults(subparser, environ)
            continue
        variable = next((ENV_DEFAULTS[o] for o in action.option_strings if o in ENV_DEFAULTS), None)
        if variable is None or action.nargs == 0:  # flags without a value take no default
            continue
        if action.help is not None and action.help != argparse.SUPPRESS:
            action.help = f"{action.help} [env: {variable}]"
        action.type = _environment_type(action, action.type or str)  # type: ignore[arg-type]
        value = environ.get(variable)
        if value:  # set and not empty
            default = _FromEnvironment(value)
            default.variable = variable
            action.default = default
