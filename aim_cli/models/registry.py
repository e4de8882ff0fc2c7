"""One way to load any model: `load_model(task, spec, ...)` over declared model sources.

A --model value (the *spec*) names its source: none is the task's demo; `torchvision:ARCH` and
`timm:ARCH` build an architecture filled from --weights; a folder `save_pretrained()` (or timm's
`save_for_hf`) wrote is a local checkpoint; anything else is a hub id read from the local
Hugging Face cache (nothing downloads). A third party adds a source `NAME:` by registering an
object with `tasks`, `takes_weights` and `load(request)` under the `aim.model_sources` entry-point
group, named NAME (docs/design.md, "Model sources"): it is imported only when a spec uses it.

The device is a `torch.device`: the command line resolves --device (auto, cuda:1) once with
`devices.resolve_device`, and every layer below keeps tensors on exactly that device, so no
loader re-parses or re-validates a device name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, cast, overload

import torch

from aim_cli import demo
from aim_cli.errors import ModelError
from aim_cli.limits import LABEL_COUNT
from aim_cli.models.image_model import Model, VisionModel
from aim_cli.models.plugins import ENTRY_POINT_GROUP, GuardedImageModel, Plugin, discover

if TYPE_CHECKING:
    from aim_cli.models.image_model import ImageModel
    from aim_cli.models.language import LanguageModel

TASKS = ("classify", "segment", "generate")
__all__ = ["ENTRY_POINT_GROUP", "ModelRequest", "ModelSource", "load_model", "parse_spec"]


@dataclass(frozen=True)
class ModelRequest:
    """What load_model was asked for, as a source sees it; `name` is the spec without its `SOURCE:` prefix."""

    task: str
    spec: str | None
    name: str
    device: torch.device
    weights: Path | None = None
    labels: Path | None = None
    dtype: str = "auto"
    device_map: str | None = None

    @property
    def display(self) -> str:
        """How the model is named in output: the spec as given, or the demo's folder."""
        return self.spec or f"demo {demo.model_dir(self.task).name}"


class ModelSource(Protocol):
    """Where models come from: the tasks it serves, whether it reads --weights, and how it loads one."""

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks (classify, segment, generate) it has models for."""
        ...

    @property
    def takes_weights(self) -> bool:
        """Whether it builds an architecture that --weights fills."""
        ...

    def load(self, request: ModelRequest) -> Model:
        """Load the model the request names, or raise ModelError with one clear line."""
        ...


@dataclass(frozen=True)
class BuiltinSource:
    """One of aim's own sources: a loader per task it serves."""

    name: str
    what: str  # how an error names the kind of model, e.g. "a timm image classifier"
    loaders: dict[str, Callable[[ModelRequest], Model]]
    takes_weights: bool = False

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this source has a loader for."""
        return tuple(self.loaders)

    def load(self, request: ModelRequest) -> Model:
        """Load with the request's task's loader."""
        return self.loaders[request.task](request)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed --model value: which source loads it, and the name that source reads."""

    source: str
    name: str


def _transformers_loaders() -> dict[str, Callable[[ModelRequest], Model]]:
    """Every task's loader for a transformers checkpoint (demo, local folder or cached hub id)."""

    def classify(request: ModelRequest) -> Model:
        from aim_cli.models.classifier import load_hf_classifier

        return load_hf_classifier(request.name, request.device, request.labels, request.display)

    def segment(request: ModelRequest) -> Model:
        from aim_cli.models.segmenter import load_hf_segmenter

        return load_hf_segmenter(request.name, request.device, request.labels, request.display)

    def generate(request: ModelRequest) -> Model:
        from aim_cli.models.language import load_language_model

        display = request.spec or "demo lm"
        return load_language_model(request.name, display, request.device, request.dtype, request.device_map)

    return {"classify": classify, "segment": segment, "generate": generate}


