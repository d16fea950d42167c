"""The small CNN families (models/cnn.py, models/nin.py): the claims their docstrings make.

Every registered variant also runs through tests/test_models.py (forward, backward, reset_head).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlzoo.models import create_model
from dlzoo.models.cnn import dense_to_conv


def images(shape: tuple[int, ...], batch: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_fc_layer_as_convolution_gives_the_same_outputs(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    dense = create_model("cnn_fc", 10, shape).eval()
    conv = create_model("cnn_fcconv", 10, shape).eval()
    x = images(shape)
    assert not torch.allclose(dense(x), conv(x), atol=1e-3)  # different weights, different outputs
    hidden = [m for m in conv.features if isinstance(m, nn.Conv2d)][-1]
    assert hidden.kernel_size == tuple(side // 4 for side in shape[1:])  # the whole map after two pools
    dense_to_conv(dense, conv)
    torch.testing.assert_close(conv(x), dense(x), atol=1e-5, rtol=0)


def test_dense_to_conv_rejects_models_of_another_shape() -> None:
    dense = create_model("cnn_fc", 10, (1, 28, 28))
    with pytest.raises(ValueError, match="same input shape and classes"):
        dense_to_conv(dense, create_model("cnn_fcconv", 10, (3, 32, 32)))


@pytest.mark.parametrize("name", ["cnn_allconv", "nin"])
def test_head_after_global_pooling_equals_a_1x1_conv_before_it(name: str) -> None:
    """The docstrings' claim: the paper's 1x1 conv to the classes then global average pooling
    computes the same logits as our linear head after the pooling."""
    model = create_model(name, 10, (3, 32, 32)).eval()
    x = images((3, 32, 32), batch=2)
    pool, flatten = model.features[-2:]
    assert isinstance(pool, nn.AdaptiveAvgPool2d) and isinstance(flatten, nn.Flatten)
    maps = model.features[:-2](x)  # (B, C, h, w) before the pooling
    assert maps.shape[-1] > 1  # a real map, so the order of pooling and 1x1 conv is in question
    head = model.head
    class_maps = F.conv2d(maps, head.weight[:, :, None, None], head.bias)  # (B, classes, h, w)
    torch.testing.assert_close(model(x), class_maps.mean(dim=(2, 3)), atol=1e-5, rtol=1e-5)


def test_allconv_has_no_pooling_or_dense_layers_in_its_features() -> None:
    model = create_model("cnn_allconv", 10, (1, 28, 28))
    kinds = {type(m) for m in model.features}
    assert not kinds & {nn.MaxPool2d, nn.AvgPool2d, nn.Linear}
    strides = [m.stride for m in model.features if isinstance(m, nn.Conv2d)]
    assert strides.count((2, 2)) == 2


def test_nin_has_three_mlpconv_blocks_of_the_papers_widths() -> None:
    model = create_model("nin", 10, (3, 32, 32))
    convs = [(m.out_channels, m.kernel_size[0]) for m in model.features if isinstance(m, nn.Conv2d)]
    assert convs == [(192, 5), (160, 1), (96, 1), (192, 5), (192, 1), (192, 1), (192, 3), (192, 1)]
    assert model.head.in_features == 192


def test_he_variant_is_he_initialised_and_the_basic_one_is_not() -> None:
    torch.manual_seed(0)
    he, basic = create_model("cnn_he", 10, (1, 28, 28)), create_model("cnn_basic", 10, (1, 28, 28))
    he_conv, basic_conv = he.features[3], basic.features[3]  # conv 8 -> 16, fan-in 72
    expected = (2 / 72) ** 0.5
    assert abs(he_conv.weight.std().item() - expected) < 0.1 * expected
    assert basic_conv.weight.std().item() < 0.6 * expected  # PyTorch's default is ~1/sqrt(3 fan_in)
    assert torch.all(he_conv.bias == 0) and torch.all(he.head.bias == 0)


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("keras_cifar10_cnn", 1_250_858),  # model.summary() of the Keras example
        ("cnn_basic", 80 + 1_168 + 7_850),  # conv 1->8, conv 8->16, linear 16*7*7 -> 10
    ],
)
def test_parameter_counts_match_the_sources(name: str, parameters: int) -> None:
    shape = (3, 32, 32) if name == "keras_cifar10_cnn" else (1, 28, 28)
    model = create_model(name, 10, shape)
    assert sum(p.numel() for p in model.parameters()) == parameters


def test_keras_cifar10_cnn_layer_order() -> None:
    model = create_model("keras_cifar10_cnn", 10, (3, 32, 32))
    kinds = [type(m).__name__ for m in [*model.features, *model.classifier]]
    assert kinds == [
        *["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d", "Dropout"],
        *["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d", "Dropout", "Flatten"],
        *["Linear", "ReLU", "Dropout", "Linear"],
    ]
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert rates == [0.25, 0.25, 0.5]


def test_a_batch_norm_stack_entry_puts_batch_norm_between_a_biasless_conv_and_the_activation() -> None:
    model = create_model("mnist_fast", 10, (1, 28, 28))
    kinds = [type(m).__name__ for m in model.features]
    assert kinds == [
        *["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"],
        *["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"],
        *["Conv2d", "BatchNorm2d", "ReLU", "Flatten"],
    ]
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [conv.out_channels for conv in convs] == [16, 32, 64]
    assert all(conv.bias is None and conv.padding == (0, 0) for conv in convs)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
