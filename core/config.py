"""Config: Hydra composition of conf/ (plus plugins' search paths) and typed validation of parameters.

Each stage option in conf/ names its implementation and its parameters, flat::

    # conf/aligner/dpo.yaml
    plugin: dpo
    beta: 0.1
    max_steps: 20

The plugin's ``config_class`` dataclass types those parameters. :func:`build_params` checks them: an
unknown or misspelt key, a missing required one, or a value of the wrong type is a one-line error naming
the key (``aligner.bta``), the plugin and the allowed keys.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError, close_match, one_line  # one_line is re-exported: plugins import it here
from .params import ParamError, at_least, check_bounds, in_range, one_of  # noqa: F401  (re-exported)

STAGE_KINDS = ("cleaner", "tokenizer", "pretrainer", "finetuner", "aligner", "sampler")
RESERVED_KEYS = ("plugin", "kind")  # keys of a stage option that are not the plugin's parameters


def sample_data_path(name: str = "") -> str:
    """Absolute path of a file in the sample data bundled with the package."""
    path = Path(str(resources.files("lmforge") / "sample_data")) / name
    return str(path)


def stage_file_or_sample(stage: str, name: str, *, _root_) -> str:
    """``${stage_or_sample:preferences,preferences.jsonl}``: the file ``name`` of the pipeline's ``stage`` when
    the composed pipeline has that stage (the default pipeline makes its own preference pairs), else the bundled
    sample file of that name (a pipeline of the user's own, or one that dropped the stage)."""
    stages = (_root_.get("pipeline") or {}).get("stages") or {}
    return f"stage:{stage}/{name}" if stages.get(stage) is not None else sample_data_path(name)


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("sample_data"):
        OmegaConf.register_new_resolver("sample_data", sample_data_path)
    if not OmegaConf.has_resolver("stage_or_sample"):
        OmegaConf.register_new_resolver("stage_or_sample", stage_file_or_sample)


def search_path_entries() -> list[str]:
    """Hydra search-path entries contributed by plugins through ``lmforge_config_searchpath``."""
    from .registry import plugin_manager

    entries: list[str] = []
    for result in plugin_manager().hook.lmforge_config_searchpath():
        entries.extend(result or [])
    return entries


_SEARCHPATH_PLUGIN: list = []


def register_plugin_searchpath() -> None:
    """Put plugins' config directories on Hydra's search path wherever Hydra builds one.

    A Hydra ``SearchPathPlugin`` (registered once, in-process) rather than a ``hydra.searchpath=…`` override:
    Hydra's ``--help`` lists config groups from the search path it starts with, and an override placed in
    front of the user's arguments breaks ``--cfg job`` / ``-m`` argument parsing.
    """
    if _SEARCHPATH_PLUGIN:
        return
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    class LmforgePluginConfigs(SearchPathPlugin):
        def manipulate_search_path(self, search_path) -> None:
            for entry in search_path_entries():
                search_path.append("lmforge-plugin", entry)

    Plugins.instance().register(LmforgePluginConfigs)
    _SEARCHPATH_PLUGIN.append(LmforgePluginConfigs)


USER_CONFIG = "_lmforge_config_file_"  # name under which ``-c my.yaml`` is registered as Hydra's primary config


def load_config_file(path) -> str:
    """Register a user's YAML file (``lmforge run -c my.yaml``) as the primary config; return its name.

    The file holds what one would otherwise type as overrides, as YAML: any top-level key of the config
    (``run``, ``pretrainer``, ``data`` …) merges over lmforge's defaults, and an optional ``defaults`` list picks
    options (``- aligner: orpo``). A ``pipeline`` key REPLACES the default pipeline (its stages are the run's
    stages) unless the file's ``defaults`` also selects a pipeline option, which it then edits. Options given
    on the command line still win over the file.
    """
    import yaml
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"-c {path}: no such file (expected a YAML config file)")
    try:
        body = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or one_line(exc)})") from None
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys (run:, pretrainer:, pipeline: …), "
                          f"got {type(body).__name__}")
    defaults = body.pop("defaults", None) or []
    if not isinstance(defaults, list):
        raise ConfigError(f"{path}: defaults: expected a list like [aligner: orpo], got {defaults!r}")
    selected = ["config"]
    for entry in defaults:
        if isinstance(entry, str) and ":" in entry:
            entry = dict([(part.strip() for part in entry.split(":", 1))])
        if entry in ("config", "_self_"):
            continue
        if not (isinstance(entry, dict) and len(entry) == 1):
            raise ConfigError(f"{path}: defaults: expected entries like 'aligner: orpo', got {entry!r}")
        (group, option), = entry.items()
        group = str(group).removeprefix("override ").strip()
        selected.append({f"override {group}": option})
    store = ConfigStore.instance()
    if "pipeline" in body and not any("override pipeline" in e for e in selected[1:]):
        store.store(group="pipeline", name=USER_CONFIG, node=OmegaConf.create(body.pop("pipeline")))
        selected.append({"override pipeline": USER_CONFIG})
    node = OmegaConf.create({"defaults": [*selected, "_self_"], **body})
    store.store(name=USER_CONFIG, node=node)
    return USER_CONFIG


