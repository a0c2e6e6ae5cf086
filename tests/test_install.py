"""A built wheel is complete: installed into a fresh venv (not editable), it checks
its configuration and files a first mail from a working directory that holds a
`connector/` folder, like /etc with the documented /etc/connector."""

import json
import os
import shutil
import signal
import site
import subprocess
import sys
import venv

import pytest

from conftest import ROOT, STAFF_YAML, Sink, free_port, make_mail, wait_for

BUILD_IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "var", "*.egg-info", "__pycache__",
                                      ".pytest_cache", "tests", "bench", "shipped")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A venv holding only the wheel built from this tree; its dependencies come from
    the test venv's site-packages (a path entry, so its editable connector stays out)."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=BUILD_IGNORE)  # a clean tree: no stale build/ in the wheel
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(base / "wheels"), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next((base / "wheels").glob("connector-*.whl"))
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(purelib, "test-dependencies.pth"), "w") as handle:
        handle.write("\n".join(site.getsitepackages()) + "\n")
    return env_dir


def run(env_dir, *args, cwd, **kwargs):
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([str(env_dir / "bin" / "connector"), *args], cwd=cwd, env=env, capture_output=True,
                          timeout=60, **kwargs)


def test_wheel_ships_templates_rules_example_config_and_the_unit(installed):
    code = "import connector, connector.settings.shipped as s; print(connector.__file__); print(s.SHIPPED_DIR)"
    out = subprocess.run([str(installed / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         check=True, cwd="/").stdout.split()
    assert out[0].startswith(str(installed))                # the wheel's copy, not the source tree
    shipped = installed.joinpath(out[1])
    for name in ("templates/auto_response.txt.j2", "templates/inbound_notice.txt.j2", "rules/quotes.yaml",
                 "config/staff.yaml", "config/scanners.yaml.example", "connector.ini.example",
                 "systemd/connector.service"):
        assert (shipped / name).read_bytes() == (ROOT / name).read_bytes(), name


def test_installed_wheel_checks_config_and_files_a_first_mail(installed, tmp_path):
    sink = Sink()
    sink.start()
    etc = tmp_path / "etc"
    conf = etc / "connector"                                   # cwd is etc/, which holds a connector/ folder
    conf.joinpath("config").mkdir(parents=True)
    conf.joinpath("config", "staff.yaml").write_text(STAFF_YAML)
    port = free_port()
    conf.joinpath("connector.ini").write_text(
        "[connector]\npublic_address = support@example.com\n"
        f"database = {tmp_path / 'lib' / 'connector.db'}\n"
        f"[smtp]\nlisten = 127.0.0.1:{port}\n"
        f"[outbound]\nrelay = 127.0.0.1:{sink.port}\nretry_initial = 0.2\n")
    ini = "connector/connector.ini"
    proc = None
    try:
        result = run(installed, "-c", ini, "check-config", cwd=etc)
        assert result.returncode == 0, result.stderr.decode()
        assert b"configuration OK" in result.stdout
        log = open(tmp_path / "daemon.log", "wb")
        proc = subprocess.Popen([str(installed / "bin" / "connector"), "-c", ini, "run"], cwd=etc,
                                env={"PATH": f"{installed / 'bin'}:/usr/bin:/bin"}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

        def sent():
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            try:
                import smtplib
                with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
                    smtp.send_message(make_mail(subject="First mail"))
                return True
            except OSError:
                return False
        wait_for(sent, 20, what="the installed daemon to accept a mail")
        tickets = wait_for(lambda: json.loads(run(installed, "-c", ini, "tickets", "list", "--json",
                                                  cwd=etc).stdout or "[]"), 20, what="a filed ticket")
        assert tickets[0]["subject"] == "First mail"
        wait_for(lambda: sink.to("ann@acme.example"), 20, what="the auto-response at the relay")
        assert b"Please type your reply above this line" in sink.to("ann@acme.example")[0][2]
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        sink.stop()


@pytest.mark.sqlite_only("the modes of SQLite's files")
def test_files_holding_mail_are_created_0600(daemon):
    """Database, spool, their WAL and SHM files and the key: 0600 even under a umask of 022."""
    os.umask(0o022)
    daemon.send(make_mail(subject="Private"))
    daemon.wait_processed(1)
    var = daemon.path / "var"
    names = ["connector.db", "connector.db-wal", "connector.db-shm", "connector-spool.db",
             "connector-spool.db-wal", "connector-spool.db-shm", "hmac.key"]
    modes = {name: oct((var / name).stat().st_mode & 0o777) for name in names}
    assert modes == {name: "0o600" for name in names}
    assert oct(var.stat().st_mode & 0o777) == "0o700"
