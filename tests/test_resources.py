"""Model resources in Dagster runs: the response cache makes a re-materialization free, and the
API key never reaches the event log or metadata."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from optimizer import MaxQuality, MinCost, OperatorSpec, decide
from pz_dagster import Dataset, ModelError
from pz_dagster.models.base import DEFAULT_CPU_PRICE_PER_HOUR, DEFAULT_GPU_PRICE_PER_HOUR
from pz_dagster.orchestration import (
    LocalLlamaModel,
    OpenAICompatibleModel,
    RecordStore,
    VLLMModel,
    build_definitions,
)
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.orchestration.resources import ModelPrice, ModelPrior
from pz_dagster.testing import OpenAISimulator, SimulatedModel
from tests.conftest import free_port

SECRET = "sk-test-DO-NOT-LOG-7f3a9c"


def query(folder: Path) -> Dataset:
    return (
        Dataset.from_directory(folder, batch_size=10)
        .sem_filter("The email mentions Raptor", name="raptor")
        .sem_map([{"name": "sender", "type": "str", "desc": "sender address"}], name="sender")
    )


def run_partition(defs, q, instance, run_config=None) -> str:
    key = register_partitions(defs.resources["pz_store"].get_store(), q, instance)[0].key
    result = defs.resolve_job_def(q.job.name).execute_in_process(
        partition_key=key, instance=instance, run_config=run_config or {}
    )
    assert result.success
    return result.run_id


def metadata(instance, key: dg.AssetKey) -> dict:
    rec = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1).records[0]
    return {k: v.value for k, v in rec.asset_materialization.metadata.items()}


@pytest.fixture
def priced_sim():
    with OpenAISimulator({"sim-large": SimulatedModel(latency_s=0.01)}) as sim:
        yield sim


def model_resource(sim: OpenAISimulator, **kw) -> OpenAICompatibleModel:
    return OpenAICompatibleModel(
        model="sim-large",
        base_url=sim.base_url,
        prices={"sim-large": ModelPrice(input_per_mtok=10.0, output_per_mtok=30.0)},
        **kw,
    )


def test_second_materialization_is_served_from_the_cache(mini_emails, tmp_path, priced_sim):
    defs, q = build_definitions(
        query(mini_emails),
        "cached",
        model=model_resource(priced_sim),
        store_root=str(tmp_path / "store"),
    )
    with dg.instance_for_test() as instance:
        run_partition(defs, q, instance)
        first = metadata(instance, q.asset_key("raptor"))
        calls_after_first = priced_sim.calls["sim-large"]
        assert first["usage/model_calls"] == 2 and first["usage/cache_hits"] == 0
        assert first["cost/dollars"] > 0 and first["cost/basis"] == "token prices"
        run_partition(defs, q, instance)
        for name in ("raptor", "sender"):
            again = metadata(instance, q.asset_key(name))
            assert again["usage/model_calls"] == 0 and again["cost/dollars"] == 0.0
            assert again["usage/cache_hits"] == 2 and again["usage/input_tokens"] == 0
        assert priced_sim.calls["sim-large"] == calls_after_first
        # Opting out of the cache calls the model again.
        run_partition(
            defs, q, instance, {"ops": {"cached__raptor": {"config": {"use_cache": False}}}}
        )
        assert metadata(instance, q.asset_key("raptor"))["usage/model_calls"] == 2


def test_api_key_never_reaches_logs_or_metadata(mini_emails, tmp_path, priced_sim, monkeypatch):
    monkeypatch.setenv("PZ_TEST_API_KEY", SECRET)
    model = model_resource(priced_sim, api_key=dg.EnvVar("PZ_TEST_API_KEY"))
    defs, q = build_definitions(
        query(mini_emails), "secret", model=model, store_root=str(tmp_path / "s")
    )
    with dg.instance_for_test() as instance:
        run_id = run_partition(defs, q, instance)
        assert priced_sim.requests[0].authorization == f"Bearer {SECRET}"  # the key was used
        logs = instance.all_logs(run_id)
        assert logs
        text = "\n".join(str(e) for e in logs)
        assert SECRET not in text
        run = instance.get_run_by_id(run_id)
        assert SECRET not in str(run.run_config) and SECRET not in str(run.tags)
        for asset in q.assets:
            assert SECRET not in str(metadata(instance, asset.key))


def test_dead_endpoint_fails_the_asset_with_a_clear_message(mini_emails, tmp_path, monkeypatch):
    monkeypatch.setenv("PZ_TEST_API_KEY", SECRET)
    model = OpenAICompatibleModel(
        model="m",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        api_key=dg.EnvVar("PZ_TEST_API_KEY"),
        max_retries=1,
        max_retry_seconds=5,
    )
    defs, q = build_definitions(
        query(mini_emails), "dead", model=model, store_root=str(tmp_path / "s")
    )
    with dg.instance_for_test() as instance:
        key = register_partitions(RecordStore(tmp_path / "s"), q, instance)[0].key
        result = defs.resolve_job_def(q.job.name).execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        message = str(failure.event_specific_data.error)
        assert "cannot reach the model endpoint" in message and SECRET not in message
        assert SECRET not in "\n".join(str(e) for e in instance.all_logs(result.run_id))


def test_local_models_cost_their_compute_at_a_documented_configurable_price():
    assert (DEFAULT_CPU_PRICE_PER_HOUR, DEFAULT_GPU_PRICE_PER_HOUR) == (0.20, 2.00)
    (cpu,) = LocalLlamaModel().profiles()
    assert cpu.second_price == pytest.approx(0.20 / 3600) and cpu.compute_priced
    assert LocalLlamaModel(compute_price_per_hour=1.8).profiles()[0].second_price == 0.0005
    assert not LocalLlamaModel(compute_price_per_hour=0).profiles()[0].compute_priced
    with pytest.raises(Exception, match="cannot be negative"):
        LocalLlamaModel(compute_price_per_hour=-1)
    # a prior call's seconds are one sequence's; the engine decodes max_num_seqs at once
    (gpu,) = VLLMModel(model="m", max_num_seqs=8).profiles()
    assert gpu.second_price == pytest.approx(2.00 / 3600 / 8)
    # a local server: only models without a token price cost their compute, shared by the
    # requests in flight; a server not given a machine price stays $0 (it may be an API)
    server = OpenAICompatibleModel(
        model="local",
        models=["gpt-4o-mini", "priced"],
        prices={"priced": ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0)},
        compute_price_per_hour=0.8,
        max_concurrency=4,
    )
    by_name = {p.name: p for p in server.profiles()}
    assert by_name["local"].second_price == pytest.approx(0.8 / 3600 / 4)
    assert not by_name["gpt-4o-mini"].compute_priced and not by_name["priced"].compute_priced
    assert server.dollars_basis(["local"]) == server.dollars_basis(["gpt-4o-mini", "local"])
    assert server.dollars_basis(["local"]) == "compute estimate"
    assert server.dollars_basis(["priced", None]) == "token prices"
    assert not OpenAICompatibleModel(model="local").profiles()[0].compute_priced


def test_min_cost_and_max_quality_choose_differently_between_local_models():
    """A local server with a small fast model and a large slow one, no token prices: their
    compute prices them, so MinCost takes the small one and MaxQuality the large one (at $0
    both took the large one)."""
    priors = {
        "small": ModelPrior(quality=0.6, prompt_tokens_per_s=3000, output_tokens_per_s=150),
        "large": ModelPrior(quality=0.9, prompt_tokens_per_s=300, output_tokens_per_s=15),
    }
    op = OperatorSpec("f", "sem_filter")

    def chosen(policy, **kw) -> str | None:
        r = OpenAICompatibleModel(model="large", models=["small"], priors=priors, **kw)
        return decide([op], r.profiles(), [], policy).candidate("f").model

    assert chosen(MinCost()) == chosen(MaxQuality()) == "large"  # unpriced: MinCost = MaxQuality
    assert chosen(MinCost(), compute_price_per_hour=0.2) == "small"
    assert chosen(MaxQuality(), compute_price_per_hour=0.2) == "large"


def test_a_local_run_records_its_compute_as_dollars(mini_emails, tmp_path):
    with OpenAISimulator({"local": SimulatedModel(latency_s=0.01)}) as sim:
        model = OpenAICompatibleModel(
            model="local", base_url=sim.base_url, compute_price_per_hour=3.6, max_concurrency=2
        )
        defs, q = build_definitions(
            query(mini_emails), "compute", model=model, store_root=str(tmp_path / "store")
        )
        with dg.instance_for_test() as instance:
            run_partition(defs, q, instance)
            md = metadata(instance, q.asset_key("raptor"))
    assert md["usage/model_calls"] == 2 and md["cost/dollars"] > 0
    run = md["history/record"]["run"]  # exact; the entries beside it are rounded for reading
    assert run["dollars"] == pytest.approx(run["seconds"] * 3.6 / 3600 / 2)
    assert md["cost/basis"] == "compute estimate"
    assert "dollars of local are a compute estimate" in md["decision"]


def test_resource_knows_its_models():
    r = OpenAICompatibleModel(model="a", models=["b"], base_url="http://127.0.0.1:9/v1")
    assert r.available_models == ["a", "b"]
    assert r.get_client("b").model_name == "b"
    with pytest.raises(ModelError, match="not configured"):
        r.get_client("c")


@pytest.mark.slow
def test_in_process_model_is_freed_when_each_run_ends(mini_emails, tmp_path, monkeypatch):
    """A run loads the bundled model and frees it at teardown: a process that runs many
    partitions does not keep one model (and its context, about 1 GB) per run alive until the
    garbage collector happens to find it (measured: 9.7 GB after five runs, before the fix)."""
    from pz_dagster.models.local_llama import LocalLlamaClient
    from pz_dagster.orchestration import LocalLlamaModel

    closed = []
    real_close = LocalLlamaClient.close

    def close(self):
        real_close(self)
        closed.append(self._llm is None)

    monkeypatch.setattr(LocalLlamaClient, "close", close)
    ds = Dataset.from_directory(mini_emails).sem_filter("mentions Raptor", name="f")
    defs, q = build_definitions(
        ds, "free", model=LocalLlamaModel(prompt_cache_mb=64), store_root=str(tmp_path / "s")
    )
    with dg.instance_for_test() as instance:
        (b,) = register_partitions(RecordStore(tmp_path / "s"), q, instance)
        for _ in range(2):
            assert (
                defs.resolve_job_def(q.job.name)
                .execute_in_process(partition_key=b.key, instance=instance)
                .success
            )
    assert closed == [True, True]  # each run's model was freed when the run ended
