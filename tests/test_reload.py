"""--reload: which files are watched, and the real command restarting its worker.

The process tests edit the application's source under a running
``python -m aserve app:app --reload`` and poll its answers; they run once with
the polling watcher (``--reload-poll``) and once with watchfiles when it is
installed.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_supervisor import WAIT_S, Launch, Supervised, app_dir, environment, launch, until

from aserve.supervisor import FileFilter, PollingWatcher, ReloadOptions

__all__ = ["app_dir", "launch"]  # fixtures shared with test_supervisor

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork and POSIX signals")

HAS_WATCHFILES = importlib.util.find_spec("watchfiles") is not None

# --------------------------------------------------------------------------- which files


def test_filter_takes_the_includes_and_leaves_out_excluded_files_and_folders(
    tmp_path: Path,
) -> None:
    files = FileFilter(
        ReloadOptions(
            dirs=(str(tmp_path),),
            includes=("*.py", "templates/*.html"),
            excludes=(*ReloadOptions().excludes, "generated_*"),
        )
    )
    wanted = ["app.py", "pkg/mod.py", "templates/index.html"]
    unwanted = [
        "notes.txt",
        "pkg/mod.pyc",
        "pkg/__pycache__/mod.py",
        ".venv/lib/site.py",
        "venv/lib/site.py",
        "node_modules/x/y.py",
        ".hidden/app.py",
        ".app.py.swp",
        "generated_models.py",
        "static/index.html",
    ]
    assert [p for p in wanted if not files.wanted(str(tmp_path / p))] == []
    assert [p for p in unwanted if files.wanted(str(tmp_path / p))] == []
    assert not files.wanted("/somewhere/else/app.py")


def test_polling_sees_changes_additions_and_removals(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("x = 1\n")
    (tmp_path / "__pycache__").mkdir()
    watcher = PollingWatcher(FileFilter(ReloadOptions(dirs=(str(tmp_path),))))
    assert watcher.changes() == []
    (tmp_path / "app.py").write_text("x = 22\n")
    (tmp_path / "new.py").write_text("")
    (tmp_path / "__pycache__" / "app.py").write_text("")
    (tmp_path / "readme.txt").write_text("")
    assert watcher.changes() == [str(tmp_path / "app.py"), str(tmp_path / "new.py")]
    assert watcher.changes() == []
    (tmp_path / "new.py").unlink()
    assert watcher.changes() == [str(tmp_path / "new.py")]


# --------------------------------------------------------------------------- the command

VERSION_APP = textwrap.dedent(
    """
    import os

    import aserve

    VERSION = {version!r}

    async def app(request):
        return aserve.PlainTextResponse(f"{{VERSION}} {{os.getpid()}}")
    """
)


def write_app(folder: Path, version: str, broken: bool = False) -> None:
    text = VERSION_APP.format(version=version)
    if broken:
        text += "\ndef oops(:\n"
    # Write a new file and rename it over the old one, as editors do: the
    # watcher never sees half a file.
    new = folder / "reloadable.py.new"
    new.write_text(text)
    new.replace(folder / "reloadable.py")


def answer(server: Supervised) -> tuple[str, int]:
    """The version and the pid of the worker that answered."""
    status, body = server.get()
    assert status == 200
    version, pid = body.split()
    return version, int(pid)


WATCHERS = [
    pytest.param(("--reload-poll",), id="polling"),
    pytest.param(
        (),
        id="watchfiles",
        marks=pytest.mark.skipif(not HAS_WATCHFILES, reason="watchfiles is not installed"),
    ),
]


@pytest.mark.parametrize("watcher", WATCHERS)
@pytest.mark.timeout(40)
def test_reload_restarts_on_a_change_and_survives_a_syntax_error(
    launch: Launch, app_dir: Path, watcher: tuple[str, ...]
) -> None:
    write_app(app_dir, "one")
    server = launch("reloadable:app", "--reload", "--port", "0", *watcher)
    assert server.match is not None and server.match.group("how") == "reload"
    how = "polling every 0.5s" if watcher else "watchfiles"
    server.wait_log(rf"watching {app_dir} for changes \({how}\)")
    version, first = answer(server)
    assert version == "one"

    write_app(app_dir, "second")
    until(lambda: answer(server)[0] == "second", what="the new version")
    server.wait_log(rf"worker {first} stopped \(reload\)")

    write_app(app_dir, "third", broken=True)
    (failed,) = server.wait_log(
        r"reload failed: worker \d+ exited with status 1 before it was ready; "
        r"worker (\d+) keeps serving"
    )[-1:]
    assert "SyntaxError" in server.stderr
    second = int(failed.group(1))
    assert answer(server) == ("second", second)

    write_app(app_dir, "fourth")
    until(lambda: answer(server)[0] == "fourth", what="the fixed version")
    server.wait_log(rf"worker {second} stopped \(reload\)")
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_reload_waits_for_a_fix_when_the_app_fails_at_start(launch: Launch, app_dir: Path) -> None:
    write_app(app_dir, "broken", broken=True)
    server = launch("reloadable:app", "--reload", "--reload-poll", "--port", "0", started=False)
    server.wait_log(r"waiting for a change to try again")
    write_app(app_dir, "fixed")
    server.wait_started()
    assert answer(server)[0] == "fixed"


def test_reload_without_a_target_serves_the_directory(launch: Launch, app_dir: Path) -> None:
    (app_dir / "hello.txt").write_text("hello")
    server = launch("--reload", "--reload-poll", "--port", "0")
    assert server.match is not None
    assert server.match.group("what") == f"directory {app_dir}"
    assert server.get("/hello.txt") == (200, "hello")
    (app_dir / "touched.py").write_text("")
    server.wait_log(r"reloading: touched\.py changed")
    server.wait_log(r"worker \d+ stopped \(reload\)")
    assert server.get("/hello.txt") == (200, "hello")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reload", "--workers", "3"], "--reload runs one worker and restarts it: not with "),
        (["--reload-dir", "."], "--reload-dir needs --reload"),
        (["--reload-poll"], "--reload-poll needs --reload"),
        (["--reload", "--reload-dir", "/nonexistent"], "--reload-dir '/nonexistent' is not a dir"),
    ],
)
def test_bad_reload_options_give_one_line_and_status_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aserve", *args],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aserve: error: "), result.stderr
    assert message in lines[0]


def test_reload_option_from_the_environment(launch: Launch, app_dir: Path) -> None:
    write_app(app_dir, "env")
    server = launch(
        "reloadable:app", "--port", "0", env={"ASERVE_RELOAD": "1", "ASERVE_RELOAD_POLL": "1"}
    )
    assert server.match is not None and server.match.group("how") == "reload"
    assert answer(server)[0] == "env"
