"""Prometheus for the tests: the deploy files' expressions, the tools, and a real server.

``make tools`` extracts Debian's ``prometheus`` package (the server and ``promtool``) into
``.venv/tools``; a binary on ``PATH`` wins. A missing binary fails the test that needs it,
because CI must really run these; ``PLANTWATCH_SKIP_PROMETHEUS=1`` skips them on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
RULES_YML = DEPLOY / "prometheus" / "rules.yml"
DASHBOARD_JSON = DEPLOY / "grafana" / "dashboards" / "plantwatch.json"
TOOLS_DIR = REPO / ".venv" / "tools" / "usr" / "bin"
SKIP_ENV = "PLANTWATCH_SKIP_PROMETHEUS"
_TRUE = {"1", "true", "yes", "on"}


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def rules() -> list[dict[str, Any]]:
    """Every rule of rules.yml (alerting and recording), in file order."""
    return [rule for group in load_yaml(RULES_YML)["groups"] for rule in group["rules"]]


def rule_exprs() -> list[tuple[str, str]]:
    """(alert or record name, expression) of every rule."""
    return [(rule.get("alert") or rule["record"], str(rule["expr"])) for rule in rules()]


def dashboard() -> Any:
    return json.loads(DASHBOARD_JSON.read_text(encoding="utf-8"))


def panel_exprs() -> list[tuple[str, str]]:
    """(panel title and refId, expression) of every query of every dashboard panel."""
    return [
        (f"{panel['title']} {target['refId']}", str(target["expr"]))
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def variable_queries() -> list[tuple[str, str]]:
    """(variable name, query) of the dashboard's template variables (Grafana syntax)."""
    out = []
    for variable in dashboard().get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if text:
            out.append((f"variable {variable['name']}", str(text)))
    return out


def prometheus_tool(name: str) -> str:
    """Path of ``prometheus`` or ``promtool``: ``PATH`` first, then ``.venv/tools``."""
    if os.environ.get(SKIP_ENV, "").strip().lower() in _TRUE:
        pytest.skip(f"{SKIP_ENV} is set: tests that need {name} skipped")
    found = shutil.which(name)
    if found:
        return found
    local = TOOLS_DIR / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    pytest.fail(
        f"{name} is neither on PATH nor at {local}. `make tools` extracts it from Debian's "
        "prometheus package (apt-get download prometheus && dpkg-deb -x); or install "
        f"Prometheus, or set {SKIP_ENV}=1 to skip these tests on purpose.",
        pytrace=False,
    )


class PrometheusError(RuntimeError):
    """The server did not start, or the HTTP API answered with an error."""


class PrometheusServer:
    """A Prometheus server on loopback with its own config and throwaway storage.

    ``with PrometheusServer(binary, config_path, tmp_path, port) as prom:`` starts it and
    waits for ``/-/ready``; ``prom.query('up')`` runs an instant query; leaving stops it.
    """

    def __init__(self, binary: str, config: Path, data_dir: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self._log_path = data_dir / "prometheus.log"
        self._args = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, wait_s: float = 60.0) -> PrometheusServer:
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(self._args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait_s
        while True:
            if self._process.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise PrometheusError(f"prometheus not ready in {wait_s:g} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=15)
        self._process = None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self._log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the HTTP API (https://prometheus.io/docs/prometheus/latest/querying/api/) ----------

    def api(self, path: str, params: list[tuple[str, str]] | None = None) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a ``success`` answer, else an error."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # 400/422/503 carry the error as JSON
            body = json.load(exc)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at the server's now: the samples of its vector result."""
        data = self.api("query", [("query", expr)])
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr!r} gave a {data['resultType']}, not a vector")
        result: list[dict[str, Any]] = data["result"]
        return result


def scrape_config(targets: list[str], *, interval: str = "1s") -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml pointed at ``targets``, scraping every ``interval``.

    The rules are the deploy file's own (absolute path), so what runs is what ships.
    """
    config: dict[str, Any] = load_yaml(PROMETHEUS_YML)
    config["global"] = {
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "evaluation_interval": interval,
    }
    config["rule_files"] = [str(PROMETHEUS_YML.parent / f) for f in config["rule_files"]]
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "plantwatch"]
    jobs[0]["static_configs"] = [{"targets": targets}]
    config["scrape_configs"] = jobs
    return config


def values(samples: list[dict[str, Any]]) -> list[float]:
    """The numbers of an instant vector's samples."""
    return [float(s["value"][1]) for s in samples]
