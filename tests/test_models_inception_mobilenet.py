import pytest
import torch
import torchvision
from torch import nn

from dlzoo.models import create_model
from dlzoo.models.inception import GoogLeNet, InceptionModule, cat_channels
from dlzoo.models.pretrained import weights_path


def torchvision_model(name: str, num_classes: int, side: int = 32, **settings) -> nn.Module:
    """torchvision's ``name`` with seeded random weights and batch-norm statistics of real
    activations (a train-mode pass with momentum 1), so that every input matters in eval mode."""
    torch.manual_seed(0)
    extra = {} if name == "mobilenet_v2" else {"aux_logits": False, "init_weights": False}
    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes, **extra, **settings)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    with torch.no_grad():
        model.train()(torch.randn(4, 3, side, side))
    return model.eval()


def assert_same_outputs(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = theirs(x)
        assert (expected[0] - expected[1]).abs().max() > 1e-2, "outputs do not depend on the input"
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "side", "settings"),
    [
        ("googlenet", 15, {}),
        ("inception_v3", 75, {}),
        ("mobilenet_v2", 32, {}),
        ("mobilenet_v2", 32, {"width_mult": 0.5}),
    ],
)
def test_torchvision_families_load_torchvision_weights_and_compute_the_same(name, side, settings):
    theirs = torchvision_model(name, 10, side, **settings)
    ours = create_model(name, 10, (3, side, side), **settings).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # same names, same shapes, nothing extra
    assert_same_outputs(ours, theirs, torch.randn(2, 3, side, side))


def test_googlenet_transform_input_reproduces_torchvisions_pretrained_setting():
    theirs = torchvision_model("googlenet", 10, transform_input=True)
    ours = GoogLeNet((3, 32, 32), 10, transform_input=True).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert_same_outputs(ours, theirs, x)
    ours.transform_input = False
    with torch.no_grad():
        assert not torch.allclose(ours(x), theirs(x), atol=1e-3)
    with pytest.raises(ValueError, match="transform_input needs RGB images"):
        GoogLeNet((1, 32, 32), 10, transform_input=True)


def test_pretrained_mobilenet_v2_loads_torchvisions_file_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    theirs = torchvision_model("mobilenet_v2", 1000)
    path = weights_path("MobileNet_V2_Weights")
    assert tmp_path in path.parents
    path.parent.mkdir(parents=True)
    torch.save(theirs.state_dict(), path)
    ours = create_model("mobilenet_v2", 10, (3, 64, 64), pretrained=True)
    head = {"classifier.1.weight", "classifier.1.bias"}
    source, loaded = theirs.state_dict(), ours.state_dict()
    assert set(loaded) == set(source)
    assert all(torch.equal(loaded[k], source[k]) for k in loaded if k not in head)
    assert loaded["classifier.1.weight"].shape == (10, 1280)  # a fresh head for 10 classes


def test_mobilenet_v2_cifar_stem_keeps_the_weights_and_more_of_the_image():
    imagenet = create_model("mobilenet_v2", 10, (3, 32, 32))
    cifar = create_model("mobilenet_v2", 10, (3, 32, 32), stem="cifar")
    assert {k: v.shape for k, v in imagenet.state_dict().items()} == {
        k: v.shape for k, v in cifar.state_dict().items()
    }
    x = torch.randn(2, 3, 32, 32)
    assert imagenet.features.eval()(x).shape[-2:] == (1, 1)
    assert cifar.features.eval()(x).shape[-2:] == (2, 2)
    with pytest.raises(ValueError, match="stem must be imagenet"):
        create_model("mobilenet_v2", 10, (3, 32, 32), stem="tiny")


def test_inception10_has_the_courses_structure():
    """ConvBNRelu(16), then 2 blocks x 2 InceptionBlks of c = 16, 32 (4c out), stride 2 first in each."""
    model = create_model("inception10", 10, (3, 32, 32)).eval()
    blocks = [m for m in model.features if isinstance(m, InceptionModule)]
    assert len(blocks) == 4
    assert [b.out_channels for b in blocks] == [64, 64, 128, 128]
    stem = model.features[0]
    assert stem.conv.out_channels == 16 and stem.conv.kernel_size == (3, 3) and stem.conv.bias is None
    sides = []
    x = torch.randn(1, 3, 32, 32)
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, InceptionModule):
            assert x.shape[1] == layer.out_channels
            sides.append(x.shape[-1])
    assert sides == [16, 16, 8, 8]
    wide = blocks[0].branch3[1].conv
    assert wide.kernel_size == (5, 5) and model.classifier.in_features == 128


def test_inception_small_is_a_small_network():
    model = create_model("inception_small", 10, (3, 32, 32))
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 2e6
    assert sum(isinstance(m, InceptionModule) for m in model.modules()) == 4


def test_mobilenet_v1_is_depthwise_separable_with_the_papers_size():
    model = create_model("mobilenet_v1", 1000, (3, 224, 224))
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)][1:]
    assert len(depthwise) == 13
    assert all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    parameters = sum(p.numel() for p in model.parameters())
    assert abs(parameters - 4.2e6) < 0.03 * 4.2e6  # Howard et al. 2017, table 6
    half = create_model("mobilenet_v1", 1000, (3, 224, 224), width_mult=0.5)
    assert sum(p.numel() for p in half.parameters()) < 0.4 * parameters  # the paper: 1.3M
    with pytest.raises(ValueError, match="width_mult must be > 0"):
        create_model("mobilenet_v1", 10, (3, 32, 32), width_mult=0.0)


@pytest.mark.parametrize(("side", "stride"), [(32, 1), (64, 2)])
def test_mobilenet_v1_uses_a_stride_1_stem_for_small_images(side, stride):
    model = create_model("mobilenet_v1", 10, (3, side, side))
    assert model.features[0][0].stride == (stride, stride)


@pytest.mark.parametrize("channels_last", [True, False])
def test_cat_channels_is_torch_cat_with_a_dense_gradient_per_branch(channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    parts = [torch.randn(4, c, 5, 5).contiguous(memory_format=fmt).requires_grad_() for c in (3, 8, 5)]
    out = cat_channels(parts)
    assert torch.equal(out, torch.cat(parts, 1))
    grad = torch.randn(out.shape).contiguous(memory_format=fmt)
    grads = torch.autograd.grad(out, parts, grad)
    expected = torch.autograd.grad(torch.cat(parts, 1), parts, grad)
    for got, want in zip(grads, expected, strict=True):
        assert torch.equal(got, want)
        assert got.is_contiguous(memory_format=fmt)  # torch.cat's backward gives strided channel slices
    assert not expected[1].is_contiguous(memory_format=fmt)
    with torch.no_grad():
        assert torch.equal(cat_channels(parts), out)  # the plain torch.cat without gradients
