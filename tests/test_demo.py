"""Tests of fastopt.demo: the network's gradients, the IDX reader, `fastopt compare` and
`fastopt paths` (through the same entry point as the command line)."""
import argparse
import gzip
import json
import os
import sys

import numpy as np
import pytest

import fastopt.optim
import fastopt.reference
import fastopt.reference.optim
from fastopt.cli import main
from fastopt.demo import compare, paths
from fastopt.demo.common import OPTIMIZER_NAMES, learning_rates, optimizer_class, optimizer_names
from fastopt.demo.data import (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, DatasetError, load_mnist,
                               read_idx)
from fastopt.demo.network import MultiLayerNet

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def demo_extra():
    """The optional packages `fastopt compare` and `fastopt paths` need."""
    for module_name in ("matplotlib", "sklearn", "tqdm"):
        pytest.importorskip(module_name)


def assert_is_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > 10_000  # panels with lines, not an empty canvas


def run_compare(tmp_path, name, *options):
    """Run `fastopt compare` with options; return its JSON document."""
    json_path = tmp_path / f"{name}.json"
    status = main(["compare", "--plot", str(tmp_path / f"{name}.png"), "--json",
                   str(json_path), *options])
    assert status == 0
    return json.loads(json_path.read_text())


def without_timings(document):
    return [{key: value for key, value in result.items() if key != "update_seconds"}
            for result in document["results"]]


# ---- the network -------------------------------------------------------------------------

def numerical_gradient(network, x, labels, step=1e-6):
    """Central differences of the training-mode loss with respect to every parameter."""
    gradients = {}
    for key, parameter in network.params.items():
        gradient = np.zeros_like(parameter)
        for index in np.ndindex(parameter.shape):
            original = parameter[index]
            parameter[index] = original + step
            loss_plus = network.loss(x, labels, train=True)
            parameter[index] = original - step
            loss_minus = network.loss(x, labels, train=True)
            parameter[index] = original
            gradient[index] = (loss_plus - loss_minus) / (2 * step)
        gradients[key] = gradient
    return gradients


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("use_batchnorm", [False, True])
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_backpropagation_matches_numerical_gradient(activation, use_batchnorm, weight_decay):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 5))
    labels = rng.integers(0, 3, 7)
    network = MultiLayerNet(5, (6, 4), 3, activation=activation, use_batchnorm=use_batchnorm,
                            weight_decay=weight_decay, rng=np.random.default_rng(2))
    loss, grads = network.gradient(x, labels)

    assert loss == pytest.approx(network.loss(x, labels, train=True), rel=1e-15)
    expected_keys = ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3"]
    if not use_batchnorm:
        expected_keys = [key for key in expected_keys if not key.startswith(("gamma", "beta"))]
    assert list(grads) == list(network.params) == expected_keys
    numerical = numerical_gradient(network, x, labels)
    for key in network.params:
        np.testing.assert_allclose(grads[key], numerical[key], rtol=1e-6, atol=1e-8,
                                   err_msg=key)


def test_weight_decay_adds_half_lambda_times_squared_weights_to_the_loss():
    rng = np.random.default_rng(3)
    x, labels = rng.standard_normal((4, 5)), rng.integers(0, 3, 4)
    plain = MultiLayerNet(5, (6,), 3, rng=np.random.default_rng(4))
    decayed = MultiLayerNet(5, (6,), 3, weight_decay=0.5, rng=np.random.default_rng(4))
    squared_weights = np.sum(plain.params["W1"] ** 2) + np.sum(plain.params["W2"] ** 2)
    assert decayed.loss(x, labels) == pytest.approx(plain.loss(x, labels)
                                                    + 0.25 * squared_weights, rel=1e-12)


def test_float32_network_computes_in_float32():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    network = MultiLayerNet(5, (4,), 3, activation="relu", use_batchnorm=True,
                            weight_decay=0.01, dtype=np.float32)
    loss, grads = network.gradient(x, rng.integers(0, 3, 6))
    assert np.isfinite(loss)
    assert {array.dtype for array in network.params.values()} == {np.dtype(np.float32)}
    assert {array.dtype for array in grads.values()} == {np.dtype(np.float32)}
    assert network.predict(x).dtype == np.float32


# ---- the IDX reader ----------------------------------------------------------------------

