"""`dg dev` serves the code location: its GraphQL API lists the query's assets, and shows what an
operator asset says before anything ran (prose description, column schema with descriptions,
table name, column lineage, code reference); a headless Chromium (Debian's, driven by Playwright,
which never downloads a browser) renders the asset graph, the README's screenshot.

`make test` installs Debian's chromium when it can (scripts/install-system-deps.sh); without it the
screenshot test skips and the GraphQL tests still run. `PZ_UPDATE_SCREENSHOT=1` writes the
screenshot to docs/images/asset-graph.png (else to a temporary folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import sync_playwright

import definitions
from definitions.enron import SENDER_SUBJECT
from tests.conftest import LUNCH_EMAIL, RAPTOR_EMAIL, REPO, free_port

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google services, which a closed
# network refuses; --no-proxy-server keeps a CI proxy variable away from the loopback server.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
]
STARTUP_TIMEOUT_S = 120  # dg dev on 2 busy cores can take a while to load the location
DG = Path(sys.executable).with_name("dg")
SCREENSHOT = REPO / "docs" / "images" / "asset-graph.png"
VIEWPORT = {"width": 1600, "height": 1500}
# Loopback only: never route the test's requests through a proxy from the environment.
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))

ASSET_NODES_QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    repository { name location { name } }
  }
}
"""
# What the UI's asset page reads; assetMaterializations shows that nothing ran yet.
OPERATOR_QUERY = """
query Operator($path: [String!]!) {
  assetNodes(assetKeys: [{path: $path}]) {
    description
    assetMaterializations(limit: 1) { timestamp }
    metadataEntries {
      __typename
      label
      ... on TableSchemaMetadataEntry { schema { columns { name type description } } }
      ... on TextMetadataEntry { text }
      ... on TableColumnLineageMetadataEntry {
        lineage { columnName columnDeps { assetKey { path } columnName } }
      }
      ... on CodeReferencesMetadataEntry {
        codeReferences { ... on LocalFileCodeReference { filePath lineNumber label } }
      }
    }
  }
}
"""
LOCATIONS_QUERY = """
{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""


def expected_assets() -> dict[tuple[str, ...], str]:
    """Asset key path -> group of every asset the demo query compiles to (rewrites may rename)."""
    return {
        tuple(key.path): assets_def.group_names_by_key[key]
        for assets_def in definitions.enron.assets
        for key in assets_def.keys
    }


@dataclass(frozen=True)
class DagsterDev:
    url: str
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with LOOPBACK.open(request, timeout=30) as response:
            body = json.load(response)
        assert "errors" not in body, body["errors"]
        return body["data"]


def stop_process_group(process: subprocess.Popen) -> None:
    """Ctrl+C for the whole group (dg dev, like dagster dev, shuts its webserver, daemon and code servers down
    on SIGINT, not on SIGTERM), then SIGKILL whatever is left."""
    with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    """`dg dev` (the project's [tool.dg]) on a free loopback port with a throwaway instance."""
    root = tmp_path_factory.mktemp("dagster_dev")
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dg_config = root / "dg_cli.toml"
    dg_config.write_text("[cli.telemetry]\nenabled = false\n")
    emails = root / "emails"
    emails.mkdir()
    (emails / "a_raptor.txt").write_text(RAPTOR_EMAIL)
    (emails / "b_lunch.txt").write_text(LUNCH_EMAIL)
    port = free_port()
    env = dict(
        os.environ,
        DAGSTER_HOME=str(home),
        DAGSTER_DISABLE_TELEMETRY="1",
        DG_CLI_CONFIG=str(dg_config),  # dg's own telemetry switch
        VIRTUAL_ENV=sys.prefix,  # --use-active-venv: this venv, never uv
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        HF_HUB_OFFLINE="1",
        PZ_DAGSTER_STORE=str(root / "pz_store"),
        PZ_ENRON_DIR=str(emails),
    )
    log = root / "dg_dev.log"
    # No defs/ folder in this flat layout: nothing for the YAML check to read.
    command = [str(DG), "dev", "--use-active-venv", "--no-check-yaml"]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the teardown stops every child
        )
    server = DagsterDev(url=f"http://127.0.0.1:{port}", log=log)
    try:
        wait_until_serving(server, process)
        yield server
    finally:
        stop_process_group(process)


