"""Small CNNs: the model zoo's basic CNN section (Raschka's deeplearning-models, PyTorch
notebooks on MNIST), the Keras example cifar10_cnn.py, and the notes' CIFAR-10 convnet.

Variants differ in their stack of 3x3 conv layers and dense layers:

- ``cnn_basic``: conv 8 -> max-pool -> conv 16 -> max-pool -> linear ("same" convs, ReLU).
- ``cnn_he``: the same network, He (Kaiming normal) initialised by the model itself.
- ``cnn_fc`` / ``cnn_fcconv``: cnn_basic's convs, a hidden dense layer of 64 and the output
  layer; ``cnn_fcconv`` computes the hidden dense layer as a convolution whose kernel covers
  the whole feature map ("fully connected layer as convolution"). ``dense_to_conv`` turns
  the weights of a ``cnn_fc`` into those of the equivalent ``cnn_fcconv``.
- ``cnn_allconv``: the all-convolutional net (Springenberg et al. 2015, "Striving for
  Simplicity"), MNIST-sized as in the zoo: no pooling and no dense layers, stride-2 3x3
  convs downsample, a 1x1 conv maps to the classes, global average pooling gives the logits.
- ``keras_cifar10_cnn``: conv 32 same, conv 32 valid, max-pool, dropout 0.25, conv 64 same,
  conv 64 valid, max-pool, dropout 0.25, dense 512, dropout 0.5, dense classes. The example
  trains it with RMSprop (lr 1e-4, decay 1e-6), batch 32.
- ``convnet_small``: the first notebook set's own CIFAR-10 "convnet" (the notes report
  66.3%), reconstructed from its layer list conv 32-conv 32-pool-conv 64-conv 64-pool-dense
  512-dense classes; the padding ("same"), ReLU and the absence of dropout are our reading.
- ``mnist_fast``: the MNIST speed recipe's net (recipe ``mnist-fast``): conv 16 -> max-pool
  -> conv 32 -> max-pool -> conv 64, all 'valid' with batch norm, then dense 128.

The head is always an ``nn.Linear`` (the shared ``Classifier`` interface). Where the paper's
output layer is a 1x1 conv followed by global average pooling (all-conv) or a 1x1 conv on a
1x1 map (fc-as-conv), the head is that same linear map applied after the pooling instead of
before it: both are linear, so the order does not change the logits (tests check it).
"""

from __future__ import annotations

import torch
from torch import nn

from dlzoo.models.base import Classifier, Dropout, flat_size, make_activation
from dlzoo.models.init import init_weights
from dlzoo.registry import MODELS

STACKS: dict[str, list[str]] = {
    "basic": ["s8", "M", "s16", "M"],
    "keras_cifar10": ["s32", "v32", "M", "D", "s64", "v64", "M", "D"],
    "convnet_small": ["s32", "s32", "M", "s64", "s64", "M"],
    "mnist_fast": ["vb16", "M", "vb32", "M", "vb64"],
}
"""Conv stacks: ``sN`` = conv 3x3 'same' with N filters, ``vN`` = conv 3x3 'valid', ``sbN`` /
``vbN`` = the same with batch norm between the conv (then without bias) and the activation,
``M`` = 2x2 max-pool, ``D`` = dropout (the stack's rate). Each conv is followed by the
activation."""


def conv_stack(in_channels: int, stack: list[str], activation: str, dropout_rate: float) -> list[nn.Module]:
    """The layers of a ``STACKS`` entry."""
    layers: list[nn.Module] = []
    for item in stack:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        elif item == "D":
            layers.append(Dropout(dropout_rate))
        else:
            batch_norm = item[1] == "b"
            out_channels = int(item[2:] if batch_norm else item[1:])
            padding = 1 if item[0] == "s" else 0
            layers.append(nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=not batch_norm))
            layers += [nn.BatchNorm2d(out_channels)] if batch_norm else []
            layers.append(make_activation(activation))
            in_channels = out_channels
    return layers


def _check_image(in_shape: tuple[int, ...]) -> None:
    if len(in_shape) != 3:
        raise ValueError(f"this CNN needs images (C, H, W), got input shape {in_shape}")


class StackCNN(Classifier):
    """A conv stack, flattened, then dense layers of ``hidden_sizes`` (each activation and
    dropout) and the linear head."""

    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        stack: list[str],
        hidden_sizes: list[int],
        activation: str = "relu",
        conv_dropout: float = 0.0,
        dense_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_image(in_shape)
        self.features = nn.Sequential(*conv_stack(in_shape[0], stack, activation, conv_dropout), nn.Flatten())
        layers: list[nn.Module] = []
        width = flat_size(self.features, in_shape)
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), make_activation(activation), Dropout(dense_dropout)]
            width = hidden
        self.classifier = nn.Sequential(*layers, nn.Linear(width, num_classes))


FC_HIDDEN = 64
"""Width of the hidden dense layer of cnn_fc and cnn_fcconv."""
MNIST_FAST_HIDDEN = 128
"""Width of mnist_fast's hidden dense layer."""


