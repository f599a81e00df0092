"""The study file: the shipped studies, every kind of bad input, overrides, immutability."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest

from hpsearch.config import (
    DEFAULT_NARROWING,
    MAX_SEED,
    Choice,
    FloatRange,
    IntRange,
    StudyConfig,
    from_record,
    load_study,
    parse_study,
)
from hpsearch.errors import ConfigError
from trainer import TrainConfig, load_dataset, train

STUDIES = Path(__file__).resolve().parents[2] / "studies"
SHIPPED = ("quick", "mnist_ch6", "overfit")

BASE = """\
[study]
name = "t"

[data]
dataset = "digits"

[model]
hidden_sizes = [8]
epochs = 1

[search.lr]
low = 1e-3
high = 1e-1
log = true

[search.dropout_ratio]
low = 0.0
high = 0.5

[search.batchnorm]
choices = [true, false]

[narrowing]
rounds = 2
trials_per_round = 4
top_k = 2
"""


def edit(old: str, new: str, text: str = BASE) -> str:
    """BASE with one exact, unique piece replaced (fails loudly on a typo)."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def base_params(config: StudyConfig) -> dict[str, object]:
    """A value for every searched parameter: the low end or the first choice."""
    return {
        name: spec.choices[0] if isinstance(spec, Choice) else spec.low
        for name, spec in config.space.items()
    }


# --------------------------------------------------------------------------- shipped studies


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_study_loads_and_every_searched_value_is_a_valid_train_config(name: str) -> None:
    config = load_study(STUDIES / f"{name}.toml")
    assert config.name == name
    assert config.source_text == (STUDIES / f"{name}.toml").read_text(encoding="utf-8")
    assert config.space, "a study searches something"
    assert "seed" not in config.model and "seed" not in config.space
    base = base_params(config)
    for param, spec in config.space.items():
        values = spec.choices if isinstance(spec, Choice) else (spec.low, spec.high)
        for value in values:
            trial = config.train_config({**base, param: value}, seed=7)
            assert isinstance(trial, TrainConfig)
            assert getattr(trial, param) == value
            assert trial.seed == 7
            for key, fixed in config.model.items():
                assert getattr(trial, key) == fixed


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_study_data_loads_and_one_epoch_trains(name: str) -> None:
    config = load_study(STUDIES / f"{name}.toml")
    data = load_dataset(
        config.data.dataset,
        train_samples=config.data.train_samples,
        val_fraction=config.data.val_fraction,
        seed=config.seed,
    )
    assert len(data.y_val) > 0, "tuning needs a validation split"
    trial = config.train_config(base_params(config), seed=0).replace(epochs=1)
    history = train(trial, data)
    assert len(history.records) == 1 and not history.diverged


def test_quick_study_is_small_enough_for_ci() -> None:
    config = load_study(STUDIES / "quick.toml")
    assert config.data.dataset == "digits"
    assert config.model["backend"] == "numpy"
    assert config.narrowing.rounds * config.narrowing.trials_per_round <= 30
    assert config.model["epochs"] <= 10
    assert sum(config.model["hidden_sizes"]) <= 200
    assert set(config.space) == {"lr", "weight_decay", "dropout_ratio", "batchnorm"}
    assert config.space["lr"] == FloatRange(low=1e-3, high=1.0, log=True)


def test_mnist_ch6_study_is_the_chapters_search() -> None:
    config = load_study(STUDIES / "mnist_ch6.toml")
    assert config.data.dataset == "mnist5k"
    assert config.data.train_samples == 500 and config.data.val_fraction == 0.2
    assert config.model["hidden_sizes"] == (100,) * 6
    assert config.model["optimizer"] == "sgd" and config.model["batch_size"] == 100
    assert config.space["lr"] == FloatRange(low=1e-6, high=1e-2, log=True)
    assert config.space["weight_decay"] == FloatRange(low=1e-8, high=1e-4, log=True)
    assert config.space["dropout_ratio"] == FloatRange(low=0.0, high=0.5, log=False)
    assert config.space["batchnorm"] == Choice(choices=(True, False))
    assert config.narrowing.rounds == 3
    # benchmarks/search_quality.py: TPE + ASHA reach the chapter's best with a third of its
    # epochs in every seed, at the same test accuracy as unpruned narrowing
    assert (config.sampler, config.pruner) == ("tpe", "asha")
    assert config.limits["lr"][1] == 1.0  # the box may move past the chapter's 1e-2
    assert config.narrowing.top_k == round(0.2 * config.narrowing.trials_per_round)


