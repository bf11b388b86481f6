"""Tests for src.config: defaults, YAML loading, overrides, validation, saving."""

import argparse
import re
from pathlib import Path

import pytest
import yaml

from src.config import (
    ConfigError,
    add_evaluation_arguments,
    create_parser,
    default_results_dir,
    load_config_file,
    parse_args,
    save_config,
    validate_config,
)
from src.eval.features import EVAL_BATCH_SIZE
from src.models.resnet import ARCHS

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"

# The parameter table of the brief (MoCo CIFAR demo plus MindSpore options).
DEFAULTS = {
    "config": "",
    "dataset": "cifar10",
    "data_dir": "./data",
    "download": False,
    "arch": "resnet18",
    "lr": 0.06,
    "epochs": 200,
    "schedule": [120, 160],
    "cos": False,
    "batch_size": 512,
    "wd": 5e-4,
    "moco_dim": 128,
    "moco_k": 4096,
    "moco_m": 0.99,
    "moco_t": 0.1,
    "bn_splits": 8,
    "symmetric": False,
    "mlp": False,
    "aug_plus": False,
    "knn_k": 200,
    "knn_t": 0.1,
    "knn_interval": 1,
    "knn_bank_subset": 0,
    "resume": "",
    "results_dir": "",
    "device_target": "CPU",
    "distribute": False,
    "mode": 0,
    "seed": 0,
    "workers": 1,
    "train_subset": 0,
    "test_subset": 0,
    "max_steps": 0,
    "image_size": 0,  # 0: the dataset's, resolved by parse_args (as "auto" below)
    "stem": "auto",
    "val_split": 0.0,
    "skip_bad_images": False,
    "amp_level": "O0",
    # MoCo v3 (moco-v3's main_moco.py flags)
    "method": "v1",
    "moco_mlp_dim": 4096,
    "moco_m_cos": False,
    "warmup_epochs": 0,
    "optimizer": "",  # resolved by the method: sgd, lars or adamw
    "stop_grad_conv1": False,
}


def write_yaml(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def unvalidated(argv):
    return create_parser().parse_args(argv)


# --- defaults and command line ------------------------------------------------


def test_parser_defaults_equal_the_table():
    assert vars(unvalidated([])) == DEFAULTS


def test_parse_args_without_flags_keeps_defaults_and_timestamps_results_dir():
    args = vars(parse_args([]))
    assert re.fullmatch(r"\./cache-\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-moco", args.pop("results_dir"))
    expected = dict(DEFAULTS, image_size=32, stem="cifar", optimizer="sgd")  # CIFAR's, v1's
    expected.pop("results_dir")
    assert args == expected


@pytest.mark.parametrize(
    "flags, size, stem",
    [
        (["--dataset", "stl10"], 96, "imagenet"),
        (["--dataset", "stl10", "--image-size", "32"], 32, "cifar"),
        (["--dataset", "stl10", "--stem", "cifar"], 96, "cifar"),
        (["--dataset", "folder", "--image-size", "64"], 64, "imagenet"),
        (["--dataset", "cifar100", "--stem", "imagenet"], 32, "imagenet"),
    ],
)
def test_image_size_and_stem_resolve_from_the_dataset(flags, size, stem):
    args = parse_args(flags)
    assert (args.image_size, args.stem) == (size, stem)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--val-split", "0.1"], "val-split and skip-bad-images apply to --dataset folder only"),
        (["--dataset", "folder", "--val-split", "1"], "val-split must be in"),
        (["--image-size", "-8"], "image-size must be >= 0, got -8"),
    ],
)
def test_folder_options_are_checked(flags, message):
    with pytest.raises(ConfigError, match=message):
        parse_args(flags)


def test_default_results_dir_format():
    from datetime import datetime

    assert default_results_dir(datetime(2024, 1, 31, 9, 5, 7)) == "./cache-2024-01-31-09-05-07-moco"


