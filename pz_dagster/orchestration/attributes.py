"""Owners, tags, group and key prefix for every asset of a query: what ``build_definitions``
and the YAML component take, the way dagster-dbt's and dagster-sling's translators set them."""

from __future__ import annotations

import re

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, field_validator

# Dagster's rule for group names, and what keeps a DuckDB view name plain.
KEY_PART = r"^[A-Za-z0-9_]+$"


class AssetAttributes(BaseModel):
    """Applied to every asset of a query. Asset keys become ``[*key_prefix, <query>,
    <operator>]`` (the DuckDB views ``<prefix>__...__<query>__<operator>``); the group is the
    query's name unless ``group_name`` says otherwise; ``tags`` are added to the assets' own
    (their kinds).

    >>> a = AssetAttributes(owners=["team:legal"], tags={"tier": "gold"}, key_prefix=["discovery"])
    >>> a.key_prefix, a.group_for("enron")
    (['discovery'], 'enron')
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    owners: list[str] = Field(
        default_factory=list,
        description="Owners of every asset: email addresses or team names as `team:<name>`.",
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="Tags added to every asset (Dagster's tag rules)."
    )
    group_name: str | None = Field(
        default=None,
        description="Asset group of every asset; default: the query's name.",
        json_schema_extra={"pattern": KEY_PART},
    )
    key_prefix: list[str] = Field(
        default_factory=list,
        description="Put before the query's name in every asset key, e.g. [legal, discovery].",
        json_schema_extra={"items": {"type": "string", "pattern": KEY_PART}},
    )

    # A Resolvable component takes no constrained types (Annotated, Field(pattern=)): the
    # patterns are in the JSON schema for `dg check yaml`, and checked here.
    @field_validator("key_prefix")
    @classmethod
    def _key_parts(cls, parts: list[str]) -> list[str]:
        if bad := [p for p in parts if not re.match(KEY_PART, p)]:
            raise ValueError(f"{bad} must be letters, digits and underscores (asset key parts)")
        return parts

    @field_validator("group_name")
    @classmethod
    def _group(cls, name: str | None) -> str | None:
        if name is not None and not re.match(KEY_PART, name):
            raise ValueError(f"group name {name!r} must be letters, digits and underscores")
        return name

    def group_for(self, query: str) -> str:
        return self.group_name or query

    def apply(self, spec: dg.AssetSpec) -> dg.AssetSpec:
        """``spec`` with these owners, tags and group (its key is set when it is compiled)."""
        spec = spec.merge_attributes(owners=list(self.owners), tags=dict(self.tags))
        if self.group_name:
            spec = spec.replace_attributes(group_name=self.group_name)
        return spec
