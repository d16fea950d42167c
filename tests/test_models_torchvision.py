import math
import re
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from dlzoo.models import create_model
from dlzoo.models.base import Dropout
from dlzoo.models.pretrained import weights_entry, weights_path
from dlzoo.models.vgg import VGG_LAYOUTS


def random_torchvision_model(name: str, num_classes: int = 10) -> nn.Module:
    """torchvision's ``name`` in eval mode with seeded random weights and batch-norm statistics
    (filled once on an empty model: torchvision's own initialisation of VGG takes seconds)."""
    torch.manual_seed(0)
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)  # fan-in: activations keep their scale
                if module.bias is not None:
                    module.bias.normal_(0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.zero_()
    return model.eval()


def shapes(model: nn.Module) -> dict[str, torch.Size]:
    return {key: value.shape for key, value in model.state_dict().items()}


@pytest.mark.parametrize(
    ("name", "side"), [("alexnet", 63), ("vgg11", 32), ("vgg11_bn", 32), ("resnet18", 32), ("resnet50", 32)]
)
def test_torchvision_weights_load_strictly_and_give_torchvisions_outputs(name, side):
    theirs = random_torchvision_model(name)
    with torch.device("meta"):  # no initialisation: the strict load below replaces every tensor
        ours = create_model(name, 10, (3, side, side))
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        expected = theirs(x)
        assert (expected[0] - expected[1]).abs().max() > 1e-2, "outputs do not depend on the input"
        torch.testing.assert_close(ours.eval()(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "name",
    ["vgg13", "vgg16", "vgg19", "vgg13_bn", "vgg16_bn", "vgg19_bn", "resnet34", "resnet101", "resnet152"],
)
def test_state_dict_names_and_shapes_equal_torchvisions(name):
    with torch.device("meta"):
        theirs = getattr(torchvision.models, name)(weights=None)
        ours = create_model(name, 1000, (3, 224, 224))
    assert list(shapes(ours).items()) == list(shapes(theirs).items())


@pytest.mark.parametrize(
    ("name", "weights"),
    [("resnet18", "ResNet18_Weights"), ("resnet50", "ResNet50_Weights"), ("vgg16", "VGG16_Weights")],
)
def test_parameter_counts_are_torchvisions_published_ones(name, weights):
    with torch.device("meta"):
        model = create_model(name, 1000, (3, 224, 224))
    assert sum(p.numel() for p in model.parameters()) == weights_entry(weights).meta["num_params"]


@pytest.fixture
def resnet18_weights_file(tmp_path, monkeypatch) -> nn.Module:
    """torchvision's ResNet-18 (random weights) saved where torch.hub looks for the published file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    theirs = random_torchvision_model("resnet18", 1000)
    path = weights_path("ResNet18_Weights")
    assert tmp_path in path.parents
    path.parent.mkdir(parents=True)
    torch.save(theirs.state_dict(), path)
    return theirs


def test_pretrained_resnet18_loads_the_file_torch_hub_expects(resnet18_weights_file):
    theirs = resnet18_weights_file
    ours = create_model("resnet18", 1000, (3, 64, 64), pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)

    transfer = create_model("resnet18", 10, (3, 64, 64), pretrained=True).state_dict()
    source = theirs.state_dict()
    assert set(transfer) == set(source)
    assert all(torch.equal(transfer[k], source[k]) for k in source if not k.startswith("fc."))
    assert transfer["fc.weight"].shape == (10, 512) and transfer["fc.bias"].shape == (10,)


def test_pretrained_without_the_file_offline_names_the_url_and_the_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    url, path = weights_entry("ResNet18_Weights").url, weights_path("ResNet18_Weights")
    with pytest.raises(FileNotFoundError) as error:
        create_model("resnet18", 10, (3, 32, 32), pretrained=True)
    assert url in str(error.value) and f"place it at {path}" in str(error.value)


def test_pretrained_needs_published_weights_and_the_imagenet_stem(resnet18_weights_file):
    with pytest.raises(
        ValueError, match="model 'resnet20' has no published pretrained weights; these do:.*resnet18"
    ):
        create_model("resnet20", 10, (3, 32, 32), pretrained=True)
    with pytest.raises(
        ValueError, match=re.escape("those weights do not fit this model (1 tensors") + ".*conv1.weight"
    ):
        create_model("resnet18", 10, (3, 32, 32), stem="cifar", pretrained=True)


def test_resnet_stems():
    x = torch.randn(2, 3, 32, 32)
    for stem, side in (("cifar", 32), ("imagenet", 8)):
        model = create_model("resnet18", 10, (3, 32, 32), stem=stem).eval()
        with torch.no_grad():
            assert model.maxpool(model.relu(model.bn1(model.conv1(x)))).shape == (2, 64, side, side)
            assert model(x).shape == (2, 10)
    with pytest.raises(ValueError, match="stem must be imagenet .* or cifar .*, got 'tiny'"):
        create_model("resnet18", 10, (3, 32, 32), stem="tiny")


def test_resnet_blocks_and_initialisation_follow_torchvision():
    torch.manual_seed(0)
    model = create_model("resnet50", 10, (3, 32, 32))
    first = model.layer2[0]  # v1.5: the stride is on the 3x3 conv, not on the first 1x1
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)
    assert first.downsample[0].stride == (2, 2) and isinstance(model.layer2[1].downsample, nn.Identity)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)  # no zero-init of bn3
    conv = model.layer3[0].conv2  # He normal, fan-out: std sqrt(2 / (out_channels * 3 * 3))
    expected = math.sqrt(2 / (conv.out_channels * 9))
    assert abs(conv.weight.std().item() - expected) < 0.05 * expected


def test_resnet_exercise_has_an_identity_and_a_projection_block():
    model = create_model("resnet_exercise", 10, (1, 28, 28)).eval()
    identity, projection = model.features[0], model.features[1]
    assert isinstance(identity.downsample, nn.Identity)
    assert (identity.conv1.kernel_size, identity.conv2.kernel_size) == ((1, 1), (3, 3))
    shortcut = projection.downsample[0]
    assert shortcut.kernel_size == (1, 1) and shortcut.stride == (2, 2) and shortcut.out_channels == 8
    assert model.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, 14 * 14 * 8)
    assert model.head.in_features == 1568 and model.head.out_features == 10


def test_alexnet8_is_the_courses_network_for_28_and_32_pixel_images():
    model = create_model("alexnet8", 10, (3, 32, 32)).eval()
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert all(c.kernel_size == (3, 3) for c in convs) and [c.padding for c in convs[:2]] == [(0, 0)] * 2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 2
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 2048), (2048, 2048), (2048, 10)]
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    mnist = create_model("alexnet8", 10, (1, 28, 28)).eval()
    assert mnist(torch.randn(2, 1, 28, 28)).shape == (2, 10) and mnist.head.in_features == 2048
    assert mnist.classifier[0].in_features == 256  # a 1x1 map of 256 channels
    with pytest.raises(ValueError, match="needs images of at least 21x21 pixels"):
        create_model("alexnet8", 10, (1, 20, 20))


def test_cifar_vgg_has_the_conv_stack_dropout_and_512_wide_head():
    model = create_model("vgg16_cifar", 10, (3, 32, 32), dropout_rate=0.3)
    convs = [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)]
    assert convs == [item for item in VGG_LAYOUTS["vgg16"] if item != "M"]
    kinds = [type(m) for m in model.features]
    pools = [i for i, kind in enumerate(kinds) if kind is nn.MaxPool2d]
    assert len(pools) == 5 and all(kinds[i + 1] is Dropout for i in pools)  # dropout after each pool
    assert kinds.count(nn.BatchNorm2d) == 13
    assert all(m.p == 0.3 for m in model.modules() if isinstance(m, nn.Dropout))
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 512), (512, 10)]
    plain = create_model("vgg11_cifar", 10, (1, 28, 28), batch_norm=False).eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert plain.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, 512)  # pools round up: 28 -> 1


def test_the_notes_small_vggs_follow_their_layouts():
    small = create_model("vgg_small", 10, (3, 32, 32))
    assert [m.out_channels for m in small.features if isinstance(m, nn.Conv2d)] == [32, 32, 64, 64, 128, 128]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in small.modules())  # the notes' plain vgg
    assert small.classifier[0].in_features == 128  # the head reads the last stage's width
    deep = create_model("vgg_small_deep", 10, (3, 32, 32))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in deep.modules()) == 10
    assert deep.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 256)
    assert create_model("vgg_small", 10, (3, 32, 32), batch_norm=True).features[1].__class__ is nn.BatchNorm2d


def test_torchvision_vgg_needs_32_pixels():
    with pytest.raises(ValueError, match="needs images of at least 32x32 pixels, got 28x28"):
        create_model("vgg11", 10, (1, 28, 28))
