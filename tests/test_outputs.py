"""No stage can destroy an owner file: every stage and entry point that writes goes through one guard,
which refuses to write over a key file, a signer file, or a file of another kind, and writes atomically."""

import json
import stat

import pytest

from contract.errors import UserError
from contract.outputs import OutputKind, check_output, guarded_path, kind_of, write_file, write_new
from contract.signing import save_signer
from pipeline import keys
from pipeline.run import main as owner_main
from pipeline.weights import encrypt_checkpoint
from training import export as export_cli
from training import test as test_cli

pytest_plugins = ["training_fixtures"]


@pytest.fixture
def owner_files(owner, tmp_path):
    """The owner's key and signer files, as the owner keeps them."""
    key_file = keys.save(owner.key, tmp_path / "owner" / "key.json")
    signer_file = save_signer(owner.key.signer(), tmp_path / "owner" / "signer.json")
    return key_file, signer_file


def snapshot(*paths):
    return {path: path.read_bytes() for path in paths}


def test_kinds_are_told_from_the_first_bytes(owner, owner_files):
    key_file, signer_file = owner_files
    assert kind_of(key_file.read_bytes()) is OutputKind.KEY
    assert kind_of(signer_file.read_bytes()) is OutputKind.SIGNER
    assert kind_of(owner.encrypted.joinpath("backbone.safetensors").read_bytes()[:4096]) is OutputKind.CHECKPOINT
    assert kind_of(b"\x89PNG\r\n\x1a\n....") is OutputKind.PNG
    assert kind_of(b'{"aAcc": 1}') is OutputKind.JSON
    assert kind_of(b"# report\n") is OutputKind.TEXT
    assert kind_of(b"\x00\x01binary") is OutputKind.OTHER


def test_the_guard_refuses_owner_files_other_kinds_links_and_folders(owner_files, tmp_path):
    key_file, signer_file = owner_files
    for path in (key_file, signer_file):
        for kind in OutputKind:
            with pytest.raises(UserError, match="holds the owner's (key|signer) file; refusing"):
                check_output(path, kind)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="a text report, not a safetensors checkpoint; refusing to write over it"):
        check_output(tmp_path / "notes.txt", OutputKind.CHECKPOINT)
    (tmp_path / "link").symlink_to(tmp_path / "notes.txt")
    with pytest.raises(UserError, match="a symbolic link"):
        check_output(tmp_path / "link", OutputKind.TEXT)
    with pytest.raises(UserError, match="not a regular file"):
        check_output(tmp_path / "owner", OutputKind.PNG)
    check_output(tmp_path / "notes.txt", OutputKind.TEXT)  # the same kind: may be replaced
    check_output(tmp_path / "new.png", OutputKind.PNG)  # nothing there


def test_a_guarded_write_is_whole_or_absent(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    with pytest.raises(RuntimeError), guarded_path(target, OutputKind.JSON) as temporary:
        temporary.write_bytes(b'{"half":')
        raise RuntimeError("killed")
    assert not target.exists() and list(target.parent.iterdir()) == []  # no temporary left behind
    write_file(target, b'{"aAcc": 1}', OutputKind.JSON, private=True)
    assert json.loads(target.read_bytes()) == {"aAcc": 1} and stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(UserError, match="exists; refusing to replace it"):
        write_new(target, b"{}", OutputKind.KEY, mode=0o600)


def run(main, argv, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    return code, lines[-1] if lines else ""


@pytest.mark.parametrize("target", ["key", "signer"])
def test_no_owner_stage_writes_over_the_key_or_the_signer(owner, owner_files, tmp_path, capsys, target):
    """encrypt-weights, decrypt-weights and encrypt-weights --checkpoint pointed at the owner's key or signer
    file: one line, exit 2, and both files as they were."""
    key_file, signer_file = owner_files
    victim = key_file if target == "key" else signer_file
    before = snapshot(key_file, signer_file)
    exported = tmp_path / "model.safetensors"
    encrypt_checkpoint(owner.weights, owner.arch, owner.key, exported)
    common = ["--key", key_file]
    runs = [
        ["--stage", "encrypt-weights", *common, "--weights", owner.weights, "--arch", owner.arch, "--encrypted-weights", victim],
        ["--stage", "decrypt-weights", *common, "--checkpoint", exported, "--out", victim],
        ["--stage", "encrypt-weights", *common, "--checkpoint", owner.plain / "backbone.safetensors", "--out", victim],
    ]
    for argv in runs:
        code, err = run(owner_main, argv, capsys)
        assert code == 2 and "refusing to write" in err and str(victim) in err, (argv, err)
    assert snapshot(key_file, signer_file) == before


def test_encrypt_query_never_writes_over_an_owner_file_of_its_output_name(owner, owner_files, tmp_path, capsys):
    key_file, _ = owner_files
    query = next((owner.raw / "leftImg8bit" / "val").rglob("*.png"))
    out = tmp_path / "queries"
    out.mkdir()
    (out / f"{query.stem}.png").write_bytes(key_file.read_bytes())  # a copy of the key where a query would go
    code, err = run(owner_main, ["--stage", "encrypt-query", "--key", key_file, "--query", query, "--out", out], capsys)
    assert code == 2 and "holds the owner's key file" in err
    assert (out / f"{query.stem}.png").read_bytes() == key_file.read_bytes()


def test_keygen_refuses_before_it_writes_anything(tmp_path, capsys):
    """Another owner's signer file where the new key's would go: refused, and no key written."""
    assert owner_main(["--stage", "keygen", "--key", str(tmp_path / "a" / "key.json")]) == 0
    signer = tmp_path / "a" / "signer.json"
    code, err = run(owner_main, ["--stage", "keygen", "--key", tmp_path / "b" / "key.json", "--signer", signer], capsys)
    assert code == 2 and "a signer file is already there" in err
    assert not (tmp_path / "b" / "key.json").exists()


def test_no_cloud_command_writes_over_an_owner_file(owner, owner_files, tmp_path, capsys):
    """training.export --out and training.test --out pointed at the key or signer file: refused, one line."""
    key_file, signer_file = owner_files
    before = snapshot(key_file, signer_file)
    trained = tmp_path / "nothing.pth"  # refused before the checkpoint is read
    trained.write_bytes(b"x")
    for victim in (key_file, signer_file):
        code, err = run(export_cli.main, [trained, "--out", victim], capsys)
        assert code == 2 and "refusing to write a safetensors checkpoint" in err
        config = "training/configs/tiny/setr_tiny_naive_proposed.py"
        code, err = run(test_cli.main, [config, trained, "--bundle", owner.bundles["encrypted"], "--out", victim], capsys)
        assert code == 2 and "refusing to write a JSON document" in err
    assert snapshot(key_file, signer_file) == before