def test_overfit_study_has_300_samples_and_searches_regularization() -> None:
    config = load_study(STUDIES / "overfit.toml")
    assert config.data.dataset == "mnist5k" and config.data.train_samples == 300
    assert config.model["hidden_sizes"] == (100,) * 6
    assert {"weight_decay", "dropout_ratio"} <= set(config.space)
    assert config.model["epochs"] > load_study(STUDIES / "mnist_ch6.toml").model["epochs"]
    assert (config.metric, config.direction) == ("val_loss", "minimize")


# --------------------------------------------------------------------------- parsing


def test_defaults_of_a_minimal_study() -> None:
    config = parse_study(
        '[study]\nname = "m"\n[data]\ndataset = "digits"\n[search.lr]\nlow = 0.01\nhigh = 1\n'
    )
    assert (config.metric, config.direction, config.seed) == ("val_accuracy", "maximize", 0)
    assert (config.sampler, config.pruner) == ("random", "none")
    assert config.data.train_samples is None and config.data.val_fraction == 0.2
    assert dataclasses.asdict(config.narrowing) == DEFAULT_NARROWING
    assert config.resources.workers is None
    assert (config.resources.cpus_per_trial, config.resources.gpus_per_trial) == (1.0, 0.0)
    assert (config.final_eval.enabled, config.final_eval.seeds) == (False, 5)
    assert dict(config.model) == {} and dict(config.overrides) == {}
    assert config.space["lr"] == FloatRange(low=0.01, high=1.0, log=False)
    assert isinstance(config.space["lr"].high, float)


def test_direction_follows_the_metric() -> None:
    text = edit('name = "t"', 'name = "t"\nmetric = "val_loss"')
    assert parse_study(text).direction == "minimize"
    text = edit('name = "t"', 'name = "t"\nmetric = "best_val_accuracy"\ndirection = "maximize"')
    assert parse_study(text).direction == "maximize"


def test_space_keeps_file_order_and_kinds() -> None:
    text = BASE + "\n[search.batch_size]\nlow = 32\nhigh = 256\nint = true\nstep = 32\n"
    text += "[search.epochs]\nlow = 1\nhigh = 16\nint = true\nlog = true\n"
    text = edit("epochs = 1\n", "", text)
    config = parse_study(text)
    assert list(config.space) == ["lr", "dropout_ratio", "batchnorm", "batch_size", "epochs"]
    assert config.space["batch_size"] == IntRange(low=32, high=256, log=False, step=32)
    assert config.space["epochs"] == IntRange(low=1, high=16, log=True, step=1)
    assert config.space["batchnorm"] == Choice(choices=(True, False))


def test_model_values_are_normalized_and_lists_become_tuples() -> None:
    config = parse_study(edit("epochs = 1", "epochs = 1\nweight_init = 1\nmomentum = 0"))
    assert config.model["hidden_sizes"] == (8,)
    assert config.model["weight_init"] == 1.0 and isinstance(config.model["weight_init"], float)
    assert isinstance(config.model["momentum"], float)


def test_dataset_forms_accepted() -> None:
    for spec in (
        "digits",
        "mnist5k",
        "synthetic",
        "synthetic:500",
        "mnist:/data/mnist",
        "npz:x.npz",
    ):
        config = parse_study(edit('dataset = "digits"', f'dataset = "{spec}"'))
        assert config.data.dataset == spec


def test_source_text_is_verbatim_and_errors_name_the_source() -> None:
    crlf = BASE.replace("\n", "\r\n")
    assert parse_study(crlf).source_text == crlf
    with pytest.raises(ConfigError, match=r"^studies/x\.toml: search\.lr: low"):
        parse_study(edit("low = 1e-3", "low = 1.0"), source="studies/x.toml")


# --------------------------------------------------------------------------- bad studies

LR = "low = 1e-3\nhigh = 1e-1\nlog = true"
DROPOUT = "low = 0.0\nhigh = 0.5"
BATCHNORM = "choices = [true, false]"
INT_PARAM = "\n[search.batch_size]\nlow = 32\nhigh = 256\nint = true\n"