def wait_until_serving(server: DagsterDev, process: subprocess.Popen) -> None:
    """Until the webserver answers and every code location has loaded (or failed to)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dg dev exited with {process.returncode}:\n{server.log_tail()}")
        try:
            entries = server.graphql(LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
        # Not listening yet, or answering before the workspace is ready.
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError, AssertionError):
            entries = []
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            errors = [
                e["locationOrLoadError"]["message"]
                for e in entries
                if e["locationOrLoadError"]["__typename"] == "PythonError"
            ]
            assert not errors, f"the code location failed to load: {errors}"
            return
        time.sleep(1)
    pytest.fail(f"dg dev did not serve within {STARTUP_TIMEOUT_S} s:\n{server.log_tail()}")


def test_graphql_lists_the_query_assets(dagster_dev: DagsterDev) -> None:
    nodes = dagster_dev.graphql(ASSET_NODES_QUERY)["assetNodes"]
    served = {tuple(n["assetKey"]["path"]): n["groupName"] for n in nodes}
    expected = expected_assets()
    assert {key: served.get(key) for key in expected} == expected


def declaring_line(path: Path, text: str) -> int:
    (line,) = [i for i, t in enumerate(path.read_text().splitlines(), start=1) if text in t]
    return line


def test_an_operator_asset_explains_itself_before_any_run(dagster_dev: DagsterDev) -> None:
    key = definitions.enron.asset_key("sender_and_subject")
    (node,) = dagster_dev.graphql(OPERATOR_QUERY, {"path": key.path})["assetNodes"]
    assert node["assetMaterializations"] == []  # all that follows is definition metadata

    description = node["description"]
    assert description.startswith("Adds `sender`, `subject`, extracted by a model")
    for field in SENDER_SUBJECT:
        assert f"| `{field['name']}` | {field['type']} | {field['desc']} |" in description
    assert "Reads `contents`." in description and "resource `pz_model`" in description
    assert "Here it chooses among the model(s) `smollm2-135m-instruct-q4_1`" in description

    entries = {e["label"]: e for e in node["metadataEntries"]}
    schema = entries["dagster/column_schema"]
    assert schema["__typename"] == "TableSchemaMetadataEntry"
    columns = {c["name"]: c for c in schema["schema"]["columns"]}
    assert list(columns) == [
        "record_id",
        "filename",
        "contents",
        "provenance",
        "sender",
        "subject",
        "error",
    ]
    for field in SENDER_SUBJECT:
        assert columns[field["name"]]["description"] == field["desc"]
    assert all(c["description"] for c in columns.values()), columns  # pass-through ones too

    assert entries["dagster/table_name"]["text"] == "enron__sender_and_subject"

    lineage = entries["dagster/column_lineage"]
    assert lineage["__typename"] == "TableColumnLineageMetadataEntry"
    deps = {c["columnName"]: c["columnDeps"] for c in lineage["lineage"]}
    upstream = {"path": definitions.enron.asset_key("not_news_quote").path}
    assert deps["sender"] == deps["subject"] == [{"assetKey": upstream, "columnName": "contents"}]
    assert deps["filename"] == [{"assetKey": upstream, "columnName": "filename"}]

    (reference,) = entries["dagster/code_references"]["codeReferences"]
    enron_py = REPO / "definitions" / "enron.py"
    assert reference == {
        "filePath": str(enron_py),
        "lineNumber": declaring_line(enron_py, ".sem_add_columns(SENDER_SUBJECT"),
        "label": "sem_map sender_and_subject",
    }


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"Debian's chromium is not installed at {CHROMIUM} (scripts/install-system-deps.sh "
    "installs it as root)",
)
def test_asset_graph_page_renders_the_assets(dagster_dev: DagsterDev, tmp_path: Path) -> None:
    """The query's graph with the map operator selected: its description (the fields it adds,
    who chooses its model, where its records are) beside the graph. The README's screenshot."""
    nodes = dagster_dev.graphql(ASSET_NODES_QUERY)["assetNodes"]
    expected = expected_assets()
    (group,) = set(expected.values())
    repository = next(n["repository"] for n in nodes if tuple(n["assetKey"]["path"]) in expected)
    selected = definitions.enron.asset_key("sender_and_subject").to_user_string()
    # The UI's route of an asset group, with one of its assets selected:
    # /locations/<repository>@<location>/asset-groups/<group>/lineage/<asset key>.
    page_url = (
        f"{dagster_dev.url}/locations/{repository['name']}@{repository['location']['name']}"
        f"/asset-groups/{group}/lineage/{urllib.parse.quote(selected, safe='')}"
    )
    names = [path[-1] for path in expected]
    update = os.environ.get("PZ_UPDATE_SCREENSHOT") == "1"
    screenshot = SCREENSHOT if update else tmp_path / SCREENSHOT.name
    screenshot.parent.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            # Tall, and the graph drawn top to bottom: every asset fits above the selected one,
            # which the UI centres, beside the sidebar with its description.
            page = browser.new_page(viewport=VIEWPORT)
            # Dismissed already: otherwise a "Join the Dagster community" dialog covers the graph.
            page.add_init_script(
                "window.localStorage.setItem('communityNux', '\"1\"');"
                "window.localStorage.setItem('asset-graph-direction', '\"vertical\"');"
            )
            page.goto(page_url, wait_until="domcontentloaded", timeout=60_000)
            for text in [*names, SENDER_SUBJECT[0]["desc"]]:
                page.get_by_text(text, exact=True).first.wait_for(state="visible", timeout=60_000)
            # The UI polls live data every couple of seconds: a quiet moment is enough, not a must.
            with contextlib.suppress(PlaywrightTimeoutError):
                page.wait_for_load_state("networkidle", timeout=10_000)
            page.wait_for_timeout(1_000)  # the graph eases into its place
            assert page.get_by_text("Join the Dagster community").count() == 0
            page.screenshot(path=str(screenshot), full_page=True)
            text = page.inner_text("body")
        finally:
            browser.close()

    for name in names:
        assert name in text, f"{name} is not on {page_url}"
    assert "Adds sender, subject, extracted by a model" in text  # the sidebar's description
    data = screenshot.read_bytes()
    width, height = png_size(data)
    assert width >= VIEWPORT["width"] and height >= VIEWPORT["height"], (width, height)
    assert len(data) > 20_000, f"a {len(data)}-byte screenshot is too plain to show the graph"


def test_the_readme_shows_the_screenshot_this_test_takes() -> None:
    readme = (REPO / "README.md").read_text()
    assert f"![The query in the Dagster UI]({SCREENSHOT.relative_to(REPO).as_posix()})" in readme
    assert SCREENSHOT.is_file(), "run PZ_UPDATE_SCREENSHOT=1 pytest tests/test_ui.py"
