"""vLLM request building and batching (without vLLM), micro-batching, GPU pools, embeddings."""

from __future__ import annotations

import shutil
import threading
from types import SimpleNamespace

import dagster as dg
import pytest

from pz_dagster import Dataset, ModelError
from pz_dagster.models.base import DEFAULT_GPU_PRICE_PER_HOUR
from pz_dagster.models.batching import GenerationRequest, MicroBatcher
from pz_dagster.models.embeddings import LocalEmbeddingClient, OpenAIEmbeddingClient, cosine
from pz_dagster.models.vllm_engine import VLLMClient, sampling_params
from pz_dagster.operators import run_operator
from pz_dagster.orchestration import VLLMModel, build_definitions
from pz_dagster.testing import OpenAISimulator, SimulatedModel

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["YES", "NO"]}}}


class Params(SimpleNamespace):
    pass


def fake_vllm(structured: bool = True) -> SimpleNamespace:
    """Stands in for the vllm module: records what SamplingParams were built with."""
    sp = SimpleNamespace()
    if structured:
        sp.StructuredOutputsParams = lambda **kw: ("structured", kw)
    else:
        sp.GuidedDecodingParams = lambda **kw: ("guided", kw)
    return SimpleNamespace(SamplingParams=Params, sampling_params=sp)


