"""Export a finished run's model for use outside dlzoo: ``dlzoo export RUN --format FORMAT``.

- ``safetensors`` (``model.safetensors``): the state dict; its metadata say how to rebuild
  and feed the model (model name and settings, input shape, class names, normaliser).
- ``onnx`` (``model.onnx``): the graph, input ``input`` (any batch size), output ``logits``,
  checked against PyTorch with onnxruntime; the same facts in its ``metadata_props``.
- ``torchscript`` (``model.pt``): ``torch.jit.script``, or ``trace`` where scripting fails,
  reloaded and checked; the facts in the extra file ``dlzoo.json``
  (``torch.jit.load(path, _extra_files={"dlzoo.json": ""})``).
- ``txt`` (``model.txt``): the notes' parameter dump, ``name shape dtype`` then every value.

Every file is written beside its destination under a temporary name and renamed at
the end, so a failed export (a conversion whose outputs differ, a full disk) leaves
no half-written file behind. The run itself is rebuilt with ``load_run`` only.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save
from torch import nn

from dlzoo.api import LoadedRun, load_run

MAX_ABS_DIFF = 1e-4
"""Largest difference allowed between the exported model's logits and PyTorch's (float32)."""
CHECK_BATCH = 8
"""Examples in the random batch each converted model is checked on."""
INPUT_NOTE = (
    "float32 (N, *in_shape). Images: pixels / 255, then the normalizer (standard: (x - mean[c]) / std[c];"
    " unit: unchanged; none: x * 255). Tabular: raw features, then the normalizer (standard: per-feature"
    " (x - mean) / std; otherwise unchanged). Output: logits (N, len(classes))."
)


def usage_metadata(run: LoadedRun, checkpoint: str) -> dict[str, str]:
    """What a user of the exported file needs to know, as string values (JSON inside)."""
    return {
        "producer": "dlzoo",
        "dlzoo_version": str(run.info.get("dlzoo_version", "")),
        "recipe": run.cfg.recipe,
        "checkpoint": checkpoint,
        "model": run.cfg.model.name,
        "model_settings": json.dumps(run.cfg.model.model_kwargs()),
        "in_shape": json.dumps(run.info["data"]["in_shape"]),
        "classes": json.dumps(run.classes),
        "normalizer": json.dumps(run.info["normalizer"]),
        "input": INPUT_NOTE,
    }


def _check_outputs(what: str, expected: torch.Tensor, got: torch.Tensor | np.ndarray) -> None:
    """Raise if a converted model's logits are not PyTorch's within ``MAX_ABS_DIFF``."""
    got = torch.as_tensor(got)
    if got.shape != expected.shape:
        raise RuntimeError(
            f"{what} gives logits of shape {tuple(got.shape)}, PyTorch {tuple(expected.shape)}"
        )
    difference = (got - expected).abs().max().item()
    if not difference <= MAX_ABS_DIFF:  # also catches NaN
        raise RuntimeError(
            f"{what} disagrees with the PyTorch model: max abs difference {difference:.3g} "
            f"on a random batch of {len(expected)} (allowed {MAX_ABS_DIFF:g})"
        )


def _random_batch(run: LoadedRun) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random input batch (roughly the normalised scale) and the PyTorch logits for it."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(CHECK_BATCH, *run.info["data"]["in_shape"], generator=generator)
    with torch.no_grad():
        return x, run.model(x)


def write_safetensors(run: LoadedRun, path: Path, metadata: dict[str, str]) -> None:
    tensors = {name: t.detach().cpu().contiguous() for name, t in run.model.state_dict().items()}
    path.write_bytes(save(tensors, metadata=metadata))  # save_file would make it owner-only (0600)


def _import_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx.export's exporter needs it)
    except ImportError:
        raise ValueError(
            "export format onnx needs the onnx, onnxruntime and onnxscript packages: "
            "pip install 'dlzoo[export]'"
        ) from None
    return onnx, onnxruntime


def write_onnx(run: LoadedRun, path: Path, metadata: dict[str, str]) -> None:
    onnx, onnxruntime = _import_onnx()
    example = torch.zeros(1, *run.info["data"]["in_shape"])
    # dynamo=True: the torch.export-based exporter (the TorchScript-based one is deprecated);
    # verbose=False keeps its step-by-step progress lines off stdout.
    program = torch.onnx.export(
        run.model,
        (example,),
        dynamo=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),  # any batch size
        verbose=False,
    )
    program.model.metadata_props.update(metadata)
    program.save(str(path), external_data=False)  # our models are far below ONNX's 2 GB limit

    onnx.checker.check_model(str(path))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x, expected = _random_batch(run)
    (logits,) = session.run(["logits"], {"input": x.numpy()})
    _check_outputs("the ONNX model (onnxruntime)", expected, logits)


def write_torchscript(run: LoadedRun, path: Path, metadata: dict[str, str]) -> None:
    x, expected = _random_batch(run)
    with warnings.catch_warnings():
        # torch 2.14 marks all of torch.jit deprecated (FutureWarning on every call); this
        # format exists for the C++ and mobile runtimes that still load TorchScript.
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        try:
            module = torch.jit.script(run.model)
            how = "script"
        except Exception:  # scripting fails in many ways (our Classifier's annotations among them)
            module = torch.jit.trace(run.model, x[:1])
            how = "trace"
        extra = json.dumps({**metadata, "torchscript": how})
        torch.jit.save(module, str(path), _extra_files={"dlzoo.json": extra})
        reloaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        _check_outputs(f"the TorchScript model ({how})", expected, reloaded(x))


def parameter_dump(model: nn.Module) -> str:
    """Every parameter and buffer as a ``name shape dtype`` line followed by all its values.

    The notes' ``np.set_printoptions(threshold=np.inf)`` dump of ``trainable_variables``,
    with each float printed to the digits that identify it exactly.
    """
    blocks = []
    for name, tensor in model.state_dict().items():
        values = tensor.detach().cpu()
        dtype = str(values.dtype).removeprefix("torch.")
        if values.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            values = values.float()
        array = values.numpy()
        text = np.array2string(array, threshold=array.size + 1, floatmode="unique", max_line_width=110)
        blocks.append(f"{name} {tuple(array.shape)} {dtype}\n{text}\n")
    return "\n".join(blocks)


def write_txt(run: LoadedRun, path: Path, metadata: dict[str, str]) -> None:
    header = "".join(f"# {key}: {value}\n" for key, value in metadata.items())
    path.write_text(header + "\n" + parameter_dump(run.model))


Writer = Callable[[LoadedRun, Path, dict[str, str]], None]
FORMATS: dict[str, tuple[str, Writer]] = {
    "safetensors": ("safetensors", write_safetensors),
    "onnx": ("onnx", write_onnx),
    "torchscript": ("pt", write_torchscript),
    "txt": ("txt", write_txt),
}
"""Format name -> (file extension, writer)."""


def export_run(
    run_dir: str | Path,
    format: str,
    output: str | Path | None = None,
    checkpoint: str = "best",
    overwrite: bool = False,
) -> Path:
    """Write the model of ``run_dir`` (checkpoint ``best`` or ``last``) as ``format`` and
    return the file's path: ``output`` (a file, or a folder to hold ``model.<ext>``), by
    default ``<run_dir>/export/model.<ext>``. An existing file is replaced only with ``overwrite``.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; valid formats: {', '.join(FORMATS)}")
    extension, write = FORMATS[format]
    if format == "onnx":
        _import_onnx()  # say what to install before the work starts
    run = load_run(run_dir, checkpoint)
    path = Path(output) if output is not None else run.run_dir / "export"
    if output is None or path.is_dir():
        path = path / f"model.{extension}"
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists; pass overwrite=True (--overwrite) or choose another output")
    path.parent.mkdir(parents=True, exist_ok=True)

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder, so the rename is atomic
    try:
        write(run, tmp, usage_metadata(run, checkpoint))
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


__all__ = ["FORMATS", "export_run", "parameter_dump", "usage_metadata"]
