"""Tasks: how each family trains and is scored (Notes: DESIGN.md "Tasks"). The Trainer calls them through the
protocol of `dlkit.engine.task`; recipes build them; models know nothing of them.

`TASKS` is their registry (the same `Registry` as models and recipes): each module here registers its task under
the module's name ("classification", "language_model", ...), the names a model's `task` metadata uses: the one
`Task` subclass it defines that derives from no other of its own (variants such as the mask-classification
segmentation task derive from it), or the class its `TASK` attribute names. `list_tasks()`, `get_task(name)`.
"""

from __future__ import annotations

import inspect
import sys

from ..registry import Registry, notes_section


def _collect(registry: Registry) -> None:
    """Register each imported `dlkit.tasks.<name>` module's task (its `TASK`, else its one root Task subclass)
    under <name>."""
    from ..engine.task import Task

    for module_name, module in sorted(sys.modules.items()):
        if not module_name.startswith(__name__ + ".") or module is None:
            continue
        own = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, Task) and c is not Task and c.__module__ == module_name]
        roots = [c for c in own if not any(o is not c and issubclass(c, o) for o in own)]
        chosen = getattr(module, "TASK", None)
        if chosen is None and len(roots) == 1:
            chosen = roots[0]
        if chosen is not None:
            cls = chosen
            section = notes_section(cls.__doc__) or notes_section(module.__doc__)
            registry.register(module_name.rsplit(".", 1)[-1], cls, cls_name=cls.__name__, section=section)


TASKS = Registry("task", __name__, "dlkit list tasks", fields=("cls_name", "section"), collect=_collect)


def list_tasks(pattern: str = "*") -> list[str]:
    """Registered task names matching a shell-style pattern, sorted."""
    return TASKS.list(pattern)


def get_task(name: str) -> type:
    """The Task class registered as `name` (error with the nearest names if unknown)."""
    return TASKS.get(name).obj