# (id, study text, key path the message must name, bad value the message must show)
BAD_STUDIES: list[tuple[str, str, str, str]] = [
    # ranges
    ("low > high", edit(LR, "low = 0.1\nhigh = 0.01"), "search.lr", "0.1"),
    ("low == high", edit(LR, "low = 0.01\nhigh = 0.01"), "search.lr", "0.01"),
    ("log low zero", edit(LR, "low = 0.0\nhigh = 1e-1\nlog = true"), "search.lr.low", "0.0"),
    (
        "log low negative",
        edit(LR, "low = -1e-3\nhigh = 1e-1\nlog = true"),
        "search.lr.low",
        "-0.001",
    ),
    ("dropout high 1", edit(DROPOUT, "low = 0.0\nhigh = 1.0"), "search.dropout_ratio.high", "1.0"),
    (
        "dropout low < 0",
        edit(DROPOUT, "low = -0.1\nhigh = 0.5"),
        "search.dropout_ratio.low",
        "-0.1",
    ),
    ("nan end", edit(DROPOUT, "low = 0.0\nhigh = nan"), "search.dropout_ratio.high", "nan"),
    ("inf end", edit(LR, "low = 1e-3\nhigh = inf"), "search.lr.high", "inf"),
    ("missing high", edit(LR, "low = 1e-3"), "search.lr.high", "missing"),
    (
        "momentum high 1",
        BASE + "[search.momentum]\nlow = 0.5\nhigh = 1.0\n",
        "search.momentum.high",
        "1.0",
    ),
    (
        "negative weight decay",
        BASE + "[search.weight_decay]\nlow = -1.0\nhigh = 1.0\n",
        "search.weight_decay.low",
        "-1.0",
    ),
    # integer ranges
    (
        "int option without int",
        edit("epochs = 1\n", "") + "[search.epochs]\nlow = 1\nhigh = 5\n",
        "search.epochs",
        "1",
    ),
    (
        "int range float end",
        BASE + INT_PARAM.replace("low = 32", "low = 32.5"),
        "search.batch_size.low",
        "32.5",
    ),
    ("int step misfit", BASE + INT_PARAM + "step = 10\n", "search.batch_size.step", "10"),
    ("int on float option", edit(LR, LR + "\nint = true"), "search.lr.int", "true"),
    (
        "step without int",
        edit(DROPOUT, DROPOUT + "\nstep = 0.1"),
        "search.dropout_ratio.step",
        "0.1",
    ),
    (
        "int batch size 0",
        BASE + INT_PARAM.replace("low = 32", "low = 0"),
        "search.batch_size.low",
        "0",
    ),
    # categoricals
    ("empty choices", edit(BATCHNORM, "choices = []"), "search.batchnorm.choices", "[]"),
    (
        "duplicate choices",
        edit(BATCHNORM, "choices = [true, true]"),
        "search.batchnorm.choices[1]",
        "true",
    ),
    (
        "choice not a bool",
        edit(BATCHNORM, 'choices = ["yes", false]'),
        "search.batchnorm.choices[0]",
        "'yes'",
    ),
    (
        "array choice",
        edit(BATCHNORM, "choices = [[1, 2]]"),
        "search.batchnorm.choices[0]",
        "[1, 2]",
    ),
    ("choices not array", edit(BATCHNORM, "choices = true"), "search.batchnorm.choices", "true"),
    ("choices and low", edit(BATCHNORM, BATCHNORM + "\nlow = 0"), "search.batchnorm.low", "low"),
    (
        "unknown optimizer choice",
        BASE + '[search.optimizer]\nchoices = ["sgd", "lion"]\n',
        "search.optimizer.choices[1]",
        "'lion'",
    ),
    # unknown names
    ("unknown study key", edit('name = "t"', 'name = "t"\nnmae = "x"'), "study.nmae", "nmae"),
    ("unknown param key", edit(LR, LR + "\nlo = 1"), "search.lr.lo", "lo"),
    ("unknown section", BASE + "[optuna]\nx = 1\n", "optuna", "optuna"),
    ("unknown top-level key", "rounds = 3\n" + BASE, "rounds", "rounds"),
    (
        "unknown search option",
        BASE + "[search.learning_rate]\nlow = 0.1\nhigh = 1\n",
        "search.learning_rate",
        "learning_rate",
    ),
    (
        "unknown model option",
        edit("epochs = 1", "epochs = 1\nhidden = [8]"),
        "model.hidden",
        "hidden",
    ),
    (
        "unknown sampler",
        edit('name = "t"', 'name = "t"\nsampler = "grid"'),
        "study.sampler",
        "'grid'",
    ),
    ("unknown pruner", edit('name = "t"', 'name = "t"\npruner = "sha"'), "study.pruner", "'sha'"),
    (
        "unknown metric",
        edit('name = "t"', 'name = "t"\nmetric = "accuracy"'),
        "study.metric",
        "'accuracy'",
    ),
    (
        "direction contradicts metric",
        edit('name = "t"', 'name = "t"\ndirection = "minimize"'),
        "study.direction",
        "'minimize'",
    ),
    (
        "unknown direction",
        edit('name = "t"', 'name = "t"\ndirection = "up"'),
        "study.direction",
        "'up'",
    ),
    # narrowing
    (
        "trials_per_round 0",
        edit("trials_per_round = 4", "trials_per_round = 0"),
        "narrowing.trials_per_round",
        "0",
    ),
    ("top_k > trials", edit("top_k = 2", "top_k = 5"), "narrowing.top_k", "5"),
    ("top_k 0", edit("top_k = 2", "top_k = 0"), "narrowing.top_k", "0"),
    ("rounds 0", edit("rounds = 2", "rounds = 0"), "narrowing.rounds", "0"),
    ("negative margin", edit("top_k = 2", "top_k = 2\nmargin = -0.1"), "narrowing.margin", "-0.1"),
    # wrong TOML types, booleans are not numbers
    ("string for int", edit("rounds = 2", 'rounds = "2"'), "narrowing.rounds", "'2'"),
    ("float for int", edit("rounds = 2", "rounds = 2.0"), "narrowing.rounds", "2.0"),
    ("string for float", edit(LR, 'low = "1e-3"\nhigh = 1e-1'), "search.lr.low", "'1e-3'"),
    (
        "bool for int",
        edit("trials_per_round = 4", "trials_per_round = true"),
        "narrowing.trials_per_round",
        "true",
    ),
    (
        "bool for float",
        edit('dataset = "digits"', 'dataset = "digits"\nval_fraction = true'),
        "data.val_fraction",
        "true",
    ),
    (
        "bool range end",
        edit(DROPOUT, "low = false\nhigh = 0.5"),
        "search.dropout_ratio.low",
        "false",
    ),
    ("bool epochs in model", edit("epochs = 1", "epochs = true"), "model.epochs", "True"),
    (
        "string for bool",
        edit(LR, LR.replace("log = true", 'log = "yes"')),
        "search.lr.log",
        "'yes'",
    ),
    (
        "date for seed",
        edit('name = "t"', 'name = "t"\nseed = 2024-01-01'),
        "study.seed",
        "2024-01-01",
    ),
    ("param not a table", edit("[search.lr]\n" + LR, "[search]\nlr = 0.1"), "search.lr", "0.1"),
    (
        "section not a table",
        "search = 1\n"
        + edit("[search.lr]\n" + LR + "\n\n", "")
        .replace("[search.dropout_ratio]\n" + DROPOUT + "\n\n", "")
        .replace("[search.batchnorm]\n" + BATCHNORM + "\n", ""),
        "search",
        "1",
    ),
    # model / search cross-checks
    ("fixed and searched", edit("epochs = 1", "epochs = 1\nlr = 0.1"), "search.lr", "0.1"),
    (
        "searched seed",
        BASE + "[search.seed]\nlow = 0\nhigh = 9\nint = true\n",
        "search.seed",
        "seed",
    ),
    ("fixed seed", edit("epochs = 1", "epochs = 1\nseed = 3"), "model.seed", "seed"),
    (
        "bad model optimizer",
        edit("epochs = 1", 'epochs = 1\noptimizer = "foo"'),
        "model.optimizer",
        "'foo'",
    ),
    (
        "empty hidden sizes",
        edit("hidden_sizes = [8]", "hidden_sizes = []"),
        "model.hidden_sizes",
        "[]",
    ),
    (
        "gpu device on numpy",
        edit("epochs = 1", 'epochs = 1\ndevice = "cuda"'),
        "model.device",
        "'cuda'",
    ),
    (
        "nothing searched",
        BASE.split("[search.lr]")[0] + "[narrowing]\nrounds = 1\n",
        "search",
        "no parameter",
    ),
    # study name and seed
    ("name with space", edit('name = "t"', 'name = "my study"'), "study.name", "'my study'"),
    ("name with slash", edit('name = "t"', 'name = "../etc"'), "study.name", "'../etc'"),
    ("name too long", edit('name = "t"', f'name = "{"a" * 101}"'), "study.name", "aaaa"),
    ("name trailing newline", edit('name = "t"', 'name = "t\\n"'), "study.name", "'t\\n'"),
    ("missing name", edit('name = "t"\n', ""), "study.name", "missing"),
    ("negative seed", edit('name = "t"', 'name = "t"\nseed = -1'), "study.seed", "-1"),
    (
        "seed too big",
        edit('name = "t"', f'name = "t"\nseed = {MAX_SEED + 1}'),
        "study.seed",
        str(MAX_SEED + 1),
    ),
    # data
    (
        "val_fraction 0",
        edit('dataset = "digits"', 'dataset = "digits"\nval_fraction = 0'),
        "data.val_fraction",
        "0",
    ),
    (
        "val_fraction 1",
        edit('dataset = "digits"', 'dataset = "digits"\nval_fraction = 1'),
        "data.val_fraction",
        "1",
    ),
    (
        "unknown dataset",
        edit('dataset = "digits"', 'dataset = "cifar10"'),
        "data.dataset",
        "'cifar10'",
    ),
    ("npz without path", edit('dataset = "digits"', 'dataset = "npz:"'), "data.dataset", "'npz:'"),
    (
        "mnist without dir",
        edit('dataset = "digits"', 'dataset = "mnist: "'),
        "data.dataset",
        "'mnist:'",
    ),
    (
        "synthetic bad N",
        edit('dataset = "digits"', 'dataset = "synthetic:lots"'),
        "data.dataset",
        "'synthetic:lots'",
    ),
    ("dataset not string", edit('dataset = "digits"', "dataset = 5"), "data.dataset", "5"),
    (
        "missing dataset",
        edit('dataset = "digits"', "train_samples = 100"),
        "data.dataset",
        "missing",
    ),
    (
        "train_samples 0",
        edit('dataset = "digits"', 'dataset = "digits"\ntrain_samples = 0'),
        "data.train_samples",
        "0",
    ),
    (
        "no training samples left",
        edit('dataset = "digits"', 'dataset = "digits"\ntrain_samples = 1'),
        "data.train_samples",
        "1",
    ),
    # resources, final evaluation
    ("workers 0", BASE + "[resources]\nworkers = 0\n", "resources.workers", "0"),
    ("cpus 0", BASE + "[resources]\ncpus_per_trial = 0\n", "resources.cpus_per_trial", "0"),
    (
        "negative gpus",
        BASE + "[resources]\ngpus_per_trial = -0.5\n",
        "resources.gpus_per_trial",
        "-0.5",
    ),
    ("final seeds 0", BASE + "[final_eval]\nseeds = 0\n", "final_eval.seeds", "0"),
    (
        "final enabled string",
        BASE + '[final_eval]\nenabled = "yes"\n',
        "final_eval.enabled",
        "'yes'",
    ),
    # malformed TOML
    ("unclosed table header", "[study\nname = 't'\n", "malformed TOML", "line 1"),
    ("duplicate key", edit('name = "t"', 'name = "t"\nname = "u"'), "malformed TOML", "line 3"),
    (
        "bare string value",
        edit('dataset = "digits"', "dataset = digits"),
        "malformed TOML",
        "line 5",
    ),
]


