import pytest
import torch
from torch import nn

from dlzoo.models import create_model, init_weights
from dlzoo.models.base import Dropout
from dlzoo.registry import MODELS

SHAPES = {"image": (1, 28, 28), "rgb": (3, 32, 32), "small": (1, 8, 8)}


def heads(name: str, model: nn.Module) -> tuple[int, ...]:
    """() for one head; (heads,) for a model registered with multi_head=True (logits (B, heads, classes))."""
    return (model.heads,) if MODELS.info(name).get("multi_head") else ()


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_every_model_runs_forward_and_backward(name, shape):
    num_classes = 2 if name == "logistic" else 10
    min_size = MODELS.info(name).get("min_size", 1)
    if min(shape[1:]) < min_size:  # an ImageNet stem: the smallest image it takes
        shape = (shape[0], min_size, min_size)
    model = create_model(name, num_classes, shape)
    x = torch.randn(4, *shape)
    out = model(x)
    assert out.shape == (4, *heads(name, model), 1 if name == "logistic" else num_classes)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]  # airbench keeps its BN scales fixed
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", MODELS.names())
def test_reset_head_changes_only_the_output_count(name):
    side = max(28, MODELS.info(name).get("min_size", 1))
    model = create_model(name, 2 if name == "logistic" else 10, (1, side, side))
    backbone = {n for n, _ in model.backbone_parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_head(3)
    out = model.eval()(torch.randn(2, 1, side, side))  # eval: BN statistics stay
    assert out.shape == (2, *heads(name, model), 3)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in backbone)
    head = {n for n, p in model.named_parameters() if p is model.head.weight or p is model.head.bias}
    assert head and not head & backbone, "the head is not part of the backbone"


def test_too_small_images_for_a_model_are_a_clear_error():
    MODELS.register("_needs_64", min_size=64)(lambda num_classes, in_shape: nn.Linear(1, num_classes))
    try:
        with pytest.raises(
            ValueError, match="needs images of at least 64x64 pixels, got 32x32; set data.resize=64"
        ):
            create_model("_needs_64", 10, (3, 32, 32))
    finally:
        MODELS._entries.pop("_needs_64"), MODELS._info.pop("_needs_64")


def test_unknown_model_and_unknown_setting_are_clear():
    with pytest.raises(ValueError, match="Did you mean 'lenet5'"):
        create_model("lenet", 10, (1, 28, 28))
    with pytest.raises(ValueError, match="model 'lenet5' does not take 'hidden_sizes'; it takes: activation"):
        create_model("lenet5", 10, (1, 28, 28), hidden_sizes=[10])


def test_logistic_needs_two_classes():
    with pytest.raises(ValueError, match="data.classes=0,1"):
        create_model("logistic", 10, (3, 32, 32))


def test_mlp_options_shape_the_network():
    model = create_model(
        "mlp", 10, (1, 8, 8), hidden_sizes=[32, 16], activation="tanh", dropout_rate=0.5, batch_norm=True
    )
    kinds = [type(m) for m in model.features]
    assert kinds.count(nn.Linear) == 2 and kinds.count(nn.BatchNorm1d) == 2
    assert kinds.count(nn.Tanh) == 2 and kinds.count(Dropout) == 2


@pytest.mark.parametrize(
    ("scheme", "check"),
    [
        ("he", lambda w, fan_in: abs(w.std().item() - (2 / fan_in) ** 0.5) < 0.1 * (2 / fan_in) ** 0.5),
        ("xavier", lambda w, fan_in: w.abs().max().item() <= (6 / (fan_in + 200)) ** 0.5 + 1e-6),
        ("normal", lambda w, fan_in: abs(w.std().item() - 0.05) < 0.005),
        ("truncated_normal", lambda w, fan_in: w.abs().max().item() <= 0.1 + 1e-6),
    ],
)
def test_initialisers(scheme, check):
    torch.manual_seed(0)
    layer = nn.Linear(500, 200)
    init_weights(layer, scheme)
    assert check(layer.weight.detach(), 500)
    assert torch.all(layer.bias == 0)


@pytest.mark.parametrize(
    ("name", "parameters"), [("resnet20", 0.27e6), ("resnet56", 0.85e6), ("resnet110", 1.7e6)]
)
def test_cifar_resnets_have_the_papers_sizes(name, parameters):
    """He et al. 2016, table 6: 0.27M, 0.85M and 1.7M parameters (option A shortcuts)."""
    model = create_model(name, 10, (3, 32, 32))
    assert abs(sum(p.numel() for p in model.parameters()) - parameters) < 0.03 * parameters
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == {"resnet20": 20, "resnet56": 56, "resnet110": 110}[name]


def test_resnet_shortcuts_option_a_is_parameter_free_and_b_projects():
    a = create_model("resnet20", 10, (3, 32, 32), shortcut="A")
    b = create_model("resnet20", 10, (3, 32, 32), shortcut="B")
    projections = [m for m in b.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(projections) == 2 and not any(
        isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in a.modules()
    )
    x = torch.randn(2, 3, 32, 32)
    assert a.eval()(x).shape == b.eval()(x).shape == (2, 10)


@pytest.mark.parametrize("p", [0.25, 0.5, 0.1])
def test_dropout_drops_p_of_the_elements_and_keeps_the_expected_value(p):
    """dlzoo's CPU dropout: one 16-bit draw per element (all four lanes of each 64-bit draw)."""
    torch.manual_seed(0)
    x = torch.ones(1000, 1000, requires_grad=True)
    out = Dropout(p)(x)
    keep_rate = round((1 - p) * 2**16) / 2**16
    dropped = (out == 0).float()
    assert abs(dropped.mean().item() - p) < 0.003  # 1M elements: the standard error is below 0.0005
    lanes = dropped.reshape(-1, 4).mean(0)  # the four int16 lanes of each int64 draw, one by one
    assert torch.allclose(lanes, torch.full((4,), p), atol=0.006), lanes
    assert torch.equal(out[out != 0].unique(), torch.tensor([1 / keep_rate]))
    assert abs(out.mean().item() - 1) < 0.01  # the expected activation is unchanged
    out.sum().backward()
    assert torch.equal(x.grad, out.detach())  # d out / d x: the same mask and scale


def test_dropout_is_the_identity_in_eval_and_at_zero_and_all_zeros_at_one():
    x = torch.randn(8, 16, requires_grad=True)
    assert Dropout(0.5).eval()(x) is x and Dropout(0.0)(x) is x
    out = Dropout(1.0)(x)
    assert torch.equal(out, torch.zeros_like(x))
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_dropout_keeps_layout_and_dtype_and_follows_the_seed():
    x = torch.randn(16, 8, 6, 6).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    dropout = Dropout(0.3)
    torch.manual_seed(1)
    first = dropout(x)
    assert first.dtype == torch.bfloat16 and first.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(1)
    assert torch.equal(dropout(x), first)  # the same seed, the same mask
    assert not torch.equal(dropout(x), first)  # the next call draws a new one
    strided = torch.ones(10, 20)[:, ::2]  # neither contiguous nor channels-last
    assert Dropout(0.5)(strided).shape == (10, 10)
