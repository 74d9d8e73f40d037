"""The ``lmforge`` command.

    lmforge run [-c my.yaml] [hydra overrides…]   run the configured pipeline (every Hydra flag works, in any
                                                 order: -m, --cfg job, --help)
    lmforge plugins                  list every registered implementation: kind, name, origin package
"""

from __future__ import annotations

import os
import sys

from .errors import ConfigError

USAGE = """usage: lmforge <command> [args]

commands:
  run [overrides…]   run the configured pipeline; Hydra overrides select plugins and parameters,
                     e.g.  lmforge run aligner=orpo run.name=exp1 pretrainer.max_steps=200
                     (-c my.yaml for your own config file, -m for a sweep, --cfg job to print the
                     composed config, --help for every config group and option)
  plugins            list registered implementations (kind, name, origin package)
"""


def plugin_commands() -> dict:
    """Subcommands contributed by plugins through ``lmforge_cli_commands``."""
    from .registry import plugin_manager

    commands = {}
    for result in plugin_manager().hook.lmforge_cli_commands():
        commands.update(result or {})
    return commands


def _fail(message: str, code: int = 2) -> None:
    print(f"lmforge: error: {message}", file=sys.stderr)
    sys.exit(code)


_SWEPT_KEYS: set[str] = set()


def _task(cfg) -> None:
    """The Hydra task: one pipeline run (one per job under -m)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from .errors import LmforgeError
    from .pipeline import run

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # One run directory per sweep job, named by the swept values: runs/<name>/aligner=dpo/…
        swept = [o.lstrip("+") for o in hydra_cfg.overrides.task if o.lstrip("+").partition("=")[0] in _SWEPT_KEYS]
        label = ",".join(swept) or f"job{hydra_cfg.job.num}"
        with open_dict(cfg):
            cfg.run.name = f"{cfg.run.name}/{label.replace('/', '_')}"
    try:
        result = run(cfg)
    except LmforgeError as exc:
        if os.environ.get("LMFORGE_TRACEBACK"):
            raise
        _fail(str(exc))
    print(f"lmforge: run complete: {result.run_dir} (ran: {', '.join(result.ran) or 'none'}; "
          f"skipped as complete: {', '.join(result.skipped) or 'none'})")


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
    if not args or args[0] in ("-h", "--help", "help"):
        extra = plugin_commands()
        print(USAGE + "".join(f"  {name:<18} {help_text}\n" for name, (help_text, _) in sorted(extra.items())))
        return
    command, rest = args[0], args[1:]
    from .errors import LmforgeError

    try:
        if command == "run":
            _run(rest)
        elif command == "plugins":
            _plugins()
        elif command in (extra := plugin_commands()):
            code = extra[command][1](rest)
            if code:
                sys.exit(code)
        else:
            from .errors import close_match

            names = ["run", "plugins", *sorted(extra)]
            _fail(f"unknown command '{command}'{close_match(command, names)}; commands: {', '.join(names)}")
    except LmforgeError as exc:
        if os.environ.get("LMFORGE_TRACEBACK"):
            raise
        _fail(str(exc))


if __name__ == "__main__":
    main()