def test_the_bad_study_table_is_large_and_distinct() -> None:
    assert len(BAD_STUDIES) >= 25
    assert len({case[0] for case in BAD_STUDIES}) == len(BAD_STUDIES)
    assert len({case[1] for case in BAD_STUDIES}) == len(BAD_STUDIES)


@pytest.mark.parametrize(
    ("text", "path", "value"), [c[1:] for c in BAD_STUDIES], ids=[c[0] for c in BAD_STUDIES]
)
def test_bad_study_raises_one_line_config_error_naming_key_and_value(
    text: str, path: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_study(text)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(path) or f" {path}" in message, message
    assert value in message, message


@pytest.mark.parametrize(
    ("text", "path", "value"), [c[1:] for c in BAD_STUDIES[:8]], ids=[c[0] for c in BAD_STUDIES[:8]]
)
def test_bad_study_file_error_starts_with_the_path(
    tmp_path: Path, text: str, path: str, value: str
) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_study(file)
    assert str(info.value).startswith(f"{file}: {path}")


def test_unknown_key_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"allowed: rounds, trials_per_round, top_k, margin"):
        parse_study(edit("rounds = 2", "rounds = 2\nround = 2"))
    with pytest.raises(ConfigError, match=r"did you mean 'tpe'\?.*allowed: random, tpe, qmc"):
        parse_study(edit('name = "t"', 'name = "t"\nsampler = "tpe2"'))
    with pytest.raises(ConfigError, match=r"allowed: \[study\], \[data\], \[model\], \[search\]"):
        parse_study(BASE + "[extra]\n")


