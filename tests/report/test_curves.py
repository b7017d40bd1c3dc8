"""Learning curves read back from Lightning's metrics.csv, by hand."""

from __future__ import annotations

from pathlib import Path

from vldistill.report.curves import collect, is_headline, plot_learning_curves, read_curves

# what Lightning's CSV logger writes: one row per logging call, blanks where a column has none
CSV = """epoch,step,train/kd,train/loss,val/vqa_accuracy,val/vqa_accuracy/colour
0,49,0.5,2.0,,
0,99,0.25,1.5,,
0,99,,,41.0,30.0
0,149,nan,1.25,,
"""


def write(folder: Path, role: str, text: str = CSV) -> Path:
    path = folder / role / "metrics.csv"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_columns_are_read_by_step_with_blanks_and_nan_left_out(tmp_path):
    curves = read_curves(write(tmp_path, "student"))
    assert curves["train/loss"] == ([49, 99, 149], [2.0, 1.5, 1.25])
    assert curves["train/kd"] == ([49, 99], [0.5, 0.25])          # the NaN row is dropped
    assert curves["val/vqa_accuracy"] == ([99], [41.0])
    assert curves["val/vqa_accuracy/colour"] == ([99], [30.0])
    assert "epoch" not in curves and "step" not in curves


def test_headline_metrics_are_the_ones_without_a_breakdown():
    assert is_headline("val/vqa_accuracy") and is_headline("val/unanswerable_ap")
    assert not is_headline("val/vqa_accuracy/colour") and not is_headline("train/loss")


def test_every_role_is_collected_in_order_and_plotted(tmp_path):
    write(tmp_path, "teacher")
    write(tmp_path, "student-kd-seed0")
    write(tmp_path, "empty", "epoch,step\n")
    assert list(collect(tmp_path)) == ["student-kd-seed0", "teacher"]
    out = plot_learning_curves(tmp_path, tmp_path / "curves.png")
    assert out == tmp_path / "curves.png" and out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_trained_draws_nothing(tmp_path):
    assert plot_learning_curves(tmp_path, tmp_path / "curves.png") is None
    assert not (tmp_path / "curves.png").exists()


def test_rows_logged_before_a_resume_are_merged_back(tmp_path):
    """A resumed fit's logger starts metrics.csv afresh; the earlier rows are kept beside it
    and the curve runs over the whole fit, the later file winning at a shared step."""
    folder = write(tmp_path, "student").parent
    (folder / "metrics.csv").rename(folder / "metrics.before-resume-0.csv")
    (folder / "metrics.csv").write_text("epoch,step,train/loss\n0,149,1.0\n0,199,0.5\n")
    curves = collect(tmp_path)["student"]
    assert curves["train/loss"] == ([49, 99, 149, 199], [2.0, 1.5, 1.0, 0.5])
    assert curves["val/vqa_accuracy"] == ([99], [41.0])
