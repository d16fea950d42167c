"""The airbench-style network: patch whitening fitted to data, mirror TTA, and the loop's data hook."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import dlzoo
from dlzoo.config import RunConfig
from dlzoo.data.core import DataBundle, Split
from dlzoo.errors import StopRun
from dlzoo.models import create_model
from dlzoo.models.airbench import MaxPool2x2, PatchWhitening
from dlzoo.registry import DATASETS, TASKS
from dlzoo.training.loop import build_experiment


def correlated_images(batch: int = 200, side: int = 12, seed: int = 0) -> torch.Tensor:
    """Images whose neighbouring pixels and channels are strongly correlated (like photos)."""
    generator = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.randn(batch, 1, side // 3, side // 3, generator=generator), size=side)
    mix = torch.tensor([[1.0], [0.8], [0.5]])[None, :, :, None]  # one brightness, three channels
    return 2.0 + smooth * mix + 0.2 * torch.randn(batch, 3, side, side, generator=generator)


def patch_covariance(outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance over every position of (N, K, h, w) outputs, in float64."""
    rows = outputs.double().permute(0, 2, 3, 1).reshape(-1, outputs.shape[1])
    return rows.mean(0), torch.cov(rows.T, correction=0)


def test_whitening_gives_identity_covariance_on_the_patches_it_was_fitted_to() -> None:
    x = correlated_images()
    layer = PatchWhitening(3)
    _, before = patch_covariance(layer(x)[:, :12])
    assert (before - torch.eye(12, dtype=torch.float64)).abs().max() > 0.5  # the raw patches are not white
    layer.fit(x)
    outputs = layer(x)  # (N, 24, 11, 11)
    mean, covariance = patch_covariance(outputs[:, :12])
    torch.testing.assert_close(covariance, torch.eye(12, dtype=torch.float64), atol=0.02, rtol=0)
    assert mean.abs().max() < 1e-4  # the bias starts at minus the filtered mean
    torch.testing.assert_close(layer.weight[12:], -layer.weight[:12])  # the other half: negatives
    eigen_scales = layer.weight[:12].flatten(1).norm(dim=1)  # 1 / sqrt(eigenvalue + eps)
    assert (eigen_scales[1:] >= eigen_scales[:-1]).all()  # largest eigenvalue first


def test_fit_to_data_sets_the_whitening_and_rejects_wrong_images() -> None:
    model = create_model("airbench", 10, (3, 16, 16), width_mult=0.125)
    before = model.whiten.weight.clone()
    model.fit_to_data(correlated_images(side=16))
    assert not torch.equal(before, model.whiten.weight)
    assert "features.0.weight" in model.state_dict()  # saved with the weights, so runs resume exactly
    assert not any(p is model.whiten.weight for p in model.parameters())  # fitted, never trained
    with pytest.raises(ValueError, match=r"needs normalised training images \(N, 3, H, W\)"):
        model.fit_to_data(torch.randn(4, 1, 16, 16))


def test_tta_averages_the_image_and_its_mirror_in_eval_mode_only() -> None:
    torch.manual_seed(0)
    model = create_model("airbench", 10, (3, 16, 16), width_mult=0.125)
    x = torch.randn(3, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        with_tta = model(x)
        model.tta = False
        plain, mirrored = model(x), model(x.flip(3))
    torch.testing.assert_close(with_tta, (plain + mirrored) / 2, atol=1e-6, rtol=1e-5)
    assert (with_tta - plain).abs().max() > 1e-3 * plain.abs().max()  # the mirror does change the logits
    model.train()
    model.tta = True
    torch.manual_seed(1)
    training = model(x)
    model.tta = False
    torch.manual_seed(1)
    torch.testing.assert_close(training, model(x), atol=0, rtol=0)  # train mode: no TTA


def test_tta_level_2_adds_one_pixel_shifts_at_a_quarter_each() -> None:
    torch.manual_seed(0)
    model = create_model("airbench", 10, (3, 16, 16), width_mult=0.125, tta=2).eval()
    x = torch.randn(3, 3, 16, 16)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[..., 2:, 2:], padded[..., :-2, :-2]
    assert torch.equal(up_left[..., :-1, :-1], x[..., 1:, 1:])  # the content moved one pixel up and left
    with torch.no_grad():
        level_2 = model(x)
        model.tta = 1
        mirrored = [model(view) for view in (x, up_left, down_right)]
    expected = 0.5 * mirrored[0] + 0.25 * (mirrored[1] + mirrored[2])
    torch.testing.assert_close(level_2, expected, atol=1e-6, rtol=1e-5)
    assert (level_2 - mirrored[0]).abs().max() > 1e-3 * mirrored[0].abs().max()
    message = r"model.tta must be 0 \(none\), 1 \(mirror\) or 2 \(mirror \+ shifts\), got 3"
    with pytest.raises(ValueError, match=message):
        create_model("airbench", 10, (3, 16, 16), tta=3)
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict({"model": {"name": "airbench", "tta": 3}})


@pytest.mark.parametrize("tta", [1, 2])
def test_tta_traces_for_the_tensorboard_graph_without_a_tracer_warning(tta: int) -> None:
    # TensorBoard's add_graph traces the model in eval mode: a batch size read as a Python int
    # would be baked into the graph, and torch warns about it
    model = create_model("airbench", 10, (3, 16, 16), width_mult=0.125, tta=tta).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, torch.randn(2, 3, 16, 16))
    x = torch.randn(5, 3, 16, 16)  # another batch size than the trace's
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), atol=1e-6, rtol=1e-5)


