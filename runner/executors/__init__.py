"""Executors by name (runner/executors/base.py has the seam). The ray one is imported only when chosen (by name,
so that nothing that imports this package loads Ray), and needs the `autoresearch[cluster]` extra."""

import importlib

from autoresearch.runner.executors.base import Executor, Slot

EXECUTORS = {"local": "autoresearch.runner.executors.local:LocalExecutor",
             "ray": "autoresearch.runner.executors.ray_executor:RayExecutor"}


def executor_class(name: str) -> type:
    """The class of the executor called name (imported now)."""
    module, _, cls = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["EXECUTORS", "Executor", "Slot", "executor_class"]
