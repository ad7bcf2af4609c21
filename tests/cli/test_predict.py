# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""``egeunet-monai``: ``predict`` on real photographs with one corrupt file among them, and the other commands'
help and bundle command lines."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from egeunet_monai.cli import build_parser, main
from egeunet_monai.cli.main import bundle_command
from egeunet_monai.cli.predict import CSV_COLUMNS, CSV_NAME, collect_inputs
from egeunet_monai.inference import ONNX_INSTALL_HINT, QUALITY_FLAGS

REPO_ROOT = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ("predict", "serve", "train", "evaluate", "export", "bundle")


def _rows(out_dir) -> dict[str, dict]:
    with open(out_dir / CSV_NAME, newline="", encoding="utf-8") as f:
        return {Path(row["image"]).name: row for row in csv.DictReader(f)}


class TestPredictOnRealImages:
    def test_exit_code_is_non_zero_and_the_summary_names_the_corrupt_file(self, cli_predictions):
        proc = cli_predictions.proc
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert "Segmented 4 of 5 images" in proc.stdout
        summary = proc.stderr[proc.stderr.rindex("1 failed:"):]
        assert cli_predictions.corrupt in summary and "truncated" in summary

    def test_the_other_images_get_masks_of_their_original_size(self, cli_predictions):
        inputs, out = cli_predictions.inputs, cli_predictions.out
        for name in cli_predictions.images:
            stem = Path(name).stem
            with Image.open(inputs / name) as photo:
                size = photo.size
            with Image.open(out / f"{stem}_mask.png") as mask:
                assert mask.size == size and mask.mode == "L"
                assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}
            with Image.open(out / f"{stem}_overlay.png") as overlay:
                assert overlay.size == size and overlay.mode == "RGB"
            with Image.open(out / f"{stem}_prob.png") as prob:
                assert prob.size == size
        assert not list(out.glob(f"{Path(cli_predictions.corrupt).stem}*"))

    def test_csv_reports_area_and_confidence_that_match_the_written_files(self, cli_predictions):
        out = cli_predictions.out
        rows = _rows(out)
        assert set(rows) == {*cli_predictions.images, cli_predictions.corrupt}
        with open(out / CSV_NAME, encoding="utf-8") as f:
            assert tuple(f.readline().strip().split(",")) == CSV_COLUMNS
        for name, row in rows.items():
            if name == cli_predictions.corrupt:
                continue
            assert row["status"] == "ok" and row["error"] == ""
            mask = np.asarray(Image.open(row["mask"])) > 0
            height, width = mask.shape
            assert (int(row["width"]), int(row["height"])) == (width, height)
            assert int(row["lesion_area_px"]) == int(mask.sum())
            assert float(row["lesion_area_fraction"]) == pytest.approx(mask.sum() / (width * height), abs=1e-6)
            prob = np.asarray(Image.open(row["probability"]), dtype=np.float64) / 255.0
            if mask.any():
                # mean confidence = mean sigmoid probability inside the lesion (the PNG holds it rounded to 1/255)
                assert float(row["mean_confidence"]) == pytest.approx(prob[mask].mean(), abs=2 / 255)
                assert 0.5 <= float(row["mean_confidence"]) <= 1.0
            else:
                assert row["mean_confidence"] == ""
            # without --tta: no uncertainty, no low_confidence; the other flags follow the written mask
            assert row["uncertainty"] == "" and row["uncertainty_map"] == ""
            flags = row["flags"].split(";") if row["flags"] else []
            assert set(flags) <= set(QUALITY_FLAGS) - {"low_confidence"}
            assert ("empty" in flags) == (not mask.any())

    def test_the_corrupt_file_has_a_failed_row_with_the_reason(self, cli_predictions):
        row = _rows(cli_predictions.out)[cli_predictions.corrupt]
        assert row["status"] == "failed"
        assert "truncated" in row["error"]
        assert row["mask"] == row["lesion_area_px"] == ""


def test_inputs_that_give_no_image_are_failures_with_a_reason(tmp_path):
    photo = tmp_path / "a" / "lesion.png"
    photo.parent.mkdir()
    Image.new("RGB", (8, 8)).save(photo)
    twin = tmp_path / "b" / "lesion.png"
    twin.parent.mkdir()
    Image.new("RGB", (8, 8)).save(twin)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()

    files, failed = collect_inputs([photo, photo, twin, tmp_path / "notes.txt", tmp_path / "missing.jpg",
                                    tmp_path / "empty"])

    assert files == [photo]
    reasons = dict(failed)
    assert set(reasons) == {str(twin), str(tmp_path / "notes.txt"), str(tmp_path / "missing.jpg"),
                            str(tmp_path / "empty")}
    assert "same name" in reasons[str(twin)]
    assert "not a supported image" in reasons[str(tmp_path / "notes.txt")]
    assert "no such" in reasons[str(tmp_path / "missing.jpg")].lower()
    assert "no images" in reasons[str(tmp_path / "empty")]


def test_uncertainty_map_without_tta_is_refused_with_exit_code_2(tmp_path, capsys):
    photo = tmp_path / "lesion.png"
    Image.new("RGB", (32, 32)).save(photo)
    code = main(["predict", str(photo), "--out", str(tmp_path / "out"), "--uncertainty-map", "--device", "cpu"])
    assert code == 2
    assert "--uncertainty-map needs --tta" in capsys.readouterr().err
    assert not (tmp_path / "out" / CSV_NAME).exists()


