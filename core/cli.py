"""The ``lmforge`` command.

    lmforge run [-c my.yaml] [hydra overrides…]   run the configured pipeline (every Hydra flag works, in any
                                                 order: -m, --cfg job, --help)
    lmforge plugins                  list every registered implementation: kind, name, origin package
    lmforge <command> …              a plugin's command (chat, serve, export …; ``lmforge --help`` lists all);
                                     library warnings and progress bars go to ~/.cache/lmforge/logs/<command>.log

Every failure ends in one line on stderr (``lmforge: error: …``) and an exit code: 2 for bad input or
config, 130 for Ctrl-C, 1 for anything else (:func:`fail_with`). The full traceback goes to
``<run dir>/error.log`` and is shown with ``--debug`` or ``LMFORGE_DEBUG=1``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import textwrap

from .errors import ConfigError

USAGE = "usage: lmforge [--debug] <command> [args]"
COMMANDS = {
    "run": ("run the configured pipeline; Hydra overrides select plugins and parameters, e.g.\n"
            "  lmforge run aligner=orpo run.name=exp1\n"
            "-c my.yaml for your own config file, -m for a sweep, --cfg job to print the composed config, "
            "--help for every config group and option"),
    "plugins": "list registered implementations (kind, name, origin package)",
}
HELP_WIDTH = 80  # the help fits an ordinary terminal
OPTIONS = {
    "--debug": "print the full traceback of a failure (or LMFORGE_DEBUG=1)",
    "-h, --help": "this text; `lmforge <command> --help` for a command's own options",
}


def usage(extra: dict) -> str:
    """The ``lmforge --help`` text: every command in one list (lmforge's and the plugins'), options after it."""
    commands = {**COMMANDS, **{name: help_text for name, (help_text, _) in sorted(extra.items())}}
    width = max(len(name) for name in [*commands, *OPTIONS]) + 2

    def entries(items: dict) -> str:
        text = ""
        for name, help_text in items.items():
            lines = [wrapped for paragraph in help_text.split("\n")  # an indented line (an example) stays whole
                     for wrapped in ([paragraph] if paragraph.startswith(" ")
                                     else textwrap.wrap(paragraph, HELP_WIDTH - width - 3))]
            text += "".join(f"  {name if i == 0 else '':<{width}} {line.rstrip()}\n" for i, line in enumerate(lines))
        return text

    return f"{USAGE}\n\ncommands:\n{entries(commands)}\noptions:\n{entries(OPTIONS)}"


def plugin_commands() -> dict:
    """Subcommands contributed by plugins through ``lmforge_cli_commands``, each as ``(help, function)``; a
    function given as a lazy ``"module:function"`` string is imported only when its command runs."""
    from .registry import plugin_manager

    commands = {}
    for result in plugin_manager().hook.lmforge_cli_commands():
        for name, (help_text, function) in (result or {}).items():
            commands[name] = (help_text, _imported_when_called(function) if isinstance(function, str) else function)
    return commands


def _imported_when_called(target: str):
    from .registry import load_target

    def command(argv: list[str]):
        return load_target(target)(argv)

    return command


def _fail(message: str, code: int = 2) -> None:
    print(f"lmforge: error: {message}", file=sys.stderr)
    sys.exit(code)


_SWEPT_KEYS: set[str] = set()
_FRESH_RUN_DIRS: dict = {}  # run dirs this command creates -> their nearest existing parent (for a failed start)


def _task(cfg) -> None:
    """The Hydra task: one pipeline run (one per job under -m)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from .pipeline import run

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # One run directory per sweep job, named by the swept values: runs/<name>/aligner=dpo/…
        swept = [o.lstrip("+") for o in hydra_cfg.overrides.task if o.lstrip("+").partition("=")[0] in _SWEPT_KEYS]
        label = ",".join(swept) or f"job{hydra_cfg.job.num}"
        with open_dict(cfg):
            cfg.run.name = f"{cfg.run.name}/{label.replace('/', '_')}"
    result = guarded(run, cfg, run_dir=_run_dir_or_none(cfg))
    from .distributed import rank

    if rank():  # under `accelerate launch` the main process says it, once
        return
    line = (f"lmforge: run complete: {result.run_dir} (ran: {', '.join(result.ran) or 'none'}; "
            f"skipped as complete: {', '.join(result.skipped) or 'none'})")
    # folded as the closing lines above it: to the terminal's width, or to COLUMNS (80 when unset) when piped
    width = shutil.get_terminal_size().columns - (1 if sys.stdout.isatty() else 0)
    line = textwrap.fill(line, width, subsequent_indent=" " * 9, break_on_hyphens=False, break_long_words=False)
    print(line)


