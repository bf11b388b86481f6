"""visualize.py: the retrieval grid and embedding map of a tiny checkpoint, the training curves,
bad input."""

import os
import struct
import sys

import mindspore as ms
import numpy as np
import pytest

import visualize
from src.utils.figures import DPI, EMBEDDING_INCHES, embedding_figure, retrieval_grid_size


@pytest.fixture(autouse=True)
def pynative_afterwards():
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


def png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def run_visualize(argv, capsys, trained=None):
    """visualize.main in process; with ``trained``, on its checkpoint in PyNative mode."""
    if trained is not None:
        data_root, checkpoint = trained
        argv = ["--checkpoint", checkpoint, "--data-dir", data_root, *argv]
        argv += "--mode 1 --batch_size 16".split()
    code = visualize.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_retrieval_grid_png(trained, tmp_path, capsys):
    output = tmp_path / "grid.png"
    argv = ["--num-queries", "2", "--topk", "3", "--output", str(output)]
    code, out, err = run_visualize(argv, capsys, trained)
    assert code == 0, err
    assert out.strip() == str(output)
    width, height = retrieval_grid_size(2, 3)
    assert png_size(output) == (round(width * DPI), round(height * DPI))


def test_given_queries_and_default_output(trained, capsys):
    checkpoint = trained[1]
    code, out, err = run_visualize("--query-index 0 19 --topk 2".split(), capsys, trained)
    assert code == 0, err
    expected = os.path.join(os.path.dirname(checkpoint), "retrieval.png")
    assert out.strip() == expected
    width, height = retrieval_grid_size(2, 2)
    assert png_size(expected) == (round(width * DPI), round(height * DPI))


def test_query_outside_the_test_set_is_refused(trained, tmp_path, capsys):
    argv = ["--query-index", "20", "--output", str(tmp_path / "x.png")]
    code, _, err = run_visualize(argv, capsys, trained)
    assert code == 2 and "outside the test set [0, 20)" in err


def test_embedding_map_png_and_default_output(trained, capsys):
    argv = "--embedding --embedding-points 12 --seed 3".split()
    code, out, err = run_visualize(argv, capsys, trained)
    assert code == 0, err
    assert out.strip() == os.path.join(os.path.dirname(trained[1]), "embedding.png")
    assert png_size(out.strip()) == tuple(round(inches * DPI) for inches in EMBEDDING_INCHES)
    assert "t-SNE of 12 points" in err


def test_embedding_figure_has_a_legend_of_the_classes_and_colours_by_label():
    names = ["cat", "dog", "ship"]
    labels = np.array([0, 2, 1, 2])
    figure = embedding_figure(np.arange(8.0).reshape(4, 2), labels, names, "a map")
    axes = figure.axes[0]
    assert [text.get_text() for text in axes.get_legend().get_texts()] == names
    (scatter,) = axes.collections
    colours = scatter.get_facecolors()[:, :3]
    assert np.array_equal(colours[1], colours[3]) and len(np.unique(colours, axis=0)) == 3
    legend_colours = [handle.get_color() for handle in axes.get_legend().legend_handles]
    assert np.allclose(legend_colours[2][:3], colours[1])


def test_embedding_bad_inputs_are_clear_errors(tmp_path, capsys, monkeypatch):
    for argv, message in (
        (["--embedding"], "one of the arguments --checkpoint --curves is required"),
        (["--embedding", "--curves", str(tmp_path)], "--embedding draws a checkpoint's map"),
    ):
        with pytest.raises(SystemExit) as exit_:
            visualize.main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    argv = ["--embedding", "--checkpoint", str(tmp_path / "nope.ckpt")]
    code, _, err = run_visualize([*argv, "--embedding-points", "1"], capsys)
    assert code == 2 and "--embedding-points must be at least 2" in err
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)  # as if it were not installed
    code, _, err = run_visualize(argv, capsys)
    assert code == 2 and "error: --embedding needs scikit-learn" in err


def test_training_curves_png(trained, tmp_path, capsys):
    results = os.path.dirname(trained[1])
    output = tmp_path / "curves.png"
    code, out, err = run_visualize(["--curves", results, "--output", str(output)], capsys)
    assert code == 0, err
    assert out.strip() == str(output) and png_size(output) == (10 * DPI, 4 * DPI)


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    code, _, err = run_visualize(["--checkpoint", str(tmp_path / "nope.ckpt")], capsys)
    assert code == 2 and "checkpoint not found" in err and "Traceback" not in err
    code, _, err = run_visualize(["--curves", str(tmp_path)], capsys)
    assert code == 2 and "training log not found" in err
    with pytest.raises(SystemExit) as exit_:
        visualize.main(["--curves", str(tmp_path), "--checkpoint", "x.ckpt"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_the_demos_curve_is_drawn_on_request(tmp_path, capsys):
    (tmp_path / "log.csv").write_text("epoch,lr,loss,knn_top1,seconds\n0,,,36.57,\n")
    code, out, err = run_visualize(["--curves", str(tmp_path), "--reference"], capsys)
    assert code == 0, err
    assert png_size(out.strip()) == (10 * DPI, 4 * DPI)
