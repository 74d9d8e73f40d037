"""Library output away from the terminal: the loggers of transformers, datasets, huggingface_hub, accelerate,
TRL, PEFT and torch, Python warnings, and those libraries' own progress bars ("Loading weights",
"Map", "Fetching files") go to one log file instead.

One function for every command: ``lmforge run`` (the log is ``runs/<name>/run.log``; the run's console adds its
live display on top) and every plugin command — ``chat``, ``serve``, ``map``, ``tokenize``, ``rank``,
``export`` … (the log is ``~/.cache/lmforge/logs/<command>.log``). lmforge's own progress bars (sampling) are
left alone. Everything is restored on exit, so library use in the same process is left as it was.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

LIBRARY_LOGGERS = ("transformers", "datasets", "huggingface_hub", "accelerate", "trl", "peft", "torch",
                   "py.warnings", "lmforge")
QUIET_ENV = {"HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "TOKENIZERS_PARALLELISM": "false"}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def command_log(command: str) -> Path:
    """Where a plugin command's library output goes: ``$XDG_CACHE_HOME/lmforge/logs/<command>.log`` (``~/.cache``
    by default; the system's temporary directory where that cannot be written)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    logs = cache / "lmforge" / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError:
        logs = Path(tempfile.gettempdir()) / "lmforge-logs"
    return logs / f"{command}.log"


class LibraryOutput:
    """A context manager: library loggers, warnings and the libraries' progress bars -> ``log_path``.

    :meth:`route` may be called again while active (the run calls it at each stage start): a library imported
    since then is routed too. transformers installs its own stderr handler when its logging module is first
    imported, so it is imported here (when installed) and its handler taken away.
    """

    def __init__(self, log_path):
        self.log_path = Path(log_path)
        self.handler: logging.Handler | None = None
        self._saved_loggers: dict[str, tuple] = {}
        self._saved_env: dict[str, str | None] = {}
        self._restore: list = []
        self._captured_warnings = False

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.log_path, encoding="utf-8", delay=True)
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT))
        for key, value in QUIET_ENV.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        logging.captureWarnings(True)
        self._captured_warnings = True
        self.route()

    def route(self) -> None:
        try:  # its own bars ("Loading weights", "Writing model shards") are no one's progress
            import transformers.utils.logging as transformers_logging
        except ImportError:
            transformers_logging = None
        if transformers_logging is not None:
            transformers_logging.get_logger()  # let transformers install its handler, then take it away
            if transformers_logging.is_progress_bar_enabled():
                transformers_logging.disable_progress_bar()
                self._restore.append(transformers_logging.enable_progress_bar)
        datasets = sys.modules.get("datasets")  # imported before: its environment switch was read already
        if datasets is not None and datasets.is_progress_bar_enabled():
            datasets.disable_progress_bars()
            self._restore.append(datasets.enable_progress_bars)
        hub = sys.modules.get("huggingface_hub.utils")
        if hub is not None and not hub.are_progress_bars_disabled():
            hub.disable_progress_bars()
            self._restore.append(hub.enable_progress_bars)
        for name in LIBRARY_LOGGERS:
            logger = logging.getLogger(name)
            if name not in self._saved_loggers:
                self._saved_loggers[name] = (list(logger.handlers), logger.propagate)
            if logger.handlers != [self.handler]:
                logger.handlers = [self.handler]
                logger.propagate = False

    def log(self, message: str, name: str = "lmforge") -> None:
        if self.handler is not None:
            self.handler.emit(logging.LogRecord(name, logging.INFO, "", 0, message.rstrip("\n"), None, None))

    def restore(self) -> None:
        for restore in reversed(self._restore):
            restore()
        self._restore.clear()
        for name, (handlers, propagate) in self._saved_loggers.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
        self._saved_loggers.clear()
        if self._captured_warnings:
            logging.captureWarnings(False)
            self._captured_warnings = False
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        if self.handler is not None:
            self.handler.close()
            self.handler = None
