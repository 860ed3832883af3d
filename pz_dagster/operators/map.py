"""Semantic map: add typed columns extracted or computed by a model, one output per record.

A document past the model's context is read in chunks and the answers gathered per field
(``gather``); a field declared with evidence also gets the verbatim quote its value rests on,
checked against the document and located in it (``evidence``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from pz_dagster.errors import RecordFailure
from pz_dagster.models.base import ChatModel, Usage, json_schema_for
from pz_dagster.models.embeddings import EmbeddingModel
from pz_dagster.operators import gather as g
from pz_dagster.operators.base import (
    OperatorResult,
    Outcome,
    Progress,
    Record,
    Tally,
    run_on_model,
)
from pz_dagster.operators.evidence import (
    evidence_column,
    locate_quote,
    location_column,
    location_json,
)
from pz_dagster.operators.prompts import (
    context_chars,
    document_prompt,
    field_lines,
    render_fields,
)
from pz_dagster.query.plan import SemanticMap

# Room for one bounded string value (~240 characters) per field, plus the JSON around it.
TOKENS_PER_FIELD = 96


def map_instruction(node: SemanticMap) -> str:
    assert node.output is not None
    return (
        f"From the document above, extract these fields:\n{field_lines(node.output)}\n"
        "Reply with one JSON object with exactly these keys."
    )


def map_max_tokens(node: SemanticMap, parts: bool = False) -> int:
    """Tokens an answer may take: a bounded value per field, and a quote per evidence field
    (per field on a part of a long document)."""
    quotes = len(node.output_fields) if parts else len(node.evidence)
    return TOKENS_PER_FIELD * (len(node.output_fields) + quotes) + 16


class FieldReader:
    """How one map asks a model for its fields on one document, whole or in chunks."""

    def __init__(
        self,
        node: SemanticMap,
        model: ChatModel,
        reading: g.Reading,
        embedder: EmbeddingModel | None = None,
    ):
        assert node.output is not None
        self.node, self.model, self.reading, self.embedder = node, model, reading, embedder
        self.max_tokens = map_max_tokens(node)
        self.part_tokens = map_max_tokens(node, parts=True)
        self.whole = g.with_evidence(node.output, node.evidence)
        self.whole_schema = json_schema_for(self.whole)
        # every part quotes its evidence for every field: the quotes decide among the parts
        self.part = g.part_model(node.output, node.output_fields)
        self.part_schema = json_schema_for(self.part)

    def read(self, text: str, tally: Tally) -> tuple[dict[str, Any], g.Read]:
        """The fields' values (and quotes) for ``text``, and how it was read."""
        if g.budget_chars(text, self.model, self.max_tokens) is None:  # it fits: one prompt
            return self._ask_whole(text, tally), g.Read()
        if self.reading.mode == "first":  # the old way: the first context-sized part only
            first = g.chunks_for(text, self.model, self.max_tokens, self.reading)
            values = self._ask_whole(first[0].text, tally)
            return values, g.Read(chunks=len(first), read=1, cut=True)
        chunks = g.chunks_for(text, self.model, self.part_tokens, self.reading)
        return self._read_parts(text, chunks, tally)

    def _ask_whole(self, text: str, tally: Tally) -> dict[str, Any]:
        prompt = document_prompt(text, map_instruction(self.node))
        answer = tally.ask(self.model, prompt, self.whole, self.whole_schema, self.max_tokens)
        return answer.model_dump()

    def _read_parts(
        self, text: str, chunks: list[g.Chunk], tally: Tally
    ) -> tuple[dict[str, Any], g.Read]:
        assert self.node.output is not None
        if self.reading.mode == "select":
            (answers, asked, prompts), cut = self._select(text, chunks, tally), False
        else:
            # the limit is in context-sized chunks' worth of text: smaller chunks, more of them
            size = self.reading.chunk_size
            context = context_chars(self.model, self.part_tokens)
            limit = self.reading.max_chunks * max(1, context // size if size else 1)
            groups = [[c] for c in chunks[:limit]]
            answers, prompts, cut = self._ask(groups, tally), len(groups), len(chunks) > limit
            asked = len(groups)
        values, merges = self._gather(answers, text, tally)
        read = g.Read(len(chunks), asked, merges, cut, prompts - len(answers))
        return values, read

    def _select(
        self, text: str, chunks: list[g.Chunk], tally: Tally
    ) -> tuple[list[tuple[BaseModel, str]], int, int]:
        """Chunk selection: each field's ``keep`` best chunks, read packed; then, for the
        fields no answer backed by a quote the document holds yet, their next best chunks, up
        to ``SELECT_ROUNDS`` rounds. The answers, chunks read and prompts asked (nothing is cut)."""
        assert self.node.output is not None
        queries = g.field_queries(self.node.output)
        orders, usage = g.rank_chunks(chunks, queries, self.embedder)
        if usage is not None:
            tally.usage += usage
        answers: list[tuple[BaseModel, str]] = []
        asked: set[int] = set()
        prompts = 0
        for _ in range(g.SELECT_ROUNDS):
            found = {f for f in queries if self._backed(answers, f, text)}
            wanted = {
                i
                for f, order in orders.items()
                if f not in found
                for i in [j for j in order if j not in asked][: self.reading.keep]
            }
            if not wanted:
                break
            groups = g.pack(
                [c for c in chunks if c.index in wanted],
                context_chars(self.model, self.part_tokens),
            )
            answers += self._ask(groups, tally)
            asked |= wanted
            prompts += len(groups)
        return answers, len(asked), prompts

    def _backed(self, answers: list[tuple[BaseModel, str]], name: str, text: str) -> bool:
        found = g.candidates_of(answers, name, self.node.output_fields, text)
        return any(c.support and not g.blank(c.value) for c in found)

    def _ask(self, groups: list[list[g.Chunk]], tally: Tally) -> list[tuple[BaseModel, str]]:
        """Each group's answer, with the text shown. A group whose answer stays invalid (also
        after the retry) abstains; when every group of a record does, the record fails."""
        assert self.node.output is not None
        instruction = g.part_instruction(field_lines(self.node.output))
        answers: list[tuple[BaseModel, str]] = []
        failed: RecordFailure | None = None
        for group in groups:
            shown = g.shown_text(group)
            prompt = document_prompt(shown, instruction)
            try:
                answer = tally.ask(
                    self.model, prompt, self.part, self.part_schema, self.part_tokens
                )
            except RecordFailure as exc:
                if exc.transport:  # the endpoint did not answer: the record fails, as always
                    raise
                tally.usage = exc.usage if isinstance(exc.usage, Usage) else tally.usage
                failed = exc
                continue
            answers.append((answer, shown))
        if groups and not answers and failed is not None:
            raise failed.with_usage(tally.usage, f"every part of the document failed: {failed}")
        return answers

    def _gather(
        self, answers: list[tuple[BaseModel, str]], text: str, tally: Tally
    ) -> tuple[dict[str, Any], int]:
        assert self.node.output is not None
        values: dict[str, Any] = {}
        merges = 0
        for name, info in self.node.output.model_fields.items():
            found = g.candidates_of(answers, name, self.node.output_fields, text)
            best, merged = g.gather_field(
                name,
                info.description or "",
                found,
                self.model,
                tally,
                g.is_list_field(self.node.output, name),
            )
            merges += merged
            values[name] = None if best is None else best.value
            if name in self.node.evidence:
                values[evidence_column(name)] = None if best is None else best.quote
        return values, merges


def locate_evidence(
    node: SemanticMap, record: Record, values: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, bool]]:
    """The evidence columns of ``values`` (quote and location) and, per evidence field with a
    value, whether one of the columns the map reads holds its quote."""
    out: dict[str, Any] = {}
    grounding: dict[str, bool] = {}
    for name in node.evidence:
        quote = values.get(evidence_column(name))
        where = None
        for column in node.depends_on:
            provenance = record.get("provenance") if column == "contents" else None
            text = record.get(column)
            where = locate_quote(quote, values.get(name), str(text or ""), provenance)
            if where is not None:
                where["column"] = column
                break
        out[evidence_column(name)] = quote
        out[location_column(name)] = location_json(where)
        if values.get(name) is not None:
            grounding[name] = where is not None
    return out, grounding


