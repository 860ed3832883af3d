"""Secrets stay out of messages: credentials inside an endpoint URL (userinfo, query string)
appear in no exception, no log record and no Dagster event; a key written where the name of its
environment variable goes is refused at load without being repeated."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from pz_dagster import Dataset, ModelError
from pz_dagster.cli import main
from pz_dagster.models import OpenAICompatibleClient
from pz_dagster.models.retry import RetryPolicy
from pz_dagster.orchestration import OpenAICompatibleModel, build_definitions
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.orchestration.component import ModelSpec
from pz_dagster.orchestration.store import RecordStore
from pz_dagster.redact import looks_like_key, redact_text, redact_url
from pz_dagster.testing import OpenAISimulator, SimulatedModel
from tests.conftest import free_port

SECRET = "s3cr3tPassw0rdXYZ"
NO_RETRY = RetryPolicy(max_retries=1, initial_wait_s=0.01, max_wait_s=0.01, max_total_s=2)
ASK = [{"role": "user", "content": "Is the sky blue?"}]
# Keys as users paste them where the variable's name goes (made-up values).
KEYS = [
    "sk-proj-" + SECRET,
    "sk_live_" + SECRET,
    "AKIAIOSFODNN7EXAMPLE",
    "3f9a0c7e2b4d6f8a1c3e5b7d9f0a2c4e",
    "Bearer " + SECRET,
]


def dead_urls() -> list[str]:
    port = free_port()  # nothing listens there once the probe socket is closed
    return [
        f"http://user:{SECRET}@127.0.0.1:{port}/v1",
        f"http://127.0.0.1:{port}/v1?api_key={SECRET}",
        f"http://{SECRET}@127.0.0.1:{port}/v1#token={SECRET}",
    ]


def test_redact_url_keeps_the_endpoint_and_hides_credentials():
    assert (
        redact_url("http://user:pw@h:1/v1?api_key=k&v=2") == "http://***@h:1/v1?api_key=***&v=***"
    )
    assert redact_url("https://api.example.com/v1") == "https://api.example.com/v1"
    assert redact_url("http://h/v1?" + SECRET) == "http://h/v1?***"
    assert SECRET not in redact_url(f"http://[::1:{SECRET}/v1")  # unparseable: not shown
    text = f"failed: POST http://u:{SECRET}@h/v1/chat?key={SECRET} (and 'https://{SECRET}@x')"
    assert SECRET not in redact_text(text) and "http://***@h/v1/chat?key=***" in redact_text(text)
    assert redact_text(f"value {SECRET} here", [SECRET]) == "value *** here"


@pytest.mark.parametrize(
    "name", ["OPENAI_API_KEY", "my_key", "PZ_KEY_2", "hf_token", "ASIA_PACIFIC_OPENAI_KEY"]
)
def test_variable_names_are_not_mistaken_for_keys(name):
    assert not looks_like_key(name)


@pytest.mark.parametrize("key", KEYS)
def test_keys_are_not_taken_for_variable_names(key):
    assert looks_like_key(key)


def test_model_errors_and_log_records_hide_url_credentials(caplog):
    caplog.set_level(logging.DEBUG)  # the HTTP libraries log request URLs at DEBUG and INFO
    for url in dead_urls():
        client = OpenAICompatibleClient("m", base_url=url, retry=NO_RETRY, timeout_s=2)
        with pytest.raises(ModelError) as err:
            client.complete(ASK, max_tokens=4)
        assert SECRET not in str(err.value) and "127.0.0.1" in str(err.value)
        assert SECRET not in client.cache_namespace
    assert caplog.records, "the libraries logged the requests (else this test proves nothing)"
    leaked = [r.getMessage() for r in caplog.records if SECRET in r.getMessage()]
    assert not leaked


def test_log_records_of_answered_requests_hide_url_credentials(caplog):
    caplog.set_level(logging.DEBUG)  # httpx logs each answered request's URL at INFO
    with OpenAISimulator({"sim": SimulatedModel()}) as sim:
        port = sim.base_url.rsplit(":", 1)[1]
        for url in (f"http://user:{SECRET}@127.0.0.1:{port}", f"{sim.base_url}?key={SECRET}"):
            client = OpenAICompatibleClient("sim", base_url=url, retry=NO_RETRY)
            assert client.complete(ASK, max_tokens=4).text
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)
    leaked = [r.getMessage() for r in caplog.records if SECRET in r.getMessage()]
    assert not leaked


def test_a_materialization_against_a_url_with_credentials_keeps_them_out_of_the_event_log(
    tmp_path: Path, mini_emails: Path, caplog
):
    caplog.set_level(logging.DEBUG)
    for i, url in enumerate(dead_urls()[:2]):
        store = tmp_path / f"store{i}"
        defs, q = build_definitions(
            Dataset.from_directory(mini_emails, batch_size=10).sem_filter(
                "The email mentions Raptor", depends_on="contents", name="raptor"
            ),
            f"leak{i}",
            model=OpenAICompatibleModel(
                model="m", base_url=url, max_retries=0, timeout_s=2, max_retry_seconds=2
            ),
            store_root=str(store),
        )
        with dg.instance_for_test() as instance:
            (batch,) = register_partitions(RecordStore(store), q, instance)
            res = defs.resolve_job_def(q.job.name).execute_in_process(
                partition_key=batch.key, instance=instance, raise_on_error=False
            )
            assert not res.success  # nothing listens: the step fails with a ModelError
            events = instance.all_logs(res.run_id)
            text = "\n".join(dg.serialize_value(e) for e in events)
        assert "cannot reach the model endpoint" in text and "127.0.0.1" in text
        assert SECRET not in text
    leaked = [r.getMessage() for r in caplog.records if SECRET in r.getMessage()]
    assert not leaked


@pytest.mark.parametrize("key", KEYS)
def test_a_key_given_as_api_key_env_is_refused_without_being_shown(key):
    with pytest.raises(Exception) as err:
        ModelSpec(kind="openai_compatible", model="m", api_key_env=key)
    assert "looks like a key and is not shown" in str(err.value)
    assert key not in str(err.value) and SECRET not in str(err.value)
    assert key not in repr(err.value)
    with pytest.raises(Exception) as err:  # the Python surface: an EnvVar named by the key
        OpenAICompatibleModel(model="m", api_key=dg.EnvVar(key))
    assert "looks like a key" in str(err.value) and key not in str(err.value)


YAML_WITH_KEY = """
type: pz_dagster.orchestration.component.PzQueryComponent
attributes:
  name: leaky
  source: {{path: {folder}}}
  operators:
    - {{type: sem_filter, name: raptor, predicate: The email mentions Raptor}}
  model: {{kind: openai_compatible, model: m, api_key_env: {key}}}
"""


@pytest.mark.parametrize("key", ["sk_live_" + SECRET, "AKIAIOSFODNN7EXAMPLE", "sk-proj-" + SECRET])
def test_the_cli_refuses_a_key_in_api_key_env_in_one_line_without_echoing_it(
    tmp_path: Path, mini_emails: Path, key: str, monkeypatch
):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    spec = tmp_path / "q.yaml"
    spec.write_text(YAML_WITH_KEY.format(folder=mini_emails, key=key))
    for command in ("explain", "run"):
        done = CliRunner().invoke(main, [command, "--query", str(spec)])
        assert done.exit_code == 1, done.output
        assert "looks like a key and is not shown" in done.output
        assert key not in done.output and SECRET not in done.output
        assert len(done.output.strip().splitlines()) == 1, done.output
