"""Fine-tuning and transfer: frozen weights (and batch-norm statistics) do not move, the
head is replaced when the class count differs, and mistakes are one clear line."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import dlzoo
from dlzoo.cli import main
from dlzoo.config import RunConfig
from dlzoo.models import create_model
from dlzoo.tasks.classify import ClassifyTask
from dlzoo.training.finetune import freeze, parameter_groups

QUICK = ["train.epochs=2", "train.threads=1", "log.tensorboard=false", "log.plots=false"]


def best_weights(run):
    name = (run / "checkpoints" / "best").read_text().strip()
    return load_file(run / "checkpoints" / name / "model.safetensors")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """cbapd (conv + batch norm in its features) on digits 0-4."""
    runs = tmp_path_factory.mktemp("runs")
    result = dlzoo.train(
        "digits-lenet5",
        [*QUICK, "model.name=cbapd", "data.classes=0,1,2,3,4"],
        runs_dir=str(runs),
        quiet=True,
    )
    return result.run_dir


def test_transfer_to_new_classes_keeps_frozen_features_and_bn_statistics(base_run, tmp_path, capsys):
    code = main(
        [
            "finetune",
            str(base_run),
            "--recipe",
            "digits-lenet5",
            "--freeze",
            "features",
            "--set",
            "model.name=cbapd",
            "--set",
            "data.classes=5,6,7,8,9",
            "--set",
            "train.epochs=2",
            "--set",
            "train.threads=1",
            "--runs-dir",
            str(tmp_path),
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "unchanged: True" in out
    run = next((tmp_path / "digits-lenet5").iterdir())
    info = json.loads((run / "run.json").read_text())
    assert info["transfer"]["frozen_unchanged"] is True
    assert info["trainable_parameters"] < info["parameters"]
    before, after = best_weights(base_run), best_weights(run)
    features = [k for k in before if k.startswith("features.")]
    assert any("running_mean" in k for k in features), "the features hold batch-norm statistics"
    assert all(torch.equal(before[k], after[k]) for k in features), "frozen weights and BN statistics moved"
    head = [k for k in before if k.startswith("classifier.")]
    assert not all(torch.equal(before[k], after[k]) for k in head), "the head should have trained"
    assert info["test"]["test_accuracy"] > 0.5


def test_a_different_class_count_gets_a_fresh_head(base_run, tmp_path):
    result = dlzoo.finetune(
        base_run,
        "digits-lenet5",
        freeze=["features"],
        overrides=[*QUICK, "model.name=cbapd", "data.classes=7,8,9"],
        runs_dir=str(tmp_path),
        quiet=True,
    )
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["transfer"]["fresh"] == ["classifier.3.bias", "classifier.3.weight"]
    assert best_weights(result.run_dir)["classifier.3.weight"].shape[0] == 3


def test_features_lr_mult_makes_two_parameter_groups():
    model = create_model("lenet5", 10, (1, 8, 8))
    groups = parameter_groups(model, features_lr_mult=0.1, lr=0.01)
    assert [g.get("lr") for g in groups] == [0.001, None]
    feature_ids = {id(p) for p in model.features.parameters()}
    assert {id(p) for p in groups[0]["params"]} == feature_ids
    frozen = freeze(model, ["features.0.*"])
    assert frozen == ["features.0.weight", "features.0.bias"]
    assert not model.features[0].weight.requires_grad and model.features[3].weight.requires_grad


def test_freeze_takes_a_parameter_by_its_name_and_a_module_with_everything_under_it():
    model = create_model("lenet5", 10, (1, 8, 8))
    assert freeze(model, ["features.0.bias"]) == ["features.0.bias"]  # the name the error lists
    assert model.features[0].weight.requires_grad and not model.features[0].bias.requires_grad
    whole = freeze(create_model("lenet5", 10, (1, 8, 8)), ["features.0"])
    assert whole == ["features.0.weight", "features.0.bias"]
    with pytest.raises(ValueError, match="model.freeze pattern 'features.0.bia' matches no parameter"):
        freeze(model, ["features.0.bia"])  # a prefix of a name is not a module


def test_muon_takes_the_features_weight_matrices_and_leaves_the_head_and_biases_to_sgd():
    model = create_model("airbench", 10, (3, 32, 32), width_mult=0.25)
    cfg = RunConfig.from_dict(
        {"model": {"name": "airbench", "features_lr_mult": 0.5},
         "optim": {"name": "muon", "lr": 0.1, "muon_lr": 0.02, "weight_decay": 1e-3}}
    )  # fmt: skip
    task = ClassifyTask(model, cfg, 10)
    task.configure_optimizers(10, 100)
    groups = task.optimizers[0].param_groups
    hidden = [g for g in groups if g["orthogonal"]]
    convs = [m.weight for m in model.features.modules() if isinstance(m, nn.Conv2d)]
    assert [id(p) for g in hidden for p in g["params"]] == [id(p) for p in convs]  # 6 convs, not the head
    assert [(g["lr"], g["weight_decay"]) for g in hidden] == [(0.01, 0.0)]  # muon_lr x features_lr_mult
    head = next(g for g in groups if any(p is model.head.weight for p in g["params"]))
    assert (head["lr"], head["weight_decay"], head["orthogonal"]) == (0.1, 1e-3, False)
    with pytest.raises(ValueError, match="optim.name = muon needs trainable weight matrices"):
        parameter_groups(nn.Sequential(nn.Linear(4, 2)), 1.0, 0.01, orthogonal=True)  # no features


def test_lr_multipliers_naming_no_parameter_is_a_clear_error(monkeypatch):
    model = create_model("lenet5", 10, (1, 8, 8))
    monkeypatch.setattr(model, "lr_multipliers", lambda: {"features.0.bais": 2.0}, raising=False)
    with pytest.raises(ValueError, match="lr_multipliers names 'features.0.bais', which is not a parameter"):
        parameter_groups(model, features_lr_mult=1.0, lr=0.01)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.freeze=featurez"], "model.freeze pattern 'featurez' matches no parameter"),
        (["model.name=mlp"], "those weights do not fit this model"),
        (["model.init_from=recipe:nothing-here"], "no finished run of nothing-here"),
        (["model.freeze=features,classifier"], "froze every parameter"),
    ],
)
def test_fine_tuning_mistakes_are_clear(base_run, tmp_path, capsys, overrides, message):
    args = [
        "finetune",
        str(base_run),
        "--recipe",
        "digits-lenet5",
        "--set",
        "model.name=cbapd",
        "--runs-dir",
        str(tmp_path),
        "--quiet",
    ]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.rglob("run.json")), "nothing written"
