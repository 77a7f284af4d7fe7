import os
import re
import stat
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from pipeline import keys
from pipeline.config import OUT_DEFAULTS, Options, resolve
from pipeline.errors import OnError, PipelineError
from pipeline.run import main


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_help_shows_every_default_and_each_shown_default_is_the_default():
    """Every option that has a default shows it in --help, as the option takes it: given back as that option,
    it changes nothing."""
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.run", "--help"], capture_output=True, text=True, check=True,
        env={**os.environ, "COLUMNS": "1000"},  # one line per option
    ).stdout  # fmt: skip
    out = re.sub(r"\n {20,}", " ", out)  # an option whose name is long has its help on the next line
    shown = {name.replace("-", "_"): value for name, value in re.findall(r"^  --([a-z-]+) .*\(default: (\S+)\)$", out, re.M)}
    defaults = Options()
    values = {f.name: getattr(defaults, f.name) for f in fields(Options)}
    has_default = {name for name, value in values.items() if value is not False and value not in (None, (), {})}
    assert shown.keys() == has_default | {"key", "signer", "weights"}  # the paths derived when not given, too

    def effective(o: Options) -> dict:
        return {**asdict(o), "key": o.key_path, "signer": o.signer_path, "weights": o.weights_path}

    for name, value in shown.items():
        assert effective(resolve(None, {name: value})) == effective(defaults), name
    assert all(shown[name].startswith("data/") for name in ("raw", "key", "signer", "store", "weights", "bundle"))
    (line,) = (line for line in out.splitlines() if line.startswith("  --out "))
    assert all(path in line for path in OUT_DEFAULTS.values())


def test_messages_count_in_words(tmp_path, caplog):
    caplog.set_level("INFO", logger="pipeline")
    assert main(["--stage", "sample", "--raw", "raw", "--sample-counts", "1,0,0", "--sample-size", "32x64"]) == 0
    assert main(["--stage", "keygen", "--key", "k.json"]) == 0
    (image,) = Path("raw").rglob("*_leftImg8bit.png")
    assert main(["--stage", "encrypt-query", "--key", "k.json", "--query", str(image), "--out", "q"]) == 0
    assert "wrote 1 sample image under raw" in caplog.text and "wrote 1 encrypted query to q" in caplog.text


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


def test_flags_override_the_config_file(tmp_path):
    config = tmp_path / "owner.toml"
    config.write_text('raw = "/cityscapes"\nworkers = 7\non-error = "skip"\n[storage_options]\nanon = true\n')
    o = resolve(config, {"workers": 3, "raw": None})
    assert (o.raw, o.workers, o.on_error, o.storage_options) == ("/cityscapes", 3, OnError.SKIP, {"anon": True})


