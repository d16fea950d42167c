"""Typed configuration: one dataclass per concern, validated on construction.

A recipe TOML file has one table per dataclass below (``[data]``,
``[data.augment]``, ``[model]``, ``[task]``, ``[optim]``, ``[schedule]``,
``[train]``, ``[log]``, ``[meta]``). ``--set section.key=value`` overrides
are parsed to the field's declared type; an unknown section or key, or a value
of the wrong type, raises ``ValueError`` naming the valid choices.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from dlzoo.registry import unknown_name_message


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(unknown_name_message(what, value, list(choices)))


def _check_range(what: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{what} must be in [{low}, {high}], got {value}")


@dataclass
class AugmentConfig:
    """Whole-batch augmentation of training images (off by default)."""

    flip: bool = False
    """Random horizontal flip with probability 1/2."""
    crop_padding: int = 0
    """Random crop after zero-padding each side by this many pixels (a random translate)."""
    brightness: float = 0.0
    """Max brightness delta, as a fraction of the pixel range (TF's max_delta)."""
    contrast: float = 0.0
    """Contrast factor drawn from [1 - contrast, 1 + contrast]."""
    rotation: float = 0.0
    """Max rotation in degrees (Keras ImageDataGenerator rotation_range)."""
    width_shift: float = 0.0
    """Max horizontal shift as a fraction of the width (Keras width_shift_range)."""
    height_shift: float = 0.0
    """Max vertical shift as a fraction of the height (Keras height_shift_range)."""
    zoom: float = 0.0
    """Zoom factor drawn from [1 - zoom, 1 + zoom] (Keras zoom_range)."""
    cutout: int = 0
    """Side in pixels of one random square per image set to grey, 0.5 (0 = off)."""
    alternate_flip: bool = False
    """airbench's flip: each image flipped at random in epoch 0, then the opposite way each epoch."""
    crop_pad_mode: str = "zeros"
    """How the random crop pads: zeros, or reflect (mirror the border pixels, as airbench does)."""

    def __post_init__(self) -> None:
        for name in ("crop_padding", "cutout"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.augment.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("brightness", "contrast", "width_shift", "height_shift", "zoom"):
            _check_range(f"data.augment.{name}", getattr(self, name), 0.0, 1.0)
        _check_range("data.augment.rotation", self.rotation, 0.0, 180.0)
        _check_choice("data.augment.crop_pad_mode", self.crop_pad_mode, ("zeros", "reflect"))
        if self.flip and self.alternate_flip:
            raise ValueError(
                "data.augment.flip and data.augment.alternate_flip are two ways to flip: set only one"
            )

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is on (crop_pad_mode only says how the crop pads)."""
        return any(getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "crop_pad_mode")


NORMALIZE_CHOICES = ("standard", "unit", "none")


@dataclass
class DataConfig:
    """Which data set, how it is split, normalised, batched and augmented."""

    name: str = "digits"
    """Registered data set name (``dlzoo data list`` shows them)."""
    data_dir: str = ""
    """Folder with the data or a cache for downloads; empty = $DLZOO_DATA_DIR or ~/.cache/dlzoo."""
    download: bool = True
    """Allow downloading missing files from the official source."""
    classes: list[int] = field(default_factory=list)
    """Keep only these class indices, relabelled 0..k-1 in this order; empty = all."""
    val_fraction: float = 0.1
    """Fraction of the training split held out for validation (stratified, seeded)."""
    train_subset: int = 0
    """Train on a seeded, stratified subset of N examples (0 = all); for quick runs."""
    resize: int = 0
    """Resize images to NxN batch by batch, before augmentation (0 = keep); e.g. ImageNet stems on CIFAR."""
    progressive_sizes: list[int] = field(default_factory=list)
    """Progressive resizing: training images are scaled to NxN (after augmentation, bilinear,
    antialiased) in epochs 1, 2, ... of this list, and train at full size after it; validation and
    test always see the full size. A smaller image costs a conv net fewer FLOPs (16x16: a quarter)."""
    normalize: str = "standard"
    """standard: per-channel mean/std of the training split; unit: pixels/255; none: raw values."""
    batch_size: int = 128
    """Training batch size."""
    eval_batch_size: int = 256
    """Batch size for validation and test. Kept small: with a wide net, an evaluation batch of
    1,000 held more activations at once than a training batch of 128 and set the run's peak memory."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Training-time augmentation."""

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = build_section(AugmentConfig, self.augment, "data.augment")
        _check_choice("data.normalize", self.normalize, NORMALIZE_CHOICES)
        _check_range("data.val_fraction", self.val_fraction, 0.0, 0.9)
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.train_subset < 0:
            raise ValueError(f"data.train_subset must be >= 0, got {self.train_subset}")
        if self.resize < 0:
            raise ValueError(f"data.resize must be >= 0 (0 = keep the size), got {self.resize}")
        if any(size < 1 for size in self.progressive_sizes):
            raise ValueError(
                "data.progressive_sizes must be image sizes >= 1, one per early epoch, "
                f"got {self.progressive_sizes}"
            )
        if len(set(self.classes)) != len(self.classes) or any(c < 0 for c in self.classes):
            raise ValueError(f"data.classes must be distinct indices >= 0, got {self.classes}")


INIT_CHOICES = ("default", "he", "xavier", "normal", "truncated_normal")
ACTIVATION_CHOICES = ("relu", "sigmoid", "tanh", "leaky_relu")


@dataclass
class ModelConfig:
    """Which network and its shape. A field left unset (None) keeps the model's own default;
    a field set for a model that does not take it is an error."""

    name: str = "lenet5"
    """Registered model name (``dlzoo list --what models``)."""
    init: str = "default"
    """Weight initialiser: default (PyTorch's), he, xavier, normal or truncated_normal (std 0.05)."""
    activation: str | None = None
    """Hidden activation: relu, sigmoid, tanh or leaky_relu."""
    hidden_sizes: list[int] | None = None
    """Widths of the hidden layers (MLP)."""
    dropout_rate: float | None = None
    """Dropout probability."""
    batch_norm: bool | None = None
    """Insert batch normalisation after hidden layers."""
    shortcut: str | None = None
    """ResNet shortcut where the shape changes: A (subsample + zero-pad) or B (1x1 projection)."""
    stem: str | None = None
    """ResNet-18..152 / MobileNet-v2 stem: cifar (stride 1, no max-pool) or imagenet (torchvision's)."""
    width_mult: float | None = None
    """MobileNet / airbench width multiplier (channels scaled by this factor)."""
    tta: int | None = None
    """airbench's eval-mode test-time augmentation: 0 none, 1 mirror, 2 mirror + 1-pixel shifts."""
    whiten_bias_epochs: int | None = None
    """airbench: learn the whitening bias for this many epochs, then freeze it (0 = the whole run)."""
    pretrained: bool | None = None
    """Start from torchvision's published ImageNet weights (families that match torchvision)."""
    init_from: str = ""
    """Start from these weights: a run folder, recipe:<name> (its newest finished run) or .safetensors."""
    freeze: list[str] = field(default_factory=list)
    """Parameter-name patterns to keep fixed, e.g. features or features.0.* (fine-tuning)."""
    features_lr_mult: float = 1.0
    """Learning-rate multiplier for trainable feature (non-head) parameters."""

    def __post_init__(self) -> None:
        _check_choice("model.init", self.init, INIT_CHOICES)
        if self.shortcut is not None:
            _check_choice("model.shortcut", self.shortcut, ("A", "B"))
        if self.stem is not None:
            _check_choice("model.stem", self.stem, ("cifar", "imagenet"))
        if self.width_mult is not None and self.width_mult <= 0:
            raise ValueError(f"model.width_mult must be > 0, got {self.width_mult}")
        if self.tta is not None and self.tta not in (0, 1, 2):
            raise ValueError(f"model.tta must be 0 (none), 1 (mirror) or 2 (mirror + shifts), got {self.tta}")
        if self.whiten_bias_epochs is not None and self.whiten_bias_epochs < 0:
            raise ValueError(
                "model.whiten_bias_epochs must be >= 0 (0 learns the whitening bias for the whole run), "
                f"got {self.whiten_bias_epochs}"
            )
        if self.features_lr_mult <= 0:
            raise ValueError(f"model.features_lr_mult must be > 0, got {self.features_lr_mult}")
        if self.activation is not None:
            _check_choice("model.activation", self.activation, ACTIVATION_CHOICES)
        if self.dropout_rate is not None:
            _check_range("model.dropout_rate", self.dropout_rate, 0.0, 0.99)
        if self.hidden_sizes is not None and any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"model.hidden_sizes must all be >= 1, got {self.hidden_sizes}")

    def model_kwargs(self) -> dict[str, Any]:
        """The architecture fields that were set, as keyword arguments for the model factory."""
        skip = {"name", "init", "init_from", "freeze", "features_lr_mult"}
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in skip and getattr(self, f.name) is not None
        }


