"""A pz-dagster query declared in YAML: the ``PzQueryComponent`` Dagster Component.

The query part of the YAML (name, source, operators) is a ``QuerySpec`` that compiles through
the Python DSL (``dataset_from_spec``), so both surfaces give the same plan; the rest says how it
runs (optimizer policy, chat model, record store)::

    type: pz_dagster.orchestration.component.PzQueryComponent
    attributes:
      name: enron
      source: {path: emails, batch_size: 10}     # relative to this defs.yaml
      operators:
        - {type: sem_filter, name: mentions_raptor, predicate: The email mentions Raptor}
      optimizer: {policy: "MinCostAtQuality(0.9)"}
      model: {kind: openai_compatible, model: gpt-4o-mini, api_key_env: OPENAI_API_KEY}

``dg scaffold defs pz_dagster.orchestration.component.PzQueryComponent <folder>`` writes a
commented template; ``dg check yaml`` and ``dg check defs`` validate it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
from dagster_shared.yaml_utils import parse_yamls_with_source_position
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from optimizer import parse_policy
from pz_dagster.operators.registry import strategy_names
from pz_dagster.orchestration.attributes import AssetAttributes
from pz_dagster.orchestration.compiler import CompiledQuery
from pz_dagster.orchestration.definitions import build_definitions
from pz_dagster.orchestration.optimization import OptimizerResource
from pz_dagster.orchestration.resources import (
    LocalLlamaModel,
    ModelPrice,
    ModelResource,
    OpenAICompatibleModel,
)
from pz_dagster.query.declaration import Declaration
from pz_dagster.query.spec import (
    QuerySpec,
    SourceSpec,
    SpecLines,
    dataset_from_spec,
    resolve_path,
)
from pz_dagster.redact import API_KEY_ENV_REFUSED, REDACTED, looks_like_key

__all__ = ["ModelSpec", "OptimizerSpec", "PzQueryComponent", "QuerySpec", "dataset_from_spec"]

Strategy = Literal[strategy_names()]  # type: ignore[valid-type]
# JSON-schema patterns, so that `dg check yaml` rejects what the validators reject at load.
POLICY_PATTERN = (
    r"^\s*(MaxQuality|MinCost|MinTime|(MinCostAtQuality|MinTimeAtQuality|MaxQualityAtCost)"
    r"\(\s*[0-9.eE+-]+\s*\))\s*$"
)
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _templated(spec_cls: type[BaseModel], **kwargs: str) -> dg.Resolver:
    """Renders ``{{ env.X }}`` templates inside a nested spec too (dagster renders top-level
    strings only), so that a folder or a base_url can come from the environment."""
    return dg.Resolver(
        lambda ctx, spec: spec_cls.model_validate(
            ctx.resolve_value(spec.model_dump(exclude_unset=True))
        ),
        model_field_type=spec_cls,
        **kwargs,
    )


def _optimizer_doc(name: str) -> str | None:
    """The description of an ``OptimizerResource`` field: written once, there."""
    return OptimizerResource.model_fields[name].description


class OptimizerSpec(dg.Model):
    """How the optimizer chooses models and strategies (see ``OptimizerResource``)."""

    policy: str = Field(
        default="MaxQuality",
        description=_optimizer_doc("policy"),
        json_schema_extra={"pattern": POLICY_PATTERN},
    )
    strategies: list[Strategy] = Field(
        default_factory=lambda: ["direct"], description=_optimizer_doc("strategies")
    )
    sample_size: int = Field(default=10, description=_optimizer_doc("sample_size"))
    labels_path: str | None = Field(
        default=None,
        description=f"{_optimizer_doc('labels_path')} Relative to this defs.yaml or absolute.",
    )

    @field_validator("policy")
    @classmethod
    def _policy_parses(cls, value: str) -> str:
        parse_policy(value)  # its ValueError names the known policies
        return value

    def resource(self, base_dir: Path | None) -> OptimizerResource:
        labels = resolve_path(self.labels_path, base_dir) if self.labels_path else None
        return OptimizerResource(
            policy=self.policy,
            strategies=list(self.strategies),
            sample_size=self.sample_size,
            labels_path=labels,
        )


class ModelSpec(dg.Model):
    """The chat model: the bundled local one, or any OpenAI-compatible endpoint."""

    # A refused api_key_env may be the key itself: pydantic's messages must not repeat input.
    model_config = ConfigDict(hide_input_in_errors=True)

    kind: Literal["local", "openai_compatible"] = Field(default="local", description="Backend.")
    model: str | None = Field(default=None, description="openai_compatible: default model.")
    models: list[str] = Field(default_factory=list, description="Other models operators may use.")
    base_url: str | None = Field(default=None, description="Endpoint URL; empty means OpenAI.")
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the API key (never the key).",
        json_schema_extra={"pattern": ENV_NAME_PATTERN},
    )
    prices: dict[str, ModelPrice] = Field(default_factory=dict, description="By model name.")
    max_concurrency: int = Field(default=8, description="Requests in flight per operator.")
    context_tokens: int = Field(default=128_000, description="Context window of the models.")
    model_path: str | None = Field(default=None, description="local: GGUF file; empty: bundled.")
    n_ctx: int = Field(default=4096, description="local: context window in tokens.")
    compute_price_per_hour: float | None = Field(
        default=None,
        description="Dollars per hour of the machine a local model runs on (its dollars are then "
        "a compute estimate); empty: local 0.20, openai_compatible none (unpriced models $0).",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_key_as_env_name(cls, data: Any) -> Any:
        """Refuses a key written where its variable's name goes, before any message can show
        it. The value is also blanked in the input mapping itself, because Dagster's YAML
        loader prints the input of a failed validation in its own format (whatever this
        model's config says), and that input is this very mapping."""
        if isinstance(data, dict):
            value = data.get("api_key_env")
            if isinstance(value, str) and looks_like_key(value):
                data["api_key_env"] = REDACTED
                raise ValueError(API_KEY_ENV_REFUSED)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.kind == "openai_compatible" and not self.model:
            raise ValueError("kind openai_compatible needs `model` (the endpoint's model name)")
        remote = ("model", "models", "base_url", "api_key_env", "prices")
        if self.kind == "local" and (extra := [f for f in remote if getattr(self, f)]):
            raise ValueError(f"{extra} apply to kind openai_compatible, not local")
        return self

    def resource(self) -> ModelResource:
        if self.kind == "local":
            compute = {}
            if self.compute_price_per_hour is not None:
                compute = {"compute_price_per_hour": self.compute_price_per_hour}
            return LocalLlamaModel(model_path=self.model_path, n_ctx=self.n_ctx, **compute)
        return OpenAICompatibleModel(
            model=self.model or "",
            models=list(self.models),
            base_url=self.base_url,
            api_key=dg.EnvVar(self.api_key_env) if self.api_key_env else None,
            prices=dict(self.prices),
            max_concurrency=self.max_concurrency,
            context_tokens=self.context_tokens,
            compute_price_per_hour=self.compute_price_per_hour,
        )


class PzQueryScaffolder(dg.Scaffolder):
    """``dg scaffold defs``: a commented defs.yaml to edit, named after its folder."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = re.sub(r"\W", "_", request.target_path.name)
        text = SCAFFOLD_TEMPLATE.format(type_name=request.type_name, name=name)
        (request.target_path / "defs.yaml").write_text(text)


@dg.scaffold_with(PzQueryScaffolder)
class PzQueryComponent(dg.Component, QuerySpec, dg.Resolvable):
    """A pz-dagster query declared in YAML: source folder, operators, optimizer, model.

    It compiles to the assets of the Python DSL: one asset per operator, a dynamic partition
    per batch of documents, a job and a new-documents sensor.

    >>> c = PzQueryComponent.from_attributes_dict(attributes={
    ...     "name": "enron", "source": {"path": "emails"},
    ...     "operators": [{"type": "sem_filter", "predicate": "The email mentions Raptor"}]})
    >>> [n.name for n in dataset_from_spec(c).node.lineage()], c.chat_model.kind
    (['documents', 'sem_filter_1'], 'local')
    """

    source: Annotated[
        SourceSpec,
        _templated(SourceSpec, description="Folder of documents; batches become partitions."),
    ]
    optimizer: OptimizerSpec = Field(
        default_factory=OptimizerSpec, description="Optimizer policy and strategies."
    )
    # YAML key `model`; the attribute is named otherwise because Resolvable.model() exists.
    chat_model: Annotated[
        ModelSpec,
        _templated(ModelSpec, model_field_name="model", description="The operators' chat model."),
    ] = Field(default_factory=ModelSpec)
    store_root: str | None = Field(
        default=None,
        description="Record store folder, relative to this defs.yaml or absolute; default "
        "$PZ_DAGSTER_STORE or $DAGSTER_HOME/pz_store.",
    )
    asset_attributes: AssetAttributes = Field(
        default_factory=AssetAttributes,
        description="Owners, tags, group and key prefix of every asset of the query.",
    )

    def build_query(
        self, base_dir: Path | None = None, lines: SpecLines | None = None
    ) -> tuple[dg.Definitions, CompiledQuery]:
        """Definitions and compiled query; relative paths are taken from ``base_dir``;
        ``lines`` say where the YAML declares the source and each operator."""
        store = resolve_path(self.store_root, base_dir) if self.store_root else None
        return build_definitions(
            dataset_from_spec(self, base_dir, lines),
            self.name,
            model=self.chat_model.resource(),
            optimizer=self.optimizer.resource(base_dir),
            store_root=store,
            asset_attributes=self.asset_attributes,
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        folder = context.path if context.path.is_dir() else context.path.parent
        yaml_path = context.path / "defs.yaml" if context.path.is_dir() else context.path
        return self.build_query(folder, yaml_lines(yaml_path, self.name))[0]


def yaml_lines(path: Path, name: str) -> SpecLines | None:
    """Where the defs.yaml at ``path`` declares query ``name``'s source and operators (for
    each asset's code reference); None when it cannot tell (no such file, or no document of
    it holds that query)."""
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return None
    docs = parse_yamls_with_source_position(path.read_text(), str(path))
    for doc in docs:
        attributes = doc.value.get("attributes") if isinstance(doc.value, dict) else None
        if len(docs) > 1 and (not isinstance(attributes, dict) or attributes.get("name") != name):
            continue
        tree = doc.source_position_tree.children.get("attributes")
        if tree is None:
            return None

        def at(child: Any) -> Declaration:
            return Declaration(str(path), child.position.start.line)

        operators = tree.children.get("operators")
        ops = operators.children if operators is not None else {}
        source = tree.children.get("source")
        return SpecLines(
            source=at(source) if source is not None else None,
            operators=tuple(at(ops[i]) for i in sorted(ops)),
        )
    return None


SCAFFOLD_TEMPLATE = """\
type: {type_name}