# Hydra's own flags: those that take a value, and ``--info``'s optional value.
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun"}
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
_CFG_CHOICES = {"job", "hydra", "all"}


def split_run_args(args: list[str]) -> tuple[list[str], list[str], str | None]:
    """``lmforge run``'s arguments -> (Hydra flags, overrides, the ``-c`` config file or None), in any order.

    Hydra parses its flags before its positional overrides, so ``run aligner=orpo --cfg job`` and
    ``run --cfg job aligner=orpo`` must both reach it as flags first. ``-c``/``--config`` followed by a file
    (``my.yaml``) is lmforge's own config file; ``-c job|hydra|all`` stays Hydra's ``--cfg``.
    """
    flags, overrides, config_file = [], [], None
    items = iter(args)
    for item in items:
        name, eq, value = item.partition("=")
        if not item.startswith("-"):
            overrides.append(item)
        elif name == "--config" and eq:
            config_file = value
        elif item in ("-c", "--config"):
            value = next(items, None)
            if value is None:
                raise ConfigError(f"{item}: expected a config file (my.yaml)")
            if item == "-c" and value in _CFG_CHOICES:  # Hydra's short form of --cfg
                flags += [item, value]
            else:
                config_file = value
        elif name in _VALUE_FLAGS and not eq:
            value = next(items, None)
            if value is None:
                raise ConfigError(f"{name}: expects a value")
            flags += [name, value]
        elif name in ("--info", "-i") and not eq:
            flags.append(item)
            following = next(items, None)
            if following is not None:
                (flags if following in _INFO_CHOICES else overrides).append(following)
        else:
            flags.append(item)
    return flags, overrides, config_file


def _run(args: list[str]) -> None:
    import hydra

    from .config import _register_resolvers, load_config_file, parameter_overrides, register_plugin_searchpath

    flags, overrides, config_file = split_run_args(args)
    _register_resolvers()
    register_plugin_searchpath()
    config_name = load_config_file(config_file) if config_file else "config"
    # Compose once through lmforge's own path first: a Hydra override error (unknown key, missing option,
    # bad syntax) becomes one line with exit 2 instead of Hydra's multi-line report, and run.* is checked
    # before Hydra creates <run dir>/.hydra (or .hydra-sweep) for its own files. With Hydra flags (-m, --cfg)
    # only the run.* overrides that are not swept are composed: the compose API takes no sweep syntax.
    from .config import compose, to_container
    from .rundir import check_run_location, run_settings

    checked = overrides if not flags else [o for o in overrides if o.lstrip("+").startswith("run.")
                                           and "," not in o.partition("=")[2]]
    run_dir = check_run_location(run_settings(to_container(compose(checked, config_name=config_name).get("run"))))
    if not flags and not run_dir.exists():  # made by this command: a bad key or input leaves nothing behind
        _FRESH_RUN_DIRS[run_dir.resolve()] = next(p for p in run_dir.resolve().parents if p.exists())
    _SWEPT_KEYS.update(a.lstrip("+").partition("=")[0] for a in overrides if "," in a.partition("=")[2])
    main = hydra.main(config_path="pkg://lmforge.conf", config_name=config_name, version_base="1.3")(_task)
    sys.argv = ["lmforge run", *flags, *parameter_overrides(overrides)]
    main()


def _plugins() -> None:
    from rich.console import Console
    from rich.table import Table

    from .registry import registry

    table = Table(title="lmforge plugins")
    for column in ("kind", "name", "origin"):
        table.add_column(column)
    for entry in registry().entries():
        table.add_row(entry.kind, entry.name, entry.origin)
    Console(width=160).print(table)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[:1] or "--debug" in args[1:2]:
        args.remove("--debug")
        os.environ["LMFORGE_DEBUG"] = "1"
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(plugin_commands()), end="")
        return
    with _terminate_like_interrupt():
        guarded(_dispatch, args[0], args[1:])