@pytest.mark.parametrize(
    "text, message",
    [
        ("colour = 1\n", "unknown option"),
        ("workers = 'many'\n", "option workers 'many': expected a whole number"),
        ("sample-counts = [8, 4]\n", "option sample-counts \\[8, 4\\]: expected 3 whole numbers"),
        ("on-error = 'ignore'\n", "option on-error 'ignore': expected 'fail' or 'skip'"),
        ("= broken", "not a readable"),
    ],
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


SMALL = ["--sample-counts", "2,1,0", "--sample-size", "32x64", "--workers", "1"]


def test_stage_all_publishes_a_signed_bundle_and_says_what_the_cloud_gets(capsys, caplog):
    caplog.set_level("INFO", logger="pipeline")
    assert main(["--stage", "all", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "the bundle       data/bundle" in out and "the signer file  data/owner/signer.json" in out
    assert stat.S_IMODE(os.stat("data/owner/signer.json").st_mode) == 0o644  # public
    assert main(["--stage", "verify"]) == 0  # no signer given: integrity only, and it says so
    assert "authenticity NOT checked" in caplog.text
    caplog.clear()
    assert main(["--stage", "verify", "--signer", "data/owner/signer.json"]) == 0
    assert "signed by owner" in caplog.text
    caplog.clear()
    assert main(["--stage", "verify", "--key", "data/owner/key.json"]) == 0
    assert "no object holds any form of the key" in caplog.text
    keys.save(keys.generate(), "other/key.json")
    from contract.signing import save_signer

    save_signer(keys.load("other/key.json").signer(), "other/signer.json")
    assert main(["--stage", "verify", "--signer", "other/signer.json"]) == 2
    assert "not signed by owner" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, missing",
    [
        (["--raw", "typo/cityscapes"], "typo/cityscapes"),
        (["--key", "typo.json"], "data/raw/cityscapes"),
        (["--weights", "typo.safetensors"], "data/raw/cityscapes"),
    ],
)
def test_stage_all_never_invents_inputs(capsys, flags, missing):
    """A given path that does not exist is an error: no sample, no key, no bundle is made up in its place."""
    assert main(["--stage", "all", *SMALL, *flags]) == 2
    assert f"{missing}: not found" in capsys.readouterr().err
    assert not os.path.exists("data")


def test_stage_all_never_makes_a_key_in_place_of_a_mistyped_one(capsys):
    assert main(["--stage", "sample", "--sample-counts", "2,1,0", "--sample-size", "32x64"]) == 0
    assert main(["--stage", "all", *SMALL, "--key", "typo.json"]) == 2
    assert "typo.json: not found" in capsys.readouterr().err
    assert not os.path.exists("typo.json") and not os.path.exists("data/bundle") and not os.path.exists("data/owner")


def test_stage_all_with_demo_generates_where_it_is_told(capsys):
    flags = ["--raw", "mine/cityscapes", "--key", "mine/key.json", "--weights", "mine/vit.safetensors", "--demo"]
    assert main(["--stage", "all", *SMALL, *flags, "--store", "mine/store.zarr", "--encrypted-weights",
                 "mine/backbone.safetensors", "--bundle", "mine/bundle"]) == 0  # fmt: skip
    assert os.path.isfile("mine/key.json") and os.path.isfile("mine/signer.json") and os.path.isfile("mine/vit.safetensors")
    assert os.path.isfile("mine/bundle/manifest.json") and not os.path.exists("data")


def test_stage_sample_writes_only_under_the_paths_it_was_given():
    assert main(["--stage", "sample", "--raw", "elsewhere", "--sample-counts", "1,0,0", "--sample-size", "32x64"]) == 0
    assert os.path.isdir("elsewhere/leftImg8bit") and not os.path.exists("data")


def test_keygen_writes_the_signer_beside_the_key_and_refuses_store_and_bundle_folders(capsys):
    assert main(["--stage", "keygen", "--key", "owner/key.json"]) == 0
    assert keys.load("owner/key.json").signer().fingerprint in open("owner/signer.json").read()
    assert main(["--stage", "keygen", "--key", "shared/key.json", "--bundle", "shared"]) == 2
    assert "inside the dataset store or bundle" in capsys.readouterr().err
    assert not os.path.exists("shared/key.json")


def test_bad_numbers_are_refused(capsys):
    assert main(["--stage", "augment", "--out", "aug", "--copies", "-1"]) == 2
    assert "--copies '-1': must be at least 1" in capsys.readouterr().err
    assert main(["--stage", "sample", "--sample-size", "256by512"]) == 2
    assert "--sample-size '256by512': expected 2 whole numbers separated by 'x'" in capsys.readouterr().err


def test_object_storage_without_credentials_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.run", "--stage", "verify", "--bundle", "s3://no-such-bucket-cipherseg/bundle"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "credentials" in lines[0] and "Traceback" not in done.stderr


def test_a_corrupt_png_is_one_line_in_the_stage_and_in_its_workers(tmp_path):
    from pipeline.sample import write_sample

    write_sample(tmp_path / "raw", counts={"train": 1, "val": 1}, size=(32, 64))
    (image,) = (tmp_path / "raw" / "leftImg8bit" / "train").glob("*/*.png")
    image.write_bytes(image.read_bytes()[:100])  # the header survives: found when decoding
    key = keys.generate()
    keys.save(key, tmp_path / "key.json")
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_LOG_LEVEL"}
    for stage in (["encrypt-query", "--query", image, "--out", tmp_path / "q"],  # decodes in this process
                  ["encrypt", "--raw", tmp_path / "raw", "--store", tmp_path / "s.zarr", "--workers", "1"]):  # in a worker
        command = [sys.executable, "-m", "pipeline.run", "--stage", *stage, "--key", tmp_path / "key.json"]
        done = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [f"error: {image}: cannot decode PNG (truncated or corrupt)"]
