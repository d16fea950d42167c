"""torchvision's published ImageNet weights for the dlzoo families that match torchvision.

A family whose module and parameter names follow torchvision's registers its
variants with ``torchvision_weights="ResNet18_Weights"`` (the name of the weights
enum in ``torchvision.models``). ``model.pretrained=true`` then loads that enum's
default weights: torch.hub downloads them once into ``$TORCH_HOME/hub/checkpoints``
(``~/.cache/torch/hub/checkpoints``) and checks the hash in the file name, exactly as
``torchvision.models.resnet18(weights="DEFAULT")`` does. Offline, a copy placed in
that folder under the same file name is used as is. A head of another class count
than ImageNet's 1000 keeps its fresh initialisation (transfer learning).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlzoo.models.base import load_matching


def weights_entry(enum_name: str) -> Any:
    """The default member of ``torchvision.models.<enum_name>`` (has ``.url`` and ``.meta``)."""
    import torchvision.models

    return getattr(torchvision.models, enum_name).DEFAULT


def weights_path(enum_name: str) -> Path:
    """Where torch.hub keeps (or expects) the weights file of ``enum_name``."""
    url = weights_entry(enum_name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def fetch_state_dict(enum_name: str) -> dict[str, torch.Tensor]:
    """The state dict of ``enum_name``'s default weights, downloaded once; offline, a clear error."""
    url = weights_entry(enum_name).url
    path = weights_path(enum_name)
    try:
        return torch.hub.load_state_dict_from_url(
            url,
            model_dir=str(path.parent),
            map_location="cpu",
            progress=False,
            check_hash=True,
            weights_only=True,
        )
    except (OSError, RuntimeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FileNotFoundError(
            f"cannot get the pretrained weights {url} ({reason}); download that file on a machine "
            f"with internet and place it at {path}"
        ) from None


def load_pretrained(model: nn.Module, enum_name: str) -> dict[str, Any]:
    """Copy torchvision's ``enum_name`` weights into ``model`` (names must match torchvision's).

    Every tensor must fit except the classifier head's, which is skipped when the class
    count is not ImageNet's; returns what was loaded, for the run log.
    """
    facts = load_matching(
        model,
        fetch_state_dict(enum_name),
        f"model.pretrained ({enum_name})",
        "pretrained weights need 3-channel images and the model's default settings",
    )
    return {"pretrained": enum_name, **facts}