def test_convs_start_as_identity_and_batch_norms_learn_only_their_shift_at_64x() -> None:
    model = create_model("airbench", 10, (3, 32, 32), width_mult=0.25)
    conv = model.features[2][4]  # group 1's second conv: 16 -> 16 channels
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(conv(x), x)  # dirac: its 16 filters pass the 16 channels through
    norms = [name for name, module in model.named_modules() if isinstance(module, torch.nn.BatchNorm2d)]
    assert len(norms) == 6
    assert not any(model.get_parameter(f"{name}.weight").requires_grad for name in norms)
    assert model.lr_multipliers() == {f"{name}.bias": 64.0 for name in norms}

    cfg = RunConfig.from_dict(
        {"model": {"name": "airbench"}, "optim": {"name": "nesterov", "lr": 0.1, "weight_decay": 1e-3}}
    )
    task = TASKS.get("classify")(model, cfg, 10)
    task.configure_optimizers(10, 100)
    plain, biases = task.optimizers[0].param_groups
    assert (plain["lr"], plain["weight_decay"]) == (0.1, 1e-3)
    assert biases["lr"] == pytest.approx(6.4) and biases["weight_decay"] == pytest.approx(1e-3 / 64)
    assert {id(p) for p in biases["params"]} == {id(model.get_parameter(f"{n}.bias")) for n in norms}
    task.train_step(torch.randn(4, 3, 32, 32), torch.arange(4))
    assert all(
        torch.equal(model.get_parameter(f"{name}.weight"), torch.ones(16 if i < 2 else 64))
        for i, name in enumerate(norms)
    )


def test_width_mult_scales_the_conv_groups() -> None:
    model = create_model("airbench", 10, (3, 32, 32), width_mult=0.5)
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [32, 32, 128, 128, 128, 128]
    assert model.head.in_features == 128 and model.head.bias is None


@pytest.fixture
def tiny_images(monkeypatch: pytest.MonkeyPatch) -> str:
    """A registered in-memory data set of 16x16 RGB images (two classes)."""

    def tiny(root: object, download: bool) -> DataBundle:
        generator = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (96, 3, 16, 16), dtype=torch.uint8, generator=generator)
        y = torch.arange(96) % 2
        return DataBundle(Split(x[:64], y[:64]), Split(x[64:], y[64:]), ["even", "odd"], "random pixels")

    monkeypatch.setitem(DATASETS._entries, "tiny_images", tiny)
    return "tiny_images"


def tiny_airbench(dataset: str, runs_dir: str) -> RunConfig:
    return RunConfig.from_dict(
        {
            "data": {
                "name": dataset,
                "batch_size": 16,
                "val_fraction": 0.25,
                "augment": {"alternate_flip": True},
            },
            "model": {"name": "airbench", "width_mult": 0.125},
            "optim": {"name": "nesterov", "lr": 0.05},
            "train": {"epochs": 1, "threads": 1},
            "log": {"runs_dir": runs_dir, "tensorboard": False, "plots": False, "progress": False},
        },
        "tiny-airbench",
    )


def test_the_experiment_keeps_one_copy_of_the_training_images(tiny_images, tmp_path) -> None:
    exp = build_experiment(tiny_airbench(tiny_images, str(tmp_path)))
    # the bundle's training split is the loader's (48 of 64 images after validation), not all 64 again
    assert exp.bundle.train.x.data_ptr() == exp.loaders.train.x.data_ptr()
    assert len(exp.bundle.train) == exp.loaders.train.num_examples == 48


def test_the_loop_fits_the_whitening_to_the_first_normalised_training_images(tiny_images, tmp_path) -> None:
    cfg = tiny_airbench(tiny_images, str(tmp_path))
    exp = build_experiment(cfg)
    train = exp.loaders.train
    expected = PatchWhitening(3)
    expected.fit(exp.loaders.normalizer(train.x.float() / 255))  # fewer than 5,000: all of them
    torch.testing.assert_close(exp.model.whiten.weight, expected.weight)
    again = build_experiment(cfg)  # the same seed gives the same whitening (exact resume)
    assert torch.equal(exp.model.whiten.weight, again.model.whiten.weight)

    result = dlzoo.train(cfg, quiet=True)
    saved = load_file(str(result.run_dir / "checkpoints" / "epoch-0001" / "model.safetensors"))
    torch.testing.assert_close(saved["features.0.weight"], expected.weight)