def test_trainer_errors_are_reworded_under_the_study_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_study(edit(DROPOUT, "low = 0.0\nhigh = 1.0"))
    assert str(info.value) == "search.dropout_ratio.high: got 1.0; expected a number in [0, 1)"
    with pytest.raises(ConfigError) as info:
        parse_study(edit(LR, "low = 0.1\nhigh = 0.01"))
    assert str(info.value).startswith("search.lr: low (0.1) must be < high (0.01)")


def test_malformed_toml_reports_line_and_column(tmp_path: Path) -> None:
    file = tmp_path / "broken.toml"
    file.write_text('[study]\nname = "x"\nseed = = 1\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.toml: malformed TOML: .*line 3, column"):
        load_study(file)


# --------------------------------------------------------------------------- files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: study file not found"):
        load_study(tmp_path / "nope.toml")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a directory"):
        load_study(tmp_path)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "locked.toml"
    file.write_text(BASE, encoding="utf-8")

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(
        ConfigError, match=r"locked\.toml: cannot read the study file: Permission denied"
    ):
        load_study(file)


def test_not_utf8(tmp_path: Path) -> None:
    file = tmp_path / "latin1.toml"
    file.write_bytes(BASE.replace('name = "t"', 'name = "caf\xe9"').encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.toml: not UTF-8 text \(byte 0xe9"):
        load_study(file)


def test_utf8_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    file = tmp_path / "windows.toml"
    file.write_bytes(b"\xef\xbb\xbf" + BASE.replace("\n", "\r\n").encode())
    config = load_study(file)
    assert config.name == "t"
    assert config.source_text == BASE.replace("\n", "\r\n")


# --------------------------------------------------------------------------- overrides


@pytest.fixture
def study() -> StudyConfig:
    return parse_study(BASE)


def test_overrides_apply_and_are_recorded(study: StudyConfig) -> None:
    changed = study.with_overrides(
        name="t2", seed=5, rounds=4, trials_per_round=6, top_k=3, workers=2
    )
    assert (changed.name, changed.seed, changed.resources.workers) == ("t2", 5, 2)
    assert (changed.narrowing.rounds, changed.narrowing.trials_per_round) == (4, 6)
    assert changed.narrowing.top_k == 3 and changed.narrowing.margin == study.narrowing.margin
    assert dict(changed.overrides) == {
        "name": "t2",
        "seed": 5,
        "rounds": 4,
        "trials_per_round": 6,
        "top_k": 3,
        "workers": 2,
    }
    assert changed.source_text == study.source_text
    assert study.name == "t" and dict(study.overrides) == {}, "the original is unchanged"


def test_overrides_accumulate_and_none_changes_nothing(study: StudyConfig) -> None:
    assert study.with_overrides() is study
    assert study.with_overrides(name=None, rounds=None) is study
    twice = study.with_overrides(rounds=5).with_overrides(seed=9, rounds=6)
    assert dict(twice.overrides) == {"rounds": 6, "seed": 9}
    assert twice.narrowing.rounds == 6


def test_final_eval_override(study: StudyConfig) -> None:
    assert study.with_overrides(final_eval=True).final_eval.enabled is True
    with pytest.raises(ConfigError, match=r"^--final-eval: got 'yes'"):
        study.with_overrides(final_eval="yes")  # type: ignore[arg-type]


def test_run_is_reproducible_from_source_text_and_overrides(study: StudyConfig) -> None:
    changed = study.with_overrides(name="again", seed=3, trials_per_round=3)
    rebuilt = from_record(changed.source_text, dict(changed.overrides))
    assert rebuilt == changed
    with pytest.raises(ConfigError, match=r"overrides: unknown override 'storage'"):
        from_record(study.source_text, {"storage": "sqlite://"})


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"rounds": 0}, "--rounds: got 0; expected an integer >= 1"),
        ({"trials_per_round": -1}, "--trials-per-round: got -1; expected an integer >= 1"),
        ({"top_k": 0}, "--top-k: got 0; expected an integer >= 1"),
        ({"workers": 0}, "--workers: got 0; expected an integer >= 1"),
        ({"seed": -1}, "--seed: got -1; expected an integer in [0, 4294967295]"),
        ({"seed": MAX_SEED + 1}, f"--seed: got {MAX_SEED + 1}"),
        ({"rounds": True}, "--rounds: got true (a boolean)"),
        ({"rounds": "3"}, "--rounds: got '3' (a string)"),
        ({"name": "a b"}, "--name: got 'a b'"),
        ({"name": ""}, "--name: got ''"),
        ({"top_k": 9}, "--top-k: got 9; must be <= the trials per round (4)"),
        (
            {"trials_per_round": 8, "top_k": 9},
            "--top-k: got 9; must be <= the trials per round (8)",
        ),
        ({"trials_per_round": 1}, "--trials-per-round: got 1; must be >= narrowing.top_k (2)"),
    ],
)
def test_bad_overrides_name_the_cli_option(
    study: StudyConfig, kwargs: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        study.with_overrides(**kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(expected), str(info.value)
    assert "\n" not in str(info.value)


def test_lowering_trials_with_top_k_is_fine(study: StudyConfig) -> None:
    changed = study.with_overrides(trials_per_round=1, top_k=1)
    assert (changed.narrowing.trials_per_round, changed.narrowing.top_k) == (1, 1)


# --------------------------------------------------------------------------- train_config


def test_train_config_merges_model_params_and_seed(study: StudyConfig) -> None:
    trial = study.train_config({"lr": 0.05, "dropout_ratio": 0.25, "batchnorm": True}, seed=11)
    expected = TrainConfig(
        hidden_sizes=(8,), epochs=1, lr=0.05, dropout_ratio=0.25, batchnorm=True, seed=11
    )
    assert trial == expected


def test_train_config_accepts_numpy_scalars(study: StudyConfig) -> None:
    trial = study.train_config(
        {"lr": np.float64(0.05), "dropout_ratio": np.float32(0.5), "batchnorm": np.bool_(False)},
        seed=np.int64(3),
    )
    assert trial.seed == 3 and type(trial.seed) is int and trial.batchnorm is False


def test_train_config_rejects_unknown_missing_and_invalid_params(study: StudyConfig) -> None:
    good = {"lr": 0.05, "dropout_ratio": 0.25, "batchnorm": True}
    with pytest.raises(ConfigError, match=r"'momentum' is not a searched parameter"):
        study.train_config({**good, "momentum": 0.5}, seed=0)
    with pytest.raises(ConfigError, match=r"missing batchnorm"):
        study.train_config({"lr": 0.05, "dropout_ratio": 0.25}, seed=0)
    with pytest.raises(ConfigError, match=r"dropout_ratio: got 1.5"):
        study.train_config({**good, "dropout_ratio": 1.5}, seed=0)
    with pytest.raises(ConfigError, match=r"seed: got -1"):
        study.train_config(good, seed=-1)


# --------------------------------------------------------------------------- immutability


def test_study_config_is_immutable(study: StudyConfig) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.narrowing.rounds = 9  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.space["lr"].low = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        study.model["epochs"] = 3  # type: ignore[index]
    with pytest.raises(TypeError):
        study.space["momentum"] = FloatRange(low=0.1, high=0.9)  # type: ignore[index]
    with pytest.raises(TypeError):
        study.overrides["rounds"] = 2  # type: ignore[index]
    with pytest.raises(AttributeError):
        study.model._data = {}  # type: ignore[attr-defined]
    assert isinstance(study.model["hidden_sizes"], tuple)
    assert isinstance(study.space["batchnorm"].choices, tuple)


def test_study_config_pickles_hashes_and_compares(study: StudyConfig) -> None:
    again = pickle.loads(pickle.dumps(study))
    assert again == study and hash(again) == hash(study)
    assert again.space["lr"] == study.space["lr"]
    assert study != study.with_overrides(rounds=3)


def test_to_dict_is_plain_data(study: StudyConfig) -> None:
    out = study.to_dict()
    assert out["space"]["lr"] == {"low": 1e-3, "high": 1e-1, "log": True}
    assert out["space"]["batchnorm"] == {"choices": [True, False]}
    assert out["model"]["hidden_sizes"] == [8]
    assert "source_text" not in out
