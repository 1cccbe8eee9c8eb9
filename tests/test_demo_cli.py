"""``unildiff demo``'s refusals before it serves anything (the served page: tests/test_demo_browser.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from unildiff.cli import app
from unildiff.cli.demo import parse_auth
from unildiff.errors import ConfigError


def test_auth_is_user_colon_password():
    assert parse_auth("alice:s3:cret") == ("alice", "s3:cret")
    assert parse_auth(None) is None and parse_auth("") is None
    for bad in ("alice", ":s3cret", "alice:"):
        with pytest.raises(ConfigError, match="must be USER:PASSWORD"):
            parse_auth(bad)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--auth", "alice"], "error: --auth (or UNILDIFF_DEMO_AUTH) must be USER:PASSWORD"),
        (["--port", "0"], "error: --port must be in 1..65535, got 0"),
        (["--max-pixels", "0"], "error: --max-pixels must be ≥ 1, got 0"),
    ],
)
def test_bad_options_are_refused_in_one_line(arguments, message):
    result = CliRunner().invoke(app, ["demo", *arguments])
    assert result.exit_code == 1
    assert result.output.strip().startswith(message), result.output


def test_a_missing_model_names_the_folder(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--model", str(tmp_path / "absent")])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "absent" in result.output, result.output