class FCAsConvCNN(Classifier):
    """cnn_basic's convs, a hidden dense layer and the output layer; with ``as_conv`` the
    hidden dense layer is a convolution whose kernel is the whole (C, h, w) feature map, so
    it sees exactly what the dense layer sees and gives a (B, 64, 1, 1) map. The output
    layer on that 1x1 map is a 1x1 convolution, which is the same map as an ``nn.Linear``
    on the flattened (B, 64): it stays an ``nn.Linear``, the shared head."""

    def __init__(
        self, in_shape: tuple[int, ...], num_classes: int, as_conv: bool, activation: str = "relu"
    ) -> None:
        super().__init__()
        _check_image(in_shape)
        convs = nn.Sequential(*conv_stack(in_shape[0], STACKS["basic"], activation, 0.0))
        with torch.no_grad():
            _, channels, height, width = convs(torch.zeros(1, *in_shape)).shape
        if as_conv:
            hidden: list[nn.Module] = [nn.Conv2d(channels, FC_HIDDEN, (height, width)), nn.Flatten()]
        else:
            hidden = [nn.Flatten(), nn.Linear(channels * height * width, FC_HIDDEN)]
        self.features = nn.Sequential(*convs, *hidden, make_activation(activation))
        self.classifier = nn.Linear(FC_HIDDEN, num_classes)


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    """The conv and linear layers of ``model`` in order."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def dense_to_conv(dense: FCAsConvCNN, conv: FCAsConvCNN) -> FCAsConvCNN:
    """Copy the weights of a ``cnn_fc`` into a ``cnn_fcconv`` of the same shape; returns ``conv``.

    Layer by layer in order: the dense weight (64, C*h*w) becomes the (64, C, h, w) kernel.
    ``nn.Flatten`` orders a map channel, row, column, the same order as a conv kernel's
    (C, h, w), so the reshape alone makes the two networks compute the same function.
    """
    sources, targets = weighted_layers(dense), weighted_layers(conv)
    if [s.weight.numel() for s in sources] != [t.weight.numel() for t in targets]:
        raise ValueError(
            "dense_to_conv needs a cnn_fc and a cnn_fcconv built for the same input shape and classes"
        )
    for source, target in zip(sources, targets, strict=True):
        target.weight.copy_(source.weight.reshape(target.weight.shape))
        target.bias.copy_(source.bias)
    return conv


class AllConvNet(Classifier):
    """All-convolutional: 3x3 convs (16, 16/2, 32, 32/2), global average pooling, head.

    The paper's last layer is a 1x1 conv to the classes followed by global average
    pooling; here the head is the same linear map after the pooling (averaging and a 1x1
    conv commute, both being linear), so it is the usual ``nn.Linear`` head.
    """

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, activation: str = "relu") -> None:
        super().__init__()
        _check_image(in_shape)
        layers: list[nn.Module] = []
        channels = in_shape[0]
        for out_channels, stride in ((16, 1), (16, 2), (32, 1), (32, 2)):
            layers += [nn.Conv2d(channels, out_channels, 3, stride, 1), make_activation(activation)]
            channels = out_channels
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(channels, num_classes)


@MODELS.register("cnn_basic")
def cnn_basic(num_classes: int, in_shape: tuple[int, ...], activation: str = "relu") -> StackCNN:
    return StackCNN(in_shape, num_classes, STACKS["basic"], [], activation)


@MODELS.register("cnn_he")
def cnn_he(num_classes: int, in_shape: tuple[int, ...], activation: str = "relu") -> StackCNN:
    """cnn_basic with Kaiming-normal weights and zero biases (``model.init`` may still override)."""
    return init_weights(StackCNN(in_shape, num_classes, STACKS["basic"], [], activation), "he")


@MODELS.register("cnn_fc")
def cnn_fc(num_classes: int, in_shape: tuple[int, ...], activation: str = "relu") -> FCAsConvCNN:
    return FCAsConvCNN(in_shape, num_classes, as_conv=False, activation=activation)


@MODELS.register("cnn_fcconv")
def cnn_fcconv(num_classes: int, in_shape: tuple[int, ...], activation: str = "relu") -> FCAsConvCNN:
    return FCAsConvCNN(in_shape, num_classes, as_conv=True, activation=activation)


@MODELS.register("cnn_allconv")
def cnn_allconv(num_classes: int, in_shape: tuple[int, ...], activation: str = "relu") -> AllConvNet:
    return AllConvNet(in_shape, num_classes, activation)


@MODELS.register("keras_cifar10_cnn", min_size=10)  # two valid convs and two pools need 10x10
def keras_cifar10_cnn(num_classes: int, in_shape: tuple[int, ...], activation: str = "relu") -> StackCNN:
    return StackCNN(
        in_shape,
        num_classes,
        STACKS["keras_cifar10"],
        [512],
        activation,
        conv_dropout=0.25,
        dense_dropout=0.5,
    )


@MODELS.register("mnist_fast", min_size=18)  # three valid convs and two pools: 18 -> 16 -> 8 -> 6 -> 3 -> 1
def mnist_fast(num_classes: int, in_shape: tuple[int, ...], activation: str = "relu") -> StackCNN:
    """The MNIST speed recipe's net: three 3x3 convs with batch norm (16, 32, 64 filters),
    two max-pools, a dense layer of 128: about 1.8 MFLOP a 28x28 image forward
    (``torch.utils.flop_counter.FlopCounterMode``)."""
    return StackCNN(in_shape, num_classes, STACKS["mnist_fast"], [MNIST_FAST_HIDDEN], activation)


@MODELS.register("convnet_small")
def convnet_small(
    num_classes: int, in_shape: tuple[int, ...], activation: str = "relu", dropout_rate: float = 0.0
) -> StackCNN:
    return StackCNN(
        in_shape, num_classes, STACKS["convnet_small"], [512], activation, dense_dropout=dropout_rate
    )
