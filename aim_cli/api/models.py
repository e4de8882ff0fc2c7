"""Models from any source: `aim.load_model` (as `--model`), `aim.list_models`, and the plugin interface.

A spec names its source exactly as `--model` does: none is the task's demo model;
`torchvision:ARCH` and `timm:ARCH` build an architecture that `weights` fills; a folder that
`save_pretrained()` wrote is a local checkpoint; anything else is a hub id read from the local
Hugging Face cache (nothing downloads). Third parties add a source `NAME:` with an object that
satisfies `ModelSource`, registered under the `aim.model_sources` entry-point group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast, overload

import torch

from aim_cli.api.arguments import PathLike, as_path, check_choice
from aim_cli.devices import resolve_device
from aim_cli.errors import InputError
from aim_cli.models import registry
from aim_cli.models.registry import ENTRY_POINT_GROUP, TASKS, ModelRequest, ModelSource

if TYPE_CHECKING:
    from aim_cli.models.image_model import ImageModel
    from aim_cli.models.language import LanguageModel

__all__ = ["ENTRY_POINT_GROUP", "ModelRequest", "ModelSource", "ModelSourceInfo", "list_models", "load_model"]

Task = Literal["classify", "segment", "generate"]


@dataclass(frozen=True)
class ModelSourceInfo:
    """One model source: its name (the `NAME:` prefix, or how a spec is recognised) and what it serves."""

    name: str
    tasks: tuple[str, ...]
    takes_weights: bool  # whether `weights=` (--weights) fills an architecture it builds
    prefixed: bool  # named as `NAME:ARCH` in a spec (otherwise recognised from the spec itself)
    package: str | None  # the distribution that registered it; None for aim's own sources
    description: str


def _device(device: str | torch.device) -> torch.device:
    """A torch.device from a name aim accepts (auto, cpu, cuda, cuda:1, mps) or a torch.device."""
    return device if isinstance(device, torch.device) else resolve_device(device)


@overload
def load_model(
    spec: str | None = None,
    *,
    task: Literal["generate"],
    weights: PathLike | None = None,
    labels: PathLike | None = None,
    device: str | torch.device = "auto",
    dtype: str = "auto",
    device_map: str | None = None,
) -> LanguageModel: ...


@overload
def load_model(
    spec: str | None = None,
    *,
    task: Literal["classify", "segment"],
    weights: PathLike | None = None,
    labels: PathLike | None = None,
    device: str | torch.device = "auto",
    dtype: str = "auto",
    device_map: str | None = None,
) -> ImageModel: ...


def load_model(
    spec: str | None = None,
    *,
    task: Task,
    weights: PathLike | None = None,
    labels: PathLike | None = None,
    device: str | torch.device = "auto",
    dtype: str = "auto",
    device_map: str | None = None,
) -> ImageModel | LanguageModel:
    """Load the model `spec` names (as `--model`) for `task`, offline, on `device`.

    task: 'classify', 'segment' or 'generate'; spec None is the task's demo model. `weights`
    fills a `torchvision:` / `timm:` architecture; `labels` is a class-names file for an image
    model; `dtype` and `device_map` apply to language models. Errors are aim.ModelError (one line).
    """
    task = cast(Task, check_choice(task, "task", TASKS))
    if spec is not None and not isinstance(spec, str):
        raise InputError(f"spec must be a str (as --model), got {type(spec).__name__}")
    return registry.load_model(  # task is checked above
        task,
        spec,
        device=_device(device),
        weights=as_path(weights, "weights"),
        labels=as_path(labels, "labels"),
        dtype=dtype,
        device_map=device_map,
    )


def list_models(task: Task | None = None) -> list[ModelSourceInfo]:
    """Every model source aim can load from, aim's own and installed plugins, optionally only those serving `task`.

    A plugin's object is imported to read its tasks (its failures are aim.ModelError naming it).
    """
    if task is not None:
        task = cast(Task, check_choice(task, "task", TASKS))
    found = [
        ModelSourceInfo(name, source.tasks, source.takes_weights, True, None, source.what)
        for name, source in registry.PREFIXED.items()
    ]
    found += [
        ModelSourceInfo(name, source.tasks, source.takes_weights, False, None, source.what)
        for name, source in registry.BUILTIN.items()
    ]
    for name, plugin in sorted(registry.plugin_sources().items()):
        source = plugin.load_object()
        tasks = plugin.tasks(source)
        found.append(ModelSourceInfo(name, tasks, plugin.takes_weights(source), True, plugin.package, f"plugin {name}"))
    return [info for info in found if task is None or task in info.tasks]