attributes:
  # Asset keys are <name>/<operator>; the job is <name>_job, the sensor <name>_new_documents.
  name: {name}

  source:
    path: documents        # folder of documents, relative to this file or absolute
    batch_size: 25         # documents per Dagster partition
    # unit: page           # a record per document (default), page (PDF, PPTX) or section

  # Applied in order, each an asset. `type` is the Dataset method (sem_filter, sem_map or
  # sem_add_columns, sem_classify, sem_flat_map, sem_topk, sem_agg, agg, filter, project,
  # limit, sort, distinct); the other keys are its arguments.
  operators:
    - type: sem_filter
      name: is_relevant
      predicate: The document refers to a fraudulent scheme
      depends_on: contents
    - type: sem_add_columns
      name: details
      depends_on: contents
      fields:
        - name: sender
          type: str        # str, int, float, bool, list[str], list[int], list[float]
          desc: The email address of the sender

  optimizer:
    policy: MaxQuality     # MinCost, MinTime, MinCostAtQuality(0.9), MaxQualityAtCost(0.001)
    strategies: [direct]   # also few_shot, batched, chain_of_thought, cascade, lexical_proxy...
    # labels_path: labels.json

  model:
    kind: local            # the bundled SmolLM2-135M, in-process
    # kind: openai_compatible
    # model: gpt-4o-mini
    # base_url: http://127.0.0.1:8000/v1   # empty: OpenAI
    # api_key_env: OPENAI_API_KEY          # the variable's name, never the key itself

  # store_root: /var/data/pz_store          # default: $DAGSTER_HOME/pz_store

  # asset_attributes:        # on every asset of the query
  #   owners: [team:legal]   # email addresses or team:<name>
  #   tags: {{tier: gold}}
  #   group_name: legal      # default: the query's name
  #   key_prefix: [legal]    # keys legal/<name>/<operator>
"""
