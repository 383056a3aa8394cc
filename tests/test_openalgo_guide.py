"""docs/openalgo.md's steps, run as written on a scratch app laid out like OpenAlgo.

The scratch app (docs/scratch_openalgo.py) gets the guide's edits, copied out of the guide, and
runs as install.sh runs OpenAlgo: gunicorn's eventlet worker on a unix socket. Paths of the
guide are mapped into the test's directory; the browser stand-in connects over TCP, as nginx
would, and the forwarder over gunicorn's unix socket, as the guide tells it to.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dotenv
import pytest
import requests
import yaml

from emitter.config import ipc_path
from emitter.publisher import publisher_from_env
from harness.broker import consume, unique_topic
from harness.browser import BrowserTab, browser_tab
from harness.forwarder import ForwarderProcess, forwarder_env, run_cli, running_forwarders
from harness.net import free_port
from harness.waits import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "openalgo.md"
DOCKER = ROOT / "docs" / "docker"
SECRET = "guide-relay-secret-0123456789abcdef"
API_KEY = "scratch-api-key-0123456789"
APPUSER_UID = 1000
"""OpenAlgo's Dockerfile creates `appuser` with uid and gid 1000."""
START_TIMEOUT_S = 30.0
DOWNLOADED = {"status": "success", "message": "Successfully Downloaded"}
LOGOUT = {"reason": "password_changed", "message": "Please log in again"}


def guide_blocks(marker: str) -> list[tuple[str, str]]:
    """Each code block announced by `<!-- MARKER ARGS -->`: its arguments and its text."""
    pattern = rf"<!-- {marker}(.*?) -->\n```\w+\n(.*?)```"
    return [(args.strip(), text) for args, text in re.findall(pattern, GUIDE.read_text(), re.S)]


def guide_env(side: str) -> dict[str, str]:
    """A settings block of the guide, read as python-dotenv (OpenAlgo's loader) reads it."""
    [(_, text)] = guide_blocks(f"scratch-env: {side}")
    return {k: v or "" for k, v in dotenv.dotenv_values(stream=io.StringIO(text)).items()}


def apply_guide_edits(app: Path) -> None:
    """Insert each edit where the guide says: after a line, or at the end of a function."""
    for args, code in guide_blocks("scratch-edit:"):
        file, where, anchor = re.fullmatch(r'(\S+) (after|end-of) "(.*)"', args).groups()
        path = app / file
        lines = path.read_text().splitlines()
        [at] = [n for n, line in enumerate(lines) if anchor in line]
        if where == "after":
            insert = at + 1
        else:
            insert = next(
                (n for n in range(at + 1, len(lines)) if lines[n] and not lines[n][0].isspace()),
                len(lines),
            )
        lines[insert:insert] = ["", *code.rstrip("\n").splitlines(), ""]
        path.write_text("\n".join(lines) + "\n")


def scratch_app(directory: Path) -> Path:
    """`python docs/scratch_openalgo.py DIR`, then the guide's edits."""
    subprocess.run(
        [sys.executable, str(ROOT / "docs" / "scratch_openalgo.py"), str(directory)],
        check=True,
        capture_output=True,
    )
    apply_guide_edits(directory)
    return directory


class Paths:
    """Where the guide's absolute paths and names land in this test."""

    def __init__(self, tmp_path: Path, bootstrap: str, topic: str) -> None:
        self.root = tmp_path
        self.app = scratch_app(tmp_path / "openalgo")
        self.run = tmp_path / "run"
        self.socket = self.app / "openalgo.sock"
        self.replacements = {
            "/var/python/openalgo": str(self.app),
            "/run/openalgo-forwarder": str(self.run),
            "REPLACE_WITH_THE_SECRET": SECRET,
            "kafka.example.internal:9092": bootstrap,
            "from_openalgo_order_events": topic,
        }

    def mapped(self, settings: Mapping[str, str]) -> dict[str, str]:
        return {name: self.mapped_value(value) for name, value in settings.items()}

    def mapped_value(self, value: str) -> str:
        for guide_value, here in self.replacements.items():
            value = value.replace(guide_value, here)
        return value


