"""Training throughput of the notes' CNNs: dlzoo against plain PyTorch and Keras 3.

    .venv/bin/python benchmarks/throughput.py [--models cbapd,lenet5] [--write docs/benchmarks.md]

For each model, three implementations train the same architecture (same parameter count,
checked) on the same CIFAR-10-shaped uint8 images with the same input work (a random
horizontal flip and per-channel standardisation), the same batch size and SGD with momentum,
one after another on this machine:

- **dlzoo**: ``dlzoo.create_model`` + the classify task's ``train_step`` fed by dlzoo's
  in-memory ``BatchLoader`` (the whole batch flipped and normalised with tensor ops), timed in
  each setting a recipe can choose with one override: channels-last and NCHW, each in float32
  and, where the CPU computes bfloat16 natively (AVX-512 BF16 or AMX; ``--dlzoo-bf16``), under
  bfloat16 autocast as ``dlzoo train`` runs by default there. Credited with its best, like Keras.
- **eager**: the notes' plain PyTorch loop, the same ``nn.Module`` in NCHW float32 (with torch's
  ``nn.Dropout`` in place of dlzoo's faster CPU one), images
  as PIL through ``torchvision.transforms`` (RandomHorizontalFlip, ToTensor, Normalize) in a
  ``DataLoader`` (``--eager-workers`` worker processes, 2 as in the PyTorch tutorial).
- **keras**: ``benchmarks/keras_models.py`` in its own virtual environment
  (``benchmarks/.venv-keras``, made on first use with tensorflow-cpu and keras), tf.data for
  the input, timed with each of its settings (plain, XLA ``jit_compile``, and the
  ``mixed_bfloat16`` policy where the CPU computes bfloat16 natively; on a CPU without it,
  such as an AVX2-only one, bfloat16 is emulated and only slower, and
  ``--keras-settings plain,xla,mixed_bfloat16`` times it anyway) and credited with its best.

Images/s is steady state: ``--warmup`` steps are run and dropped, then ``--steps`` timed.
The ratio columns are dlzoo's images/s (its best setting; the float32 column shows what it
reaches without bfloat16) over the others', measured in the same run. The last two columns
say what issue 5's goals (2x Keras, 3x eager) would ask of this CPU: the FLOP/s of twice Keras's
(three times the eager loop's) images/s, with a training step's FLOPs counted by
``torch.utils.flop_counter``, as a share of the fastest square matrix multiply timed at the start
(bfloat16 where native). Above 100%, no implementation of the same arithmetic gets there. Data:
the CIFAR-10 JPEG copy in ../shared/data when it is there (through dlzoo's cache), random
images otherwise; throughput does not depend on which.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from dlzoo.config import AugmentConfig, RunConfig
from dlzoo.data.core import Split
from dlzoo.data.loader import BatchLoader, Normalizer
from dlzoo.models import create_model
from dlzoo.models.base import Dropout
from dlzoo.registry import TASKS
from dlzoo.report.results import replace_between_markers
from dlzoo.tasks import Task  # noqa: F401  (importing dlzoo.tasks registers them)
from dlzoo.training.allocator import freed_memory_kept
from dlzoo.training.loop import bf16_supported
from dlzoo.training.run import cpu_name

HERE = Path(__file__).resolve().parent
KERAS_VENV = HERE / ".venv-keras"
KERAS_PACKAGES = ["tensorflow-cpu>=2.16", "keras>=3.0"]

# name -> (dlzoo model, its settings): the TF2 course's CIFAR-10 nets and the Keras example's.
MODELS: dict[str, tuple[str, dict[str, object]]] = {
    "cbapd": ("cbapd", {}),
    "lenet5": ("lenet5", {"activation": "sigmoid"}),
    "alexnet8": ("alexnet8", {}),
    "vgg16": ("vgg16_cifar", {}),
    "inception10": ("inception10", {}),
    "resnet18": ("resnet18", {"stem": "cifar"}),
    "keras_cifar10_cnn": ("keras_cifar10_cnn", {}),
}
SPEED_RECIPE_MODELS: dict[str, tuple[str, dict[str, object]]] = {"airbench": ("airbench", {})}
"""Models timed by dlzoo alone (efficiency.py): the fast CIFAR-10 recipe's network."""
NUM_IMAGES = 4096
"""Images held for the benchmark (enough for warm-up and timed steps without reuse at batch 128)."""


