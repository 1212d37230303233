"""A tiny, safe row-filter language for traces: `seq_id<16`, `layer>=3 and pos!=0`.

Grammar (whitespace is free):

    expr   := clause ("and" clause)*
    clause := COLUMN OP INT
    OP     := "<" | "<=" | ">" | ">=" | "==" | "!="

Only integer columns can be named, so the expression can never reach Python's `eval`: it is tokenised
with one regular expression and turned into typed `Clause` objects, which are applied with numpy.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

FILTER_COLUMNS: tuple[str, ...] = ("seq_id", "pos", "token_id", "layer")

_COMPARE: Mapping[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}

# Longest operators first, so `<=` is not read as `<` followed by `=`.
_TOKEN = re.compile(r"\s*(?:(?P<int>-?\d+)|(?P<op><=|>=|==|!=|<|>)|(?P<word>[A-Za-z_][A-Za-z_0-9]*))")


class FilterSyntaxError(ValueError):
    """The filter expression is not of the grammar above; the message quotes the offending part."""


@dataclass(frozen=True)
class Clause:
    column: str
    op: str
    value: int


@dataclass(frozen=True)
class RowFilter:
    """A conjunction of clauses; `RowFilter(())` keeps every row."""

    clauses: tuple[Clause, ...]

    def mask(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Rows that satisfy every clause. `columns[name]` is [N]; returns bool [N]."""
        lengths = {len(values) for values in columns.values()}
        keep = np.ones(lengths.pop() if lengths else 0, dtype=bool)
        for clause in self.clauses:
            keep &= _COMPARE[clause.op](columns[clause.column], clause.value)
        return keep


def _tokenise(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    at = 0
    stripped_end = len(text.rstrip())
    while at < stripped_end:
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            raise FilterSyntaxError(f"unexpected {text[at:].strip()[:20]!r} at character {at} of {text!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        at = match.end()
    return tokens


def parse_filter(text: str, columns: Sequence[str] = FILTER_COLUMNS) -> RowFilter:
    """Parse `text`; raise `FilterSyntaxError` naming what is wrong (unknown column, missing value...)."""
    tokens = _tokenise(text)
    if not tokens:
        raise FilterSyntaxError(f"empty filter {text!r}: expected e.g. 'seq_id<16'")
    clauses: list[Clause] = []
    at = 0
    while True:
        if at + 3 > len(tokens):
            raise FilterSyntaxError(f"incomplete clause at the end of {text!r}: expected COLUMN OP INT")
        (k_col, column), (k_op, op), (k_val, value) = tokens[at : at + 3]
        if k_col != "word" or column not in columns:
            raise FilterSyntaxError(f"unknown column {column!r} in {text!r}: expected one of {', '.join(columns)}")
        if k_op != "op":
            raise FilterSyntaxError(f"expected an operator (< <= > >= == !=) after {column!r}, got {op!r}")
        if k_val != "int":
            raise FilterSyntaxError(f"expected an integer after '{column}{op}', got {value!r}")
        clauses.append(Clause(column, op, int(value)))
        at += 3
        if at == len(tokens):
            return RowFilter(tuple(clauses))
        if tokens[at] != ("word", "and"):
            raise FilterSyntaxError(f"expected 'and' between clauses, got {tokens[at][1]!r} in {text!r}")
        at += 1
