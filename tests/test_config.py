import pytest

from dlzoo.config import RunConfig
from dlzoo.recipes import load_recipe, recipe_names
from dlzoo.registry import Registry


def test_registry_rejects_duplicates_and_suggests_names():
    table = Registry("widget")
    table.register("lenet5")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        table.register("lenet5")(lambda: 2)
    with pytest.raises(ValueError, match=r"unknown widget 'lenet4'\. Did you mean 'lenet5'\? Valid: lenet5"):
        table.get("lenet4")


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_parses_and_validates(name):
    cfg = load_recipe(name)
    assert cfg.recipe == name
    assert cfg.meta.description and cfg.meta.source and cfg.meta.target > 0


# (image shape or feature count, classes) of each data set the recipes use, as the loaders give them
DATA_SHAPES = {
    "digits": ((1, 8, 8), 10),
    "iris": ((4,), 3),
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "captcha": ((1, 32, 96), 36),
    "quickdraw": ((1, 28, 28), 3),
}


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_builds_its_model_for_its_data(name):
    """The model settings of a recipe fit its model and its data's shape (no data is loaded)."""
    from dlzoo.models import create_model

    cfg = load_recipe(name)
    shape, classes = DATA_SHAPES[cfg.data.name]
    if cfg.data.resize:
        shape = (shape[0], cfg.data.resize, cfg.data.resize)
    if cfg.data.classes:
        classes = len(cfg.data.classes)
    settings = {k: v for k, v in cfg.model.model_kwargs().items() if k != "pretrained"}
    model = create_model(cfg.model.name, classes, shape, cfg.model.init, **settings)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_overrides_are_typed():
    cfg = load_recipe(
        "digits-lenet5",
        [
            "optim.lr=0.05",
            "train.epochs=3",
            "data.augment.flip=true",
            "data.classes=0,1",
            "model.activation=tanh",
        ],
    )
    assert cfg.optim.lr == 0.05 and cfg.train.epochs == 3 and cfg.data.augment.flip is True
    assert cfg.data.classes == [0, 1] and cfg.model.activation == "tanh"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=fast", "optim.lr=fast: must be a number"),
        ("train.epochs=2.5", "train.epochs=2.5: must be an integer"),
        ("optim.lrr=0.1", "Did you mean 'lr'"),
        ("optimiser.lr=0.1", "Did you mean 'optim'"),
        ("train.epochs", "expected section.key=value"),
        ("model.activation=relu6", "unknown model.activation 'relu6'"),
        ("data.augment=1", "is a section"),
        ("data.val_fraction=2", r"data.val_fraction must be in \[0.0, 0.9\]"),
    ],
)
def test_bad_overrides_name_what_is_valid(override, message):
    with pytest.raises(ValueError, match=message):
        load_recipe("digits-lenet5", [override])


def test_unknown_recipe_names_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'mnist-lenet5'"):
        load_recipe("mnist-lenet")


def test_recipe_table_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(ValueError, match="unknown key in \\[optim\\] 'learning_rate'"):
        RunConfig.from_dict({"optim": {"learning_rate": 0.1}})
    with pytest.raises(ValueError, match="train.epochs must be an integer"):
        RunConfig.from_dict({"train": {"epochs": "ten"}})


def test_config_round_trips_through_a_dict():
    cfg = load_recipe("cifar10-cbapd")
    raw = cfg.to_dict()
    assert RunConfig.from_dict({k: v for k, v in raw.items() if k != "recipe"}, raw["recipe"]) == cfg
