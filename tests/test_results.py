"""``dlzoo results``: the table rebuilt from real run folders (a tiny softmax recipe on the bundled
digits, one epoch, two seeds), which runs count, the command column, and --write."""

import json
import shutil
import statistics
import sys

import pytest

from dlzoo.api import results, train
from dlzoo.cli import main
from dlzoo.recipes import load_recipe, recipe_names
from dlzoo.report.results import (
    MARKERS,
    build_results,
    compute_of,
    relative_paths,
    replace_between_markers,
    versus_source,
    write_meta,
)
from dlzoo.training.run import command_line

TINY = """
[meta]
source = "a tiny test recipe"
source_result = "about 90%"

[data]
name = "digits"
batch_size = 64

[model]
name = "softmax"

[train]
epochs = 1
threads = 1

[log]
tensorboard = false
plots = false
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Seeds 0 and 1 of the recipe as written, and one run with another learning rate."""
    root = tmp_path_factory.mktemp("results")
    recipe = root / "tiny-digits.toml"
    recipe.write_text(TINY)
    runs_dir = root / "runs"
    measured = {}
    for seed in (0, 1):
        result = train(str(recipe), [f"train.seed={seed}"], runs_dir=str(runs_dir), quiet=True)
        measured[seed] = result
    other = train(str(recipe), ["optim.lr=0.5"], runs_dir=str(runs_dir), quiet=True)
    return {"recipe": str(recipe), "runs_dir": runs_dir, "measured": measured, "other": other}


def copy_run(run_dir, name, **changes):
    """A copy of a run folder under another (later) name, with ``run.json`` changed."""
    copy = run_dir.parent / name
    shutil.copytree(run_dir, copy)
    info = json.loads((copy / "run.json").read_text())
    info.update(changes)
    (copy / "run.json").write_text(json.dumps(info))
    return copy


def test_the_table_has_the_mean_the_seeds_and_the_source(runs):
    table = build_results(runs["runs_dir"], [runs["recipe"]])
    (row,) = table.rows
    assert [run.seed for run in row.runs] == [0, 1]
    accuracies = [runs["measured"][seed].test["test_accuracy"] for seed in (0, 1)]
    line = table.markdown.splitlines()[2]
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[0] == "tiny-digits" and cells[1] == "softmax" and cells[3] == "1" and cells[4] == "0 / 1"
    per_seed = " / ".join(f"{a * 100:.2f}" for a in accuracies)
    assert cells[5] == f"**{statistics.mean(accuracies):.2%}** mean ({per_seed})"
    assert "digits" in cells[2] and "359 test" in cells[2]
    assert cells[8] == "a tiny test recipe" and cells[9] == "about 90%"


def test_runs_with_other_settings_are_left_out_or_listed_apart(runs):
    table = build_results(runs["runs_dir"], [runs["recipe"]])
    assert len(table.rows) == 1 and len(table.rows[0].runs) == 2
    (note,) = table.excluded
    assert str(runs["other"].run_dir) in note and "optim.lr=0.5" in note
    apart = build_results(runs["runs_dir"], [runs["recipe"]], with_overrides=True)
    assert [row.label for row in apart.rows] == ["tiny-digits", "tiny-digits (optim.lr=0.5)"]
    assert "`dlzoo train tiny-digits --seed 0 --set optim.lr=0.5`" in apart.markdown


def test_commands_are_rebuilt_and_marked_when_not_recorded(runs):
    markdown = build_results(runs["runs_dir"], [runs["recipe"]]).markdown
    assert "`dlzoo train tiny-digits --seed N`†" in markdown
    assert "† rebuilt from the run's config" in markdown


