"""Helpers for the real-browser UI test: a `dagster dev` process tree and a headless Chromium.

Every wait is bounded; every process started here runs in its own session (setsid) and is
ended with the whole session -- SIGTERM, then SIGKILL -- so nothing outlives a test, even
a process that ignores SIGTERM or was re-parented to init.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_PATH = "/usr/bin/chromium"
# Debian's chromium, never a browser downloaded by `playwright install`; no network use.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]

T = TypeVar("T")


class UITimeout(AssertionError):
    """A bounded wait ran out; the message says what was awaited and what was last seen."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, interval_s: float = 0.5) -> T:
    """Call ``probe`` until it returns a truthy value; raise UITimeout naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except Exception as err:  # a probe may fail while a server starts; keep the last reason
            last_error = err
        if time.monotonic() >= deadline:
            raise UITimeout(f"timed out after {timeout_s:.0f}s waiting for {what}"
                            + (f" (last error: {last_error!r})" if last_error else ""))
        time.sleep(interval_s)


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, session id) of a live process, None when it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[3])


def session_pids(sid: int) -> list[int]:
    """Live processes whose session is ``sid`` (a process started with start_new_session=True)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[1] == sid:
                pids.append(int(entry))
    return pids


def kill_session(proc: subprocess.Popen[Any], graceful_wait_s: float = 12.0) -> list[int]:
    """Stop ``proc`` and every process of its session; returns the survivors (none, or a bug).

    SIGINT to the leader first (dagster dev's graceful shutdown), then SIGTERM and finally
    SIGKILL to every process still in the session.
    """
    sid = proc.pid

    def settled(wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None and not session_pids(sid):
                return True
            time.sleep(0.2)
        return proc.poll() is not None and not session_pids(sid)

    def signal_all(sig: int) -> None:
        try:
            os.killpg(sid, sig)
        except ProcessLookupError:
            pass
        for pid in session_pids(sid):  # also catches processes that changed process group
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    if not settled(graceful_wait_s):
        signal_all(signal.SIGTERM)
        if not settled(5.0):
            for _ in range(3):
                signal_all(signal.SIGKILL)
                if settled(2.0):
                    break
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return session_pids(sid)


def prepare_dagster_home(home: Path, instance_yaml: Path = REPO_ROOT / "dagster.yaml") -> Path:
    """A fresh DAGSTER_HOME holding a copy of the repo's dagster.yaml (Dagster reads it from there)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(instance_yaml, home / "dagster.yaml")
    return home


class DagsterDev:
    """`dagster dev` (webserver + daemon + code server) on 127.0.0.1:``port``, in its own session."""

    def __init__(self, cmd: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path, port: int) -> None:
        self.cmd = list(cmd)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child writes it until stop()
        try:
            self.proc = subprocess.Popen(
                self.cmd, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            log.close()

    def log_tail(self, n_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return "<no log>"

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, timeout_s: float = 20.0) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {self.proc.returncode}; log tail:\n{self.log_tail()}")

    def wait_until_loaded(self, timeout_s: float) -> list[str]:
        """Wait until the webserver answers and every code location has loaded; return their names."""
        query = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
            name loadStatus locationOrLoadError { __typename ... on PythonError { message stack } } } } } }"""

        def probe() -> list[str] | None:
            self._check_alive()
            data = self.graphql(query, timeout_s=10)["workspaceOrError"]
            entries = data.get("locationEntries") or []
            if not entries or any(e["loadStatus"] != "LOADED" for e in entries):
                return None
            errors = [e for e in entries if (e["locationOrLoadError"] or {}).get("__typename") == "PythonError"]
            if errors:
                err = errors[0]["locationOrLoadError"]
                raise AssertionError(f"code location {errors[0]['name']} failed to load: {err['message']}\n"
                                     + "".join(err.get("stack") or [])[-3000:])
            return [e["name"] for e in entries]

        try:
            return wait_for("the code location to load in dagster dev", probe, timeout_s, interval_s=1.0)
        except UITimeout as err:
            raise UITimeout(f"{err}\n--- dagster dev log tail ---\n{self.log_tail()}") from None

    def daemon_healthy(self) -> bool:
        data = self.graphql("{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }")
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        return all(s["healthy"] for s in statuses if s["required"])

    def stop(self) -> list[int]:
        if self.proc is None:
            return []
        return kill_session(self.proc)


@contextmanager
def dagster_dev(*, workspace: Path, dagster_home: Path, env: Mapping[str, str], log_path: Path,
                cwd: Path = REPO_ROOT, port: int | None = None) -> Iterator[DagsterDev]:
    """Run `dagster dev` for the ``with`` block; the whole process session is ended on exit."""
    port = port or free_port()
    full_env = {**os.environ, **env, "DAGSTER_HOME": str(dagster_home)}
    # What `make dev` runs: demo data if missing, then `dagster dev`.
    server = DagsterDev([sys.executable, "-m", "gan_assets.demo", "dev", "--port", str(port),
                         "--workspace", str(workspace)], full_env, cwd, log_path, port)
    server.start()
    try:
        yield server
    finally:
        survivors = server.stop()
        if survivors:
            raise AssertionError(f"processes survived SIGKILL: {survivors}")


def chromium_available() -> bool:
    return Path(CHROMIUM_PATH).exists()


def page_excerpt(page: Any, n_chars: int = 2500) -> str:
    """What the page shows, as text, for failure messages."""
    try:
        return f"url={page.url}\n" + page.inner_text("body", timeout=5000)[:n_chars]
    except Exception as err:  # the page may be mid-navigation or closed
        return f"<could not read page text: {err!r}>"


def dismiss_community_dialog(page: Any, timeout_s: float = 5.0) -> bool:
    """Close the "Join the Dagster community" dialog when a new session shows it; True if closed."""
    dialog = page.get_by_text("Join the Dagster community")
    try:
        dialog.first.wait_for(state="visible", timeout=timeout_s * 1000)
    except Exception:
        return False
    for name in ("Skip", "Dismiss", "No thanks", "Close"):
        button = page.get_by_role("button", name=name)
        if button.count():
            button.first.click()
            break
    else:
        page.keyboard.press("Escape")
    dialog.first.wait_for(state="hidden", timeout=10_000)
    return True


def _name_matches(shown: str, name: str) -> bool:
    """The graph shortens long names in its zoomed-out view ("preprocess…_images")."""
    shown = shown.strip()
    if shown == name:
        return True
    if "…" in shown:
        head, _, tail = shown.partition("…")
        return name.startswith(head) and name.endswith(tail) and len(head) + len(tail) < len(name)
    return False


# Node and group boxes are <foreignObject>s of the graph's <svg>; edges are <path>s with an arrow
# marker from the right side of the upstream box to the left side of the downstream box.
_GRAPH_JS = """() => {
  const boxes = Array.from(document.querySelectorAll('svg foreignObject')).map(f => ({
    x: +f.getAttribute('x'), y: +f.getAttribute('y'), w: +f.getAttribute('width'),
    h: +f.getAttribute('height'), group: f.classList.contains('group'),
    text: (f.textContent || '').trim()}));
  const edges = Array.from(document.querySelectorAll('svg path[marker-end]')).map(p => {
    const nums = (p.getAttribute('d') || '').match(/-?[0-9.]+/g) || [];
    return nums.length >= 4 ? {x1: +nums[0], y1: +nums[1], x2: +nums[nums.length - 2], y2: +nums[nums.length - 1]} : null;
  }).filter(e => e);
  return {boxes, edges};
}"""


def read_asset_graph(page: Any, names: Sequence[str]) -> tuple[dict[str, dict[str, float]], list[tuple[str, str]], dict[str, list[str]]]:
    """The drawn graph: node box per asset name, edges (upstream, downstream), group -> asset names."""
    raw = page.evaluate(_GRAPH_JS)
    nodes: dict[str, dict[str, float]] = {}
    groups: dict[str, dict[str, float]] = {}
    for box in raw["boxes"]:
        if box["group"]:
            # a group box's header names it; the header is the first word of its text
            label = box["text"].split()[0] if box["text"] else ""
            groups[label] = box
            continue
        for name in names:
            if _name_matches(box["text"], name):
                nodes[name] = box
    edges: list[tuple[str, str]] = []
    for edge in raw["edges"]:
        src = [n for n, b in nodes.items() if abs(b["x"] + b["w"] - edge["x1"]) <= 12 and b["y"] <= edge["y1"] <= b["y"] + b["h"]]
        dst = [n for n, b in nodes.items() if abs(b["x"] - edge["x2"]) <= 12 and b["y"] <= edge["y2"] <= b["y"] + b["h"]]
        if len(src) == 1 and len(dst) == 1:
            edges.append((src[0], dst[0]))
    members = {
        label: sorted(n for n, b in nodes.items()
                      if g["x"] <= b["x"] and b["x"] + b["w"] <= g["x"] + g["w"] and g["y"] <= b["y"] and b["y"] + b["h"] <= g["y"] + g["h"])
        for label, g in groups.items()
    }
    return nodes, edges, members


def open_expanded_asset_graph(page: Any, base_url: str, timeout_s: float = 60.0) -> None:
    """Open Lineage (the global asset graph) with every group expanded."""
    page.goto(f"{base_url}/asset-groups", timeout=timeout_s * 1000)
    page.get_by_role("button", name="Materialize all").first.wait_for(timeout=timeout_s * 1000)
    dismiss_community_dialog(page, timeout_s=3.0)
    expand = page.get_by_role("menuitem", name="Expand all groups")
    page.get_by_role("button", name="settings", exact=True).click()
    if expand.count():
        expand.first.click()
    page.keyboard.press("Escape")  # close the menu (it stays open after a choice)


def launch_partition_from_graph(page: Any, partition_key: str, timeout_s: float = 60.0) -> None:
    """Materialize all -> type one partition in the launch dialog -> Launch 1 run."""
    page.get_by_role("button", name="Materialize all").first.click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for(timeout=timeout_s * 1000)
    box = dialog.locator("input[type=text]").first
    box.wait_for(timeout=timeout_s * 1000)  # the partition picker renders once partitions loaded
    # By default the dialog offers only the last 90 days; older months need "Show all partitions".
    # The banner may render a moment after the picker: give it a short, bounded chance.
    show_all = dialog.get_by_text("Show all partitions")
    try:
        show_all.first.wait_for(timeout=3000)
    except Exception:
        pass
    if show_all.count():
        show_all.first.click()
        show_all.first.wait_for(state="detached", timeout=timeout_s * 1000)
    box.click()
    box.fill(partition_key)
    box.press("Enter")
    launch = dialog.get_by_role("button", name="Launch 1 run")
    launch.wait_for(timeout=timeout_s * 1000)
    launch.click()
    dialog.wait_for(state="detached", timeout=timeout_s * 1000)


RUNS_QUERY = """query Runs($filter: RunsFilter) { runsOrError(filter: $filter) { __typename
  ... on Runs { results { runId status jobName tags { key value } } } } }"""


def runs_for_partition(server: DagsterDev, partition_key: str) -> list[dict[str, Any]]:
    data = server.graphql(RUNS_QUERY, {"filter": {"tags": [{"key": "dagster/partition", "value": partition_key}]}})
    return list(data["runsOrError"].get("results") or [])


def run_failure_summary(server: DagsterDev, run_id: str) -> str:
    """The error messages of a failed run, from its event log."""
    query = """query Logs($runId: ID!) { logsForRun(runId: $runId) { __typename
      ... on EventConnection { events { __typename ... on MessageEvent { message }
        ... on ExecutionStepFailureEvent { stepKey error { message } }
        ... on RunFailureEvent { error { message } } } } } }"""
    try:
        events = server.graphql(query, {"runId": run_id})["logsForRun"].get("events") or []
    except Exception as err:
        return f"<could not read run logs: {err!r}>"
    lines = [f"{e['__typename']} {e.get('stepKey') or ''}: {(e.get('error') or {}).get('message') or e.get('message')}"
             for e in events if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent", "EngineEvent")]
    return "\n".join(lines)[-4000:]
