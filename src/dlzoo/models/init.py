"""Weight initialisers, selectable by name (``model.init``).

he: Kaiming normal for ReLU (He et al. 2015); xavier: Glorot uniform (Glorot &
Bengio 2010); normal: N(0, 0.05^2) and truncated_normal: the same truncated at
two standard deviations (Keras's RandomNormal and TruncatedNormal defaults);
default: leave PyTorch's own initialisation. Biases start at zero for every
named scheme. Batch-norm layers keep weight 1, bias 0.
"""

from __future__ import annotations

from torch import nn

NORMAL_STD = 0.05


def init_weights(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise every conv and linear layer of ``model`` in place with ``scheme``."""
    if scheme == "default":
        return model
    fill = {
        "he": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
        "xavier": nn.init.xavier_uniform_,
        "normal": lambda w: nn.init.normal_(w, std=NORMAL_STD),
        "truncated_normal": lambda w: nn.init.trunc_normal_(
            w, std=NORMAL_STD, a=-2 * NORMAL_STD, b=2 * NORMAL_STD
        ),
    }
    if scheme not in fill:
        raise ValueError(f"unknown init {scheme!r}. Valid: default, {', '.join(fill)}")
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            fill[scheme](module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