class App:
    """The scratch app under gunicorn's eventlet worker, as install.sh and start.sh run it."""

    def __init__(
        self, directory: Path, env: Mapping[str, str], binds: list[str], port: int | None = None
    ) -> None:
        self.directory = directory
        self.port = free_port() if port is None else port
        gunicorn = Path(sys.executable).parent / "gunicorn"
        self.log = (directory / "gunicorn.log").open("ab")
        self.process = subprocess.Popen(
            [str(gunicorn), "--worker-class", "eventlet", "-w", "1", "--graceful-timeout", "2"]
            + [arg for bind in [*binds, f"127.0.0.1:{self.port}"] for arg in ("--bind", bind)]
            + ["app:app"],
            cwd=directory,
            env={**os.environ, **env, "SCRATCH_API_KEY": API_KEY},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the scratch app did not start:\n{self.output()}")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(self, path: str, **params: str) -> None:
        response = requests.post(self.url + path, params=params, timeout=10)
        assert response.text == "ok", self.output()

    def output(self) -> str:
        return (self.directory / "gunicorn.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False


@contextmanager
def running_app(
    directory: Path, env: Mapping[str, str], binds: list[str], port: int | None = None
) -> Iterator[App]:
    app = App(directory, env, binds, port)
    try:
        yield app
    finally:
        app.stop()


def start_forwarder(
    forwarders: list[ForwarderProcess], run_dir: Path, env: Mapping[str, str]
) -> ForwarderProcess:
    process = ForwarderProcess(forwarder_env(run_dir, **env))
    forwarders.append(process)
    return process.start()


def records_of(bootstrap: str, topic: str, count: int) -> list[dict[str, Any]]:
    """Every record of the topic, exactly `count` of them, read again a moment later: no
    event came back through the relay to be published twice."""
    consume(bootstrap, topic, count, timeout=30)
    time.sleep(1.0)
    records = consume(bootstrap, topic, count, timeout=30)
    assert len(records) == count
    return [json.loads(r.value) | {"headers": dict(r.headers)} for r in records]


@pytest.fixture
def forwarders() -> Iterator[list[ForwarderProcess]]:
    with running_forwarders() as started:
        yield started


@pytest.fixture
def paths(tmp_path: Path, kafka_bootstrap: str) -> Paths:
    return Paths(tmp_path, kafka_bootstrap, unique_topic("guide"))


def with_mode(settings: Mapping[str, str], mode: str) -> dict[str, str]:
    return {**settings, "ORDER_EVENT_MODE": mode}


class TestTheGuidesEdits:
    @pytest.mark.parametrize("mode", ["SOCKETIO,KAFKA", "KAFKA"])
    def test_every_event_reaches_kafka_once_and_the_browser_once(
        self, paths, forwarders, kafka_bootstrap, mode
    ):
        """A direct master_contract_download from a module that took `socketio` before the
        wrapper, a bus order and a live failure: Kafka records each once, the browser gets what
        OpenAlgo shows, once; force_logout needs no forwarder."""
        topic = paths.replacements["from_openalgo_order_events"]
        app_env = with_mode(paths.mapped(guide_env("app")), mode)
        forwarder = start_forwarder(
            forwarders, paths.root, with_mode(paths.mapped(guide_env("forwarder")), mode)
        )
        with (
            running_app(paths.app, app_env, [f"unix:{paths.socket}"]) as app,
            browser_tab(app.url) as browser,
        ):
            app.post("/scratch/master-contract")
            app.post("/scratch/order", orderid="A1")
            app.post("/scratch/order", outcome="failed")
            app.post("/scratch/force-logout")
            records = records_of(kafka_bootstrap, topic, 3)
            browser.wait_for(3)
            time.sleep(1.0)
            assert Counter(name for name, _ in browser.events()) == {
                "master_contract_download": 1,
                "order_event": 1,
                "force_logout": 1,
            }
            assert ("master_contract_download", DOWNLOADED) in browser.events()
            forwarder.terminate()
            assert forwarder.wait() == 0
            app.post("/scratch/force-logout")
            browser.wait_for(4)
            assert browser.events()[-1] == ("force_logout", LOGOUT)
        by_type = {record["event_type"]: record for record in records}
        assert set(by_type) == {"master_contract_download", "order_event", "order.failed"}
        assert by_type["master_contract_download"]["data"] == DOWNLOADED
        assert by_type["master_contract_download"]["topic"] is None
        order = by_type["order_event"]
        assert (order["topic"], order["user_id"]) == ("order.placed", "admin")
        assert order["headers"]["topic"] == b"order.placed"
        assert order["data"]["quantity"] == 10
        assert order["data"]["request_data"] == {"symbol": "SBIN"}
        assert API_KEY not in json.dumps(records, default=str)

    def test_switching_modes_and_back_loses_nothing(self, paths, forwarders, kafka_bootstrap):
        """From SOCKETIO,KAFKA to KAFKA and back, in the guide's order: every order reaches
        Kafka once and the browser once."""
        topic = paths.replacements["from_openalgo_order_events"]
        app_settings = paths.mapped(guide_env("app"))
        forwarder_settings = paths.mapped(guide_env("forwarder"))
        shown: list[tuple[str, Any]] = []
        binds = [f"unix:{paths.socket}"]

        def trade(mode: str, orderid: str) -> None:
            with (
                running_app(paths.app, with_mode(app_settings, mode), binds) as app,
                browser_tab(app.url) as browser,
            ):
                app.post("/scratch/order", orderid=orderid)
                wait_for_orders(browser, 1)
                shown.extend(browser.events())

        forwarder = start_forwarder(forwarders, paths.root, forwarder_settings)
        trade("SOCKETIO,KAFKA", "A1")
        # Back to KAFKA: the app first, then the forwarder once nothing waits for the browser.
        trade("KAFKA", "B1")
        wait_until(lambda: waiting(forwarder, "socketio") == 0, what="the socketio sink to drain")
        forwarder.stop()
        forwarder = start_forwarder(forwarders, paths.root, with_mode(forwarder_settings, "KAFKA"))
        trade("KAFKA", "B2")
        # And to SOCKETIO,KAFKA again: the forwarder first, then the app.
        forwarder.stop()
        start_forwarder(forwarders, paths.root, forwarder_settings)
        trade("SOCKETIO,KAFKA", "C1")
        orders = ["A1", "B1", "B2", "C1"]
        assert [payload["orderid"] for _, payload in shown] == orders
        records = records_of(kafka_bootstrap, topic, len(orders))
        assert [record["data"]["orderid"] for record in records] == orders


def wait_for_orders(browser: BrowserTab, count: int) -> None:
    browser.wait_for(count)
    time.sleep(0.5)
    assert len(browser.events()) == count


def waiting(forwarder: ForwarderProcess, sink: str) -> int:
    result = run_cli("stats", "--json", env=forwarder.env)
    assert result.returncode == 0, result.stderr
    count: int = json.loads(result.stdout)["sinks"][sink]["waiting"]
    return count


def directive_lines(unit: str) -> list[str]:
    return [line for line in unit.splitlines() if not line.startswith("#")]


def installed_template(tmp_path: Path) -> Path:
    """The guide's install line, writing where /etc/systemd/system would be."""
    [(_, script)] = guide_blocks("scratch-multi")
    script = script.replace("/etc/systemd/system", str(tmp_path))
    subprocess.run(["bash", "-euc", script], cwd=ROOT, check=True, capture_output=True)
    return tmp_path / "openalgo-forwarder@.service"


WEB_USER = "www-data"
"""The user install.sh runs gunicorn as."""


def as_web_user(*command: str) -> subprocess.CompletedProcess[str]:
    """A command run as the web user with that user's groups, as `sudo -u www-data` runs it."""
    return subprocess.run(
        ["runuser", "-u", WEB_USER, "--", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def publish_as_web_user(endpoint: str, orderid: str) -> int:
    """0 when a process of the web user (its uid and groups) published one order event and
    handed it to the forwarder; this interpreter is forked, as the web user cannot run it."""
    entry = pwd.getpwnam(WEB_USER)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child ends with os._exit
        status = 1
        try:
            os.setgroups(os.getgrouplist(WEB_USER, entry.pw_gid))
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            publisher = publisher_from_env({"FORWARDER_ENDPOINT": endpoint})
            queued = publisher.publish_order_event("alice", "SBIN", "BUY", orderid, "live")
            publisher.close()
            stats = publisher.stats()
            status = 0 if queued and (stats.queued, stats.unsent) == (1, 0) else 1
        finally:
            os._exit(status)
    _, waited = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(waited)


@contextmanager
def throwaway_group() -> Iterator[str]:
    """A system group made for this test, removed (members and all) however it ends."""
    name = f"oa-guide-{os.getpid()}"
    subprocess.run(["groupadd", "--system", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["groupdel", name], check=True, capture_output=True)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None,
    reason="adding the web user to a group needs root (and runuser)",
)
class TestTheWebUser:
    def test_the_web_user_added_to_the_socket_group_publishes_to_kafka(
        self, shared_tmp, forwarders, kafka_bootstrap
    ):
        """Before step 4 the web user cannot reach the socket; after its usermod line, run as
        written (group renamed), the guide's own check says reachable and an event it publishes
        reaches Kafka."""
        [(_, block)] = guide_blocks("scratch-group")
        [usermod] = [line for line in block.splitlines() if "usermod" in line]
        topic = unique_topic("guide-group")
        endpoint = f"ipc://{shared_tmp}/run/events.sock"
        with throwaway_group() as group:
            start_forwarder(
                forwarders,
                shared_tmp,
                {
                    "FORWARDER_ENDPOINT": endpoint,
                    "FORWARDER_SOCKET_GROUP": group,
                    "ORDER_EVENT_MODE": "KAFKA",
                    "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                    "KAFKA_ORDER_EVENTS_TOPIC": topic,
                },
            )
            socket_path = str(ipc_path(endpoint))
            assert as_web_user("test", "-w", socket_path).returncode == 1
            command = usermod.removeprefix("sudo ").replace(" openalgo ", f" {group} ").split()
            subprocess.run(command, check=True, capture_output=True)
            assert as_web_user("test", "-w", socket_path).returncode == 0
            assert publish_as_web_user(endpoint, "ORD-WWW") == 0
            [record] = records_of(kafka_bootstrap, topic, 1)
        assert record["data"]["orderid"] == "ORD-WWW"


class TestSeveralInstances:
    def test_each_instances_unit_has_its_own_socket_buffer_and_settings(self, tmp_path):
        """The template's instance openalgoN differs from the single unit only in the instance's
        names, the ones the guide gives, and systemd accepts it."""
        original = directive_lines((ROOT / "systemd" / "openalgo-forwarder.service").read_text())
        template = installed_template(tmp_path).read_text()
        for i in (1, 2):
            name = f"openalgo{i}"
            lines = directive_lines(template.replace("%i", name))
            changed = [new for old, new in zip(original, lines, strict=True) if old != new]
            assert changed == [
                f"Description=OpenAlgo event forwarder for instance {name} (Kafka and Socket.IO)",
                f"SyslogIdentifier=openalgo-forwarder-{name}",
                f"EnvironmentFile=/etc/openalgo/forwarder-{name}.env",
                f"RuntimeDirectory=openalgo-forwarder-{name}",
                f"StateDirectory=openalgo-forwarder-{name}",
            ]
            unit = tmp_path / f"openalgo-forwarder@{name}.service"
            unit.write_text(
                template.replace(
                    "ExecStart=/usr/local/bin/openalgo-forwarder", "ExecStart=/usr/bin/true"
                )
            )
            verified = subprocess.run(
                ["systemd-analyze", "verify", str(unit)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert (verified.returncode, verified.stderr) == (0, "")

    def test_two_forwarders_side_by_side_keep_to_their_own_instance(
        self, tmp_path, kafka_bootstrap, forwarders
    ):
        """Each instance's events reach its own topic only, and `stats` asks its own forwarder."""
        topics = [unique_topic(f"instance{i}") for i in (1, 2)]
        started = []
        for i, topic in enumerate(topics, start=1):
            settings = {
                "ORDER_EVENT_MODE": "KAFKA",
                "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "KAFKA_ORDER_EVENTS_TOPIC": topic,
            }
            started.append(start_forwarder(forwarders, tmp_path / f"i{i}", settings))
        for i, process in enumerate(started, start=1):
            publisher = publisher_from_env(
                {"FORWARDER_ENDPOINT": process.env["FORWARDER_ENDPOINT"]}
            )
            try:
                for n in range(i):
                    publisher.publish_master_contract_download("zerodha", "success", f"i{i}-{n}")
            finally:
                publisher.close()
        for i, topic in enumerate(topics, start=1):
            records = consume(kafka_bootstrap, topic, i, timeout=30)
            assert sorted(json.loads(r.value)["data"]["message"] for r in records) == [
                f"i{i}-{n}" for n in range(i)
            ]
        assert [
            json.loads(run_cli("stats", "--json", env=p.env).stdout)["received"] for p in started
        ] == [1, 2]


class TestSidecarContainer:
    @staticmethod
    def compose() -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.forwarder.yaml").read_text())
        return loaded

    @staticmethod
    def environment(service: Mapping[str, Any]) -> dict[str, str]:
        """A service's settings as the container gets them: env_file, then environment."""
        env: dict[str, str] = {}
        for name in service.get("env_file", []):
            env |= {k: v or "" for k, v in dotenv.dotenv_values(DOCKER / name).items()}
        return env | dict(entry.split("=", 1) for entry in service.get("environment", []))

    def test_the_app_and_the_forwarder_share_the_socket_volume(self):
        """Both mount the volume where the endpoint lives, the forwarder runs as OpenAlgo's
        appuser, reaches the app by its service name, and keeps its buffer on a volume."""
        compose = self.compose()
        app, forwarder = compose["services"]["openalgo"], compose["services"]["openalgo-forwarder"]
        endpoint = self.environment(forwarder)["FORWARDER_ENDPOINT"]
        assert self.environment(app)["FORWARDER_ENDPOINT"] == endpoint
        socket_dir = str(ipc_path(endpoint).parent)
        assert f"openalgo_events:{socket_dir}" in app["volumes"]
        assert f"openalgo_events:{socket_dir}" in forwarder["volumes"]
        state_dir = self.environment(forwarder)["FORWARDER_STATE_DIR"]
        assert f"openalgo_forwarder_state:{state_dir}" in forwarder["volumes"]
        assert set(compose["volumes"]) == {"openalgo_events", "openalgo_forwarder_state"}
        assert forwarder["user"] == f"{APPUSER_UID}:{APPUSER_UID}"
        url = urlsplit(self.environment(forwarder)["SOCKETIO_URL"])
        assert (url.hostname, url.port) == ("openalgo", 5000)
        dockerfile = (DOCKER / "forwarder.Dockerfile").read_text()
        assert f"chown {APPUSER_UID}:{APPUSER_UID} {socket_dir} {state_dir}" in dockerfile
        assert f"CMD {json.dumps(forwarder['command'])}" in dockerfile

    def test_the_containers_command_runs_beside_the_app_with_the_same_settings(
        self, tmp_path, kafka_bootstrap, forwarders
    ):
        """The forwarder service's command and settings, its volumes mapped to directories and
        `openalgo:5000` to the scratch app (gunicorn's eventlet worker on TCP, as start.sh runs
        it): the master contract download and an order reach Kafka and the browser."""
        compose = self.compose()
        app_service = compose["services"]["openalgo"]
        service = compose["services"]["openalgo-forwarder"]
        paths = Paths(tmp_path, kafka_bootstrap, unique_topic("sidecar"))
        volumes = {
            "/run/openalgo-forwarder": tmp_path / "events",
            "/var/lib/openalgo-forwarder": tmp_path / "state",
        }
        port = free_port()
        paths.replacements |= {path: str(local) for path, local in volumes.items()}
        paths.replacements["openalgo:5000"] = f"127.0.0.1:{port}"
        forwarder_settings = paths.mapped(self.environment(service))
        app_settings = paths.mapped(self.environment(app_service) | guide_env("app"))
        assert app_settings["FORWARDER_ENDPOINT"] == forwarder_settings["FORWARDER_ENDPOINT"]
        command = [
            str(Path(sys.executable).parent / service["command"][0]),
            *service["command"][1:],
        ]
        base = {name: os.environ[name] for name in ("PATH", "LANG", "TMPDIR") if name in os.environ}
        process = ForwarderProcess(base | forwarder_settings | {"HOME": str(tmp_path)}, command)
        forwarders.append(process)
        process.start()
        with (
            running_app(paths.app, app_settings, [], port=port) as app,
            browser_tab(app.url) as browser,
        ):
            app.post("/scratch/master-contract")
            app.post("/scratch/order", orderid="D1")
            records = records_of(
                kafka_bootstrap, paths.replacements["from_openalgo_order_events"], 2
            )
            wait_for_orders(browser, 2)
        assert {r["event_type"] for r in records} == {"master_contract_download", "order_event"}
        assert (volumes["/var/lib/openalgo-forwarder"] / "buffer.sqlite").exists()