def test_recorded_commands_win_and_the_newest_run_of_a_seed_counts(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs_dir = tmp_path / "runs"
    shutil.copytree(runs["runs_dir"], runs_dir)
    folders = {
        seed: runs_dir / "tiny-digits" / result.run_dir.name for seed, result in runs["measured"].items()
    }
    first, second = "dlzoo train tiny-digits.toml", "dlzoo train tiny-digits.toml --seed 1"
    copy_run(folders[0], "29990101-000000", command=first, test={"test_accuracy": 0.5})
    # typed with an absolute data folder: the table shows it relative to the working folder
    typed = f"{second} --data-dir {tmp_path}/data"
    copy_run(folders[1], "29990101-000001", command=typed, test={"test_accuracy": 0.7})
    copy_run(folders[1], "29990101-000002", status="running")
    table = build_results(runs_dir, [runs["recipe"]])
    (row,) = table.rows
    assert [run.test["test_accuracy"] for run in row.runs] == [0.5, 0.7]
    assert "**60.00%** mean (50.00 / 70.00)" in table.markdown
    assert f"`{first}`<br>`{second} --data-dir data`" in table.markdown
    assert "†" not in table.markdown
    assert any("not finished (running)" in note for note in table.excluded)


def test_threads_memory_format_and_eval_batch_do_not_make_another_recipe_but_epochs_do(runs, tmp_path):
    runs_dir = tmp_path / "runs"
    shutil.copytree(runs["runs_dir"], runs_dir)
    seed_1 = runs_dir / "tiny-digits" / runs["measured"][1].run_dir.name
    for name, key, value in (("29990101-000000", "threads", 2), ("29990101-000001", "epochs", 3)):
        copy = copy_run(seed_1, name, test={"test_accuracy": 0.8})
        config = json.loads((copy / "config.json").read_text())
        config["train"].update({key: value, "channels_last": "on"})
        config["data"]["eval_batch_size"] += 1
        (copy / "config.json").write_text(json.dumps(config))
    table = build_results(runs_dir, [runs["recipe"]])
    (row,) = table.rows
    assert row.runs[1].test["test_accuracy"] == 0.8 and row.runs[1].folder.name == "29990101-000000"
    assert any("29990101-000001" in note and "train.epochs=3" in note for note in table.excluded)


def test_the_training_time_names_threads_instruction_set_and_precision(runs, tmp_path):
    info = json.loads((runs["measured"][0].run_dir / "run.json").read_text())
    capability, bf16 = info["machine"]["cpu_capability"], info["precision"]["bf16_autocast"]
    assert capability and compute_of(info) == f"{capability}, {'bf16' if bf16 else 'float32'}"
    assert compute_of({"machine": {"cuda_device": "NVIDIA A100"}, "precision": {"bf16_autocast": True}}) == (
        "NVIDIA A100, bf16"
    )
    assert compute_of({"machine": {}, "precision": {"bf16_autocast": False}}) == "float32", (
        "an older run.json"
    )
    markdown = build_results(runs["runs_dir"], [runs["recipe"]]).markdown
    assert f"(1 thread; {compute_of(info)})" in markdown


def test_recipes_without_runs_show_the_recorded_result_or_not_measured(tmp_path):
    recorded = tmp_path / "recorded.toml"
    recorded.write_text(
        TINY.replace(
            "[meta]",
            '[meta]\nresult = 0.9123\nresult_command = "dlzoo train recorded"\nresult_minutes = 2.5\n'
            'result_compute = "1 thread; AVX2, float32"',
        )
    )
    unmeasured = tmp_path / "unmeasured.toml"
    unmeasured.write_text(TINY)
    (tmp_path / "runs").mkdir()
    markdown = build_results(tmp_path / "runs", [str(recorded), str(unmeasured)]).markdown
    assert "91.23% (recorded in recipe)" in markdown and "`dlzoo train recorded`" in markdown
    assert "| 2.5 min (1 thread; AVX2, float32) |" in markdown
    assert "| unmeasured | softmax | digits | 1 | - | not measured |" in markdown


def test_absolute_paths_in_the_data_cell_become_relative(tmp_path, monkeypatch):
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    text = f"CIFAR-10 (JPEG q75 copy) from {tmp_path}/shared/data/c.zip, 10,000 test"
    assert relative_paths(text) == "CIFAR-10 (JPEG q75 copy) from ../shared/data/c.zip, 10,000 test"
    assert relative_paths("scikit-learn's digits, 1/5 held out") == "scikit-learn's digits, 1/5 held out"


def test_vs_source_says_beats_matches_or_below_with_the_recipes_reason(tmp_path):
    (tmp_path / "runs").mkdir()
    files = {}
    for name, meta in (
        ("above", 'result = 0.9123\nsource_result = "88.5% (paper)"'),
        ("below", 'result = 0.9123\nsource_result = "93.03%, 164 epochs"\nshortfall = "3 epochs, not 164"'),
        ("silent", 'result = 0.9123\nsource_result = "93%"'),
        ("no-number", 'result = 0.9123\nsource_result = "not stated"'),
        ("equal", 'result = 0.995\nsource_result = "99.5%"'),
        ("not-comparable", 'result = 0.9123\nsource_result = "n/a (the classic figure is 99.05% on MNIST)"'),
    ):
        files[name] = tmp_path / f"{name}.toml"
        files[name].write_text(
            TINY.replace('source_result = "about 90%"', "").replace("[meta]", f"[meta]\n{meta}")
        )
    table = build_results(tmp_path / "runs", [str(path) for path in files.values()])
    last = [line.rstrip(" |").rsplit("|", 1)[1].strip() for line in table.markdown.splitlines()[2:8]]
    assert last == [
        "beats (+2.73)",
        "below (-1.80): 3 epochs, not 164",
        "below (-1.77): no reason recorded in the recipe",
        "-",
        "matches (+0.00)",
        "-",  # "n/a ...": the source has no number for this experiment, only one for another
    ]


def test_measured_rows_show_the_recipes_current_source_and_reason(runs, tmp_path):
    recipe = tmp_path / "tiny-digits.toml"
    recipe.write_text(TINY.replace('"about 90%"', '"100% (made up)"\nshortfall = "one epoch only"'))
    markdown = build_results(runs["runs_dir"], [str(recipe)]).markdown
    assert "100% (made up)" in markdown and ": one epoch only |" in markdown


def test_record_writes_the_measured_numbers_into_the_recipe_and_keeps_the_rest(runs, tmp_path):
    recipe = tmp_path / "tiny-digits.toml"
    recipe.write_text("# a comment that stays\n" + TINY.replace("[meta]", "[meta]\nresult = 0.1  # stale"))
    table = results(runs["runs_dir"], [str(recipe)], record=True)
    assert table.recorded == [recipe]
    meta = load_recipe(str(recipe)).meta
    accuracies = [runs["measured"][seed].test["test_accuracy"] for seed in (0, 1)]
    assert meta.result == round(statistics.mean(accuracies), 4) and meta.result_seeds == [0, 1]
    assert meta.result_command == "dlzoo train tiny-digits --seed N" and "359 test" in meta.result_data
    assert meta.result_minutes >= 0 and meta.source == "a tiny test recipe"
    info = json.loads((runs["measured"][0].run_dir / "run.json").read_text())
    assert meta.result_compute == f"1 thread; {compute_of(info)}"
    text = recipe.read_text()
    assert text.startswith("# a comment that stays\n") and "stale" not in text and "[data]" in text
    assert load_recipe(str(recipe)).data.name == "digits"
    results(runs["runs_dir"], [str(recipe)], record=True)
    assert recipe.read_text() == text, "recording twice changes nothing"
    no_meta = tmp_path / "no-meta.toml"
    no_meta.write_text("[data]\nname = 'digits'\n")
    with pytest.raises(ValueError, match="no \\[meta\\] table"):
        write_meta(no_meta, {"result": 0.5})
    assert no_meta.read_text() == "[data]\nname = 'digits'\n"


README = "# Title\n\nintro | with a pipe\n\n{start}\n| stale | table |\n|---|---|\n{end}\n\nafter the table\n"


def test_write_replaces_only_the_text_between_the_markers(runs, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README.format(start=MARKERS[0], end=MARKERS[1]))
    table = results(runs["runs_dir"], write=readme)
    text = readme.read_text()
    head, rest = text.split(MARKERS[0])
    inside, tail = rest.split(MARKERS[1])
    assert head == "# Title\n\nintro | with a pipe\n\n" and tail == "\n\nafter the table\n"
    assert inside.strip() == table.markdown and "stale" not in inside
    assert "| mnist-fast | mnist_fast |" in inside  # every shipped recipe's row
    results(runs["runs_dir"], write=readme)
    assert readme.read_text() == text, "writing twice changes nothing"


@pytest.mark.parametrize("content", ["# no markers\n", f"{MARKERS[1]}\n{MARKERS[0]}\n", f"{MARKERS[0]}\n"])
def test_missing_markers_are_an_error_that_names_them(content, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(content)
    with pytest.raises(ValueError, match="results:start -->.*results:end"):
        replace_between_markers(readme, "| table |")
    assert readme.read_text() == content


def test_cli_prints_the_table_and_writes_it(runs, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README.format(start=MARKERS[0], end=MARKERS[1]))
    argv = ["results", "--runs-dir", str(runs["runs_dir"])]
    assert main([*argv, "--recipes", runs["recipe"]]) == 0
    captured = capsys.readouterr()
    assert "| tiny-digits | softmax |" in captured.out
    assert "left out 1 run folders" in captured.err and "optim.lr=0.5" in captured.err
    assert main([*argv, "--write", str(readme)]) == 0
    assert "| mnist-fast | mnist_fast |" in readme.read_text()
    assert "wrote the table" in capsys.readouterr().err
    readme.write_text("# no markers\n")
    assert main([*argv, "--write", str(readme)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and MARKERS[0] in err
    assert main(["results", "--runs-dir", str(tmp_path / "nowhere")]) == 2


def earlier_line(recipe, accuracy, seeds, command="`dlzoo train x --seed N`"):
    """A line of an earlier table, as `dlzoo results` rebuilds one from runs in another checkout."""
    cells = [
        recipe,
        "model",
        "data",
        "8",
        seeds,
        f"**{accuracy}** mean (elsewhere)",
        "38 s",
        command,
        "s",
        "r",
        "-",
    ]
    return "| " + " | ".join(cells) + " |"


def test_write_keeps_the_lines_of_recipes_measured_elsewhere_while_they_show_the_record(runs, tmp_path):
    """A checkout with runs of a few recipes rewrites only those rows; a line rebuilt from runs
    elsewhere stays while it shows the recipe's recorded result, and gives way once it does not."""
    fast, long = load_recipe("mnist-fast").meta, load_recipe("cifar10-airbench-long").meta
    seeds = " / ".join(map(str, fast.result_seeds))
    kept = earlier_line("mnist-fast", f"{fast.result:.2%}", seeds, command="`dlzoo train mnist-fast`†")
    stale = earlier_line(
        "cifar10-airbench-long", f"{long.result - 0.01:.2%}", " / ".join(map(str, long.result_seeds))
    )
    readme = tmp_path / "README.md"
    readme.write_text(README.format(start=MARKERS[0], end=f"{kept}\n{stale}\n{MARKERS[1]}"))
    recipe = tmp_path / "tiny-digits.toml"
    recipe.write_text(TINY)
    table = results(runs["runs_dir"], [str(recipe)], write=readme)
    assert table.kept == 1
    inside = readme.read_text().split(MARKERS[0])[1].split(MARKERS[1])[0]
    rows = [
        line for line in inside.splitlines() if line.startswith("| ") and not line.startswith("| recipe |")
    ]
    fast_source = (
        f" | {fast.source} | {fast.source_result} | {versus_source(fast.result, load_recipe('mnist-fast'))} |"
    )
    assert kept.replace(" | s | r | - |", fast_source) in rows, "kept, with the recipe's source now"
    assert stale not in rows and f"{long.result:.2%} (recorded in recipe)" in inside
    assert "† rebuilt from the run's config" in inside, "the kept line's † keeps its legend"
    assert "| tiny-digits | softmax |" in rows[-1] and "0 / 1" in rows[-1], (
        "the selected recipe, from its runs"
    )
    assert len(rows) == len(recipe_names()) + 1 and "stale" not in inside
    results(runs["runs_dir"], [str(recipe)], write=readme)
    assert readme.read_text().count(f"**{fast.result:.2%}** mean (elsewhere)") == 1, (
        "writing twice keeps it once"
    )
    stale_seeds = earlier_line("mnist-fast", f"{fast.result:.2%}", "0 / 1 / 2")
    readme.write_text(README.format(start=MARKERS[0], end=f"{stale_seeds}\n{MARKERS[1]}"))
    assert results(runs["runs_dir"], write=readme).kept == 0, "other seeds than the record: not kept"
    assert stale_seeds not in readme.read_text()


def test_cli_says_how_many_rows_it_kept(runs, tmp_path, capsys):
    fast = load_recipe("mnist-fast").meta
    kept = earlier_line("mnist-fast", f"{fast.result:.2%}", " / ".join(map(str, fast.result_seeds)))
    readme = tmp_path / "README.md"
    readme.write_text(README.format(start=MARKERS[0], end=f"{kept}\n{MARKERS[1]}"))
    assert main(["results", "--runs-dir", str(runs["runs_dir"]), "--write", str(readme)]) == 0
    assert "keeping 1 row measured elsewhere" in capsys.readouterr().err
    assert f"| **{fast.result:.2%}** mean (elsewhere) |" in readme.read_text()


def test_command_line_is_what_the_user_typed(monkeypatch):
    monkeypatch.setattr(
        sys, "argv", ["/x/.venv/bin/dlzoo", "train", "digits-lenet5", "--set", "model.name=a b"]
    )
    assert command_line() == "dlzoo train digits-lenet5 --set 'model.name=a b'"
    monkeypatch.setattr(sys, "argv", ["/x/src/dlzoo/__main__.py", "train", "r"])
    assert command_line() == "dlzoo train r"
    monkeypatch.setattr(sys, "argv", ["examples/train.py", "--fast"])
    assert command_line() == "python examples/train.py --fast"


def test_command_line_of_a_data_parallel_process_names_its_launch(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/x/src/dlzoo/__main__.py", "train", "r"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert command_line() == "dlzoo train r --nproc 2"
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert command_line() == "torchrun --nnodes 2 --nproc-per-node 4 -m dlzoo train r"