def test_explicit_results_dir_is_kept():
    assert parse_args(["--results-dir", "out/run1"]).results_dir == "out/run1"


@pytest.mark.parametrize("flag", ["--batch_size", "--batch-size"])
def test_batch_size_accepts_both_spellings(flag):
    assert parse_args([flag, "256", "--moco-k", "4096"]).batch_size == 256


def test_schedule_takes_several_ints_or_none():
    assert parse_args(["--schedule", "50", "80"]).schedule == [50, 80]
    assert parse_args(["--schedule"]).schedule == []


def test_cli_rejects_choice_outside_list():
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "imagenet"])


def test_arch_choices_are_the_model_registry():
    assert parse_args(["--arch", "resnet34"]).arch == "resnet34"
    assert parse_args(["-a", "resnet18"]).arch == "resnet18"
    assert "resnet34" in ARCHS
    with pytest.raises(SystemExit):
        parse_args(["--arch", "resnet50"])


def test_abbreviated_flags_are_refused():
    with pytest.raises(SystemExit):
        parse_args(["--epoch", "3"])


# --- YAML as defaults -----------------------------------------------------------


def test_yaml_sets_defaults_and_cli_overrides(tmp_path):
    path = write_yaml(tmp_path, "epochs: 10\nlr: 0.03\ncos: true\n")
    args = parse_args(["--config", path, "--epochs", "3"])
    assert args.epochs == 3  # command line wins
    assert args.lr == 0.03  # YAML wins over built-in default
    assert args.cos is True
    assert args.config == path


def test_no_flag_switches_off_a_yaml_bool(tmp_path):
    path = write_yaml(tmp_path, "cos: true\n")
    assert parse_args(["--config", path, "--no-cos"]).cos is False


@pytest.mark.parametrize("key", ["moco-k", "moco_k"])
def test_yaml_keys_accept_dashes_and_underscores(tmp_path, key):
    path = write_yaml(tmp_path, f"{key}: 8192\n")
    assert parse_args(["--config", path]).moco_k == 8192


@pytest.mark.parametrize("key", ["batch-size", "batch_size"])
def test_yaml_batch_size_both_spellings(tmp_path, key):
    path = write_yaml(tmp_path, f"{key}: 256\n")
    assert parse_args(["--config", path]).batch_size == 256


def test_yaml_setting_one_option_twice_fails(tmp_path):
    path = write_yaml(tmp_path, "moco-k: 4096\nmoco_k: 8192\n")
    with pytest.raises(ConfigError, match="moco_k twice"):
        parse_args(["--config", path])


def test_yaml_float_written_as_exponent_string_is_converted(tmp_path):
    # PyYAML reads "5e-4" (no dot) as a string; the parser's float() handles it.
    path = write_yaml(tmp_path, "wd: 5e-4\nlr: 1\n")
    args = parse_args(["--config", path])
    assert args.wd == 5e-4 and isinstance(args.wd, float)
    assert args.lr == 1.0 and isinstance(args.lr, float)


def test_unknown_yaml_key_names_key_file_and_close_match(tmp_path):
    path = write_yaml(tmp_path, "moco-kk: 4096\n")
    with pytest.raises(ConfigError) as error:
        parse_args(["--config", path])
    message = str(error.value)
    assert "'moco-kk'" in message
    assert path in message
    assert "did you mean moco-k" in message


def test_unknown_underscore_key_suggests_underscore_spelling(tmp_path):
    path = write_yaml(tmp_path, "batchsize: 256\n")
    with pytest.raises(ConfigError, match="did you mean batch_size"):
        parse_args(["--config", path])


def test_config_key_inside_yaml_is_unknown(tmp_path):
    path = write_yaml(tmp_path, "config: other.yaml\n")
    with pytest.raises(ConfigError, match="unknown key 'config'"):
        parse_args(["--config", path])


