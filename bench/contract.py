"""What checking one candidate against its request's contract costs (`gateway/contract.py`), by shape.

    python -m bench.contract [--repeat 200]

Best-of-N checks every candidate of a request with `tools` or `response_format` (off the event loop,
on a thread). The caps (`MAX_TOOL_CALLS`, `MAX_CHECKED_BYTES`) are what bound the worst case; this
prints the time per candidate for typical answers, the largest ones still read, and runaway ones
that the caps refuse unread. Median of `--repeat` checks each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from gateway.contract import MAX_CHECKED_BYTES, MAX_TOOL_CALLS, Contract

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]},
                                     "days": {"type": "array", "items": {"type": "integer"}}},
    "required": ["city"]}}}
PERSON = {"type": "json_schema", "json_schema": {"name": "person", "schema": {
    "type": "object", "properties": {"name": {"type": "string"}, "notes": {"type": "array", "items": {"type": "string"}}},
    "required": ["name"]}}}


def calls(arguments: str, count: int = 1) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"c{i}", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
        for i in range(count)]}


def timed(check: Callable[[], str | None], repeat: int) -> tuple[float, str | None]:
    """Median seconds of `check`, and what it said."""
    said = check()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        check()
        times.append(time.perf_counter() - started)
    return statistics.median(times), said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="checks per shape (the median is printed)")
    args = parser.parse_args()
    tools = Contract.of({"tools": [WEATHER]})
    output = Contract.of({"response_format": PERSON})
    days = json.dumps({"city": "Paris", "days": list(range((MAX_CHECKED_BYTES - 64) // 8))})[:MAX_CHECKED_BYTES - 2]
    days = days[:days.rfind(",")] + "]}"
    notes = json.dumps({"name": "Ada", "notes": ["x" * 60] * ((MAX_CHECKED_BYTES - 64) // 66)})
    shapes = [
        ("one valid tool call", tools, calls('{"city": "Paris", "unit": "c"}')),
        ("one tool call, arguments not JSON", tools, calls('{"city": "Paris", "unit": ')),
        (f"{MAX_TOOL_CALLS} valid tool calls (the most read)", tools, calls('{"city": "Paris"}', MAX_TOOL_CALLS)),
        (f"{len(days) // 1024} KiB of arguments (near the most read)", tools, calls(days)),
        ("10,000 tool calls (refused unread)", tools, calls('{"city": "Paris"}', 10_000)),
        ("1 MB of arguments (refused unread)", tools, calls(json.dumps({"city": "x" * 1_000_000}))),
        ("a small JSON answer", output, {"role": "assistant", "content": '{"name": "Ada"}'}),
        (f"{len(notes) // 1024} KiB JSON answer (near the most read)", output, {"role": "assistant", "content": notes}),
    ]
    table = Table(title=f"Contract check per candidate (median of {args.repeat})")
    for column in ("candidate", "µs", "verdict"):
        table.add_column(column, justify="right" if column == "µs" else "left")
    for name, contract, message in shapes:
        seconds, said = timed(lambda: contract.violation(message.get("content") or "", message), args.repeat)
        table.add_row(name, f"{seconds * 1e6:,.0f}", "holds" if said is None else said[:70])
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
