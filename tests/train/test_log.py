"""The training log: restarted on resume, read back as curves with infer.py's kNN."""

from src.train.log import append_log, read_curves, read_log, restart_log


def test_curves_keep_the_initial_knn_and_take_infers_for_an_unmonitored_epoch(tmp_path):
    (tmp_path / "log.csv").write_text(
        "epoch,lr,loss,knn_top1,seconds\n0,,,12.50,\n1,0.06,8.1,20.00,30.0\n2,0.06,7.9,,31.0\n"
    )
    loss, knn = read_curves(str(tmp_path))
    assert loss == [(1, 8.1), (2, 7.9)]
    assert knn == [(0, 12.5), (1, 20.0)]
    (tmp_path / "eval_knn.json").write_text('{"epoch": 2, "knn_top1": 21.5}')  # infer.py's
    assert read_curves(str(tmp_path))[1][-1] == (2, 21.5)
    (tmp_path / "eval_knn.json").write_text('{"epoch": 1, "knn_top1": 21.5}')  # the log's wins
    assert read_curves(str(tmp_path))[1] == knn


def test_a_resume_keeps_the_rows_of_finished_epochs_only(tmp_path):
    path = str(tmp_path / "log.csv")
    restart_log(path, 1)
    restart_log(path, 1)  # a header alone is no problem
    for epoch in range(3):
        append_log(path, epoch=epoch, lr="0.1", loss="1.0", knn_top1="", seconds="1")
    restart_log(path, 2)
    assert [row["epoch"] for row in read_log(path)] == ["0", "1"]