def _torchvision_loaders() -> dict[str, Callable[[ModelRequest], Model]]:
    """torchvision classification and segmentation architectures, filled from --weights."""

    def classify(request: ModelRequest) -> Model:
        from aim_cli.models.classifier import load_torchvision_classifier

        return load_torchvision_classifier(request.name, request.device, request.weights, request.labels)

    def segment(request: ModelRequest) -> Model:
        from aim_cli.models.segmenter import load_torchvision_segmenter

        return load_torchvision_segmenter(request.name, request.device, request.weights, request.labels)

    return {"classify": classify, "segment": segment}


def _timm_arch(request: ModelRequest) -> Model:
    """timm:ARCH filled from --weights."""
    from aim_cli.models.timm_classifier import load_timm_arch

    return load_timm_arch(request.name, request.device, request.weights, request.labels)


def _timm_folder(request: ModelRequest) -> Model:
    """A timm checkpoint in Hugging Face layout (local folder or cached hub id)."""
    from aim_cli.models.timm_classifier import load_timm_checkpoint

    return load_timm_checkpoint(request.name, request.device, request.labels)


# Sources named by a prefix (`torchvision:ARCH`), in the order the --weights hint lists them.
PREFIXED: dict[str, BuiltinSource] = {
    "torchvision": BuiltinSource("torchvision", "a torchvision model", _torchvision_loaders(), takes_weights=True),
    "timm": BuiltinSource("timm", "a timm image classifier", {"classify": _timm_arch}, takes_weights=True),
}
# Sources recognised from the value itself.
BUILTIN: dict[str, BuiltinSource] = {
    "demo": BuiltinSource("demo", "a demo model", _transformers_loaders()),
    "timm-checkpoint": BuiltinSource("timm-checkpoint", "a timm image classifier", {"classify": _timm_folder}),
    "local": BuiltinSource("local", "a local checkpoint", _transformers_loaders()),
    "hub": BuiltinSource("hub", "a cached hub model", _transformers_loaders()),
}


def plugin_sources() -> dict[str, Plugin]:
    """The installed third-party sources, by prefix (their entry points, not yet imported)."""
    return discover(frozenset(PREFIXED))


def _prefix(spec: str) -> str | None:
    """The `SOURCE` of a `SOURCE:NAME` value, when it names a built-in or installed source."""
    head, colon, _ = spec.partition(":")
    if not colon or not head:
        return None
    if head in PREFIXED or head in plugin_sources():
        return head
    return None


def parse_spec(spec: str | None, weights: Path | None = None, task: str = "classify") -> ModelSpec:
    """Which source a --model value names: demo, `SOURCE:NAME`, timm checkpoint, local folder or hub id.

    --weights only fills an architecture a prefixed source builds; a checkpoint carries its own.
    """
    prefix = _prefix(spec) if spec else None
    if spec and prefix is not None:
        return ModelSpec(prefix, spec[len(prefix) + 1 :])
    if weights is not None:
        hint = " or ".join(f"{name}:ARCH" for name, source in PREFIXED.items() if source.takes_weights)
        raise ModelError(f"--weights goes with --model {hint}", "model directories carry their own weights")
    if not spec:
        return ModelSpec("demo", "")
    from aim_cli.models.local import looks_like_path
    from aim_cli.models.timm_classifier import timm_checkpoint

    # Language models are read by transformers alone (its own config checks); image tasks tell timm
    # checkpoints apart, so that segment can refuse one by name.
    if task != "generate" and timm_checkpoint(spec) is not None:
        return ModelSpec("timm-checkpoint", spec)
    path = Path(spec).expanduser()
    return ModelSpec("local" if path.exists() or looks_like_path(spec) else "hub", spec)


def _source(name: str) -> tuple[ModelSource, Plugin | None]:
    """The source object for a parsed spec: built in, or imported from its entry point (and that plugin)."""
    if name in PREFIXED:
        return PREFIXED[name], None
    if name in BUILTIN:
        return BUILTIN[name], None
    plugin = plugin_sources()[name]
    return plugin.load_object(), plugin


@overload
def load_model(
    task: Literal["generate"],
    spec: str | None,
    *,
    device: torch.device,
    weights: Path | None = None,
    labels: Path | None = None,
    dtype: str = "auto",
    device_map: str | None = None,
) -> LanguageModel: ...