def direct_map(
    node: SemanticMap,
    records: list[Record],
    model: ChatModel,
    progress: Progress | None = None,
    *,
    text_of: Callable[[Record], str] | None = None,
    reading: g.Reading | None = None,
    embedder: EmbeddingModel | None = None,
    strategy: str = "direct",
) -> OperatorResult:
    """One prompt per record (per chunk of a long one, see ``gather``); the answer is decoded
    under the output model's JSON schema. The model reads the record's ``depends_on`` columns,
    or ``text_of(record)`` when given (code synthesis shows it only the chunks that name the
    fields); evidence is checked against the whole of each column the map reads.

    A record whose answer fails validation (also after one corrective retry) keeps its place,
    with null output columns and the ``error`` column saying why.
    """
    assert node.output is not None
    reader = FieldReader(node, model, reading or g.Reading(), embedder)
    empty = dict.fromkeys(node.adds)

    def extract(record: Record) -> Outcome:
        tally = Tally()
        text = text_of(record) if text_of else render_fields(record, node.depends_on)
        values, read = reader.read(text, tally)
        evidence, grounding = locate_evidence(node, record, values)
        fields = {n: values.get(n) for n in node.output_fields}
        return Outcome(
            {**record, **fields, **evidence},
            tally.usage,
            truncated=read.cut,
            chunks=read.chunks,
            read=read.read,
            merges=read.merges,
            grounding=grounding,
            abstained=read.abstained,
        )

    result = run_on_model(
        records,
        extract,
        model,
        op_name=node.name,
        strategy=strategy,
        progress=progress,
        on_failure=lambda r: {**r, **empty},
    )
    if result.stats.chunked:
        result.extras["reading"] = reader.reading.describe()
    if node.evidence:
        result.extras["grounding"] = result.stats.grounding()
    return result


def chunk_select_map(
    node: SemanticMap,
    records: list[Record],
    model: ChatModel,
    progress: Progress | None = None,
    *,
    embedder: EmbeddingModel | None = None,
    chunk_chars: int | None = None,
    keep: int = g.SELECT_KEEP,
) -> OperatorResult:
    """``direct_map`` that reads, of a document past the context, only the chunks that matter
    for some field (``gather.rank_chunks``: BM25 of the fields' names and descriptions, or
    ``embedder``'s similarity)."""
    return direct_map(
        node,
        records,
        model,
        progress,
        reading=g.Reading("select", chunk_chars, keep),
        embedder=embedder,
        strategy="chunk_select",
    )