@pytest.mark.parametrize(
    "line, expected_type",
    [
        ("lr: abc", "expected float"),
        ("epochs: 1.5", "expected int"),
        ("epochs: true", "expected int"),
        ("schedule: 120", "expected list of int"),
        ("schedule: [120, 1.5]", "expected list of int"),
        ("cos: 'yes'", "expected bool"),
        ("cos: 1", "expected bool"),
        ("dataset: imagenet", "expected str"),
        ("mode: 2", "expected int"),
        ("resume: null", "expected str"),
        ("data-dir: 42", "expected str"),
        ("arch: resnet50", "expected str"),
        ("lr: [0.1]", "expected float"),
        ("moco-k: {a: 1}", "expected int"),
    ],
)
def test_wrong_yaml_type_names_key_value_and_type(tmp_path, line, expected_type):
    path = write_yaml(tmp_path, line + "\n")
    key = line.split(": ")[0]
    with pytest.raises(ConfigError) as error:
        parse_args(["--config", path])
    message = str(error.value)
    assert f"{key} = " in message
    assert expected_type in message
    assert path in message


def test_bad_yaml_value_raises_without_printing_usage(tmp_path, capsys):
    path = write_yaml(tmp_path, "dataset: imagenet\n")
    with pytest.raises(ConfigError, match="invalid choice: 'imagenet'"):
        parse_args(["--config", path])
    assert capsys.readouterr().err == ""


def test_every_yaml_problem_is_reported_on_its_own_line(tmp_path):
    path = write_yaml(tmp_path, "lr: abc\nmoco-kk: 1\nepochs: 10\nbatch-size: 1\nbatch_size: 2\n")
    with pytest.raises(ConfigError) as error:
        parse_args(["--config", path])
    lines = str(error.value).splitlines()
    assert lines[0] == f"invalid config file {path!r}:"
    assert [line.split()[0] for line in lines[1:]] == ["lr", "unknown", "sets"]


@pytest.mark.parametrize(
    "text, dest, expected",
    [
        ("cos: false\n", "cos", False),
        ("symmetric: true\n", "symmetric", True),
        ("schedule: []\n", "schedule", []),
        ("schedule: ['50', 80]\n", "schedule", [50, 80]),
        ("epochs: '7'\n", "epochs", 7),
        ("resume: ''\n", "resume", ""),
        ("resume: -odd/name.ckpt\n", "resume", "-odd/name.ckpt"),
        ("data-dir: a=b\n", "data_dir", "a=b"),
        ("arch: resnet34\n", "arch", "resnet34"),
    ],
)
def test_yaml_values_are_parsed_like_flags(tmp_path, text, dest, expected):
    path = write_yaml(tmp_path, text)
    assert getattr(parse_args(["--config", path, "--results-dir", "x"]), dest) == expected


def test_yaml_keys_are_dests_not_flag_aliases(tmp_path):
    path = write_yaml(tmp_path, "learning-rate: 0.03\n")
    with pytest.raises(ConfigError, match="unknown key 'learning-rate'"):
        parse_args(["--config", path])


def test_yaml_list_item_that_looks_like_a_flag_is_refused(tmp_path):
    path = write_yaml(tmp_path, "schedule: ['--cos']\n")
    with pytest.raises(ConfigError, match="schedule = .* expected list of int"):
        parse_args(["--config", path])


def test_help_shows_the_yaml_values_as_defaults(tmp_path, capsys):
    path = write_yaml(tmp_path, "epochs: 7\n")
    with pytest.raises(SystemExit):
        parse_args(["--config", path, "--help"])
    assert "number of training epochs (default: 7)" in capsys.readouterr().out


def test_yaml_values_are_validated(tmp_path):
    path = write_yaml(tmp_path, "moco-k: -512\n")
    with pytest.raises(ConfigError, match="moco-k must be positive, got -512"):
        parse_args(["--config", path])


