import json
import shutil

import pytest

from unetseg.cli import main as cli


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "--rotate-limit" in capsys.readouterr().out


def test_flags_override_the_config_and_nothing_else(tmp_path):
    args = cli.build_parser().parse_args(["train", "--data", "d", "--out", "o", "--epochs", "2",
                                          "--image-size", "240x160", "--memory-format", "contiguous", "--base-channels", "8"])
    cfg = cli.build_config(args)
    assert (cfg.train.epochs, cfg.data.image_size, cfg.train.memory_format) == (2, (240, 160), "contiguous")
    assert (cfg.model.base_channels, cfg.train.batch_size, cfg.train.lr) == (8, 16, 1e-4)


def test_train_subcommand_calls_fit_with_parsed_values(monkeypatch, tmp_path):
    seen = {}

    def fake_fit(cfg, out, resume, overwrite, keep=None):
        seen.update(cfg=cfg, out=out, resume=resume, overwrite=overwrite)
        return out

    monkeypatch.setattr("unetseg.train.fit", fake_fit)
    assert cli.main(["train", "--data", "d", "--out", str(tmp_path / "r"), "--lr", "0.01", "--overwrite"]) == 0
    assert seen["cfg"].train.lr == 0.01 and seen["cfg"].data.data == "d" and seen["overwrite"] is True


def test_end_to_end_train_evaluate_predict(synthetic_dir, tmp_path, capsys):
    run, flags = tmp_path / "run", ["--base-channels", "4", "--depth", "3", "--image-size", "64x48", "--epochs", "1",
                                    "--batch-size", "8"]
    assert cli.main(["train", "--data", str(synthetic_dir), "--out", str(run), *flags]) == 0
    assert (run / "train.log").read_text().count("epoch 1/1") == 1
    assert cli.main(["evaluate", "--model", str(run), "--data", str(synthetic_dir), "--split", "val",
                     "--out", str(tmp_path / "eval")]) == 0
    assert "mean Dice" in capsys.readouterr().out
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["images"] == 2
    assert cli.main(["predict", "--model", str(run), "--input", str(synthetic_dir / "images"),
                     "--out", str(tmp_path / "pred")]) == 0
    assert len(list((tmp_path / "pred" / "masks").iterdir())) == 24