class FakeEngine:
    """Stands in for vllm.LLM: answers each conversation, remembers batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def chat(self, conversations, sampling_params, use_tqdm=False):
        assert len(conversations) == len(sampling_params) and use_tqdm is False
        self.batches.append(len(conversations))
        return [
            SimpleNamespace(
                prompt_token_ids=[1] * 7,
                outputs=[
                    SimpleNamespace(
                        text='{"answer": "YES"}', token_ids=[1, 2, 3], finish_reason="stop"
                    )
                ],
            )
            for _ in conversations
        ]


def test_sampling_params_carry_the_schema_for_both_vllm_generations():
    req = GenerationRequest(
        [{"role": "user", "content": "x"}], SCHEMA, max_tokens=9, temperature=0.0
    )
    new = sampling_params(fake_vllm(structured=True), req)
    assert new.max_tokens == 9 and new.temperature == 0.0
    assert new.structured_outputs == ("structured", {"json": SCHEMA})
    old = sampling_params(fake_vllm(structured=False), req)
    assert old.guided_decoding == ("guided", {"json": SCHEMA})
    plain = sampling_params(fake_vllm(), GenerationRequest([], None, 5))
    assert not hasattr(plain, "structured_outputs") and plain.max_tokens == 5


def test_vllm_client_batches_a_partition():
    engine = FakeEngine()
    client = VLLMClient(
        "m", max_num_seqs=16, engine=engine, vllm_module=fake_vllm(), batch_wait_s=0.05
    )
    node = Dataset.from_directory("/d").sem_filter("is it spam").node
    records = [
        {"record_id": f"r{i}", "filename": "f", "contents": f"doc {i}", "error": None}
        for i in range(40)
    ]
    result = run_operator(node, records, client)
    assert len(result.records) == 40 and result.stats.usage.calls == 40
    assert sum(engine.batches) == 40 and max(engine.batches) == 16 and len(engine.batches) <= 6
    assert result.stats.usage.input_tokens == 40 * 7
    # a GPU costs its time: each request's share of the engine's time at the default price
    u = result.stats.usage
    assert u.dollars > 0
    assert u.dollars == pytest.approx(u.seconds * DEFAULT_GPU_PRICE_PER_HOUR / 3600)


def test_vllm_missing_says_how_to_install():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match=r"pip install -e '\.\[gpu\]'"):
            VLLMClient("m")
    else:
        pytest.skip("vllm is installed here")


@pytest.mark.skipif(
    shutil.which("nvidia-smi") is None,
    reason="needs an NVIDIA GPU and vllm (pip install -e '.[gpu]')",
)
def test_vllm_on_a_gpu():  # pragma: no cover - runs only where a GPU is
    client = VLLMClient(
        "HuggingFaceTB/SmolLM2-135M-Instruct", gpu_memory_utilization=0.3, max_num_seqs=8
    )
    done = client.complete(
        [{"role": "user", "content": "Is water wet?"}], json_schema=SCHEMA, max_tokens=16
    )
    assert done.text.replace(" ", "") in ('{"answer":"YES"}', '{"answer":"NO"}')


def test_micro_batcher_returns_each_caller_its_result_and_propagates_errors():
    batcher = MicroBatcher(
        lambda reqs: [r.max_tokens * 10 for r in reqs], max_batch=8, max_wait_s=0.05
    )
    results: dict[int, int] = {}

    def call(i: int) -> None:
        results[i] = batcher.submit(GenerationRequest([], None, i))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {i: i * 10 for i in range(20)}
    assert sum(batcher.batch_sizes) == 20 and max(batcher.batch_sizes) <= 8

    def broken(reqs):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        MicroBatcher(broken).submit(GenerationRequest([], None, 1))

    def picky(reqs):  # fails any batch holding the over-long request 13
        if any(r.max_tokens == 13 for r in reqs):
            raise ValueError("prompt longer than max_model_len")
        return [r.max_tokens for r in reqs]

    batcher = MicroBatcher(picky, max_batch=8, max_wait_s=0.05)
    outcomes: dict[int, object] = {}

    def call_picky(i: int) -> None:
        try:
            outcomes[i] = batcher.submit(GenerationRequest([], None, i))
        except ValueError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=call_picky, args=(i,)) for i in range(10, 18)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert isinstance(outcomes.pop(13), ValueError)
    assert outcomes == {i: i for i in range(10, 18) if i != 13}


def test_gpu_model_assets_run_in_a_pool(tmp_path):
    ds = Dataset.from_directory("/d").sem_filter("x", name="f").limit(3, name="l")
    defs, q = build_definitions(
        ds, "g", model=VLLMModel(model="m", pool="gpu"), store_root=str(tmp_path)
    )
    pools = {a.key.path[-1]: a.op.pool for a in q.assets}
    assert pools == {"documents": None, "f": "gpu", "l": None}
    dg.Definitions.validate_loadable(defs)


@pytest.mark.slow
def test_bundled_embeddings_load_offline_and_rank_sensibly():
    client = LocalEmbeddingClient()
    e = client.embed(
        ["The Raptor vehicles hide losses", "Raptor hedging structures", "Lunch on Friday?"]
    )
    assert len(e.vectors) == 3 and len(e.vectors[0]) == 384
    assert cosine(e.vectors[0], e.vectors[1]) > cosine(e.vectors[0], e.vectors[2]) + 0.2
    assert e.usage.input_tokens > 0 and e.usage.dollars == 0.0


def test_openai_compatible_embeddings():
    with OpenAISimulator({"emb": SimulatedModel()}) as sim:
        e = OpenAIEmbeddingClient("emb", base_url=sim.base_url).embed(
            ["raptor losses", "raptor losses hidden", "lunch"]
        )
    assert cosine(e.vectors[0], e.vectors[1]) > cosine(e.vectors[0], e.vectors[2])
    assert abs(cosine(e.vectors[0], e.vectors[0]) - 1.0) < 1e-9 and e.usage.input_tokens > 0


def test_openai_embeddings_are_sent_in_bounded_requests():
    from pz_dagster.models import embeddings

    texts = [f"text {i}" for i in range(embeddings.BATCH_INPUTS + 10)] + [""]
    with OpenAISimulator({"emb": SimulatedModel()}) as sim:
        e = OpenAIEmbeddingClient("emb", base_url=sim.base_url).embed(texts)
        assert len(e.vectors) == len(texts) and e.usage.calls == 2


def test_the_bundled_model_loads_without_llama_cpp_s_extra_weight_buffers():
    """llama.cpp's AMX buffers crash the process on some Sapphire Rapids machines
    (ggml-org/llama.cpp#20824): the local client loads without them, and leaves llama.cpp's
    defaults as they were."""
    from llama_cpp import llama_cpp

    from pz_dagster.models.local_llama import load_without_extra_buffers

    seen = load_without_extra_buffers(lambda: llama_cpp.llama_model_default_params())
    assert seen.use_extra_bufts is False
    assert llama_cpp.llama_model_default_params().use_extra_bufts is True


def test_the_llama_server_wrapper_loads_without_extra_weight_buffers():
    """The tests' and benchmarks' llama.cpp server (``pz_dagster.models.llama_server``) loads
    its model with the same default params, for the whole server process."""
    import subprocess
    import sys

    code = (
        "from pz_dagster.models.local_llama import disable_extra_buffers as d; d(); d()\n"
        "from llama_cpp import llama_cpp\n"
        "print(llama_cpp.llama_model_default_params().use_extra_bufts)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
