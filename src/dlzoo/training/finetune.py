"""Fine-tuning and transfer: start from trained weights, freeze some, train the rest.

Every classifier shares the interface of ``dlzoo.models.base.Classifier``
(``features``, ``classifier``, ``head``, ``reset_head``), so one code path serves
every family:

- ``model.init_from`` names the weights to start from: a run folder (its ``best``
  checkpoint), ``recipe:<name>`` (the newest finished run of that recipe), or a
  ``.safetensors`` file. When the class count differs, the head keeps its fresh
  initialisation and everything else must fit.
- ``model.freeze`` lists parameter-name patterns. ``features`` means the whole
  backbone: every parameter outside the classifier module (``features.*`` in most
  families, everything but ``fc`` in ResNet); a parameter's name means that
  parameter, a module name everything under it, and shell patterns
  (``features.0.*``, ``layer[12].*``) work too. Frozen parameters get no gradient,
  and batch-norm layers whose parameters are all frozen stay in eval mode, so their
  running statistics do not move either.
- ``model.features_lr_mult`` scales the learning rate of trainable feature
  parameters (discriminative fine-tuning); the head keeps ``optim.lr``. A model's own
  ``lr_multipliers()`` scale further (see ``parameter_groups``).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from dlzoo.errors import CheckpointError
from dlzoo.models.base import load_matching
from dlzoo.training.checkpoint import WEIGHTS, resolve
from dlzoo.training.run import read_json

RECIPE_PREFIX = "recipe:"


def find_weights(init_from: str, runs_dir: str) -> Path:
    """The safetensors file ``init_from`` means (see the module docstring)."""
    if init_from.startswith(RECIPE_PREFIX):
        recipe = init_from.removeprefix(RECIPE_PREFIX)
        parent = Path(runs_dir) / recipe
        finished = (
            [
                p
                for p in sorted(parent.iterdir())
                if (p / "run.json").is_file() and read_json(p / "run.json").get("status") == "finished"
            ]
            if parent.is_dir()
            else []
        )
        if not finished:
            raise FileNotFoundError(
                f"model.init_from={init_from}: no finished run of {recipe} under {parent}; "
                f"train it first with `dlzoo train {recipe}`"
            )
        return resolve(finished[-1] / "checkpoints", "best") / WEIGHTS
    path = Path(init_from).expanduser()
    if path.is_dir():
        return resolve(path / "checkpoints", "best") / WEIGHTS
    if path.suffix == ".safetensors" and path.is_file():
        return path
    raise FileNotFoundError(
        f"model.init_from={init_from}: expected a run folder, recipe:<name> or a .safetensors file"
    )


def load_initial_weights(model: nn.Module, init_from: str, runs_dir: str) -> dict[str, Any]:
    """Copy matching weights into ``model``; only the head may differ in shape (it stays fresh)."""
    path = find_weights(init_from, runs_dir)
    try:
        source = load_file(str(path))
    except Exception as error:
        raise CheckpointError(f"model.init_from: {path} is unreadable ({type(error).__name__})") from None
    facts = load_matching(
        model,
        source,
        f"model.init_from={init_from}",
        "fine-tune the same model family with the same input shape",
    )
    return {"init_from": str(path), **facts}


def backbone_names(model: nn.Module) -> set[str]:
    """Names of the parameters outside the classifier (``features.*`` for a plain module)."""
    if hasattr(model, "backbone_parameters"):
        return {name for name, _ in model.backbone_parameters()}
    return {name for name, _ in model.named_parameters() if name.startswith("features.")}


def _matches(name: str, pattern: str, backbone: set[str]) -> bool:
    if pattern == "features":
        return name in backbone
    if "*" not in pattern and "?" not in pattern and "[" not in pattern:  # a parameter or a module
        return name == pattern or name.startswith(pattern + ".")
    return fnmatch.fnmatchcase(name, pattern)


def freeze(model: nn.Module, patterns: list[str]) -> list[str]:
    """Turn off gradients for parameters matching ``patterns``; returns their names."""
    backbone = backbone_names(model)
    names = [name for name, _ in model.named_parameters()]
    frozen = [name for name in names if any(_matches(name, p, backbone) for p in patterns)]
    unmatched = [p for p in patterns if not any(_matches(n, p, backbone) for n in frozen)]
    if unmatched:
        raise ValueError(
            f"model.freeze pattern {unmatched[0]!r} matches no parameter; names are: {', '.join(names)}"
        )
    for name, parameter in model.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)
    return frozen


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, except batch-norm layers whose parameters are all frozen."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            parameters = list(module.parameters())
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()


def parameter_groups(
    model: nn.Module, features_lr_mult: float, lr: float, weight_decay: float = 0.0, orthogonal: bool = False
) -> list[dict[str, Any]]:
    """Trainable parameters as optimiser groups: features at ``lr * features_lr_mult``, the rest at ``lr``.

    A model may also scale the lr of some of its parameters itself: ``model.lr_multipliers()``
    returns ``{parameter name: factor}`` (airbench's 64x lr on batch-norm biases). Such a group
    gets ``weight_decay / factor``, so that its decay per step (lr x weight decay in torch's
    coupled decay) stays that of the others. Groups come in the order of their first parameter
    in ``model.parameters()``, and so do the parameters within a group.

    With ``orthogonal`` (for the Muon optimiser) the hidden weight matrices, the features'
    parameters of two or more dimensions (conv filters, linear weights), form groups of their
    own flagged ``"orthogonal": True``; the head and every bias stay as above.
    """
    backbone = backbone_names(model)
    own = model.lr_multipliers() if hasattr(model, "lr_multipliers") else {}
    unknown = set(own) - {name for name, _ in model.named_parameters()}
    if unknown:
        raise ValueError(
            f"lr_multipliers names {sorted(unknown)[0]!r}, which is not a parameter of the model"
        )
    groups: dict[tuple[float, float, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            hidden_matrix = orthogonal and name in backbone and param.dim() >= 2
            key = (features_lr_mult if name in backbone else 1.0, own.get(name, 1.0), hidden_matrix)
            groups.setdefault(key, []).append(param)
    if not groups:
        raise ValueError("model.freeze froze every parameter: nothing is left to train")
    if orthogonal and not any(hidden_matrix for _, _, hidden_matrix in groups):
        raise ValueError(
            "optim.name = muon needs trainable weight matrices in the model's features (conv filters, "
            "linear weights); this model has none: choose another optimiser"
        )
    result = []
    for (features, factor, hidden_matrix), params in groups.items():
        group: dict[str, Any] = {"params": params}
        if features * factor != 1.0:
            group["lr"] = lr * features * factor
        if factor != 1.0:
            group["weight_decay"] = weight_decay / factor
        if hidden_matrix:
            group["orthogonal"] = True
        result.append(group)
    return result


def unchanged(model: nn.Module, names: list[str], weights_file: str) -> bool:
    """Whether the parameters ``names`` still equal those in ``weights_file`` (frozen ones must)."""
    source = load_file(weights_file)
    own = dict(model.named_parameters())
    return all(torch.equal(own[name].detach().cpu(), source[name]) for name in names)