def saved_bytes(fn, x: torch.Tensor) -> int:
    """Bytes of the distinct tensors that ``fn(x)`` keeps for its backward pass."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn(x)
    return sum(storages.values())


@pytest.mark.parametrize(
    ("shape", "dtype", "channels_last"),
    [
        ((4, 8, 31, 31), torch.bfloat16, True),  # airbench's first pool: odd sides drop a row and column
        ((3, 5, 14, 10), torch.float32, False),
        ((2, 3, 300, 300), torch.float32, False),  # W + 1 >= 256: keeps torch's int64 indices
    ],
)
def test_compact_max_pool_gives_torchs_outputs_and_gradients_and_keeps_a_byte_per_output(
    shape: tuple[int, ...], dtype: torch.dtype, channels_last: bool
) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape).round(decimals=1).to(dtype)  # rounded: ties inside windows, which pick the first
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2).to(dtype)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    pooled = MaxPool2x2()(ours)
    expected = F.max_pool2d(theirs, 2)
    assert torch.equal(pooled, expected)
    pooled.backward(grad)
    expected.backward(grad)
    assert torch.equal(ours.grad, theirs.grad)
    assert ours.grad.stride() == theirs.grad.stride()  # the layout the next layer backward expects
    kept, torch_kept = saved_bytes(MaxPool2x2(), ours), saved_bytes(lambda t: F.max_pool2d(t, 2), theirs)
    if shape[-1] + 1 < 256:
        assert kept == pooled.numel()  # one byte per output
        assert torch_kept == x.numel() * x.element_size() + pooled.numel() * 8  # the input and int64 indices
    else:
        assert kept == pooled.numel() * 8


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_compact_max_pool_keeps_nothing_without_gradients_and_traces_as_torchs() -> None:
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(MaxPool2x2()(x), F.max_pool2d(x, 2))
    assert saved_bytes(MaxPool2x2(), x) == 0  # an input without requires_grad: nothing to keep
    graph = str(torch.jit.trace(MaxPool2x2(), x.requires_grad_()).graph)  # as TensorBoard's graph sees it
    assert "aten::max_pool2d" in graph
    assert "_MaxPool2x2" not in graph  # a Python autograd op, which the graph view cannot show


def test_start_epoch_freezes_the_whitening_bias_once_its_epochs_are_done() -> None:
    x = torch.randn(2, 3, 16, 16)
    model = create_model("airbench", 10, (3, 16, 16), width_mult=0.125, whiten_bias_epochs=2)
    assert model.features[:2](x).requires_grad  # the bias learns: gradients flow into the whitening
    assert [model.start_epoch(epoch) for epoch in range(4)] == [False, False, True, False]
    assert not model.whiten.bias.requires_grad
    # nothing before the first conv needs a gradient now: its input gradient is not computed
    assert not model.features[:2](x).requires_grad and model(x).requires_grad

    learns = create_model("airbench", 10, (3, 16, 16), width_mult=0.125)  # 0: the whole run
    assert not any(learns.start_epoch(epoch) for epoch in range(4)) and learns.whiten.bias.requires_grad
    frozen = create_model("airbench", 10, (3, 16, 16), width_mult=0.125, whiten_bias_epochs=2)
    frozen.whiten.bias.requires_grad_(False)  # as model.freeze leaves it: never unfrozen
    assert not any(frozen.start_epoch(epoch) for epoch in range(4)) and not frozen.whiten.bias.requires_grad
    with pytest.raises(ValueError, match=r"model.whiten_bias_epochs must be >= 0 .*got -1"):
        create_model("airbench", 10, (3, 16, 16), whiten_bias_epochs=-1)


def test_the_loop_freezes_the_whitening_bias_after_its_epochs_and_resumes_so(tiny_images, tmp_path) -> None:
    cfg = tiny_airbench(tiny_images, str(tmp_path))
    cfg.model.whiten_bias_epochs = 1
    cfg.train.epochs, cfg.train.keep_every = 3, 1
    fitted = build_experiment(cfg).model.whiten.bias.detach().clone()  # before any step
    run_dir = dlzoo.train(cfg, quiet=True).run_dir

    def weights(epoch: int) -> dict[str, torch.Tensor]:
        return load_file(str(run_dir / "checkpoints" / f"epoch-{epoch:04d}" / "model.safetensors"))

    first, second, third = weights(1), weights(2), weights(3)
    assert not torch.equal(first["features.0.bias"], fitted), "epoch 1 learns the bias"
    assert torch.equal(second["features.0.bias"], first["features.0.bias"])
    assert torch.equal(third["features.0.bias"], first["features.0.bias"])
    assert not torch.equal(third["classifier.0.weight"], second["classifier.0.weight"])

    # stopped after epoch 2 and resumed (a new process would freeze the bias again): the same weights
    def stop_after_two(row: dict) -> None:
        if row["epoch"] == 2:
            raise StopRun("stopped")

    with pytest.raises(StopRun):
        dlzoo.train(cfg, quiet=True, on_epoch_end=stop_after_two)
    stopped = max((tmp_path / "tiny-airbench").iterdir())
    assert stopped != run_dir
    resumed_dir = dlzoo.train(cfg, quiet=True, resume=stopped).run_dir
    resumed = load_file(str(resumed_dir / "checkpoints" / "epoch-0003" / "model.safetensors"))
    assert all(torch.equal(resumed[name], third[name]) for name in third)