def test_bad_input_is_one_line_and_exit_code_2(carvana_like, tmp_path, capsys):
    (carvana_like / "train_masks" / "000abc000000_02_mask.gif").unlink()
    code = cli.main(["train", "--data", str(carvana_like), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "000abc000000_02.jpg: no mask" in err and "Traceback" not in err


def test_demo_data(tmp_path):
    assert cli.main(["demo-data", "--out", str(tmp_path / "d"), "--count", "3", "--size", "32x32"]) == 0
    assert len(list((tmp_path / "d" / "masks").iterdir())) == 3


def test_resume_with_more_epochs_extends_the_run(synthetic_dir, tmp_path):
    run = tmp_path / "run"
    flags = ["--base-channels", "4", "--depth", "3", "--image-size", "64x48", "--batch-size", "8"]
    assert cli.main(["train", "--data", str(synthetic_dir), "--out", str(run), "--epochs", "1", *flags]) == 0
    assert cli.main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 2


def test_check_data_exit_codes_and_report(carvana_like, capsys):
    assert cli.main(["check-data", str(carvana_like), "--image-size", "48x32"]) == 0
    out = capsys.readouterr().out
    assert "pairing: stem + _mask, 12 pairs" in out and "palette indices [0, 1]" in out and "ready to train" in out
    (carvana_like / "train_masks" / "001abc000001_02_mask.gif").write_bytes(b"GIF89a broken")
    assert cli.main(["check-data", str(carvana_like), "--image-size", "48x32"]) == 2
    out = capsys.readouterr().out
    assert "error: " + str(carvana_like / "train_masks" / "001abc000001_02_mask.gif") + ": cannot read image" in out


def test_a_file_broken_after_the_run_started_stops_the_resume_and_keeps_last_pt(synthetic_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    run = tmp_path / "run"
    flags = ["--base-channels", "4", "--depth", "3", "--image-size", "64x48", "--batch-size", "8", "--epochs", "2"]
    assert cli.main(["train", "--data", str(data), "--out", str(run), *flags, "--epochs", "1"]) == 0
    before = (run / "last.pt").read_bytes()
    image = data / "images" / "0005.png"
    image.write_bytes(image.read_bytes()[:200])
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{image}: cannot read image" in err
    assert (run / "last.pt").read_bytes() == before


def test_a_new_run_from_an_old_runs_config_plans_afresh(monkeypatch, tmp_path):
    """A budget run's config.json holds its plan, its mask encoding and a micro-batch sized on its machine: a new
    budget run started from it on other data finds and plans those again; what the user set in it stays given."""
    from unetseg.config import RunConfig

    old = RunConfig()
    old.data.data, old.data.image_size, old.data.patch_scale = "old_data", (240, 160), (0.125, 0.125)
    old.data.mask_values, old.data.mask_mode, old.data.rotate_limit = [0, 255], "L", 10.0  # rotate: the user's
    old.data.brightness = 0.2  # the plan's augmentation
    old.model.base_channels, old.model.num_classes = 8, 1
    old.train.budget, old.train.micro_batch, old.train.lr, old.train.max_steps = "5m", 3, 1e-3, 900
    old.train.class_weight_values = [1.0, 3.0]
    old.train.plan = {"chosen": ["base_channels", "image_size", "lr", "batch_size"], "augmentation": {"brightness": 0.2}}
    old.save(tmp_path / "config.json")
    seen = {}

    def fake_fit(cfg, out, resume, overwrite, keep=None):
        seen.update(cfg=cfg, keep=keep)
        return out

    monkeypatch.setattr("unetseg.train.fit", fake_fit)
    assert cli.main(["train", "--config", str(tmp_path / "config.json"), "--data", "new_data", "--out",
                     str(tmp_path / "new"), "--budget", "10m"]) == 0
    cfg, keep = seen["cfg"], seen["keep"]
    assert (cfg.data.mask_values, cfg.data.mask_mode, cfg.train.micro_batch, cfg.train.plan) == (None, None, 0, None)
    assert cfg.train.class_weight_values is None and cfg.data.patch_scale == (1.0, 1.0)
    assert (cfg.model.base_channels, cfg.data.image_size, cfg.train.lr) == (64, (480, 320), 1e-4)  # the defaults
    for chosen in ("model.base_channels", "data.image_size", "train.lr", "train.batch_size", "train.max_steps",
                   "train.micro_batch", "data.mask_values", "data.brightness", "model.num_classes"):
        assert chosen not in keep, chosen
    assert {"data.rotate_limit", "data.data", "train.budget"} <= keep and cfg.data.rotate_limit == 10.0
    # without a budget the old plan's choices are the recipe to train again; what the run derived is found afresh
    old.train.budget = ""
    old.save(tmp_path / "config.json")
    assert cli.main(["train", "--config", str(tmp_path / "config.json"), "--data", "new_data", "--out",
                     str(tmp_path / "again")]) == 0
    cfg, keep = seen["cfg"], seen["keep"]
    assert (cfg.model.base_channels, cfg.data.image_size, cfg.train.lr, cfg.train.max_steps) == (8, (240, 160), 1e-3,
                                                                                                  900)
    assert {"model.base_channels", "data.image_size", "train.max_steps"} <= keep
    assert (cfg.data.mask_values, cfg.train.micro_batch, cfg.train.plan) == (None, 0, None)
    # a resumed run keeps its own config.json whole
    args = cli.build_parser().parse_args(["train", "--resume", str(tmp_path), "--config", str(tmp_path / "config.json")])
    assert cli.build_config(args).train.micro_batch == 3


def test_train_help_groups_every_flag_by_task_the_newcomer_s_first(capsys):
    from unetseg.cli.main import TRAIN_GROUPS, _config_fields

    placed = [name for _, names in TRAIN_GROUPS for name in names]
    assert len(placed) == len(set(placed))
    assert set(_config_fields(("model", "data", "train"))) <= set(placed)  # no config flag left ungrouped
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    first = text.split("start here:")[1].split("\n\n")[0]
    assert all(flag in first for flag in ("--data", "--out", "--budget", "--epochs", "--image-size", "--resume"))
    assert [text.index(f"\n{title}:") for title, _ in TRAIN_GROUPS] == sorted(text.index(f"\n{t}:")
                                                                               for t, _ in TRAIN_GROUPS)
    assert "config (" not in text  # no section left over


@pytest.mark.parametrize("flags, words", [
    (["--schedule", "restarts", "--warmup-steps", "50"], "--warmup-steps is ignored by the restarts schedule"),
    (["--schedule", "cosine", "--restart-epochs", "3"], "--restart-epochs ignored by the cosine schedule"),
    (["--val-data", "elsewhere", "--val-fraction", "0.3", "--split", "blocks"],
     "--val-fraction, --split ignored: the validation folders are the split"),
    (["--patch", "32x32", "--image-size", "64x48"], "--image-size under --patch: the images are resized to 64x48"),
    (["--budget", "5m", "--epochs", "3"], "--epochs set by --budget"),
    (["--encoder", "resnet18", "--base-channels", "8", "--depth", "3"],
     "--base-channels and --depth ignored by --encoder resnet18"),
    (["--encoder", "unet", "--encoder-bn", "fold", "--decoder-channels", "64", "32", "16", "8", "8"],
     "--encoder-bn, --decoder-channels ignored by the plain U-Net"),
    (["--encoder-lr-scale", "0.5", "--decoder-upsample", "nearest"],
     "--encoder-lr-scale, --decoder-upsample ignored by the plain U-Net")])
def test_a_flag_another_makes_void_is_one_warning(flags, words):
    from unetseg.cli.main import build_config, build_parser, given_settings
    from unetseg.config import ignored_settings

    args = build_parser().parse_args(["train", "--out", "r", "--data", "d", *flags])
    lines = ignored_settings(build_config(args), given_settings(args))
    assert len(lines) == 1 and lines[0].startswith(words) and "\n" not in lines[0], lines