@dataclass
class TaskConfig:
    """The objective of a training step."""

    name: str = "classify"
    """Registered task: classify or regress (MSE)."""
    loss: str = "cross_entropy"
    """classify: cross_entropy, or perceptron (the multi-class perceptron criterion)."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing."""
    top_k: int = 5
    """Also report top-k accuracy for this k (when there are more than k classes)."""

    def __post_init__(self) -> None:
        _check_choice("task.loss", self.loss, ("cross_entropy", "perceptron"))
        _check_range("task.label_smoothing", self.label_smoothing, 0.0, 0.99)
        if self.top_k < 1:
            raise ValueError(f"task.top_k must be >= 1, got {self.top_k}")


@dataclass
class OptimConfig:
    """The optimiser and what it applies to the gradients."""

    name: str = "adam"
    """Registered optimiser (sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, muon, scratch_*)."""
    lr: float = 1e-3
    """Base learning rate."""
    momentum: float = 0.9
    """Momentum for momentum and nesterov (and the onecycle schedule's momentum cycling)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam's beta1, beta2."""
    eps: float = 1e-8
    """Numerical floor in adaptive optimisers' denominators."""
    alpha: float = 0.99
    """RMSprop's squared-gradient decay."""
    weight_decay: float = 0.0
    """L2 penalty (decoupled for adamw)."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value (0 = off)."""
    lookahead_steps: int = 0
    """Lookahead (Zhang et al. 2019) around the optimiser: every this many steps the slow weights
    move ``lookahead_alpha`` of the way to the trained ones, which restart from them (0 = off)."""
    lookahead_alpha: float = 0.5
    """How far the slow weights move at each lookahead sync, in (0, 1]."""
    lookahead_ramp: bool = False
    """Ramp the lookahead from no averaging (alpha 1) at the first step to ``lookahead_alpha`` at
    the last on a cubic, ``alpha = 1 - (1 - lookahead_alpha) * (step / total) ** 3``: weight
    averaging that only bites near the end (airbench94's, with alpha 1 - 0.95 ** 5 = 0.226)."""

    muon_lr: float = 0.02
    """muon: lr of the orthogonalised updates of the hidden weight matrices (conv filters, the
    features' linear weights); the other parameters train at ``lr`` with Nesterov SGD."""
    muon_momentum: float = 0.95
    """muon: momentum of the orthogonalised updates (``momentum`` is the SGD groups')."""
    muon_fixed_norm: bool = False
    """muon: rescale each hidden matrix to norm sqrt(rows) before every update, instead of
    leaving it to grow (for weights followed by batch norm, whose scale does not matter)."""

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.muon_lr <= 0:
            raise ValueError(f"optim.lr and optim.muon_lr must be > 0, got {self.lr} and {self.muon_lr}")
        if not 0 <= self.muon_momentum < 1:
            raise ValueError(f"optim.muon_momentum must be in [0, 1), got {self.muon_momentum}")
        if self.lookahead_steps < 0:
            raise ValueError(f"optim.lookahead_steps must be >= 0 (0 = off), got {self.lookahead_steps}")
        if not 0 < self.lookahead_alpha <= 1:
            raise ValueError(f"optim.lookahead_alpha must be in (0, 1], got {self.lookahead_alpha}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        for name in ("weight_decay", "grad_clip", "momentum", "eps"):
            if getattr(self, name) < 0:
                raise ValueError(f"optim.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class ScheduleConfig:
    """How the learning rate moves during training (stepped once per optimiser step)."""

    name: str = "constant"
    """constant, step, exponential, cosine, onecycle, triangle or cyclic."""
    step_epochs: float = 10.0
    """step: multiply by gamma every this many epochs; exponential: the decay period."""
    gamma: float = 0.1
    """step: factor per period; exponential: lr = base * gamma ** (epoch / step_epochs)."""
    staircase: bool = False
    """exponential: decay in whole periods (floor) instead of continuously."""
    warmup_epochs: float = 0.0
    """Linear warm-up from 0 before the schedule (constant, step, exponential, cosine)."""
    min_lr: float = 0.0
    """cosine: final lr; cyclic: the bottom of the cycle."""
    max_lr: float = 0.0
    """onecycle/cyclic: peak lr (0 = 10x optim.lr)."""
    cycle_epochs: float = 4.0
    """cyclic: epochs for one full triangle (up and down)."""
    pct_start: float = 0.25
    """onecycle, triangle: fraction of training spent warming up."""
    start_factor: float = 0.2
    """triangle: the first lr, as a fraction of the peak."""
    end_factor: float = 0.07
    """triangle: the last lr, as a fraction of the peak."""

    def __post_init__(self) -> None:
        if self.step_epochs <= 0 or self.cycle_epochs <= 0:
            raise ValueError("schedule.step_epochs and schedule.cycle_epochs must be > 0")
        _check_range("schedule.pct_start", self.pct_start, 0.01, 0.99)
        _check_range("schedule.start_factor", self.start_factor, 0.0, 1.0)
        _check_range("schedule.end_factor", self.end_factor, 0.0, 1.0)
        if self.gamma <= 0:
            raise ValueError(f"schedule.gamma must be > 0, got {self.gamma}")
        for name in ("warmup_epochs", "min_lr", "max_lr"):
            if getattr(self, name) < 0:
                raise ValueError(f"schedule.{name} must be >= 0, got {getattr(self, name)}")


DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
TOGGLE_CHOICES = ("auto", "on", "off")


@dataclass
class TrainConfig:
    """How long and where to train, and when to stop."""

    epochs: int = 10
    """Passes over the training split."""
    max_steps: int = 0
    """Stop after this many optimiser steps (0 = run all epochs)."""
    seed: int = 0
    """Seeds python, numpy and torch, the split and the shuffling."""
    device: str = "auto"
    """auto picks cuda, then mps, then cpu."""
    channels_last: str = "auto"
    """Channels-last memory format for conv nets: auto (on for 4-D inputs), on, off."""
    bf16: str = "auto"
    """bfloat16 autocast of the training step: auto (on where the device computes bf16 natively),
    on, off. Validation and test always run in float32."""
    deterministic: bool = True
    """Use deterministic kernels (bitwise-repeatable runs on CPU)."""
    threads: int = 0
    """CPU threads for torch's intra-op parallelism (0 = torch's default, one per core)."""
    reuse_memory: bool = True
    """During the training epochs, keep freed blocks under 1 GiB for the next step (glibc's malloc,
    Linux; no effect elsewhere) instead of returning them to the kernel and faulting them in again."""
    micro_batches: int = 1
    """Split each training batch into this many chunks, run forward and backward on one after
    the other and step once (gradient accumulation): the batch's update for about 1/N of the
    activation memory, except that batch norm sees each chunk's statistics."""
    sync_batchnorm: bool = False
    """Data-parallel runs: batch-norm statistics over the global batch, not each process's part."""
    sync_every: int = 0
    """Steps between host reads of the step metrics (progress bar, non-finite loss check, stop
    requests in data-parallel runs); 0 = every step on the CPU, where a read costs nothing, and
    every 50 on a GPU, whose steps then never wait for the host."""
    compile: bool = False
    """torch.compile the training step's model (inductor): a compile pause up front, faster steps
    where it pays (larger models, GPUs); evaluation runs the plain model."""
    monitor: str = "val_accuracy"
    """Metric that picks the best checkpoint and drives early stopping."""
    monitor_mode: str = "max"
    """max or min: whether a larger monitored value is better."""
    early_stopping_patience: int = 0
    """Stop after this many epochs without improvement (0 = off)."""
    keep_every: int = 0
    """Also keep the checkpoint of every N-th epoch (0 = keep only last and best)."""
    keep_limit: int = 0
    """At most this many of those every-N checkpoints, the newest (0 = no limit)."""
    test_checkpoint: str = "best"
    """Weights measured once on the test split at the end: best (by the monitor on val) or last."""

    def __post_init__(self) -> None:
        _check_choice("train.device", self.device, DEVICE_CHOICES)
        _check_choice("train.channels_last", self.channels_last, TOGGLE_CHOICES)
        _check_choice("train.bf16", self.bf16, TOGGLE_CHOICES)
        _check_choice("train.monitor_mode", self.monitor_mode, ("max", "min"))
        _check_choice("train.test_checkpoint", self.test_checkpoint, ("best", "last"))
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.micro_batches < 1:
            raise ValueError(f"train.micro_batches must be >= 1 (1 = no splitting), got {self.micro_batches}")
        for name in (
            "max_steps",
            "early_stopping_patience",
            "threads",
            "sync_every",
            "keep_every",
            "keep_limit",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class LogConfig:
    """What a run leaves behind besides its checkpoints."""

    runs_dir: str = "runs"
    """Parent folder of run folders: <runs_dir>/<recipe>/<timestamp>/."""
    tensorboard: bool = True
    """Write TensorBoard event files."""
    histograms: bool = True
    """Log weight and gradient histograms each epoch."""
    plots: bool = True
    """Write loss/accuracy curves as PNG at the end."""
    progress: bool = True
    """Show a progress bar (``--quiet`` turns it off)."""


@dataclass
class MetaConfig:
    """What a recipe reproduces and what it reached: its evidence."""

    description: str = ""
    """One line: what the experiment is."""
    source: str = ""
    """The source experiment this recipe reproduces."""
    source_result: str = ""
    """The number the source reported, as it reported it."""
    target: float = 0.0
    """Test accuracy (0-1) this recipe is expected to reach at its default budget."""
    result: float = 0.0
    """Test accuracy dlzoo measured (0 = not yet verified)."""
    result_command: str = ""
    """The command that produced ``result``."""
    result_data: str = ""
    """The data the result was measured on."""
    result_seeds: list[int] = field(default_factory=list)
    """Seeds of the measured runs."""
    result_minutes: float = 0.0
    """Measured time of one run on a 2-core CPU, in minutes (``dlzoo results --record`` writes the
    training time, start-up and the test left out)."""
    result_compute: str = ""
    """How the measured runs computed: torch threads, the CPU's instruction set (or the GPU) and the
    precision, e.g. ``1 thread; AVX512, bf16`` (the same budget takes another time elsewhere)."""
    result_note: str = ""
    """How the measurement was taken when it differs from the default (threads, overrides...)."""
    shortfall: str = ""
    """Why ``result`` is below the source's number, when it is (the results table shows it)."""


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "task": TaskConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
    "log": LogConfig,
    "meta": MetaConfig,
}


@dataclass
class RunConfig:
    """A whole experiment: one recipe with its overrides applied."""

    recipe: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)

    def __post_init__(self) -> None:
        if self.train.micro_batches > self.data.batch_size:
            raise ValueError(
                f"train.micro_batches ({self.train.micro_batches}) must be at most data.batch_size "
                f"({self.data.batch_size}): each chunk needs at least one example"
            )

    @classmethod
    def from_dict(cls, raw: dict[str, Any], recipe: str = "custom") -> RunConfig:
        """Build and validate from nested dicts (a parsed TOML file)."""
        unknown = [k for k in raw if k not in SECTIONS]
        if unknown:
            raise ValueError(unknown_name_message("config section", unknown[0], list(SECTIONS)))
        sections = {name: build_section(kind, raw.get(name, {}), name) for name, kind in SECTIONS.items()}
        return cls(recipe=recipe, **sections)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: list[str]) -> RunConfig:
        """Apply ``section.key=value`` strings; values are parsed to the field's type."""
        raw = self.to_dict()
        recipe = raw.pop("recipe")
        for item in overrides:
            path, value = parse_override(item)
            kind = _section_type(path[:-1])
            table = raw
            for depth, key in enumerate(path[:-1]):
                if not isinstance(table.get(key), dict):
                    where = ".".join(path[: depth + 1])
                    raise ValueError(f"--set {item!r}: {where!r} is not a config section")
                table = table[key]
            table[path[-1]] = parse_value(kind, path[-1], value, ".".join(path))
        return RunConfig.from_dict(raw, recipe)