def test_yaml_that_is_not_a_mapping_fails(tmp_path):
    path = write_yaml(tmp_path, "- lr\n- 0.1\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_args(["--config", path])


def test_missing_yaml_file_fails(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_args(["--config", str(tmp_path / "nope.yaml")])


def test_invalid_yaml_syntax_fails(tmp_path):
    path = write_yaml(tmp_path, "lr: [0.1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_file(path)


def test_empty_yaml_file_changes_nothing(tmp_path):
    path = write_yaml(tmp_path, "# only a comment\n")
    assert load_config_file(path) == {}
    assert parse_args(["--config", path]).moco_k == DEFAULTS["moco_k"]


# --- validation -----------------------------------------------------------------


def test_moco_k_not_multiple_of_batch_message():
    with pytest.raises(ConfigError) as error:
        validate_config(unvalidated(["--moco-k", "4000"]))
    assert (
        "moco-k 4000 is not a multiple of batch_size 512: the queue takes whole batches, "
        "e.g. --moco-k 4096"
    ) in str(error.value)


def test_symmetric_requires_multiple_of_two_batches():
    validate_config(unvalidated(["--moco-k", "1536"]))  # 3 batches of 512: fine asymmetric
    with pytest.raises(ConfigError, match=r"not a multiple of 2 \* batch_size = 1024"):
        validate_config(unvalidated(["--moco-k", "1536", "--symmetric"]))
    validate_config(unvalidated(["--moco-k", "2048", "--symmetric"]))


def test_validation_runs_inside_parse_args():
    with pytest.raises(ConfigError, match="moco-k 4000"):
        parse_args(["--moco-k", "4000"])


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (
            ["--batch_size", "500", "--moco-k", "4000"],
            "batch_size 500 is not a multiple of bn-splits 8",
        ),
        (["--batch_size", "0"], "batch-size must be positive, got 0"),
        (["--epochs", "0"], "epochs must be positive, got 0"),
        (["--moco-k", "-512"], "moco-k must be positive, got -512"),
        (["--moco-dim", "0"], "moco-dim must be positive, got 0"),
        (["--bn-splits", "0"], "bn-splits must be positive, got 0"),
        (["--knn-k", "0"], "knn-k must be positive, got 0"),
        (["--moco-m", "1.0"], "moco-m must be in [0, 1), got 1.0"),
        (["--moco-m", "-0.1"], "moco-m must be in [0, 1), got -0.1"),
        (["--moco-t", "0"], "moco-t must be positive, got 0.0"),
        (["--knn-t", "-1"], "knn-t must be positive, got -1.0"),
        (["--lr", "0"], "lr must be positive, got 0.0"),
        (["--wd=-1e-4"], "wd must be >= 0"),
        (["--schedule", "160", "120"], "strictly increasing, got [160, 120]"),
        (["--schedule", "120", "120"], "strictly increasing, got [120, 120]"),
        (["--knn-interval", "-1"], "knn-interval must be >= 0"),
        (["--val-split", "1"], "val-split must be in [0, 1) (0: no hold-out), got 1.0"),
    ],
)
def test_each_invalid_value_is_reported(argv, fragment):
    with pytest.raises(ConfigError) as error:
        validate_config(unvalidated(argv))
    assert fragment in str(error.value)


def test_bn_splits_message_suggests_a_divisor():
    with pytest.raises(ConfigError, match="--bn-splits 6"):
        validate_config(unvalidated(["--batch_size", "6", "--bn-splits", "7", "--moco-k", "6"]))


def test_all_problems_are_reported_together():
    with pytest.raises(ConfigError) as error:
        validate_config(unvalidated(["--lr", "0", "--moco-t", "0"]))
    assert "lr must be positive" in str(error.value)
    assert "moco-t must be positive" in str(error.value)


def test_quick_run_flags_validate():
    validate_config(
        unvalidated(
            [
                "--train-subset",
                "1024",
                "--test-subset",
                "100",
                "--max-steps",
                "2",
                "--knn-interval",
                "0",
            ]
        )
    )


# --- saving and shipped configs ---------------------------------------------------


def test_save_config_round_trips_through_config_flag(tmp_path):
    original = parse_args(
        [
            "--dataset",
            "cifar100",
            "--lr",
            "0.03",
            "--cos",
            "--schedule",
            "--batch_size",
            "256",
            "--moco-k",
            "2048",
            "--symmetric",
            "--results-dir",
            str(tmp_path / "run"),
            "--resume",
            "ckpt/last.ckpt",
            "--mode",
            "1",
            "--wd",
            "1e-4",
        ]
    )
    path = str(tmp_path / "saved.yaml")
    save_config(original, path)
    reloaded = parse_args(["--config", path])
    assert reloaded.config == path
    assert vars(reloaded) == dict(vars(original), config=path)


def test_save_config_uses_underscore_keys_in_parser_order_and_omits_config(tmp_path):
    path = tmp_path / "saved.yaml"
    save_config(parse_args(["--results-dir", "out"]), str(path))
    content = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert list(content) == [key for key in vars(unvalidated([])) if key != "config"]


def test_results_dir_defaults_to_the_resumed_checkpoints_folder():
    assert parse_args(["--resume", "runs/a/model_last.ckpt"]).results_dir == "runs/a"
    assert parse_args(["--resume", "auto"]).results_dir.startswith("./cache-")


# --- evaluation flags (infer.py, visualize.py) -------------------------------------


def evaluation_parser(checkpoint_required=True):
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_evaluation_arguments(parser, None if checkpoint_required else parser.add_argument_group())
    return parser


def test_evaluation_arguments_defaults():
    assert vars(evaluation_parser().parse_args(["--checkpoint", "c.ckpt"])) == {
        "checkpoint": "c.ckpt",
        "config": "",
        "data_dir": None,
        "dataset": None,
        "device_target": None,
        "mode": None,
        "batch_size": EVAL_BATCH_SIZE,
        "workers": None,
        "val_split": None,
        "skip_bad_images": None,
        "train_subset": 0,
        "test_subset": 0,
        "no_cache": False,
    }
    args = evaluation_parser().parse_args(["--checkpoint", "c", "--batch-size", "8"])
    assert args.batch_size == 8


def test_evaluation_checkpoint_is_required_unless_told_otherwise():
    with pytest.raises(SystemExit):
        evaluation_parser().parse_args([])
    assert evaluation_parser(checkpoint_required=False).parse_args([]).checkpoint == ""


@pytest.mark.parametrize("name", ["cifar10.yaml", "cifar10_symmetric.yaml", "cifar100.yaml"])
def test_shipped_configs_load_and_validate(name):
    args = parse_args(["--config", str(CONFIGS_DIR / name)])
    # The demo notebook's recipe.
    assert (args.arch, args.lr, args.epochs, args.cos, args.schedule) == (
        "resnet18",
        0.06,
        200,
        True,
        [],
    )
    assert (args.batch_size, args.wd) == (512, 5e-4)
    assert (args.moco_dim, args.moco_k, args.moco_m, args.moco_t, args.bn_splits) == (
        128,
        4096,
        0.99,
        0.1,
        8,
    )
    assert (args.knn_k, args.knn_t) == (200, 0.1)


def test_shipped_configs_differ_only_where_named():
    cifar10 = parse_args(["--config", str(CONFIGS_DIR / "cifar10.yaml"), "--results-dir", "x"])
    symmetric = parse_args(
        ["--config", str(CONFIGS_DIR / "cifar10_symmetric.yaml"), "--results-dir", "x"]
    )
    cifar100 = parse_args(["--config", str(CONFIGS_DIR / "cifar100.yaml"), "--results-dir", "x"])
    assert (cifar10.dataset, cifar10.symmetric) == ("cifar10", False)
    assert vars(symmetric) == dict(vars(cifar10), symmetric=True, config=symmetric.config)
    assert vars(cifar100) == dict(vars(cifar10), dataset="cifar100", config=cifar100.config)
    v2_changes = dict(mlp=True, aug_plus=True, moco_t=0.2)
    for dataset in ("cifar10", "cifar100"):
        path = str(CONFIGS_DIR / f"{dataset}_mocov2.yaml")
        v2 = parse_args(["--config", path, "--results-dir", "x"])
        assert vars(v2) == dict(vars(cifar10), dataset=dataset, config=path, **v2_changes)
    path = str(CONFIGS_DIR / "stl10_mocov2.yaml")
    stl10 = parse_args(["--config", path, "--results-dir", "x"])
    at_96 = dict(dataset="stl10", image_size=96, stem="imagenet")
    assert vars(stl10) == dict(vars(cifar10), config=path, **v2_changes, **at_96)


def test_the_quick_run_is_the_demos_recipe_on_a_subset():
    quick = parse_args(["--config", str(CONFIGS_DIR / "cifar10_quick.yaml"), "--results-dir", "x"])
    demo = parse_args(["--config", str(CONFIGS_DIR / "cifar10.yaml"), "--results-dir", "x"])
    changes = dict(
        lr=0.03, epochs=1, cos=False, batch_size=256, train_subset=1024, test_subset=1000
    )
    assert vars(quick) == dict(vars(demo), config=quick.config, **changes)


def test_the_reduced_curve_recipe_is_the_demos_on_a_subset():
    """configs/cifar10_reduced.yaml (docs/curve.md): the demo's recipe but the size of the run."""
    reduced = parse_args(
        ["--config", str(CONFIGS_DIR / "cifar10_reduced.yaml"), "--results-dir", "x"]
    )
    demo = parse_args(["--config", str(CONFIGS_DIR / "cifar10.yaml"), "--results-dir", "x"])
    changes = dict(lr=0.015, epochs=20, batch_size=128, moco_k=512, knn_interval=5)
    changes.update(train_subset=1280, test_subset=1000)
    assert vars(reduced) == dict(vars(demo), config=reduced.config, **changes)
    turns = reduced.train_subset * reduced.epochs / reduced.moco_k
    assert reduced.moco_k < reduced.train_subset and turns >= 5  # the queue turns over


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cifar10_mocov3_resnet18.yaml", ("resnet18", "lars", 0.3, 1e-6, 10, 1000, False)),
        ("cifar10_mocov3_vit_tiny.yaml", ("vit_tiny", "adamw", 1.5e-4, 0.1, 40, 300, True)),
    ],
)
def test_the_v3_recipes(name, expected):
    args = parse_args(["--config", str(CONFIGS_DIR / name), "--results-dir", "x"])
    keys = ("arch", "optimizer", "lr", "wd", "warmup_epochs", "epochs", "stop_grad_conv1")
    assert tuple(getattr(args, key) for key in keys) == expected
    assert (args.method, args.batch_size, args.moco_dim, args.moco_mlp_dim) == (
        "v3",
        256,
        256,
        4096,
    )
    assert (args.moco_t, args.moco_m, args.moco_m_cos) == (0.2, 0.99, True)
    assert (args.moco_k, args.bn_splits, args.symmetric) == (0, 1, True)  # no queue, no split BN


@pytest.mark.parametrize("flag", ["--moco-k=32", "--symmetric", "--mlp", "--cos", "--aug-plus"])
def test_v1_only_flags_are_errors_with_v3(flag):
    """v3 has no queue and its own loss, lr schedule and augmentation (not v2's --aug-plus)."""
    name = flag.split("=")[0]
    with pytest.raises(ConfigError) as error:
        parse_args(["--method", "v3", flag, "--results-dir", "x"])
    assert str(error.value).splitlines()[1:] == [f"  {name} is not used by --method v3"]


def test_v3_config_saves_without_aug_plus(tmp_path):
    args = parse_args(["--method", "v3", "--results-dir", "x"])
    save_config(args, str(tmp_path / "config.yaml"))
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert "aug_plus" not in saved and saved["method"] == "v3"
    assert parse_args(["--config", str(tmp_path / "config.yaml")]).aug_plus is False
