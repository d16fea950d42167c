"""dlzoo's CPU dropout against torch's, on the dropout layers of the throughput table's nets.

    .venv/bin/python benchmarks/dropout.py [--models keras_cifar10_cnn,cbapd] [--threads 2]
        [--repeats 5] [--write docs/benchmarks.md]

For each model of ``benchmarks/throughput.py`` that has dropout, a forward pass at ``--batch``
finds the input shape of every dropout layer. Each layer's forward and backward pass (on random
activations of that shape, channels-last where 4-D, in float32 and in bfloat16) is then timed
with torch's ``nn.Dropout`` and with ``dlzoo.models.base.Dropout``, alternating ``--repeats``
times; the table gives each model's total over its dropout layers, the medians, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from throughput import MODELS, machine  # benchmarks/ is on the path
from torch import nn

from dlzoo.models import create_model
from dlzoo.models.base import Dropout
from dlzoo.report.results import replace_between_markers


def dropout_inputs(name: str, batch: int) -> list[tuple[float, tuple[int, ...]]]:
    """(rate, input shape) of each dropout layer of ``name`` that drops anything, in forward order."""
    model_name, settings = MODELS[name]
    model = create_model(model_name, 10, (3, 32, 32), **settings).eval()
    found: list[tuple[float, tuple[int, ...]]] = []
    for module in model.modules():
        if isinstance(module, Dropout) and module.p > 0:
            module.register_forward_hook(lambda m, inputs, _: found.append((m.p, tuple(inputs[0].shape))))
    with torch.no_grad():
        model(torch.zeros(batch, 3, 32, 32))
    return found


def milliseconds(layer: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, steps: int) -> float:
    """Milliseconds of one forward and backward pass of ``layer`` in training mode."""
    layout = torch.channels_last if len(shape) == 4 else torch.contiguous_format
    x = torch.randn(shape).to(dtype).contiguous(memory_format=layout).requires_grad_()
    grad = torch.randn(shape).to(dtype).contiguous(memory_format=layout)
    layer.train()
    torch.autograd.grad(layer(x), x, grad)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        torch.autograd.grad(layer(x), x, grad)
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated throughput.py models")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="passes timed per layer, each repeat")
    parser.add_argument(
        "--repeats", type=int, default=5, help="times each implementation is timed, alternating"
    )
    parser.add_argument("--write", metavar="FILE", help="replace the dropout section of FILE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [
        "| model | dropout inputs (rate: shape) | dtype | torch ms | dlzoo ms | torch / dlzoo |",
        "|---|---|---|---|---|---|",
    ]
    for name in args.models.split(","):
        layers = dropout_inputs(name, args.batch)
        if not layers:
            continue
        described = ", ".join(f"{rate}: {'x'.join(map(str, shape))}" for rate, shape in layers)
        for dtype in (torch.float32, torch.bfloat16):
            totals: dict[str, list[float]] = {"torch": [], "dlzoo": []}
            for repeat in range(args.repeats):
                order = ["torch", "dlzoo"] if repeat % 2 == 0 else ["dlzoo", "torch"]
                for kind in order:
                    make = nn.Dropout if kind == "torch" else Dropout
                    totals[kind].append(
                        sum(milliseconds(make(rate), shape, dtype, args.steps) for rate, shape in layers)
                    )
            ours, theirs = statistics.median(totals["dlzoo"]), statistics.median(totals["torch"])
            dtype_name = str(dtype).removeprefix("torch.")
            lines.append(
                f"| {name} | {described} | {dtype_name} | {theirs:.2f} | {ours:.2f} | {theirs / ours:.1f}x |"
            )
            print(lines[-1], flush=True)
    report = (
        f"Machine: {machine()}; {args.threads} threads, batch {args.batch}, forward and backward of each "
        f"dropout layer {args.steps} times a repeat, {args.repeats} repeats alternating (the median).\n"
        f"Command: `python benchmarks/dropout.py --models {args.models} --threads {args.threads} "
        f"--repeats {args.repeats} --write docs/benchmarks.md`\n\n" + "\n".join(lines)
    )
    print(report)
    if args.write:
        replace_between_markers(Path(args.write), report, section="dropout")


if __name__ == "__main__":
    main()
