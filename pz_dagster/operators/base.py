"""What every physical operator returns, and the helpers they share."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from pz_dagster.errors import RecordFailure
from pz_dagster.models.base import Completion, Usage
from pz_dagster.query.schema import ERROR

Record = dict[str, Any]
Progress = Callable[[int, int], None]

# Characters per token assumed when a client cannot count tokens; English prose with the
# SmolLM2/GPT tokenizers runs at 3.5-4.5, so 3 keeps a margin.
CHARS_PER_TOKEN = 3


@dataclass
class OperatorStats:
    records_in: int = 0
    records_out: int = 0
    evaluated: int = 0  # records the operator actually processed (not passed-through failures)
    failures: int = 0  # records this operator failed on (kept, with the error column set)
    passed_through_errors: int = 0  # records that arrived with an error and were kept as they were
    truncated: int = 0  # records whose text was cut to fit the model's context (logged)
    usage: Usage = field(default_factory=Usage)
    failure_examples: list[str] = field(default_factory=list)
    truncated_ids: list[str] = field(default_factory=list)

    def fail(self, record: Record, op_name: str, message: str) -> Record:
        self.failures += 1
        if len(self.failure_examples) < 5:
            self.failure_examples.append(f"{record.get('record_id')}: {message}")
        return {**record, ERROR: f"{op_name}: {message}"}


@dataclass
class OperatorResult:
    records: list[Record]
    stats: OperatorStats
    strategy: str
    model: str | None = None


def split_failed(
    records: Iterable[Record],
) -> tuple[list[tuple[int, Record]], list[tuple[int, Record]]]:
    """(index, record) pairs of healthy records and of records that already carry an error."""
    ok, failed = [], []
    for i, r in enumerate(records):
        (failed if r.get(ERROR) else ok).append((i, r))
    return ok, failed


def parse_json_output(completion: Completion, model: type[BaseModel]) -> BaseModel:
    """Validate a model's JSON answer; a bad answer raises RecordFailure with the reason."""
    if completion.finish_reason == "length":
        raise RecordFailure(
            f"answer cut off at the max_tokens limit ({completion.usage.output_tokens} tokens): "
            f"{completion.text[:80]!r}"
        )
    try:
        return model.model_validate(json.loads(completion.text))
    except json.JSONDecodeError as exc:
        raise RecordFailure(
            f"answer is not valid JSON ({exc.msg}): {completion.text[:80]!r}"
        ) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        raise RecordFailure(
            f"answer does not match the schema at {where}: {first['msg']}"
        ) from None
