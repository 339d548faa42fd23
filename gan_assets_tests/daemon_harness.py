"""Starting and stopping the real Dagster daemon in tests, and finding the processes it left.

Every process a test starts gets the test's own DAGSTER_HOME in its environment, so the
processes of one test are found by that marker, whoever their parent is now.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

DAGSTER_YAML = """\
telemetry:
  enabled: false
storage:
  sqlite:
    base_dir: {home}
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
run_launcher:
  module: dagster._core.launcher
  class: DefaultRunLauncher
"""


def write_instance(home: Path) -> Path:
    """A SQLite instance with a run queue and the default launcher (a process per run)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML.format(home=home))
    return home


def write_workspace(path: Path, repo: Path) -> Path:
    path.write_text("load_from:\n  - python_module:\n      module_name: gan_assets.definitions\n"
                    f"      working_directory: {repo}\n")
    return path


def processes_with_home(home: Path) -> list[int]:
    """PIDs of processes whose environment names this DAGSTER_HOME (all were started by the test)."""
    pids = []
    marker = f"DAGSTER_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def parent_of(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1])


def stop_process_group(process: subprocess.Popen[bytes], home: Path) -> None:
    """SIGTERM the daemon's process group, then SIGKILL it and any straggler started with this home."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # Code servers and run workers are in the same group; this catches any that were not, and
    # waits until the killed ones are gone.
    deadline = time.monotonic() + 15.0
    while (stragglers := processes_with_home(home)) and time.monotonic() < deadline:
        for pid in stragglers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def log_excerpt(path: Path) -> str:
    """The daemon's own lines (ticks, launches, errors) and the log's tail, for a failure message."""
    lines = path.read_text(errors="replace").splitlines()
    daemon_lines = [line for line in lines if "dagster.daemon" in line or "Error" in line]
    return "\n".join(daemon_lines[-40:]) + "\n...\n" + "\n".join(lines[-30:])
