"""Warnings: one logger, one line each, printed by the CLI as `zoetrope: warning: ...`."""

import logging
import warnings

from zoetrope import log
from zoetrope.cli import main
from zoetrope.data.folder import CaptionFolder


def test_warn_is_one_line_on_the_zoetrope_logger(caplog):
    with caplog.at_level(logging.WARNING, logger="zoetrope"):
        log.warn("first line\nsecond line")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("zoetrope", "WARNING", "first line second line")]


def test_the_cli_prints_warnings_as_one_prefixed_line(capsys):
    main(["info", "DiT-S/2"])  # any command configures the handler
    capsys.readouterr()
    log.warn("something to know")
    assert capsys.readouterr().err == "zoetrope: warning: something to know\n"


def test_a_skipped_clip_is_logged_not_a_python_warning(tmp_path, caplog):
    (tmp_path / "a.mp4").write_bytes(b"junk")
    (tmp_path / "a.txt").write_text("junk")
    (tmp_path / "b.mp4").write_bytes(b"junk")  # and no caption
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Python warning would raise here
        try:
            CaptionFolder(tmp_path)
        except ValueError:
            pass
    lines = [r.getMessage() for r in caplog.records if r.name == "zoetrope"]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert any("a.mp4" in line for line in lines) and any("no caption file b.txt" in line for line in lines)