def benchmark_images(data_dir: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(x uint8 (N, 32, 32, 3), y int64 (N,), where they came from)."""
    if (data_dir / "cifar10-jpeg").is_dir():
        from dlzoo.config import DataConfig
        from dlzoo.data.pipeline import load_data

        bundle = load_data(DataConfig(name="cifar10", data_dir=str(data_dir), download=False))
        x = bundle.train.x[:NUM_IMAGES].permute(0, 2, 3, 1).numpy()
        return np.ascontiguousarray(x), bundle.train.y[:NUM_IMAGES].numpy(), "CIFAR-10 (JPEG q75 copy)"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (NUM_IMAGES, 32, 32, 3), dtype=np.uint8)
    return x, rng.integers(0, 10, NUM_IMAGES), "random images"


def matmul_peak(dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """FLOP/s of the fastest of ``repeats`` (size x size) @ (size x size) products."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b  # warm-up: thread pool, kernel choice
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def step_flops(name: str, batch: int) -> int:
    """FLOPs of one forward + backward pass of model ``name`` on a batch of CIFAR-sized images."""
    model_name, settings = {**MODELS, **SPEED_RECIPE_MODELS}[name]
    model = create_model(model_name, 10, (3, 32, 32), **settings)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(
            model(torch.randn(batch, 3, 32, 32)), torch.zeros(batch).long()
        ).backward()
    return counter.get_total_flops()


def timed(step, batches, warmup: int, steps: int) -> float:
    """Images per second of ``step(x, y)`` over ``steps`` batches after ``warmup`` dropped ones."""
    iterator = iter(batches)
    for _ in range(warmup):
        step(*next(iterator))
    seen, start = 0, time.perf_counter()
    for _ in range(steps):
        x, y = next(iterator)
        step(x, y)
        seen += len(y)
    return seen / (time.perf_counter() - start)


def endless(make_epoch):
    while True:
        yield from make_epoch()


def run_dlzoo(
    name: str, x: np.ndarray, y: np.ndarray, args: argparse.Namespace, channels_last: bool, bf16: bool = False
) -> dict:
    """Images/s of dlzoo's training step in one memory format and precision (as ``train.bf16=on``)."""
    model_name, settings = {**MODELS, **SPEED_RECIPE_MODELS}[name]
    torch.manual_seed(0)
    model = create_model(model_name, 10, (3, 32, 32), **settings)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    cfg = RunConfig.from_dict({"model": {"name": model_name}, "optim": {"name": "momentum", "lr": 0.01}})
    task = TASKS.get("classify")(model, cfg, 10)
    task.configure_optimizers(NUM_IMAGES // args.batch, 10**6)
    if bf16:
        task.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    split = Split(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y))
    loader = BatchLoader(
        split, args.batch, Normalizer.fit(split.x, "standard"), shuffle=True, augment=AugmentConfig(flip=True)
    )
    model.train()

    def step(inputs: torch.Tensor, labels: torch.Tensor) -> None:
        task.train_step(inputs.contiguous(memory_format=memory_format), labels)

    with freed_memory_kept():  # as ``dlzoo train`` runs its epochs (train.reuse_memory)
        rate = timed(step, endless(lambda: loader), args.warmup, args.steps)
    return {"images_per_second": rate, "parameters": sum(p.numel() for p in model.parameters())}


class PILImages(Dataset):
    """The way torchvision's CIFAR10 serves images: a PIL image per index through ``transform``."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform: transforms.Compose) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.x[index])), int(self.y[index])


def torch_dropout(model: nn.Module) -> nn.Module:
    """``model`` with torch's ``nn.Dropout`` in place of dlzoo's faster CPU dropout, as the notes wrote it."""
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, Dropout):
                setattr(parent, child_name, nn.Dropout(child.p))
    return model


def run_eager(name: str, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict:
    model_name, settings = {**MODELS, **SPEED_RECIPE_MODELS}[name]
    torch.manual_seed(0)
    model = torch_dropout(create_model(model_name, 10, (3, 32, 32), **settings))
    mean = (x.reshape(-1, 3).mean(0) / 255).tolist()
    std = (x.reshape(-1, 3).std(0) / 255).tolist()
    transform = transforms.Compose(
        [transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(mean, std)]
    )
    loader = DataLoader(
        PILImages(x, y, transform),
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.eager_workers,
        persistent_workers=args.eager_workers > 0,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    model.train()

    def step(inputs: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
        loss.item()  # the notes' running loss, as every eager loop logs it

    rate = timed(step, endless(lambda: loader), args.warmup, args.steps)
    return {"images_per_second": rate, "parameters": sum(p.numel() for p in model.parameters())}


def keras_python() -> Path:
    """The Keras environment's interpreter, made on first use (tensorflow-cpu, keras, numpy)."""
    python = KERAS_VENV / "bin" / "python"
    if not python.exists():
        print(f"making {KERAS_VENV} with {' '.join(KERAS_PACKAGES)} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(KERAS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *KERAS_PACKAGES], check=True)
    return python


def default_keras_settings() -> str:
    """plain and xla, plus mixed_bfloat16 where oneDNN has native bfloat16 (AVX-512 BF16 or AMX)."""
    return "plain,xla,mixed_bfloat16" if native_bf16() else "plain,xla"


def run_keras(names: list[str], data: Path, args: argparse.Namespace) -> dict[str, dict]:
    command = [
        str(keras_python()),
        str(HERE / "keras_models.py"),
        "--data",
        str(data),
        "--models",
        ",".join(names),
        "--batch",
        str(args.batch),
        "--warmup",
        str(args.warmup),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--settings",
        args.keras_settings,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    )
    if done.returncode != 0:
        raise SystemExit(f"the Keras benchmark failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    return (
        f"{cpu_name()} ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} cores; Python "
        f"{platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}"
    )


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively: what ``train.bf16=auto`` asks."""
    return bf16_supported(torch.device("cpu"))


def dlzoo_settings(bf16: str) -> list[tuple[str, bool, bool]]:
    """(label, channels_last, bf16) of every dlzoo setting to time; bf16 ``auto``: where native."""
    precisions = {"on": [False, True], "off": [False], "auto": [False, True] if native_bf16() else [False]}[
        bf16
    ]
    return [
        (f"{'channels-last' if last else 'NCHW'}{', bf16' if half else ''}", last, half)
        for half in precisions
        for last in (True, False)
    ]


def best(rates: dict[str, float], float32_only: bool = False) -> tuple[str, float]:
    """The fastest (setting, images/s) of ``rates``, or of its float32 settings."""
    return max(((k, v) for k, v in rates.items() if not (float32_only and "bf16" in k)), key=lambda kv: kv[1])


def table(results: dict[str, dict], keras: dict[str, dict] | None, peak: float) -> str:
    """The throughput table; its last two columns are what the goals would need of ``peak``.

    ``peak`` is the machine's best measured matmul FLOP/s (bfloat16 where native). A goal that
    needs more than 100% of it asks any implementation doing the model's FLOPs to run them
    faster than this CPU's fastest matrix multiply.
    """
    header = [
        "model",
        "parameters",
        "dlzoo img/s (best setting)",
        "dlzoo float32 img/s (format)",
        "eager img/s",
        "keras img/s (setting)",
        "dlzoo / keras",
        "dlzoo / eager",
        "2x keras needs (of the peak)",
        "3x eager needs (of the peak)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, result in results.items():
        (setting, ours), (fp32_format, fp32) = best(result["dlzoo"]), best(result["dlzoo"], float32_only=True)
        eager = result["eager"]["images_per_second"]
        theirs = keras.get(name) if keras else None
        keras_cell = f"{theirs['images_per_second']:.0f} ({theirs['setting']})" if theirs else "-"
        versus_keras = f"{ours / theirs['images_per_second']:.2f}x" if theirs else "-"
        at_peak = peak / result["flops_per_image"]  # images/s if the step ran at the peak
        keras_needs = f"{2 * theirs['images_per_second'] / at_peak:.0%}" if theirs else "-"
        lines.append(
            f"| {name} | {result['parameters']:,} | {ours:.0f} ({setting}) | {fp32:.0f} ({fp32_format}) | "
            f"{eager:.0f} | {keras_cell} | {versus_keras} | {ours / eager:.2f}x | {keras_needs} | "
            f"{3 * eager / at_peak:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS)
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads, all three"
    )
    parser.add_argument("--matmul-size", type=int, default=2048, help="of the peak's square matmul")
    parser.add_argument("--eager-workers", type=int, default=2, help="DataLoader workers of the eager loop")
    parser.add_argument("--no-keras", action="store_true", help="skip Keras (no TensorFlow install)")
    parser.add_argument(
        "--dlzoo-bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="also time dlzoo under bfloat16 autocast: auto (where the CPU computes it natively), on, off",
    )
    parser.add_argument(
        "--keras-settings",
        default=default_keras_settings(),
        help="Keras settings to time, best one credited (default plain,xla, and mixed_bfloat16 "
        "where the CPU computes bfloat16 natively: elsewhere it is emulated and only slower)",
    )
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument(
        "--write", metavar="FILE", help="replace the throughput section of FILE (markdown) with the table"
    )
    args = parser.parse_args()
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise SystemExit(f"error: unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)
    peak_dtype = torch.bfloat16 if native_bf16() else torch.float32
    peak = matmul_peak(peak_dtype, args.matmul_size)
    x, y, source = benchmark_images(Path(args.data_dir))
    data = HERE / ".benchmark-images.npz"
    np.savez(data, x=x, y=y)
    results: dict[str, dict] = {}
    for name in names:
        runs = {
            label: run_dlzoo(name, x, y, args, last, half)
            for label, last, half in dlzoo_settings(args.dlzoo_bf16)
        }
        results[name] = {
            "dlzoo": {label: run["images_per_second"] for label, run in runs.items()},
            "parameters": next(iter(runs.values()))["parameters"],
            "eager": run_eager(name, x, y, args),
            "flops_per_image": step_flops(name, args.batch) / args.batch,
        }
        rates = {**results[name]["dlzoo"], "eager": results[name]["eager"]["images_per_second"]}
        print(f"{name}: " + ", ".join(f"{k} {v:.0f} img/s" for k, v in rates.items()), file=sys.stderr)
    keras = None if args.no_keras else run_keras(names, data, args)
    if keras:
        for name in names:
            if keras[name]["parameters"] != results[name]["parameters"]:
                raise SystemExit(
                    f"error: Keras {name} has {keras[name]['parameters']:,} parameters, dlzoo's "
                    f"{results[name]['parameters']:,}: not the same architecture"
                )
    markdown = table(results, keras, peak)
    command = "python benchmarks/throughput.py " + " ".join(sys.argv[1:])
    versions = f"; {keras['_versions']}; Keras settings timed: {args.keras_settings}" if keras else ""
    report = (
        f"Machine: {machine()}{versions}. Batch {args.batch}, {args.threads} threads, "
        f"{args.warmup} warm-up + {args.steps} timed steps, {source}. Peak: {peak / 1e9:.1f} "
        f"GFLOP/s, the fastest {args.matmul_size}^2 {str(peak_dtype).removeprefix('torch.')} matmul; "
        "a step's FLOPs counted by torch.utils.flop_counter.\n"
        f"Command: `{command.strip()}`\n\n{markdown}\n"
    )
    print(report)
    if args.write:
        replace_between_markers(Path(args.write), report, "throughput")


if __name__ == "__main__":
    main()
