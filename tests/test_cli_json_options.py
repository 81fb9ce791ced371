"""A JSON-valued command-line option that is not a JSON object is one error line naming that option."""

import pytest

from objguided.cli import main


@pytest.mark.parametrize("argv, option", [
    (["convert", "--spec", "{nuclei", "--out", "unused"], "--spec"),
    (["train", "--method", "watershed", "--params", "[1, 2]", "--data", "unused", "--split", "unused.json",
      "--seed", "0", "--out", "unused.pt"], "--params"),
    (["report", "--runs", "{", "--out", "unused"], "--runs"),
])
def test_bad_json_names_its_option(argv, option, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written; if it were, it lands here
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"objguided {argv[0]}: error: {option} "), err
    assert not any(tmp_path.iterdir())
