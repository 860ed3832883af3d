"""Semantic join: a model decides, pair by pair, whether a predicate holds."""

from __future__ import annotations

from pz_dagster.models.base import ChatModel
from pz_dagster.operators.base import OperatorResult, Outcome, Progress, Record, Tally, run_on_model
from pz_dagster.operators.filter import FILTER_MAX_TOKENS, FILTER_SCHEMA, FilterAnswer
from pz_dagster.operators.prompts import document_prompt, fit_to_context, render_fields
from pz_dagster.query.plan import SemanticJoin


def nested_loop_join(
    node: SemanticJoin,
    records: list[Record],
    right: list[Record],
    model: ChatModel,
    progress: Progress | None = None,
) -> OperatorResult:
    """One prompt per (left, right) pair, the left document first so that its prompt prefix is
    reused across all right records. Right records carrying an error are not joined."""
    assert node.right is not None
    instruction_head = f"Condition: {node.predicate.strip()}\nRecord B:\n"
    usable = [r for r in right if not r.get("error")]
    right_cols = [c for c, _ in node.right.schema if c != "error"]

    def pair_up(left: Record) -> Outcome:
        text, cut = fit_to_context(
            render_fields(left, node.depends_on), model, FILTER_MAX_TOKENS + 400
        )
        tally, joined = Tally(), []
        for r in usable:
            instruction = (
                f"{instruction_head}{render_fields(r, node.right_depends_on)[:1500]}\n"
                "Does the condition hold for the document above (record A) and record B? "
                'Reply {"answer": "YES"} or {"answer": "NO"}.'
            )
            prompt = document_prompt(text, instruction)
            answer = tally.ask(model, prompt, FilterAnswer, FILTER_SCHEMA, FILTER_MAX_TOKENS)
            if answer.answer == "YES":  # type: ignore[attr-defined]
                extra = {node.right_name(c): r.get(c) for c in right_cols}
                joined.append(
                    {**left, **extra, "record_id": f"{left['record_id']}|{r['record_id']}"}
                )
        return Outcome(joined or None, tally.usage, cut)

    return run_on_model(
        records,
        pair_up,
        model,
        op_name=node.name,
        strategy="direct (nested loop)",
        progress=progress,
    )