def idx_bytes(magic, array):
    header = magic.to_bytes(4, "big") + b"".join(size.to_bytes(4, "big")
                                                for size in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path, magic, array, compress=False):
    content = idx_bytes(magic, array)
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


SMALL_IMAGES = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
SMALL_LABELS = np.array([7, 0, 9], dtype=np.uint8)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_reads_images_and_labels(tmp_path, compress):
    images = read_idx(write_idx(tmp_path / "images", IDX_IMAGES_MAGIC, SMALL_IMAGES, compress),
                      IDX_IMAGES_MAGIC)
    labels = read_idx(write_idx(tmp_path / "labels", IDX_LABELS_MAGIC, SMALL_LABELS, compress),
                      IDX_LABELS_MAGIC)
    np.testing.assert_array_equal(images, SMALL_IMAGES)
    assert images.dtype == np.uint8 and images.shape == (3, 4, 5)
    np.testing.assert_array_equal(labels, SMALL_LABELS)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_rejects_a_wrong_magic_number(tmp_path, compress):
    path = write_idx(tmp_path / "labels", IDX_LABELS_MAGIC, SMALL_LABELS, compress)
    with pytest.raises(DatasetError, match=r"labels: magic number 0x00000801 \(2049\), "
                                           r"expected 0x00000803 \(2051\)"):
        read_idx(path, IDX_IMAGES_MAGIC)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_rejects_a_truncated_file(tmp_path, compress):
    content = idx_bytes(IDX_IMAGES_MAGIC, SMALL_IMAGES)[:-1]
    path = tmp_path / "images"
    path.write_bytes(gzip.compress(content) if compress else content)
    with pytest.raises(DatasetError, match=r"images: 75 bytes \(uncompressed\), expected 76 "
                                           r"for a header and data of shape \(3, 4, 5\); "
                                           r"the file is truncated"):
        read_idx(path, IDX_IMAGES_MAGIC)


def test_read_idx_rejects_a_header_cut_short_and_a_broken_gzip_stream(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match=r"empty: 0 bytes is too short for an IDX file; "
                                           r"expected the magic number 0x00000801"):
        read_idx(empty, IDX_LABELS_MAGIC)
    short = tmp_path / "short"
    short.write_bytes(IDX_IMAGES_MAGIC.to_bytes(4, "big") + b"\0\0")
    with pytest.raises(DatasetError, match=r"short: 6 bytes is too short for the header of "
                                           r"an IDX file of 3 dimensions; expected 16 bytes"):
        read_idx(short, IDX_IMAGES_MAGIC)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(idx_bytes(IDX_LABELS_MAGIC, SMALL_LABELS))[:-6])
    with pytest.raises(DatasetError, match=r"broken.gz: not a valid gzip file"):
        read_idx(broken, IDX_LABELS_MAGIC)


def test_read_idx_of_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent", IDX_LABELS_MAGIC)


def write_mnist(directory, train_count=40, test_count=20):
    """A small data set in MNIST's four files, some raw and some gzip-compressed; an image
    of label k has bright rows 2k to 2k+2 over noise, so it can be learnt quickly."""
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 10, train_count + test_count).astype(np.uint8)
    images = rng.integers(0, 60, (len(labels), 28, 28))
    for image, label in zip(images, labels):
        image[2 * label:2 * label + 3] += 190
    write_idx(directory / "train-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC, images[:train_count],
              compress=True)
    write_idx(directory / "train-labels-idx1-ubyte", IDX_LABELS_MAGIC, labels[:train_count])
    write_idx(directory / "t10k-images-idx3-ubyte", IDX_IMAGES_MAGIC, images[train_count:])
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", IDX_LABELS_MAGIC, labels[train_count:],
              compress=True)
    return images.astype(np.uint8), labels


def test_load_mnist_reads_the_four_files_raw_or_gzip(tmp_path):
    images, labels = write_mnist(tmp_path)
    dataset = load_mnist(tmp_path)
    assert dataset.features == 784 and dataset.classes == 10
    np.testing.assert_array_equal(dataset.train_images, images[:40].reshape(40, 784))
    np.testing.assert_array_equal(dataset.test_labels, labels[40:])
    scaled = dataset.scaled(dataset.test_images, np.float32)
    assert scaled.dtype == np.float32 and scaled.max() <= 1.0
    assert scaled.max() == np.float32(images[40:].max() / np.float32(255))


