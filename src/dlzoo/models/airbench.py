"""A fast CIFAR-10 network in the style of Keller Jordan's airbench94 (2024: 94% on CIFAR-10
in about 3.5 seconds on an A100), written from its description.

- Patch whitening: a 2x2 conv (padding 0) whose filters whiten 2x2 patches. They come from
  the data, not from gradient descent: the eigenvectors of the covariance of all 2x2xC
  patches of a few thousand training images, each scaled by 1/sqrt(eigenvalue + eps), plus
  their negatives so that the GELU after it keeps both signs (24 filters for RGB). The
  training loop calls ``fit_to_data`` with the first 5,000 normalised training images; the
  filters are a buffer (saved with the weights), the bias is learned.
- Three conv groups of 64, 256, 256 channels (scaled by ``width_mult``), each conv 3x3 ->
  max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU. The convs have no bias and start with
  their first filters as the identity (dirac initialisation); the batch norms keep their scale
  at 1 and learn only their shift, at 64x the learning rate (``lr_multipliers``). The max-pools
  are torch's, keeping one byte per output for the backward pass (``MaxPool2x2``).
- Global max-pool, then a linear head without bias whose logits are multiplied by 1/9.
- Test-time augmentation in eval mode, by level (``tta``, airbench94's levels): 0 none;
  1 (the default) the mean of the logits of the image and of its mirror image; 2 half of
  that plus a quarter each of the same mean for the image shifted one pixel up-left and one
  pixel down-right (reflect-padded), six forward passes per image.

- ``whiten_bias_epochs=N`` (airbench94's choice: 3) learns the whitening bias for the first N
  epochs only, then freezes it: from then on no gradient flows back into the whitening output,
  which spares the first conv's input gradient and the GELU's backward. The training loop calls
  ``start_epoch`` before each epoch. 0 (the default) learns it for the whole run.

Differences from airbench94: the weight averaging (``optim.lookahead_ramp``) leaves the
batch-norm statistics out. The training side (label smoothing 0.2, alternating flip, 2-pixel
reflect-padded crops, Nesterov SGD, airbench's straight-line schedule and ramped weight
averaging) is the recipe ``cifar10-airbench``; ``cifar10-airbench-muon`` trains the same network
as airbench94_muon does (the Muon optimiser on the conv filters, 8 epochs of batch 2000), and
``cifar10-airbench-long`` trains it so for 16 epochs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlzoo.models.base import Classifier
from dlzoo.registry import MODELS

WIDTHS = (64, 256, 256)
"""Channels of the three conv groups."""
WHITENING_EPS = 5e-4
"""Added to each eigenvalue before the square root, so near-constant directions are not blown up."""
BN_MOMENTUM = 0.4
"""Batch-norm running-statistics momentum (torch's convention; airbench's 0.6 in its own)."""
BN_BIAS_LR_MULT = 64.0
"""Learning-rate factor of the batch-norm shifts (airbench's bias_scaler)."""
TTA_LEVELS = (0, 1, 2)
"""Test-time augmentation levels: none, mirror, mirror and 1-pixel translations."""
HEAD_SCALE = 1 / 9
"""Fixed factor on the logits (airbench's scaling_factor)."""
FIT_CHUNK = 256
"""Images per chunk when accumulating patch statistics (bounds the float64 copy)."""


class PatchWhitening(nn.Module):
    """2x2 conv, padding 0, with fixed filters (a buffer, set by ``fit``) and a learned bias.

    Until fitted the filters pick out each pixel of the patch, and its negative: the
    whitening of data that is white already.
    """

    def __init__(self, in_channels: int, eps: float = WHITENING_EPS) -> None:
        super().__init__()
        patch = 4 * in_channels
        basis = torch.eye(patch).view(patch, in_channels, 2, 2)
        self.register_buffer("weight", torch.cat([basis, -basis]))  # (2 * patch, C, 2, 2)
        self.bias = nn.Parameter(torch.zeros(2 * patch))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias)

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Whitening filters for the 2x2 patches of images ``x`` (N, C, H, W), largest
        eigenvalue first; the bias starts at minus the filtered mean patch, so the outputs on
        ``x`` start with zero mean and (for the first half of the filters) identity covariance."""
        patch = self.weight.shape[0] // 2
        total = torch.zeros(patch, dtype=torch.float64)
        outer = torch.zeros(patch, patch, dtype=torch.float64)
        count = 0
        for chunk in x.split(FIT_CHUNK):
            # (B, C*4, L) -> (B*L, C*4): one row per patch, ordered like a conv kernel (C, 2, 2)
            patches = F.unfold(chunk.to("cpu", torch.float64), 2).transpose(1, 2).reshape(-1, patch)
            total += patches.sum(0)
            outer += patches.T @ patches
            count += len(patches)
        mean = total / count
        covariance = outer / count - torch.outer(mean, mean)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending; vectors are columns
        scaled = eigenvectors / (eigenvalues.clamp_min(0) + self.eps).sqrt()  # column i / sqrt(l_i + eps)
        filters = scaled.T.flip(0)  # (patch, patch): row i is a filter, largest eigenvalue first
        weight = torch.cat([filters, -filters])
        self.weight.copy_(weight.view_as(self.weight))
        self.bias.copy_(-(weight @ mean))


def window_corners(width: int, out_size: torch.Size, device: torch.device) -> Tensor:
    """(h, w) int64: the flat index (row * width + column) of each 2x2 window's top-left pixel."""
    rows, columns = out_size
    row_starts = torch.arange(rows, device=device).mul_(2 * width)
    return row_starts[:, None] + torch.arange(columns, device=device).mul_(2)