@contextlib.contextmanager
def _terminate_like_interrupt():
    """While the command runs, SIGTERM raises :class:`~lmforge.errors.Terminated` in the main thread, so it
    unwinds like Ctrl-C: the half-written stage is removed, the lock released, one line printed, exit 143.

    A process forked meanwhile (a data-loading worker) inherits the handler but is not the command: there
    SIGTERM keeps its default meaning, so a pool can still stop its workers. A server command that installs
    its own handler (uvicorn's graceful shutdown) replaces this one.
    """
    import signal
    import threading

    from .errors import Terminated

    owner = os.getpid()

    def terminate(signum, frame):
        if os.getpid() != owner:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dispatch(command: str, rest: list[str]) -> None:
    if command == "run":
        _run(rest)
    elif command == "plugins":
        _plugins()
    elif command in (extra := plugin_commands()):
        with _library_output(command):
            code = extra[command][1](rest)
        if code:
            sys.exit(code)
    else:
        from .errors import close_match

        names = ["run", "plugins", *sorted(extra)]
        _fail(f"unknown command '{command}'{close_match(command, names)}; commands: {', '.join(names)}")


def _library_output(command: str):
    """A plugin command's library output (loggers, warnings, the libraries' own progress bars) goes to
    ``~/.cache/lmforge/logs/<command>.log``, as a run's goes to its run.log; ``--debug`` leaves it on the terminal."""
    from .library_output import LibraryOutput, command_log

    return contextlib.nullcontext() if _debug() else LibraryOutput(command_log(command))


def _debug() -> bool:
    return bool(os.environ.get("LMFORGE_DEBUG") or os.environ.get("LMFORGE_TRACEBACK"))


def _run_dir_or_none(cfg):
    """The run directory a config names, or None when run.* is itself invalid (reported by the run)."""
    from .config import to_container
    from .rundir import run_dir_of, run_settings

    try:
        return run_dir_of(run_settings(to_container(cfg.get("run")) or {}))
    except Exception:  # noqa: BLE001 - the run itself reports what is wrong with run.*
        return None


def guarded(function, *args, run_dir=None, **kwargs):
    """Call ``function``; any exception ends the process through :func:`fail_with`."""
    try:
        return function(*args, **kwargs)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place every failure is turned into one line
        fail_with(exc, run_dir)


def _remove_unstarted(run_dir) -> bool:
    """Remove a run directory this command made for a run that stopped before any stage (only Hydra's .hydra
    and an error.log in it), with the run root when this command made that too; on the main process only."""
    import os
    import shutil

    existing = _FRESH_RUN_DIRS.get(run_dir.resolve())
    if existing is None or os.environ.get("RANK", "0") != "0":
        return False
    try:
        if not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} - {".hydra", "error.log"}:
            return False
        shutil.rmtree(run_dir)
        for parent in run_dir.resolve().parents:
            if parent == existing or any(parent.iterdir()):
                break
            parent.rmdir()
    except OSError:
        return False
    return True


def fail_with(exc: BaseException, run_dir=None) -> None:
    """Print one line for ``exc``, keep its traceback in ``<run_dir>/error.log``, exit 2 / 130 / 1."""
    import traceback
    from pathlib import Path

    from .errors import describe, exit_code

    code = exit_code(exc)
    line = describe(exc)
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log = None
    if code == 2 and run_dir is not None and _remove_unstarted(Path(run_dir)):
        run_dir = None
    if run_dir is not None and Path(run_dir).is_dir():
        try:
            log = Path(run_dir) / "error.log"
            with open(log, "a") as handle:
                handle.write(f"--- lmforge {' '.join(sys.argv[1:])}\n{text}\n")
        except OSError:
            log = None
    if _debug():
        print(text, file=sys.stderr, end="")
    elif code == 1:
        line += f"; traceback in {log}" if log else "; run with --debug (or LMFORGE_DEBUG=1) for the traceback"
    print(f"lmforge: error: {line}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
