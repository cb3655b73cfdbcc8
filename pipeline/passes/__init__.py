"""Pass registry. A pass is a function (input Artifact, config, Context) -> output Artifact,
registered by name with `@register`. One file per pass in this package."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Artifact:
    """A folder a pass reads or writes. `kind` says what is in it: "hf-model" (a Hugging Face
    model folder) or "onnx-genai" (an ONNX model with genai_config.json)."""

    path: Path
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What a pass may use besides its input: the target, a private scratch folder (on the cache's
    filesystem, so the output can be moved into the cache), a folder for logs that outlive a
    failed run, and a progress logger."""

    target: dict[str, str]
    model: dict[str, Any]
    source: Path  # the resolved Hugging Face model folder (for passes that compare with it)
    prompt_template: dict[str, str]  # the PromptTemplate packaging will write
    workdir: Path
    logdir: Path
    log: Callable[[str], None]


PassFn = Callable[[Artifact, dict, Context], Artifact]


@dataclass(frozen=True)
class RegisteredPass:
    name: str
    fn: PassFn
    version: str  # bump when the pass's output changes for the same input and config
    consumes: str
    produces: str
    file_params: tuple[str, ...] = ()  # params naming files: keyed by content, not path
    # The file a file param stands for when the recipe leaves it out (keyed by content as well).
    file_defaults: dict[str, Path] = field(default_factory=dict)


_REGISTRY: dict[str, RegisteredPass] = {}


def register(name: str, *, version: str, consumes: str, produces: str, file_params: tuple[str, ...] = (),
             file_defaults: dict[str, Path] | None = None) -> Callable[[PassFn], PassFn]:
    """Register `fn` under `name`. A second registration of a name is a programming error."""

    def decorate(fn: PassFn) -> PassFn:
        if name in _REGISTRY:
            raise RuntimeError(f"pass {name!r} is registered twice ({_REGISTRY[name].fn.__module__} and {fn.__module__})")
        _REGISTRY[name] = RegisteredPass(name, fn, version, consumes, produces, file_params,
                                         dict(file_defaults or {}))
        return fn

    return decorate


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def get_pass(name: str) -> RegisteredPass:
    """The pass registered as `name`; an unknown name lists the known ones."""
    if not _REGISTRY:
        _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PipelineError(f"unknown pass {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None


def known_passes() -> list[str]:
    if not _REGISTRY:
        _load_all()
    return sorted(_REGISTRY)
