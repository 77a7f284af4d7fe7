import os
import stat
import subprocess
import sys

import pytest

from pipeline import keys
from pipeline.config import Options, resolve
from pipeline.errors import PipelineError
from pipeline.run import STAGES, main


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_help_lists_every_stage_and_the_contract_options():
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.run", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for stage in STAGES:
        assert f"  {stage} " in out
    for option in ("--stage", "--config", "--raw", "--key", "--store", "--weights", "--arch",
                   "--bundle", "--workers", "--scheduler"):
        assert option in out


def test_unknown_stage_is_a_clear_error(capsys):
    assert main(["--stage", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown stage 'nope'" in err and "keygen" in err


def test_missing_input_names_the_file(capsys):
    assert main(["--stage", "encrypt-weights"]) == 2
    assert "data/raw/weights/vit_tiny_patch16_384.safetensors: not found" in capsys.readouterr().err


def test_keygen_writes_a_private_key_once(capsys):
    assert main(["--stage", "keygen", "--key", "k.json", "--block-size", "8"]) == 0
    assert stat.S_IMODE(os.stat("k.json").st_mode) == 0o600
    assert keys.load("k.json").block_size == 8
    assert main(["--stage", "keygen", "--key", "k.json"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_defaults_live_under_data():
    o = Options()
    for path in (o.raw, o.key_path, o.store, o.weights_path, o.encrypted_weights, o.bundle):
        assert path.startswith("data/")
    assert o.workers == os.cpu_count()


def test_flags_override_the_config_file(tmp_path):
    config = tmp_path / "owner.toml"
    config.write_text('raw = "/cityscapes"\nworkers = 7\non-error = "skip"\n[storage_options]\nanon = true\n')
    o = resolve(config, {"workers": 3, "raw": None})
    assert (o.raw, o.workers, o.on_error, o.storage_options) == ("/cityscapes", 3, "skip", {"anon": True})


@pytest.mark.parametrize(
    "text, message",
    [("colour = 1\n", "unknown option"), ("workers = 'many'\n", "must be int"), ("= broken", "not a readable")],
)
def test_bad_config_files_name_the_file(tmp_path, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(PipelineError, match=message) as error:
        resolve(config, {})
    assert str(config) in str(error.value)


def test_missing_config_file(capsys):
    assert main(["--stage", "keygen", "--config", "absent.toml"]) == 2
    assert "absent.toml: config file not found" in capsys.readouterr().err


def test_verify_scans_for_the_key_only_when_given_one(caplog):
    caplog.set_level("INFO", logger="pipeline")
    assert main(["--stage", "all", "--sample-counts", "2,1,0", "--sample-size", "32x64", "--workers", "1"]) == 0
    assert main(["--stage", "verify"]) == 0  # the owner's key file is right here, and not used
    assert "key scan skipped" in caplog.text
    caplog.clear()
    assert main(["--stage", "verify", "--key", "data/owner/key.json"]) == 0
    assert "no key material" in caplog.text