def test_predict_help_documents_tta_the_csv_columns_and_the_flags(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--tta" in text and "--uncertainty-map" in text
    assert "uncertainty only with --tta (empty otherwise)" in text
    for flag in QUALITY_FLAGS:
        assert flag in text


def test_missing_weights_is_a_clear_error_with_exit_code_2(tmp_path, capsys):
    code = main(["predict", str(tmp_path), "--out", str(tmp_path / "out"), "--weights", str(tmp_path / "nope.pt")])
    assert code == 2
    assert "nope.pt: weights file not found" in capsys.readouterr().err


def test_onnx_weights_without_onnxruntime_name_the_extra_to_install(tmp_path, monkeypatch, capsys):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not read: the missing runtime is found first")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    code = main(["predict", str(tmp_path), "--out", str(tmp_path / "out"), "--weights", str(onnx)])
    assert code == 2
    assert ONNX_INSTALL_HINT in capsys.readouterr().err
    assert ONNX_INSTALL_HINT == "pip install 'egeunet-monai[onnx]'"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: egeunet-monai {command}")
    assert "examples:" in text and f"egeunet-monai {command}" in text.split("examples:", 1)[1]


def test_top_level_help_lists_every_subcommand():
    text = build_parser().format_help()
    for command in SUBCOMMANDS:
        assert command in text


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--max_epochs", "2"],
         ["run", "training", "--config_file", f"{REPO_ROOT}/configs/train.json", "--bundle_root", str(REPO_ROOT),
          "--max_epochs", "2"]),
        (["evaluate", "--dataset_dir", "d", "--ckpt_path", "m.pt"],
         ["run", "evaluating", "--config_file",
          repr([f"{REPO_ROOT}/configs/train.json", f"{REPO_ROOT}/configs/evaluate.json"]),
          "--bundle_root", str(REPO_ROOT), "--dataset_dir", "d", "--ckpt_path", "m.pt"]),
        (["export", "--ckpt", "m.pt"],
         ["ckpt_export", "network_def", "--filepath", f"{REPO_ROOT}/models/model.ts",
          "--ckpt_file", "m.pt", "--meta_file", f"{REPO_ROOT}/configs/metadata.json",
          "--config_file", f"{REPO_ROOT}/configs/inference.json", "--bundle_root", str(REPO_ROOT)]),
        (["export", "--onnx", "--out", "/tmp/m.onnx", "--ckpt", "m.pt"],
         ["onnx_export", "network_def", "--filepath", "/tmp/m.onnx",
          "--ckpt_file", "m.pt", "--meta_file", f"{REPO_ROOT}/configs/metadata.json",
          "--config_file", f"{REPO_ROOT}/configs/inference.json", "--input_shape", "[1, 3, 256, 256]",
          "--use_trace", "True", "--converter_kwargs",
          "{'input_names': ['image'], 'output_names': ['logits'], 'opset_version': 17, 'dynamo': False, "
          "'dynamic_axes': {'image': {0: 'batch'}, 'logits': {0: 'batch'}}}",
          "--bundle_root", str(REPO_ROOT)]),
    ],
)
def test_shortcuts_stand_for_the_bundle_commands(argv, expected):
    args, extra = build_parser().parse_known_args(argv)
    assert bundle_command(args, extra) == [sys.executable, "-m", "monai.bundle", *expected]


def test_evaluate_on_real_data_gets_the_default_weights_and_says_which(capsys):
    """Without --ckpt_path, the weights predict uses (evaluate.json's models/model.pt may not exist, e.g. in an
    installed package); on the synthetic default, the synthetic training's model that the config names."""
    from egeunet_monai.engines import default_weights

    args, extra = build_parser().parse_known_args(["evaluate", "--dataset_dir=d"])
    cmd = bundle_command(args, extra)
    printed = capsys.readouterr().out
    assert printed.startswith("weights: ") and printed.count("\n") == 1
    assert cmd[cmd.index("--ckpt_path") + 1] == default_weights(str(REPO_ROOT))
    args, extra = build_parser().parse_known_args(["evaluate"])
    assert "--ckpt_path" not in bundle_command(args, extra)


def test_export_without_ckpt_exports_the_weights_predict_uses(capsys):
    """models/model.pt is not in a checkout or an installed package: export then takes the released weights, as
    predict does, and says which."""
    from egeunet_monai.engines import default_weights

    args, extra = build_parser().parse_known_args(["export"])
    cmd = bundle_command(args, extra)
    printed = capsys.readouterr().out
    assert printed.startswith("weights: ") and printed.count("\n") == 1
    assert cmd[cmd.index("--ckpt_file") + 1] == default_weights(str(REPO_ROOT))


def test_serve_without_the_viewer_extra_names_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `import uvicorn` fails, find_spec finds nothing
    assert main(["serve"]) == 2
    assert "uvicorn not installed: pip install 'egeunet-monai[viewer]'" in capsys.readouterr().err


def test_dry_run_prints_the_command_and_runs_nothing(capsys):
    assert main(["train", "--dry-run", "--max_epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("$ ") and "monai.bundle run training" in out and "--max_epochs 2" in out
