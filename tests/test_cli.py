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

from transferkit.course import cli
from transferkit.course.doctor import format_report, report

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


def test_jupyterlab_starts_with_kernels_that_spin_only_briefly(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERLAB_DIR", str(tmp_path / "lab"))
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # restored after the test
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.chdir(tmp_path)
    started = {}

    def execv(path, command):  # instead of becoming JupyterLab
        started.update(command=command, env=dict(os.environ))
        raise SystemExit(0)

    monkeypatch.setattr(cli.os, "execv", execv)
    monkeypatch.setattr(cli.subprocess, "call", lambda command: execv(None, command))
    with pytest.raises(SystemExit):
        cli.main(["lab", "--no-browser", "--lessons", str(ROOT / "lessons"),
                  "--workdir", str(tmp_path / "mine")])
    assert "lab" in started["command"]
    assert started["env"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert started["env"]["GOMP_SPINCOUNT"] == "3000"


def test_your_own_openmp_setting_wins():
    assert cli.kernel_environment({"PATH": "/bin"}) == {
        "PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "3000"}
    # either setting of yours means neither is added: libgomp's spin count would override
    # an OMP_WAIT_POLICY=ACTIVE you chose
    assert cli.kernel_environment({"OMP_WAIT_POLICY": "ACTIVE"}) == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert cli.kernel_environment({"GOMP_SPINCOUNT": "0"}) == {"GOMP_SPINCOUNT": "0"}


def _course_namespace():
    """course.py's names, read without running its command line (it cannot import transferkit:
    it runs before the course's environment exists)."""
    namespace = {"__name__": "course_under_test", "__file__": str(ROOT / "course.py")}
    exec(compile((ROOT / "course.py").read_text(), "course.py", "exec"), namespace)
    return namespace


def _binder_start_env(**environ):
    """What a process started by binder/start gets, from ``environ`` plus PATH."""
    out = subprocess.run(["bash", str(ROOT / "binder" / "start"), "env"], check=True,
                         capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"], **environ}).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_the_test_command_and_binder_give_kernels_the_same_environment():
    namespace = _course_namespace()
    assert namespace["KERNEL_ENV"] == cli.KERNEL_ENV
    start = ROOT / "binder" / "start"
    assert os.access(start, os.X_OK) and start.read_text().rstrip().endswith('exec "$@"')
    given = _binder_start_env()
    assert {name: given.get(name) for name in cli.KERNEL_ENV} == cli.KERNEL_ENV
    mine = _binder_start_env(OMP_WAIT_POLICY="ACTIVE")
    assert mine["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in mine


def test_the_test_command_gives_kernels_the_same_environment_unless_you_set_one(monkeypatch):
    namespace = _course_namespace()
    started = []
    namespace.update(ensure_venv=lambda extras: None, ensure_chromium=lambda: None,
                     subprocess=type("Stub", (), {"call": staticmethod(
                         lambda command, cwd, env: started.append(env) or 0)}))
    for name in cli.KERNEL_ENV:
        monkeypatch.delenv(name, raising=False)
    assert namespace["test"]([]) == 0
    assert {name: started[-1].get(name) for name in cli.KERNEL_ENV} == cli.KERNEL_ENV
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    namespace["test"]([])
    assert started[-1]["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in started[-1]


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
        [sys.executable, "-m", "transferkit.course.cli", "lab", "--lessons", str(ROOT / "lessons"),
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


# --- transferkit finetune ------------------------------------------------------------------


@pytest.fixture
def digits_file(tmp_path):
    """A practitioner's data file: 120 digit images and their labels, as (x, y) tensors."""
    import torch

    from transferkit.foundations.data import load_digits

    digits = load_digits(images=True)
    path = tmp_path / "digits.pt"
    torch.save((digits.x[:120], digits.y[:120]), path)
    return path


def test_finetune_writes_a_checkpoint_and_metrics(tmp_path, digits_file, capsys):
    from transferkit.training.checkpoint import load_checkpoint
    from transferkit.vision.backbones import small_cnn

    out, metrics = tmp_path / "model.pt", tmp_path / "metrics.csv"
    status = cli.main(["finetune", "--model", "small_cnn", "--data", str(digits_file),
                       "--strategy", "linear_probe", "--epochs", "2", "--batch-size", "32",
                       "--out", str(out), "--metrics", str(metrics)])
    assert status == 0, capsys.readouterr().err
    assert f"wrote {out}" in capsys.readouterr().out
    ckpt = load_checkpoint(out, small_cnn(10))
    assert ckpt["meta"]["strategy"] == "linear_probe" and ckpt["meta"]["processes"] == 1
    assert "head.1.weight" not in ckpt["frozen"] and "conv1.0.weight" in ckpt["frozen"]
    lines = metrics.read_text().splitlines()
    assert lines[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy") and len(lines) == 3


def test_finetune_with_lora_trains_only_adapters_and_head(tmp_path, digits_file, capsys):
    from transferkit.training.checkpoint import read_checkpoint

    out = tmp_path / "lora.pt"
    status = cli.main(["finetune", "--model", "mlp", "--data", str(digits_file), "--strategy",
                       "lora", "--lora-r", "2", "--epochs", "1", "--out", str(out)])
    assert status == 0, capsys.readouterr().err
    ckpt = read_checkpoint(out)
    trained = sorted(set(ckpt["model"]) - set(ckpt["frozen"]))
    assert trained == ["encoder.1.lora_A", "encoder.1.lora_B", "encoder.3.lora_A",
                       "encoder.3.lora_B", "head.bias", "head.weight"], trained
    rows = json.loads(out.with_suffix(".metrics.json").read_text())["epochs"]
    assert [row["stage"] for row in rows] == ["lora"]


def test_finetune_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["finetune", "--help"])
    text = capsys.readouterr().out
    for option in ("--model", "--weights", "--data", "--strategy", "--epochs", "--lr",
                   "--batch-size", "--val", "--test", "--seed", "--device", "--out",
                   "--metrics", "--lora-r", "--lora-alpha", "--lora-targets", "torchrun",
                   "lp_ft", "lora", "resnet18", "weights_only", "--save-diverged"):
        assert option in text


@pytest.mark.parametrize("change, message", [
    ({"--strategy": "lora2"}, "unknown strategy 'lora2'; choose one of scratch"),
    ({"--model": "resnet1"}, "unknown model 'resnet1'; choose one of small_cnn"),
    ({"--data": "nowhere/x.pt"}, "no data file at nowhere/x.pt"),
    ({"--data": "mnist"}, "--data must be one of digits or a .pt file"),
    ({"--metrics": "m.txt"}, "--metrics must end in .json or .csv"),
])
def test_finetune_errors_are_one_line(tmp_path, digits_file, capsys, change, message):
    args = {"--model": "small_cnn", "--data": str(digits_file), "--out": str(tmp_path / "m.pt"),
            "--epochs": "1", **change}
    assert cli.main(["finetune", *[a for pair in args.items() for a in pair]]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"transferkit finetune: {message}") and err.count("\n") == 1
    assert not (tmp_path / "m.pt").exists()


def test_finetune_never_overwrites_and_refuses_bad_files(tmp_path, digits_file, capsys):
    import torch

    out = tmp_path / "model.pt"
    out.write_bytes(b"precious")
    args = ["finetune", "--model", "mlp", "--data", str(digits_file), "--out", str(out)]
    assert cli.main(args) == 2
    assert "already exists; it is never overwritten" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.zeros(3, 4), "y": torch.zeros(3)}, bad)  # float labels
    assert cli.main(["finetune", "--model", "mlp", "--data", str(bad),
                     "--out", str(tmp_path / "new.pt")]) == 2
    assert "y must be integer class labels" in capsys.readouterr().err
    assert cli.main(["finetune", "--model", "small_cnn", "--data", str(bad.with_name("f.pt")),
                     "--out", str(tmp_path / "new.pt")]) == 2
    assert "no data file at" in capsys.readouterr().err
    torch.save((torch.zeros(30, 4), torch.arange(30) % 3), bad.with_name("flat.pt"))
    assert cli.main(["finetune", "--model", "small_cnn", "--data",
                     str(bad.with_name("flat.pt")), "--out", str(tmp_path / "new.pt")]) == 2
    assert "use --model mlp for flat inputs" in capsys.readouterr().err


def finetune(data, *extra):
    """``transferkit finetune`` on ``data`` with a one-epoch MLP: its exit status."""
    return cli.main(["finetune", "--model", "mlp", "--data", str(data), "--epochs", "1", *extra])


@pytest.fixture
def make_data(tmp_path):
    """Write (x, y) to a .pt file, starting from 120 digit images; change them first."""
    import torch

    from transferkit.foundations.data import load_digits

    def make(name, change=None):
        digits = load_digits(images=True)
        x, y = digits.x[:120].clone(), digits.y[:120].clone()
        if change is not None:
            change(x, y)
        torch.save((x, y), tmp_path / name)
        return tmp_path / name
    return make


def test_a_nan_or_inf_in_the_data_stops_the_run_before_training(tmp_path, make_data, capsys):
    nan = make_data("nan.pt", lambda x, y: x[5, 0, 3].fill_(float("nan")))
    out = tmp_path / "model.pt"
    assert finetune(nan, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("transferkit finetune: ") and err.count("\n") == 1
    assert "x holds 8 NaNs (in 1 of its 120 rows, the first at row 5)" in err
    assert "learning rate" not in err and not out.exists()
    inf = make_data("inf.pt", lambda x, y: x[0, 0, 0, 0].fill_(float("inf")))
    assert finetune(inf, "--out", str(out)) == 2
    assert "x holds 1 infinite value" in capsys.readouterr().err and not out.exists()


def test_a_diverged_run_exits_3_and_writes_nothing_unless_asked(tmp_path, digits_file, capsys):
    from transferkit.training.checkpoint import read_checkpoint

    out = tmp_path / "model.pt"
    with pytest.warns(RuntimeWarning, match="diverged|training stopped"):
        assert finetune(digits_file, "--lr", "1e9", "--out", str(out)) == 3
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bars
    assert err.startswith("transferkit finetune: training diverged: the training loss became")
    assert "Lower --lr (it was 1e+09), or pass --save-diverged" in err and "Nothing was" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.pt"]
    with pytest.warns(RuntimeWarning):
        assert finetune(digits_file, "--lr", "1e9", "--out", str(out),
                        "--save-diverged") == 3
    assert "written because of --save-diverged" in capsys.readouterr().err
    assert read_checkpoint(out)["meta"]["diverged"].startswith("training diverged")
    assert "diverged" in json.loads(out.with_suffix(".metrics.json").read_text())


@pytest.mark.parametrize("option, path, words", [
    ("--out", "/proc/m.pt", "--out /proc/m.pt: cannot write in /proc"),
    ("--out", "afile/m.pt", "afile is a file, not a folder"),
    ("--metrics", "afile/m.json", "--metrics {tmp}/afile/m.json: {tmp}/afile is a file"),
])
def test_every_output_path_is_checked_before_any_work(tmp_path, digits_file, capsys,
                                                      monkeypatch, option, path, words):
    def never(*args, **kwargs):
        raise AssertionError("the data were read before the outputs were checked")

    monkeypatch.setattr(cli, "load_data", never)
    (tmp_path / "afile").write_text("mine")
    monkeypatch.chdir(tmp_path)
    path = path if path.startswith("/") else str(tmp_path / path)
    args = {"--out": str(tmp_path / "model.pt"), option: path}
    assert finetune(digits_file, *[a for pair in args.items() for a in pair]) == 2
    err = capsys.readouterr().err
    assert words.format(tmp=tmp_path) in err and err.count("\n") == 1, err
    assert (tmp_path / "afile").read_text() == "mine" and not (tmp_path / "model.pt").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_a_folder_you_cannot_write_to_is_refused_before_any_work(tmp_path, digits_file, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert finetune(digits_file, "--out", str(locked / "m.pt")) == 2
        assert "cannot write in" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_a_run_that_fails_while_writing_leaves_nothing_behind(tmp_path, digits_file, capsys,
                                                              monkeypatch):
    def full_disk(path, *args, **kwargs):
        path.write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "write_metrics", full_disk)
    out = tmp_path / "out" / "model.pt"
    assert finetune(digits_file, "--out", str(out)) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bars
    assert err == ("transferkit finetune: could not write the outputs (No space left on "
                   "device); nothing was written.")
    assert list((tmp_path / "out").iterdir()) == []  # no checkpoint, no half a metrics file
    monkeypatch.undo()
    assert finetune(digits_file, "--out", str(out)) == 0  # so a rerun is not refused


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_that_is_not_there_is_a_one_line_error(tmp_path, digits_file, capsys):
    assert finetune(digits_file, "--device", "cuda", "--out",
                    str(tmp_path / "m.pt")) == 2
    err = capsys.readouterr().err
    assert err == ("transferkit finetune: --device cuda cannot be used: PyTorch sees no CUDA GPU "
                   "here. Use --device cpu, or leave --device out for the best device there "
                   "is.\n")


def test_weights_for_a_model_without_any_are_refused(tmp_path, digits_file, capsys):
    for model in ("mlp", "small_cnn"):
        assert cli.main(["finetune", "--model", model, "--weights", "DEFAULT", "--data",
                         str(digits_file), "--out", str(tmp_path / "m.pt")]) == 2
        assert f"--weights DEFAULT: {model} has no pre-trained weights" in \
            capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("label, words", [
    (10**9, "y runs from 0 to 1000000000, but 999,999,990 of those 1,000,000,001 classes "
            "have no example (10 … 999999999). Number the classes 0 … 10"),
    (100_000, "y runs from 0 to 100000, but 99,990 of those 100,001 classes have no example"),
    (-1, "y holds the negative label -1"),
])
def test_labels_with_gaps_are_refused_before_a_head_is_built(tmp_path, make_data, capsys,
                                                               label, words):
    data = make_data("labels.pt", lambda x, y: y[:12].fill_(label))  # 12: the split stratifies
    assert finetune(data, "--out", str(tmp_path / "m.pt")) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and not (tmp_path / "m.pt").exists()


def test_a_data_file_with_pickled_objects_gets_the_safe_advice(tmp_path, capsys):
    import numpy as np
    import torch

    path = tmp_path / "arrays.pt"
    torch.save((np.zeros((4, 3), dtype=np.float32), torch.arange(4)), path)
    assert finetune(path, "--out", str(tmp_path / "m.pt")) == 2
    err = capsys.readouterr().err
    assert "holds a Python object (numpy" in err and "could run code" in err
    assert "will likely succeed" not in err and "do not retry with weights_only=False" in err
    assert "torch.save((torch.as_tensor(x), torch.as_tensor(y)), path)" in err
    assert "\x1b" not in err and err.count("\n") == 1


def test_python_dash_m_transferkit_is_the_command():
    result = subprocess.run([sys.executable, "-m", "transferkit", "finetune", "--model", "nope",
                             "--data", "digits", "--out", "never.pt"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("transferkit finetune: unknown model 'nope'")
    assert not (ROOT / "never.pt").exists()