def _section_type(path: list[str]) -> type:
    if not path or path[0] not in SECTIONS:
        raise ValueError(unknown_name_message("config section", path[0] if path else "", list(SECTIONS)))
    kind: type = SECTIONS[path[0]]
    for depth, key in enumerate(path[1:], start=1):
        fields = _field_types(kind)
        if key not in fields:
            where = ".".join(path[:depth])
            raise ValueError(unknown_name_message(f"key in [{where}]", key, list(fields)))
        kind = fields[key]
    return kind


def _field_types(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)


def build_section(kind: type, values: dict[str, Any], where: str) -> Any:
    """Construct dataclass ``kind`` from ``values``, rejecting unknown keys and wrong types."""
    if not isinstance(values, dict):
        raise ValueError(f"[{where}] must be a table of settings, got {values!r}")
    types_by_name = _field_types(kind)
    for key, value in values.items():
        if key not in types_by_name:
            raise ValueError(unknown_name_message(f"key in [{where}]", key, list(types_by_name)))
        if not dataclasses.is_dataclass(types_by_name[key]):
            _check_type(types_by_name[key], value, f"{where}.{key}")
    return kind(**values)


def _check_type(expected: Any, value: Any, where: str) -> None:
    if not _matches(expected, value):
        raise ValueError(f"{where} must be {_type_name(expected)}, got {value!r}")


