"""Hardware efficiency: the training FLOP/s dlzoo achieves per model against this machine's
measured matrix-multiply peak, in float32 and bfloat16.

    .venv/bin/python benchmarks/efficiency.py [--models cbapd,resnet18] [--steps 10]
        [--write docs/benchmarks.md]

- **Peak**: the best of several timed square matrix multiplies (``--matmul-size``, 2048 by
  default) with all ``--threads``, in float32 and in bfloat16: what the BLAS / oneDNN
  kernels of this CPU reach at best.
- **A model's FLOPs**: one training step (forward and backward) at ``--batch``, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (matrix multiplies and convolutions, 2 FLOPs
  a multiply-add; element-wise work is not counted, as is usual).
- **Achieved**: FLOPs per step x steps/s on dlzoo's training path (``throughput.run_dlzoo``,
  the faster of channels-last and NCHW), in float32 as a fraction of the float32 peak and, where
  the CPU computes bfloat16 natively (AVX-512 BF16 or AMX), under bfloat16 autocast as a fraction
  of the bfloat16 peak. An AVX2-only CPU emulates bfloat16 far below its float32 peak: there
  the bfloat16 columns are left out and dlzoo trains in float32.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from throughput import (  # benchmarks/ is on the path as a script
    MODELS,
    SPEED_RECIPE_MODELS,
    benchmark_images,
    machine,
    matmul_peak,
    native_bf16,
    run_dlzoo,
    step_flops,
)

from dlzoo.report.results import replace_between_markers

ALL_MODELS = {**MODELS, **SPEED_RECIPE_MODELS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(ALL_MODELS), help="from: " + ", ".join(ALL_MODELS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--write", metavar="FILE", help="replace the efficiency section of FILE")
    args = parser.parse_args()
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in names if name not in ALL_MODELS]
    if unknown:
        raise SystemExit(f"error: unknown model {unknown[0]!r}; choose from {', '.join(ALL_MODELS)}")
    args.eager_workers = 0
    torch.set_num_threads(args.threads)
    peaks = {dtype: matmul_peak(dtype, args.matmul_size) for dtype in (torch.float32, torch.bfloat16)}
    fp32, bf16 = (peaks[dtype] / 1e9 for dtype in (torch.float32, torch.bfloat16))
    x, y, _ = benchmark_images(Path(args.data_dir))
    precisions = [torch.float32, torch.bfloat16] if native_bf16() else [torch.float32]
    header = ["model", "GFLOP a step"]
    for dtype in precisions:
        kind = str(dtype).removeprefix("torch.")
        header += [f"{kind} img/s (format)", f"{kind} GFLOP/s", f"of the {kind} peak"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        flops = step_flops(name, args.batch)
        cells = [name, f"{flops / 1e9:.2f}"]
        for dtype in precisions:
            rates = {
                label: run_dlzoo(name, x, y, args, last, dtype == torch.bfloat16)["images_per_second"]
                for label, last in (("channels-last", True), ("NCHW", False))
            }
            layout, rate = max(rates.items(), key=lambda item: item[1])
            achieved = flops * rate / args.batch
            cells += [f"{rate:.0f} ({layout})", f"{achieved / 1e9:.1f}", f"{achieved / peaks[dtype]:.0%}"]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1])
    command = "python benchmarks/efficiency.py " + " ".join(sys.argv[1:])
    report = (
        f"Machine: {machine()}. Matmul peak ({args.matmul_size}^2, {args.threads} threads): "
        f"{fp32:.1f} GFLOP/s float32, {bf16:.1f} GFLOP/s bfloat16. Batch {args.batch}, "
        f"{args.warmup} warm-up + {args.steps} timed steps"
        f"{'' if native_bf16() else '; no native bfloat16, so float32 only'}.\n"
        f"Command: `{command.strip()}`\n\n" + "\n".join(lines) + "\n"
    )
    print(report)
    if args.write:
        replace_between_markers(Path(args.write), report, "efficiency")


if __name__ == "__main__":
    main()
