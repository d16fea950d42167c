"""dlzoo: a PyTorch deep-learning zoo and lab. Classic experiments as named, tested recipes.

The Python API mirrors the command line::

    import dlzoo
    result = dlzoo.train("digits-lenet5")            # dlzoo train digits-lenet5
    dlzoo.evaluate(result.run_dir)                    # dlzoo eval RUN
    dlzoo.predict(result.run_dir, ["my_digit.png"])   # dlzoo predict RUN FILE
    model = dlzoo.create_model("lenet5", num_classes=10, in_shape=(1, 28, 28))
    [cfg.recipe for cfg in dlzoo.list_recipes("mnist-*")]
"""

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "create_model",
    "evaluate",
    "export_run",
    "finetune",
    "list_recipes",
    "load_recipe",
    "load_run",
    "predict",
    "train",
]


def __getattr__(name: str) -> object:
    """Import the API on first use, so ``dlzoo --help`` does not pay for importing torch."""
    if name == "export_run":
        from dlzoo.export import export_run

        return export_run
    if name == "create_model":
        from dlzoo.models import create_model

        return create_model
    if name in __all__:
        from dlzoo import api

        return getattr(api, name)
    raise AttributeError(f"module 'dlzoo' has no attribute {name!r}")
