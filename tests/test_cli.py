"""The command line, the environment report and the IPython magics."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from transferkit import cli
from transferkit.doctor import format_report, report

ROOT = Path(__file__).resolve().parents[1]


def test_doctor_report_names_versions_device_and_widgets():
    facts = report()
    text = format_report(facts)
    assert facts["versions"]["torch"] and facts["device"] == "cpu"
    for needle in ("torch", "torchvision", "ipywidgets", "training device", "widgets render"):
        assert needle in text
    assert facts["widgets_ok"] and "All good" in text


def test_doctor_reports_a_bad_device_setting(monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_DEVICE", "gpu0")
    facts = report()
    assert facts["device"] == "unusable"
    assert any("not a device name" in p for p in facts["problems"])
    assert "Problems:" in format_report(facts)


def test_doctor_command_line(capsys):
    assert cli.main(["doctor"]) == 0
    assert "transferkit environment report" in capsys.readouterr().out


def test_magics_register_and_run(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "transferkit")
    shell.run_line_magic("transferkit_doctor", "")
    assert "training device" in capsys.readouterr().out
    shell.run_line_magic("transferkit_seed", "3")
    assert "seeded" in capsys.readouterr().out
    shell.run_line_magic("transferkit_seed", "x")
    assert "usage" in capsys.readouterr().out


def test_lab_command_binds_loopback_with_token(tmp_path):
    command = cli.lab_command(tmp_path, 8899, "abc", open_browser=False)
    assert "--ServerApp.ip=127.0.0.1" in command and "--IdentityProvider.token=abc" in command
    assert f"--ServerApp.root_dir={tmp_path}" in command
    assert "--ServerApp.open_browser=False" in command


def test_lab_dry_run_syncs_and_prints_the_address(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JUPYTERLAB_DIR", str(tmp_path / "lab"))  # not this venv's JupyterLab
    assert cli.main(["lab", "--dry-run", "--lessons", str(ROOT / "lessons"),
                     "--workdir", str(tmp_path / "mine")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"http://127\.0\.0\.1:\d+/lab/tree/00_welcome\.ipynb\?token=\w{48}", out)
    assert (tmp_path / "mine" / "00_welcome.ipynb").exists()
    overrides = json.loads((tmp_path / "lab" / "settings" / "overrides.json").read_text())
    assert overrides == cli.LAB_SETTINGS


def test_lab_settings_go_into_the_environment_and_keep_other_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("JUPYTERLAB_DIR", raising=False)
    path = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    assert cli.lab_settings_path(tmp_path) == path
    path.parent.mkdir(parents=True)
    theirs = {"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"},
              "@jupyterlab/apputils-extension:notification": {"doNotDisturbMode": True}}
    path.write_text(json.dumps(theirs))
    assert cli.install_lab_settings(tmp_path) == path
    merged = json.loads(path.read_text())
    assert merged["@jupyterlab/apputils-extension:themes"] == {"theme": "JupyterLab Dark"}
    assert merged["@jupyterlab/apputils-extension:notification"] == {
        "doNotDisturbMode": True, "fetchNews": "false", "checkForUpdates": False}
    before = path.stat().st_mtime_ns
    cli.install_lab_settings(tmp_path)  # nothing to change: not rewritten
    assert path.stat().st_mtime_ns == before
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        cli.install_lab_settings(tmp_path)


def test_lab_with_missing_lessons_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["lab", "--dry-run", "--lessons", str(tmp_path / "x"),
                     "--workdir", str(tmp_path / "w")]) == 2
    assert "no lessons folder" in capsys.readouterr().err


def test_lab_really_serves_jupyterlab_headless(tmp_path):
    """The README's first command ends in this: JupyterLab on loopback, token required."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "cfg")
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    env["PYTHONPATH"] = str(ROOT)  # this checkout's transferkit, even from another worktree
    proc = subprocess.Popen(
        [sys.executable, "-m", "transferkit.cli", "lab", "--lessons", str(ROOT / "lessons"),
         "--workdir", str(tmp_path / "mine")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
        start_new_session=True,
    )
    try:
        url = None
        while url is None:
            line = proc.stdout.readline()
            assert line, "transferkit lab exited before printing an address"
            match = re.search(r"http://127\.0\.0\.1:(\d+)/\S+token=(\w+)", line)
            if match:
                url, port, token = match.group(0), match.group(1), match.group(2)
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5) as r:
                    assert r.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.time() < deadline, "JupyterLab did not answer within 60 s"
                time.sleep(0.5)
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents", timeout=5)
        assert denied.value.code == 403
        with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/api/contents/00_welcome.ipynb?token={token}") as r:
            assert r.status == 200
        # the course's settings: JupyterLab will neither ask about news nor check for updates
        plugin = "@jupyterlab/apputils-extension:notification"
        with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/lab/api/settings/{plugin}?token={token}") as r:
            schema = json.loads(r.read())["schema"]  # overrides become the schema's defaults
        defaults = {k: v.get("default") for k, v in schema["properties"].items()}
        assert defaults["fetchNews"] == "false" and defaults["checkForUpdates"] is False
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