class _MaxPool2x2(torch.autograd.Function):
    """2x2 max-pool, stride 2, that keeps one byte per output for its backward pass."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        y, indices = F.max_pool2d(x, 2, return_indices=True)  # int64: row * W + column in x's plane
        ctx.corners = window_corners(x.shape[-1], y.shape[-2:], x.device)
        ctx.input_shape, ctx.input_dtype = x.shape, x.dtype
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        ctx.input_format = torch.channels_last if channels_last else torch.contiguous_format
        # Each index is its window's corner plus 0, 1, W or W + 1: with the corners known, the
        # index's lowest byte (index mod 256) tells these apart while W + 1 < 256.
        ctx.save_for_backward(indices.to(torch.uint8) if x.shape[-1] + 1 < 256 else indices)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (indices,) = ctx.saved_tensors
        if indices.dtype == torch.uint8:  # (byte - corner's byte) mod 256 is the offset in the window
            indices = (indices - ctx.corners.to(torch.uint8)).long().add_(ctx.corners)
        # torch's kernel reads only the input's shape and layout: an empty tensor lends them.
        like = torch.empty(
            ctx.input_shape, dtype=ctx.input_dtype, device=grad.device, memory_format=ctx.input_format
        )
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, like, 2, 2, 0, 1, False, indices)


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` with the same outputs and gradients, keeping a sixteenth of its memory
    for the backward pass (in bfloat16).

    torch's max-pool keeps its input and an int64 index per output for the backward pass: at
    batch 1024, 486 of the 931 MiB that airbench's training step keeps. The gradient needs only
    which pixel of each window was the maximum, so this keeps the lowest byte of torch's index,
    rebuilds the index from it in the backward pass and hands it to torch's own backward kernel.
    The two casts cost about 1.4% of airbench's step (docs/benchmarks.md, Peak memory).
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (torch.is_grad_enabled() and x.requires_grad) or torch.jit.is_tracing():
            return F.max_pool2d(x, 2)  # nothing to keep for a backward pass
        return _MaxPool2x2.apply(x)


class Scale(nn.Module):
    """Multiply by a fixed ``factor``."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:.4g}"


def dirac_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 conv without bias whose first ``in_channels`` filters start as the identity (each
    passes one input channel through); the others keep torch's default initialisation."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:in_channels])
    return conv


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """Batch norm whose scale stays 1 (not trained; airbench's choice): only the shift learns."""
    norm = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)
    norm.weight.requires_grad_(False)
    return norm