STRICT_TOP_LEVEL = ("run", "hydra", "pipeline", "data", "hardware")


def parameter_overrides(overrides) -> list[str]:
    """Let ``aligner.beta=0.2`` set any parameter of the selected plugin, even one its YAML leaves at default.

    Hydra refuses to set a key the YAML does not list unless it is written ``++key=value``. Stage and model
    options are validated by lmforge against the plugin's typed parameters instead (with a close-match hint
    on typos), so their overrides are passed to Hydra as ``++``. Keys under run/pipeline/data/hardware stay
    strict.
    """
    rewritten = []
    for item in overrides:
        key, sep, _ = item.partition("=")
        if (sep and "." in key and not key.startswith(("+", "~", "-")) and "/" not in key
                and key.split(".")[0] not in STRICT_TOP_LEVEL):
            item = "++" + item
        rewritten.append(item)
    return rewritten


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config", config_file=None):
    """Compose lmforge's config (as ``lmforge run`` would) from Python: ``compose(["aligner=orpo"])``.

    ``config_file="my.yaml"`` composes a user's config file as ``lmforge run -c my.yaml`` does.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _register_resolvers()
    register_plugin_searchpath()
    if config_file is not None:
        config_name = load_config_file(config_file)
    try:
        with initialize_config_module(config_module="lmforge.conf", version_base="1.3"):
            return hydra_compose(config_name, overrides=parameter_overrides(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(hydra_message(exc)) from None


def hydra_message(exc: Exception) -> str:
    """Hydra's multi-line composition error as one line naming the override and what was expected."""
    import re

    text = f"{exc}\n{exc.__cause__ or ''}"
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], flags=re.MULTILINE)
        return (f"{group}={option}: no such {group} option{close_match(option, options)}; "
                f"available: {', '.join(options) or '(none)'}")
    if "not in struct" in text:
        key = getattr(exc, "full_key", None) or getattr(exc.__cause__, "full_key", None)
        key = key or (re.search(r"full_key: (\S+)", text) or re.search(r"override '([^']+)'", text) or [None, "?"])[1]
        known = [f.name for f in dataclasses.fields(_run_settings_class())] if str(key).startswith("run.") else []
        leaf = str(key).rsplit(".", 1)[-1]
        allowed = f"{close_match(leaf, known)}; allowed: {', '.join(known)}" if known else "; use +key=value to add one"
        return f"{key}: unknown key{allowed}"
    mismatch = container_mismatch(text)
    if mismatch:
        key = re.search(r"full_key: (\S+)", text)
        return f"{key[1] if key else '?'}: {mismatch}"
    return one_line(text.split("Config search path")[0])


def container_mismatch(text: str) -> str | None:
    """OmegaConf's "Cannot merge DictConfig with ListConfig" as what was expected and given."""
    import re

    match = re.search(r"Cannot merge (Dict|List)Config with (Dict|List)Config", text)
    kinds = {"Dict": "a mapping", "List": "a list"}
    return f"expected {kinds[match[2]]}, got {kinds[match[1]]}" if match else None


def _run_settings_class():
    from .rundir import RunSettings

    return RunSettings


