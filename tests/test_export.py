"""dlzoo export: each format from a real tiny run, read back the way a user outside dlzoo
would, and compared with the PyTorch model; and the promised errors."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import dlzoo
import dlzoo.export
from dlzoo.export import FORMATS, export_run

FAST = ["train.epochs=1", "train.threads=1", "log.tensorboard=false"]
MODELS = {
    "lenet5": [],
    # batch norm: buffers (running statistics, a counter) must travel with the weights
    "mlp": ["model.name=mlp", "model.hidden_sizes=32", "model.batch_norm=true"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    runs_dir = str(tmp_path_factory.mktemp("runs"))
    return {
        name: dlzoo.train("digits-lenet5", [*FAST, *extra], runs_dir=runs_dir, quiet=True).run_dir
        for name, extra in MODELS.items()
    }


@pytest.fixture(params=list(MODELS))
def run_dir(request, runs) -> Path:
    return runs[request.param]


@pytest.fixture(scope="module")
def onnx_file(runs) -> Path:
    """One ONNX export (the slow one), to the default place, shared by the ONNX tests."""
    return export_run(runs["lenet5"], "onnx")


def pytorch_logits(run_dir: Path, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return dlzoo.load_run(run_dir).model(x)


def random_input(run_dir: Path, batch: int) -> torch.Tensor:
    in_shape = dlzoo.load_run(run_dir).info["data"]["in_shape"]
    return torch.randn(batch, *in_shape, generator=torch.Generator().manual_seed(batch))


def leftovers(folder: Path) -> list[Path]:
    return list(folder.glob(".*.tmp"))


def test_default_output_is_the_run_export_folder(runs, onnx_file):
    run_dir = runs["lenet5"]
    assert onnx_file == run_dir / "export" / "model.onnx"
    for format in ("safetensors", "torchscript", "txt"):
        path = export_run(run_dir, format)
        assert path == run_dir / "export" / f"model.{FORMATS[format][0]}"
        assert path.stat().st_size > 0
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == [
        "model.onnx",
        "model.pt",
        "model.safetensors",
        "model.txt",
    ]


def test_output_may_be_a_folder_or_a_file(run_dir, tmp_path):
    assert export_run(run_dir, "txt", output=tmp_path) == tmp_path / "model.txt"
    named = tmp_path / "deeper" / "weights.txt"
    assert export_run(run_dir, "txt", output=named) == named
    assert named.read_text() == (tmp_path / "model.txt").read_text()


def test_safetensors_alone_rebuilds_the_model(run_dir, tmp_path):
    path = export_run(run_dir, "safetensors", output=tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as reader:
        metadata = reader.metadata()
    info = json.loads((run_dir / "run.json").read_text())
    classes = json.loads(metadata["classes"])
    assert classes == info["data"]["classes"]
    assert json.loads(metadata["normalizer"]) == info["normalizer"]
    in_shape = tuple(json.loads(metadata["in_shape"]))
    model = dlzoo.create_model(
        metadata["model"], len(classes), in_shape, **json.loads(metadata["model_settings"])
    )
    model.load_state_dict(load_file(str(path)))  # strict: every parameter and buffer, nothing more
    model.eval()
    x = random_input(run_dir, 5)
    with torch.no_grad():
        assert torch.equal(model(x), pytorch_logits(run_dir, x))


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_matches_pytorch_for_any_batch_size(runs, onnx_file, batch):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    x = random_input(runs["lenet5"], batch)
    (logits,) = session.run(None, {"input": x.numpy()})
    assert logits.shape == (batch, 10)
    np.testing.assert_allclose(logits, pytorch_logits(runs["lenet5"], x).numpy(), rtol=0, atol=1e-4)


def test_onnx_carries_classes_and_normalizer(runs, onnx_file):
    import onnx

    metadata = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    info = json.loads((runs["lenet5"] / "run.json").read_text())
    assert json.loads(metadata["classes"]) == info["data"]["classes"] == [str(d) for d in range(10)]
    assert json.loads(metadata["normalizer"]) == info["normalizer"]
    assert metadata["model"] == "lenet5"


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_reloads_with_the_same_outputs(run_dir, tmp_path):
    path = export_run(run_dir, "torchscript", output=tmp_path / "m.pt")
    extra = {"dlzoo.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    facts = json.loads(extra["dlzoo.json"])
    assert facts["torchscript"] in ("script", "trace")
    assert json.loads(facts["classes"]) == [str(d) for d in range(10)]
    x = random_input(run_dir, 5)  # not the batch size it was traced with
    with torch.no_grad():
        torch.testing.assert_close(module(x), pytorch_logits(run_dir, x), rtol=0, atol=1e-5)


def test_txt_holds_every_value_in_full(run_dir, tmp_path):
    text = export_run(run_dir, "txt", output=tmp_path / "m.txt").read_text()
    assert "..." not in text
    lines = text.splitlines()
    state = dlzoo.load_run(run_dir).model.state_dict()
    headers = {
        name: f"{name} {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" for name, t in state.items()
    }
    starts = [lines.index(header) for header in headers.values()]  # each present, in state-dict order
    assert starts == sorted(starts)
    number = re.compile(r"-?\d+(?:\.\d*)?(?:e[-+]?\d+)?")
    for (name, tensor), start, end in zip(state.items(), starts, [*starts[1:], len(lines)]):
        values = [float(v) for v in number.findall(" ".join(lines[start + 1 : end]))]
        expected = tensor.double().flatten().tolist()  # float32 printed to its shortest exact digits
        assert np.array(values, dtype=np.float32).tolist() == expected, name


def test_refuses_to_overwrite_unless_asked(runs, tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("keep me")
    with pytest.raises(ValueError, match="already exists.*overwrite"):
        export_run(runs["lenet5"], "txt", output=path)
    assert path.read_text() == "keep me"
    export_run(runs["lenet5"], "txt", output=path, overwrite=True)
    assert path.read_text().startswith("# producer: dlzoo")
    assert leftovers(tmp_path) == []


def test_a_failed_check_leaves_no_file(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(dlzoo.export, "MAX_ABS_DIFF", -1.0)  # no conversion can pass now
    with pytest.raises(RuntimeError, match="disagrees with the PyTorch model: max abs difference"):
        export_run(runs["lenet5"], "torchscript", output=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_names_the_valid_ones(runs):
    with pytest.raises(ValueError, match="unknown export format 'tflite'") as error:
        export_run(runs["lenet5"], "tflite")
    for format in ("safetensors", "onnx", "torchscript", "txt"):
        assert format in str(error.value)


def test_onnx_without_onnxruntime_says_what_to_install(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    with pytest.raises(ValueError, match=r"onnxruntime.*pip install 'dlzoo\[export\]'"):
        export_run(runs["lenet5"], "onnx", output=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_not_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a dlzoo run folder"):
        export_run(tmp_path, "safetensors")