def test_load_mnist_rejects_images_and_labels_of_different_counts(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", IDX_LABELS_MAGIC, SMALL_LABELS)
    with pytest.raises(DatasetError, match=r"has 40 images but .*train-labels-idx1-ubyte has 3 "
                                           r"labels; expected the same count"):
        load_mnist(tmp_path)


def test_load_mnist_names_the_missing_file(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte \(or "
                                                r"t10k-labels-idx1-ubyte.gz\) not found"):
        load_mnist(tmp_path)


def test_compare_reports_a_bad_dataset_without_a_traceback(tmp_path, capsys, demo_extra):
    write_mnist(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", IDX_LABELS_MAGIC, SMALL_LABELS)
    assert main(["compare", "--mnist", str(tmp_path), "--plot", str(tmp_path / "c.png")]) == 1
    error = capsys.readouterr().err
    assert "fastopt compare: error:" in error and "expected 0x00000803 (2051)" in error
    assert "Traceback" not in error
    assert main(["compare", "--mnist", str(tmp_path / "absent")]) == 1
    assert "MNIST directory" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


def test_compare_trains_on_local_mnist_files(tmp_path, demo_extra):
    write_mnist(tmp_path, train_count=200, test_count=50)
    document = run_compare(tmp_path, "mnist", "--mnist", str(tmp_path), "--iters", "60",
                           "--batch-size", "20", "--optimizers", "adam", "--backend", "fastopt")
    assert document["dataset"].startswith("MNIST")
    (result,) = document["results"]
    assert result["losses"][-1] < result["losses"][0]
    assert result["final_test_accuracy"] > 0.8  # the bright rows give the label away


# ---- fastopt compare ---------------------------------------------------------------------

def test_compare_writes_png_and_json_and_repeats_itself_with_a_seed(tmp_path, capsys,
                                                                    demo_extra):
    options = ["--iters", "25", "--optimizers", "sgd,adam", "--seed", "3", "--eval-interval",
               "5"]
    first = run_compare(tmp_path, "first", *options)
    output = capsys.readouterr().out
    second = run_compare(tmp_path, "second", *options)
    other_seed = run_compare(tmp_path, "other", *options[:-3], "4", *options[-2:])

    assert_is_png(tmp_path / "first.png")
    assert "optimizer" in output and "test acc" in output
    assert f"plot written to {tmp_path / 'first.png'}" in output
    results = first["results"]
    assert [(r["optimizer"], r["backend"]) for r in results] == [
        ("SGD", "fastopt"), ("SGD", "numpy"), ("Adam", "fastopt"), ("Adam", "numpy")]
    assert all(len(r["losses"]) == 25 for r in results)
    assert results[0]["eval_iterations"] == [0, 5, 10, 15, 20, 25]
    assert all(r["update_seconds"] > 0 for r in results)
    assert without_timings(first) == without_timings(second)
    assert first["results"][0]["losses"] != other_seed["results"][0]["losses"]


@pytest.mark.parametrize("options", [
    [],
    ["--dtype", "float32"],
    ["--activation", "relu", "--batchnorm", "--weight-decay", "0.001", "--hidden", "30,20,10"],
], ids=["default", "float32", "relu-batchnorm-decay"])
def test_fastopt_and_numpy_backends_give_identical_losses(tmp_path, demo_extra, options):
    document = run_compare(tmp_path, "both", "--iters", "30", "--backend", "both", *options)
    by_backend = {}
    for result in document["results"]:
        by_backend.setdefault(result["backend"], {})[result["optimizer"]] = result
    assert list(by_backend["fastopt"]) == list(by_backend["numpy"]) == list(OPTIMIZER_NAMES)
    for name in OPTIMIZER_NAMES:
        fast, slow = by_backend["fastopt"][name], by_backend["numpy"][name]
        assert fast["losses"] == slow["losses"], name
        assert fast["test_accuracies"] == slow["test_accuracies"], name
        assert fast["losses"][-1] < fast["losses"][0], name


def test_numpy_backend_is_the_reference_implementation():
    for name in OPTIMIZER_NAMES:
        assert optimizer_class(name, "numpy") is getattr(fastopt.reference, name)
        assert optimizer_class(name, "fastopt") is getattr(fastopt, name)


def test_adam_with_the_defaults_reaches_90_percent_on_digits(tmp_path, demo_extra):
    document = run_compare(tmp_path, "adam", "--optimizers", "adam", "--backend", "fastopt")
    (result,) = document["results"]
    assert document["config"]["iterations"] == compare.DEFAULT_ITERATIONS
    assert result["final_test_accuracy"] >= 0.9


def test_compare_rejects_bad_options(capsys):
    for options in (["--iters", "0"], ["--hidden", "10,x"], ["--backend", "torch"],
                    ["--optimizers", "adamw"], ["--weight-decay", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["compare", *options])
        assert exit_info.value.code == 2
    assert "unknown optimizer 'adamw'" in capsys.readouterr().err


# ---- fastopt compare --family optim: fastopt.optim against fastopt.reference.optim --------

OPTIM_NAMES = tuple(fastopt.optim.OPTIMIZERS)


def compare_parser():
    parser = argparse.ArgumentParser(prog="fastopt compare")
    compare.add_arguments(parser)
    return parser


def table_rows(output):
    """The rows of the table `fastopt compare` prints: {optimizer: cells as text}."""
    lines = output.splitlines()
    start = next(index for index, line in enumerate(lines) if line.split()[:2] == ["optimizer",
                                                                                   "lr"])
    rows = {}
    for line in lines[start + 2:]:
        if not line or line.startswith(("warning:", "plot written", "results written")):
            break
        rows[line.split()[0]] = line.split()[1:]
    return rows


def test_the_optim_family_is_fastopt_optim_and_its_numpy_twins():
    assert optimizer_names("optim") == OPTIM_NAMES
    assert optimizer_names() == optimizer_names("textbook") == OPTIMIZER_NAMES
    for name in OPTIM_NAMES:
        assert optimizer_class(name, "fastopt", "optim") is fastopt.optim.OPTIMIZERS[name]
        assert (optimizer_class(name, "numpy", "optim")
                is fastopt.reference.optim.OPTIMIZERS[name])
    assert list(compare.OPTIM_DEFAULT_LEARNING_RATES) == list(OPTIM_NAMES)
    assert compare.FAMILY_LEARNING_RATES == {"textbook": compare.DEFAULT_LEARNING_RATES,
                                             "optim": compare.OPTIM_DEFAULT_LEARNING_RATES}
    with pytest.raises(ValueError, match="family must be one of textbook, optim"):
        optimizer_class("SGD", "fastopt", "torch")


def test_compare_family_optim_prints_identical_losses_for_both_backends(tmp_path, capsys,
                                                                        demo_extra):
    document = run_compare(tmp_path, "optim", "--family", "optim", "--optimizers", "adamw,LION",
                           "--lr", "lion=0.002", "--iters", "20", "--eval-interval", "5")
    output = capsys.readouterr().out
    assert ("optimizers: fastopt.optim (backend fastopt), its NumPy twins "
            "fastopt.reference.optim (backend numpy)") in output
    rows = table_rows(output)
    assert list(rows) == ["AdamW", "Lion"]
    assert rows["AdamW"][0] == f"{compare.OPTIM_DEFAULT_LEARNING_RATES['AdamW']:g}"
    assert rows["Lion"][0] == "0.002"
    assert all(row[-1] == "yes" for row in rows.values())  # same losses, bit for bit
    assert document["family"] == "optim"
    results = document["results"]
    assert [(r["optimizer"], r["backend"]) for r in results] == [
        ("AdamW", "fastopt"), ("AdamW", "numpy"), ("Lion", "fastopt"), ("Lion", "numpy")]
    for fast, slow in (results[:2], results[2:]):
        assert fast["losses"] == slow["losses"] and len(fast["losses"]) == 20
        assert fast["test_accuracies"] == slow["test_accuracies"]
        assert fast["losses"][-1] < fast["losses"][0]
    assert_is_png(tmp_path / "optim.png")


@pytest.mark.parametrize("options", [
    [],
    ["--dtype", "float32", "--activation", "relu", "--batchnorm", "--weight-decay", "0.001"],
], ids=["default", "float32-relu-batchnorm-decay"])
def test_every_optim_class_gives_identical_losses_on_both_backends(tmp_path, demo_extra,
                                                                    options):
    document = run_compare(tmp_path, "all", "--family", "optim", "--iters", "12", *options)
    by_backend = {}
    for result in document["results"]:
        by_backend.setdefault(result["backend"], {})[result["optimizer"]] = result
    assert list(by_backend["fastopt"]) == list(by_backend["numpy"]) == list(OPTIM_NAMES)
    for name in OPTIM_NAMES:
        fast, slow = by_backend["fastopt"][name], by_backend["numpy"][name]
        assert fast["learning_rate"] == compare.OPTIM_DEFAULT_LEARNING_RATES[name]
        assert fast["losses"] == slow["losses"], name
        assert fast["test_accuracies"] == slow["test_accuracies"], name


@pytest.mark.parametrize("name", OPTIM_NAMES)
def test_every_optim_default_learning_rate_trains_the_digits_network(name, demo_extra):
    """The demo's rates, not torch's defaults (SGD's 1e-3 stays at chance in 1000
    iterations): every class reaches 95 % test accuracy with the default options."""
    from fastopt.demo.data import load_digits_dataset

    result = compare.train(load_digits_dataset(), name, "fastopt",
                           compare.OPTIM_DEFAULT_LEARNING_RATES[name], compare.TrainingConfig(),
                           family="optim")
    assert len(result.losses) == compare.DEFAULT_ITERATIONS
    assert result.final_test_accuracy >= 0.95, result.final_test_accuracy


def test_family_names_are_resolved_after_parsing_in_any_order():
    parser = compare_parser()
    default = parser.parse_args([])
    assert (default.family, default.optimizers, default.lr) == ("textbook", OPTIMIZER_NAMES, [])
    assert learning_rates(default, compare.FAMILY_LEARNING_RATES["textbook"]) == \
        compare.DEFAULT_LEARNING_RATES
    everything = parser.parse_args(["--family", "optim"])
    assert everything.optimizers == OPTIM_NAMES
    assert learning_rates(everything, compare.FAMILY_LEARNING_RATES["optim"]) == \
        compare.OPTIM_DEFAULT_LEARNING_RATES
    for order in (["--optimizers", "adam, NADAM,adam", "--lr", "lion=1e-4", "--family", "optim",
                   "--lr", "ADADELTA=2"],
                  ["--family", "optim", "--optimizers", "adam,nadam", "--lr", "Lion=0.0001",
                   "--lr", "adadelta=2"]):
        args = parser.parse_args(order)
        assert args.optimizers == ("Adam", "NAdam")
        assert args.lr == [("Lion", 1e-4), ("Adadelta", 2.0)]
    textbook = parser.parse_args(["--optimizers", "NESTEROV,sgd", "--lr", "momentum=0.2"])
    assert (textbook.optimizers, textbook.lr) == (("Nesterov", "SGD"), [("Momentum", 0.2)])


TEXTBOOK_CHOICES = "SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam"
OPTIM_CHOICES = "SGD, Adam, AdamW, Adagrad, RMSprop, Adadelta, Adamax, NAdam, RAdam, Lion"


@pytest.mark.parametrize("options, message", [
    (["--optimizers", "lion"],
     f"argument --optimizers: unknown optimizer 'lion'; choose from {TEXTBOOK_CHOICES}; "
     f"Lion is in --family optim"),
    (["--optimizers", "sgd,bogus"],
     f"argument --optimizers: unknown optimizer 'bogus'; choose from {TEXTBOOK_CHOICES}\n"),
    (["--optimizers", "momentum", "--family", "optim"],
     f"argument --optimizers: unknown optimizer 'momentum' in --family optim; choose from "
     f"{OPTIM_CHOICES}; Momentum is in --family textbook"),
    (["--family", "optim", "--optimizers", "adam", "--lr", "Nesterov=0.1"],
     f"argument --lr: unknown optimizer 'Nesterov' in --family optim; choose from "
     f"{OPTIM_CHOICES}; Nesterov is in --family textbook"),
    (["--lr", "adadelta=1"],
     f"argument --lr: unknown optimizer 'adadelta'; choose from {TEXTBOOK_CHOICES}; "
     f"Adadelta is in --family optim"),
    (["--family", "optim", "--optimizers", ","], "argument --optimizers: give at least one"),
    (["--family", "optim", "--lr", "Lion:0.1"], "argument --lr: expected NAME=VALUE"),
    (["--family", "optim", "--lr", "Lion=-1"], "argument --lr: must be a finite number >= 0"),
    (["--family", "torch"], "argument --family: invalid choice: 'torch'"),
])
def test_compare_rejects_names_outside_the_family_as_argparse_does(capsys, options, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", *options])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: fastopt compare")
    assert f"fastopt compare: error: {message}" in error


def test_compare_without_family_is_the_textbook_run(tmp_path, capsys, demo_extra):
    document = run_compare(tmp_path, "default", "--iters", "4", "--optimizers", "momentum")
    output = capsys.readouterr().out
    assert document["family"] == "textbook"
    assert list(table_rows(output)) == ["Momentum"]
    assert "fastopt.optim" not in output and "optimizers:" not in output
    fast, slow = document["results"]
    assert fast["learning_rate"] == compare.DEFAULT_LEARNING_RATES["Momentum"] == 0.1
    assert fast["losses"] == slow["losses"]


def test_missing_demo_extra_is_reported_with_the_install_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert main(["paths"]) == 2
    assert main(["compare"]) == 2
    error = capsys.readouterr().err
    assert error.count("pip install 'fastopt[demo]'") == 2
    assert error.count('pip install ".[demo]" from a fastopt source checkout') == 2


def test_same_losses_is_bitwise_with_nan_equal_to_nan():
    nan = float("nan")
    assert compare.same_losses([1.0, nan, nan], [1.0, nan, nan])
    assert not compare.same_losses([1.0, nan], [1.0, 2.0])
    assert not compare.same_losses([0.0], [-0.0])  # bit for bit, not ==
    assert not compare.same_losses([1.0, 2.0], [1.0])
    assert compare.first_nonfinite_iteration([3.0, 2.0, float("inf"), nan]) == 3
    assert compare.first_nonfinite_iteration([3.0]) is None


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")
def test_a_diverged_run_is_the_same_on_both_backends_and_written_as_strict_json(
        tmp_path, capsys, demo_extra):
    """SGD with lr 1e20 on a ReLU network overflows to NaN at the second iteration: both
    backends give NaN in the same places, which the table calls the same losses, and the JSON
    has null there (strict parsers reject a bare NaN)."""
    json_path = tmp_path / "diverged.json"
    status = main(["compare", "--optimizers", "sgd", "--lr", "SGD=1e20", "--activation", "relu",
                   "--dtype", "float32", "--iters", "12", "--eval-interval", "4",
                   "--plot", str(tmp_path / "diverged.png"), "--json", str(json_path)])
    assert status == 0
    output = capsys.readouterr().out
    (row,) = [line for line in output.splitlines() if line.startswith("SGD")]
    assert row.split()[-1] == "yes"
    assert "(diverged at 2)" in row
    text = json_path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    document = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name}"))
    for result in document["results"]:
        assert result["losses"][0] is not None and result["losses"][1:] == [None] * 11
        assert result["final_loss"] is None
    assert_is_png(tmp_path / "diverged.png")


@pytest.mark.parametrize("command", ["compare", "paths"])
@pytest.mark.parametrize("option", ["--plot", "--json"])
def test_bad_output_path_fails_at_once_with_one_line(tmp_path, capsys, demo_extra, command,
                                                     option, monkeypatch):
    if command == "paths" and option == "--json":
        pytest.skip("fastopt paths has no --json")
    trained = []
    monkeypatch.setattr(compare, "compare", lambda *a, **k: trained.append(1))
    missing = tmp_path / "no" / "such" / "dir" / "out.file"
    assert main([command, option, str(missing)]) == 1
    error = capsys.readouterr().err
    assert error == (f"fastopt {command}: error: {option} {missing}: the folder "
                     f"{missing.parent} does not exist\n")
    assert not trained
    assert main([command, option, str(tmp_path)]) == 1
    assert "is a folder, not a file name" in capsys.readouterr().err


def test_compare_table_shows_mean_microseconds_per_step(demo_extra):
    runs = [compare.RunResult(optimizer="SGD", backend=backend, learning_rate=0.5,
                              losses=[1.0] * 200, eval_iterations=[0], test_accuracies=[0.1],
                              final_train_accuracy=0.5, final_test_accuracy=0.5,
                              final_loss=1.0, update_seconds=seconds)
            for backend, seconds in (("fastopt", 0.002), ("numpy", 0.02))]
    header, _, row = compare.results_table(runs).splitlines()
    assert "fastopt step (µs)" in header and "numpy step (µs)" in header
    assert row.split()[5:] == ["10.0", "100.0", "10.0x", "yes"]


# ---- fastopt paths -----------------------------------------------------------------------

def printed_rows(output):
    """The rows of the table `fastopt paths` prints: {optimizer: [lr, x, y, f] as text}."""
    rows = (line.split() for line in output.splitlines())
    return {row[0]: row[1:] for row in rows if row and row[0] in OPTIMIZER_NAMES}


def expected_row(rate, path):
    final_x, final_y = path[-1]
    return [f"{rate:g}", f"{final_x:.6g}", f"{final_y:.6g}",
            f"{paths.objective(final_x, final_y):.6g}"]


def test_paths_writes_png_and_prints_where_each_path_ends(tmp_path, capsys, demo_extra):
    plot = tmp_path / "paths.png"
    assert main(["paths", "--plot", str(plot)]) == 0
    assert_is_png(plot)
    rows = printed_rows(capsys.readouterr().out)
    assert list(rows) == list(OPTIMIZER_NAMES)
    for name, rate in paths.DEFAULT_LEARNING_RATES.items():
        path = paths.optimize_path(optimizer_class(name)(lr=rate))
        assert rows[name] == expected_row(rate, path)


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_every_default_path_ends_closer_to_the_minimum(name):
    path = paths.optimize_path(optimizer_class(name)(lr=paths.DEFAULT_LEARNING_RATES[name]))
    assert path.shape == (paths.DEFAULT_STEPS + 1, 2)
    assert tuple(path[0]) == paths.START
    assert np.hypot(*path[-1]) < np.hypot(*path[0])
    assert paths.objective(*path[-1]) < 0.2 * paths.objective(*path[0])


def test_paths_options_change_steps_and_learning_rates(tmp_path, capsys, demo_extra):
    assert main(["paths", "--steps", "3", "--optimizers", "sgd,adam", "--lr", "SGD=0.1",
                 "--lr", "adam=0.5", "--plot", str(tmp_path / "p.png")]) == 0
    output = capsys.readouterr().out
    assert output.startswith("3 steps from")
    rows = printed_rows(output)
    assert list(rows) == ["SGD", "Adam"]
    assert rows["SGD"] == expected_row(0.1, paths.optimize_path(fastopt.SGD(lr=0.1), steps=3))
    assert rows["Adam"] == expected_row(0.5, paths.optimize_path(fastopt.Adam(lr=0.5), steps=3))
    for options, message in ((["--lr", "SGD:0.1"], "expected NAME=VALUE"),
                             (["--lr", "SGD=-1"], "must be a finite number >= 0"),
                             (["--steps", "0"], "must be at least 1, got 0")):
        with pytest.raises(SystemExit) as exit_info:
            main(["paths", *options])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


class FakeMeter:
    """OthersCpuMeter with a fixed share: other processes' CPU use, as a test chooses it."""

    share_value = 0.0

    def share(self):
        return self.share_value


@pytest.mark.parametrize("load, share, warned", [(7.5, 0.4, True), (0.2, 0.0, False)])
def test_compare_warns_like_bench_on_a_busy_machine(monkeypatch, tmp_path, capsys, demo_extra,
                                                    load, share, warned):
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load), raising=False)
    monkeypatch.setattr(FakeMeter, "share_value", share)
    monkeypatch.setattr(compare, "OthersCpuMeter", FakeMeter)
    run_compare(tmp_path, "busy", "--iters", "3", "--optimizers", "adam")
    output = capsys.readouterr().out
    cores = os.cpu_count()
    before = f"warning: load average 7.5 on {cores} cores before the run: other processes"
    after = ("warning: other processes took 40% of this machine's CPU time during the run; "
             "the step times are unreliable")
    assert (before in output, after in output) == (warned, warned)
    if warned:  # the load before the table, the share during training after it
        assert output.index(before) < output.index("optimizer") < output.index(after)