def without_other_plugins_keys(kind: str, plugin: str, values: dict[str, Any], config_class) -> dict[str, Any]:
    """``values`` less the keys that another plugin's option file of group ``kind`` set to the same value and
    that ``plugin`` does not take, for a plugin that has no option file of its own: ``sampler.plugin=echo``
    swaps the implementation and keeps the settings the two share (``sampler.max_new_tokens`` …), but not
    ``hf_generate.yaml``'s ``top_k``, which the user never wrote. A key the user set to a value of their own is
    still the plugin's to accept or refuse; a plugin with an option file (``aligner=ppo``) drops nothing."""
    taken = {f.name for f in dataclasses.fields(config_class)} if config_class is not None else set()
    unknown = [key for key in values if key not in taken]
    if not unknown:
        return values
    import yaml

    options = []
    for option in sorted(Path(str(resources.files("lmforge.conf") / kind)).glob("*.yaml")):
        try:
            settings = yaml.safe_load(option.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(settings, dict):
            options.append(settings)
    if any(settings.get("plugin") == plugin for settings in options):
        return values  # a plugin with an option file of its own is selected by it (`aligner=orpo`): keys stay strict

    def same(written, value) -> bool:  # an interpolation ("${sampler.system_prompt}") came from the file too
        return written == value or (isinstance(written, str) and written.startswith("${"))

    carried = {key for settings in options if settings.get("plugin") not in (None, plugin)
               for key in unknown if key in settings and same(settings[key], values[key])}
    return {key: value for key, value in values.items() if key not in carried}


def build_params(config_class, values: dict[str, Any] | None, where: str, plugin: str = ""):
    """Turn a dict of parameters into ``config_class``, with one-line errors naming ``where.key``."""
    values = dict(values or {})
    if config_class is None:
        if values:
            key = next(iter(values))
            raise ConfigError(f"{where}.{key}: {plugin or where} takes no parameters")
        return None
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    for key in values:
        if key not in fields:
            raise ConfigError(
                f"{where}.{key}: unknown key for {plugin or where}{close_match(key, fields)}; "
                f"allowed: {', '.join(fields) or '(none)'}"
            )
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        schema = OmegaConf.structured(config_class)
        merged = OmegaConf.merge(schema, OmegaConf.create(values))
        missing = [k for k in fields if OmegaConf.is_missing(merged, k)]
        if missing:
            raise ConfigError(f"{where}.{missing[0]}: required by {plugin or where} but not set")
        return OmegaConf.to_object(merged)
    except ConfigError as exc:  # raised by the dataclass's __post_init__ as "key: …": name the section
        message = str(exc)
        if "." in message.partition(":")[0] or " " in message.partition(":")[0]:
            raise  # already names its full key (or is not about one key)
        raise ConfigError(f"{where}.{message}") from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or "?"
        unknown = _unknown_nested_key(config_class, str(key))
        if unknown:
            raise ConfigError(f"{where}.{key}: {unknown}") from None
        mismatch = container_mismatch(str(exc))
        if mismatch:  # a mapping given for a list (or back): OmegaConf names no key, so find it
            key = next((k for k in values if not _merges(config_class, k, values[k])), key)
            raise ConfigError(f"{where}.{key}: {mismatch} ({one_line(repr(values.get(key)))})") from None
        expected = ""
        field = fields.get(str(key).split(".")[0])
        if field is not None:
            expected = f"; expected {getattr(field.type, '__name__', field.type)}"
        raise ConfigError(f"{where}.{key}: invalid value{expected} ({one_line(getattr(exc, 'msg', exc))})") from None


def _unknown_nested_key(config_class, key: str) -> str:
    """For ``a.b.c`` where ``a.b`` is a nested config dataclass without a field ``c``: the unknown-key message."""
    from omegaconf import DictConfig, OmegaConf

    path, _, last = key.rpartition(".")
    node = OmegaConf.select(OmegaConf.structured(config_class), path) if path else None
    if not isinstance(node, DictConfig) or last in node:
        return ""
    names = list(node.keys())
    return f"unknown key{close_match(last, names)}; allowed: {', '.join(names)}"


def _merges(config_class, key: str, value: Any) -> bool:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.merge(OmegaConf.structured(config_class), OmegaConf.create({key: value}))
    except OmegaConfBaseException:
        return False
    return True


def named_spec(spec: Any, where: str) -> tuple[str, dict[str, Any]]:
    """A list entry naming a plugin: ``"name"`` or ``{name: …, param: value…}`` -> (name, params)."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        return spec["name"], {k: v for k, v in spec.items() if k != "name"}
    raise ConfigError(f"{where}: expected a plugin name or {{name: …, param: value…}}, got {spec!r}")


def to_container(node) -> Any:
    """A resolved plain-Python copy of an OmegaConf node (dicts/lists), or the value itself."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node