def _matches(expected: Any, value: Any) -> bool:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(option, value) for option in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(expected)
        return isinstance(value, list) and all(_matches(item, v) for v in value)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _type_name(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(expected) if a is not type(None))
    if origin is list:
        return f"a comma-separated list of {_type_name(typing.get_args(expected)[0])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        expected, str(expected)
    )


def parse_override(item: str) -> tuple[list[str], str]:
    """Split ``section.key=value`` into its dotted path and the raw value."""
    if "=" not in item:
        raise ValueError(f"--set {item!r}: expected section.key=value, e.g. optim.lr=0.05")
    key, value = item.split("=", 1)
    path = key.strip().split(".")
    if len(path) < 2 or not all(path):
        raise ValueError(f"--set {item!r}: expected section.key=value, e.g. optim.lr=0.05")
    return path, value.strip()


def parse_value(section: type, key: str, text: str, where: str) -> Any:
    """Parse the text of an override to the declared type of ``section.key``."""
    types_by_name = _field_types(section)
    if key not in types_by_name:
        raise ValueError(
            unknown_name_message(f"key in [{where.rsplit('.', 1)[0]}]", key, list(types_by_name))
        )
    expected = types_by_name[key]
    if dataclasses.is_dataclass(expected):
        raise ValueError(f"--set {where}: is a section; set one of its keys, e.g. {where}.<key>=...")
    try:
        return _parse_text(expected, text)
    except ValueError:
        raise ValueError(f"--set {where}={text}: must be {_type_name(expected)}") from None


def _parse_text(expected: Any, text: str) -> Any:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(expected) if a is not type(None)]
        if text.lower() in ("none", "null") and len(options) < len(typing.get_args(expected)):
            return None
        return _parse_text(options[0], text)
    if origin is list:
        (item,) = typing.get_args(expected)
        return [_parse_text(item, part.strip()) for part in text.split(",") if part.strip()]
    if expected is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(text)
    if expected is int:
        return int(text)
    if expected is float:
        return float(text)
    return text