def conv_group(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU."""
    return nn.Sequential(
        dirac_conv(in_channels, out_channels),
        MaxPool2x2(),
        batch_norm(out_channels),
        nn.GELU(),
        dirac_conv(out_channels, out_channels),
        batch_norm(out_channels),
        nn.GELU(),
    )


class Airbench(Classifier):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        widths: tuple[int, ...] = WIDTHS,
        tta: int = 1,
        whiten_bias_epochs: int = 0,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"airbench needs images (C, H, W), got input shape {in_shape}")
        if tta not in TTA_LEVELS:
            raise ValueError(f"model.tta must be 0 (none), 1 (mirror) or 2 (mirror + shifts), got {tta}")
        if whiten_bias_epochs < 0:
            raise ValueError(
                "model.whiten_bias_epochs must be >= 0 (0 learns the whitening bias for the whole run), "
                f"got {whiten_bias_epochs}"
            )
        whiten = PatchWhitening(in_shape[0])
        channels = [whiten.weight.shape[0], *widths]
        groups = [conv_group(c_in, c_out) for c_in, c_out in zip(channels, widths)]
        self.features = nn.Sequential(whiten, nn.GELU(), *groups, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(widths[-1], num_classes, bias=False), Scale(HEAD_SCALE))
        self.tta = tta  # eval-mode test-time augmentation level (TTA_LEVELS)
        self.whiten_bias_epochs = whiten_bias_epochs

    @property
    def whiten(self) -> PatchWhitening:
        return self.features[0]

    def lr_multipliers(self) -> dict[str, float]:
        """The batch-norm shifts learn at ``BN_BIAS_LR_MULT`` x the lr (the training loop's
        parameter groups read this)."""
        return {
            f"{name}.bias": BN_BIAS_LR_MULT
            for name, module in self.named_modules()
            if isinstance(module, nn.BatchNorm2d)
        }

    def start_epoch(self, epoch: int) -> bool:
        """Before epoch ``epoch`` (0-based): freeze the whitening bias once ``whiten_bias_epochs``
        epochs have learned it. Returns whether this changed which parameters train (a
        data-parallel wrapper then needs rebuilding). It never unfreezes: a bias frozen by
        ``model.freeze`` stays frozen."""
        frozen_now = 0 < self.whiten_bias_epochs <= epoch and self.whiten.bias.requires_grad
        if frozen_now:
            self.whiten.bias.requires_grad_(False)
        return frozen_now

    def fit_to_data(self, x: Tensor) -> None:
        """Fit the whitening filters to normalised training images ``x`` (N, C, H, W)."""
        channels = self.whiten.weight.shape[1]
        if x.dim() != 4 or x.shape[1] != channels or len(x) == 0:
            raise ValueError(
                f"airbench's whitening needs normalised training images (N, {channels}, H, W), "
                f"got a tensor of shape {tuple(x.shape)}"
            )
        self.whiten.fit(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.training or not self.tta:
            return super().forward(x)
        views = [x]
        if self.tta == 2:  # shifted one pixel up-left and one down-right, reflect-padded
            padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
            views += [padded[..., 2:, 2:], padded[..., :-2, :-2]]
        logits = []  # per view, the mean over it and its mirror: (B, classes)
        for view in views:  # one forward per view: a third of the activations of all six at once
            logits.append(super().forward(torch.cat([view, view.flip(3)])).unflatten(0, (2, -1)).mean(0))
        if self.tta == 1:
            return logits[0]
        return 0.5 * logits[0] + 0.25 * (logits[1] + logits[2])


@MODELS.register("airbench", min_size=16)  # 2x2 conv and three pools: 16 -> 15 -> 7 -> 3 -> 1
def airbench(
    num_classes: int,
    in_shape: tuple[int, ...],
    width_mult: float = 1.0,
    tta: int = 1,
    whiten_bias_epochs: int = 0,
) -> Airbench:
    widths = tuple(max(1, round(width * width_mult)) for width in WIDTHS)
    return Airbench(in_shape, num_classes, widths, tta, whiten_bias_epochs)
