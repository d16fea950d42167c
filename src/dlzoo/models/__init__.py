"""Model families. Importing this package registers every model in ``MODELS``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from torch import nn

from dlzoo.models.base import Classifier
from dlzoo.models.init import init_weights
from dlzoo.models.pretrained import load_pretrained
from dlzoo.registry import MODELS

for _module in pkgutil.iter_modules(__path__):  # importing a family file registers its variants
    importlib.import_module(f"{__name__}.{_module.name}")


def check_image_size(name: str, in_shape: tuple[int, ...], setting: str = "data.resize") -> None:
    """Raise ``ValueError`` if model ``name`` cannot take images of ``in_shape`` ((C, H, W); other
    shapes pass), naming ``setting``, the configuration field that gave that size."""
    min_size = MODELS.info(name).get("min_size", 1)
    if len(in_shape) == 3 and min(in_shape[1:]) < min_size:
        fix = (
            f"set data.resize={min_size}"
            if setting == "data.resize"
            else f"use {setting} of {min_size} or more"
        )
        raise ValueError(
            f"model {name!r} needs images of at least {min_size}x{min_size} pixels, got "
            f"{in_shape[1]}x{in_shape[2]}; {fix} or pick a model with a small-image stem"
        )


def create_model(
    name: str, num_classes: int, in_shape: tuple[int, ...], init: str = "default", **kwargs: object
) -> nn.Module:
    """Build registered model ``name`` for inputs of ``in_shape`` ((C, H, W) or (D,)).

    ``pretrained=True`` then loads torchvision's ImageNet weights (families that
    match torchvision; see ``dlzoo.models.pretrained``).

    ``kwargs`` are the architecture settings (activation, hidden_sizes, ...); one the
    model does not take is an error naming the ones it does.
    """
    factory = MODELS.get(name)
    check_image_size(name, in_shape)
    accepted = [p for p in inspect.signature(factory).parameters if p not in ("num_classes", "in_shape")]
    pretrained = bool(kwargs.pop("pretrained", False))
    unknown = [key for key in kwargs if key not in accepted]
    if unknown:
        takes = ", ".join(accepted) or "no settings"
        raise ValueError(f"model {name!r} does not take {unknown[0]!r}; it takes: {takes}")
    weights = MODELS.info(name).get("torchvision_weights")
    if pretrained and not weights:
        with_weights = ", ".join(n for n in MODELS.names() if MODELS.info(n).get("torchvision_weights"))
        raise ValueError(
            f"model {name!r} has no published pretrained weights; these do: {with_weights or 'none'}"
        )
    model = init_weights(factory(num_classes=num_classes, in_shape=tuple(in_shape), **kwargs), init)
    if pretrained:
        load_pretrained(model, weights)
    return model


__all__ = ["Classifier", "create_model", "init_weights"]