@overload
def load_model(
    task: Literal["classify", "segment"],
    spec: str | None,
    *,
    device: torch.device,
    weights: Path | None = None,
    labels: Path | None = None,
    dtype: str = "auto",
    device_map: str | None = None,
) -> ImageModel: ...


def load_model(
    task: str,
    spec: str | None,
    *,
    device: torch.device,
    weights: Path | None = None,
    labels: Path | None = None,
    dtype: str = "auto",
    device_map: str | None = None,
) -> Model:
    """Load the model `spec` names for `task` (classify, segment, generate), offline, on `device`.

    `weights` fills a `torchvision:`/`timm:` architecture; `labels` is a class-names file for an
    image model; `dtype` and `device_map` apply to language models.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}', expected one of {', '.join(TASKS)}")
    if task != "generate" and (dtype not in ("auto", "", None) or device_map):
        raise ModelError("--dtype and --device-map apply to language models (aim generate)")
    parsed = parse_spec(spec, weights, task)
    source, plugin = _source(parsed.source)
    tasks = source.tasks if plugin is None else plugin.tasks(source)
    if task not in tasks:
        what = getattr(source, "what", None) if plugin is None else None
        what = what or f"a '{parsed.source}' model"
        served = " / ".join(f"aim {t} / aim calibrate --task {t}" for t in tasks if t in TASKS) or "another tool"
        raise ModelError(f"{spec} is {what}, which aim {task} cannot use", f"use it with {served}")
    takes_weights = source.takes_weights if plugin is None else plugin.takes_weights(source)
    if weights is not None and not takes_weights:
        raise ModelError(f"--weights does not go with --model {spec}", "the model carries its own weights")
    name = str(demo.model_dir(task)) if parsed.source == "demo" else parsed.name
    request = ModelRequest(task, spec, name, device, weights, labels, dtype, device_map)
    if plugin is None:
        return source.load(request)
    model = plugin.call("load()", source.load, request)
    names = plugin.call("checking what load() returned", _check_plugin_model, plugin, task, model)
    if task == "generate":
        return model
    # The tasks reach the plugin's model only through this wrapper: its logits() run in the guard.
    return cast("Model", plugin.call("checking what load() returned", GuardedImageModel, plugin, model, task, names))


def _check_plugin_model(plugin: Plugin, task: str, model: object) -> list[str]:
    """What a plugin's load() returned must be a model of the task, with a bounded list of string labels (returned).

    Run through Plugin.call: reading the object's attributes runs the plugin's code (properties).
    """
    if task == "generate":
        from aim_cli.models.language import LanguageModel

        if not isinstance(model, LanguageModel):
            raise plugin.error("load()", f"it returned {type(model).__name__}, not aim's LanguageModel")
        return []
    if not isinstance(model, VisionModel):  # checked before any image reaches it
        raise plugin.error(
            "load()",
            f"it returned {type(model).__name__}, not an image model "
            "(one has name, device, labels, preprocess and logits(images))",
        )
    labels = model.labels  # read once: a property could answer differently the next time
    if isinstance(labels, str) or not isinstance(labels, (list, tuple)):
        raise plugin.error("load()", f"its model's labels are {type(labels).__name__}, not a list of class names")
    if not 1 <= len(labels) <= LABEL_COUNT.value():
        raise plugin.error(
            "load()", f"its model has {len(labels):,} labels; {LABEL_COUNT.hint()} (at least 1 is needed)"
        )
    odd = next((label for label in labels if not isinstance(label, str)), None)
    if odd is not None:
        raise plugin.error("load()", f"its model's labels include {type(odd).__name__} {odd!r:.40}, not a name")
    if not isinstance(model.name, str):
        raise plugin.error("load()", f"its model's name is {type(model.name).__name__}, not a string")
    if not isinstance(model.device, torch.device):
        raise plugin.error("load()", f"its model's device is {type(model.device).__name__}, not a torch.device")
    return list(labels)
