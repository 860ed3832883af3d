"""Physical configurations: how one logical operator is run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class PhysicalConfig:
    """The model and strategy chosen for one operator, plus strategy parameters.

    >>> PhysicalConfig("sem_filter", "smollm2", "direct").to_json()
    '{"model": "smollm2", "operator": "sem_filter", "params": {}, "strategy": "direct"}'
    """

    operator: str
    model: str | None
    strategy: str
    params: dict[str, object] = field(default_factory=dict, hash=False)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PhysicalConfig:
        data = json.loads(text)
        return cls(data["operator"], data.get("model"), data["strategy"], data.get("params") or {})
