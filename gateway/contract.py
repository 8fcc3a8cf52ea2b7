"""What a request itself demands of every answer: its tools' JSON Schemas, its `tool_choice`, and
its `response_format`. Checked before any scorer has a say.

A scorer reads text and judges quality; it cannot know that a tool call's arguments must match the
schema the client sent. So best-of-N first sorts candidates into those that hold the contract and
those that break it (`Contract.violation`), and the scorer ranks within each group: a broken tool
call can win only when no candidate holds (then the reply is flagged degraded, with the reason).

The schemas are compiled once per request (`Contract.of`, a 400 naming the field when one is not a
valid JSON Schema), with `jsonschema`, the validator the OpenAI and MCP SDKs' ecosystem uses. A
candidate's check is bounded: past `MAX_TOOL_CALLS` calls or `MAX_CHECKED_BYTES` of arguments or
JSON text it breaks the contract unread, so a runaway candidate costs no more than a normal one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from jsonschema import exceptions as schema_errors
from jsonschema import validators
from jsonschema.protocols import Validator

from gateway.errors import APIError

MAX_TOOL_CALLS = 128  # tool calls of one candidate that are checked; more breaks the contract
MAX_CHECKED_BYTES = 64 * 1024  # arguments (all calls together) or JSON text checked per candidate

NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}  # OpenAI's meaning of a missing `parameters`


def _compile(schema: Any, param: str) -> Validator:
    """A validator for `schema` (its own `$schema` draft, else the newest), or a 400 naming `param`."""
    if not isinstance(schema, Mapping):
        raise APIError(400, f"{param} must be a JSON Schema object", param=param, code="invalid_json_schema")
    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except schema_errors.SchemaError as exc:
        where = "".join(f"[{p!r}]" for p in exc.path)
        raise APIError(400, f"{param} is not a valid JSON Schema: {exc.message}" + (f" (at {where})" if where else ""),
                       param=param, code="invalid_json_schema") from None
    return cls(schema)


def _first_error(validator: Validator, instance: Any) -> str | None:
    """The most relevant schema error for `instance`, in a line; None when it validates."""
    try:
        error = schema_errors.best_match(validator.iter_errors(instance))
    except Exception as exc:  # noqa: BLE001 - a schema that cannot be applied (an unresolvable $ref) fails the answer
        return f"the schema could not be applied: {type(exc).__name__}: {exc}"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{error.message}" + (f" (at /{where})" if where else "")


@dataclass(frozen=True)
class Contract:
    """The checks one request's answers must pass. Built by `Contract.of`; None when it asks nothing."""

    functions: dict[str, Validator] = field(default_factory=dict)  # function tool name -> its parameters
    tool_choice: str = "auto"  # auto | none | required | function (then `named` says which)
    allowed: frozenset[str] | None = None  # the functions tool_choice allows (a named one, or allowed_tools)
    output: Validator | None = None  # response_format json_schema
    json_object: bool = False  # response_format json_object (or json_schema): the text must parse

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> Contract | None:
        """The contract of a request's passthrough fields (`tools`, `tool_choice`, `response_format`);
        raises APIError 400 naming the field that cannot be checked."""
        tools, choice, response_format = params.get("tools"), params.get("tool_choice"), params.get("response_format")
        if tools is None and choice is None and response_format is None:
            return None
        functions, other = _functions(tools)
        tool_choice, allowed = _tool_choice(choice, functions, other, tools is not None)
        output, json_object = _response_format(response_format)
        contract = cls(functions=functions, tool_choice=tool_choice, allowed=allowed,
                       output=output, json_object=json_object)
        return None if contract == cls() else contract

    def violation(self, text: str, message: Mapping[str, Any] | None) -> str | None:
        """Why this answer breaks the contract, in a line; None when it holds. `message` is the chat
        message (with its tool calls); a completion has only text."""
        calls = list((message or {}).get("tool_calls") or [])
        if calls:
            return self._tool_calls_violation(calls)
        if self.tool_choice == "required" or self.tool_choice == "function":
            return "no tool call, but tool_choice requires one"
        return self._output_violation(text)

    def _tool_calls_violation(self, calls: list[Any]) -> str | None:
        if self.tool_choice == "none":
            return "a tool call, but tool_choice is none"
        if len(calls) > MAX_TOOL_CALLS:
            return f"{len(calls)} tool calls: more than the {MAX_TOOL_CALLS} checked"
        size = sum(len(str(((c or {}).get("function") or {}).get("arguments") or "")) for c in calls
                   if isinstance(c, Mapping))
        if size > MAX_CHECKED_BYTES:
            return f"{size} bytes of tool call arguments: more than the {MAX_CHECKED_BYTES} checked"
        for i, call in enumerate(calls):
            if not isinstance(call, Mapping):
                return f"tool_calls[{i}] is not an object"
            if call.get("type", "function") != "function":
                continue  # a custom tool's call carries free text: nothing to validate
            function = call.get("function") if isinstance(call.get("function"), Mapping) else {}
            name = function.get("name")
            if name not in self.functions:
                return f"tool_calls[{i}] calls {name!r}, which is not one of the request's tools"
            if self.allowed is not None and name not in self.allowed:
                return f"tool_calls[{i}] calls {name!r}, which tool_choice does not allow"
            try:
                arguments = orjson.loads(function.get("arguments") or "{}")
            except orjson.JSONDecodeError as exc:
                return f"tool_calls[{i}] ({name}): arguments are not valid JSON: {exc}"
            error = _first_error(self.functions[name], arguments)
            if error is not None:
                return f"tool_calls[{i}] ({name}): arguments do not match the tool's parameters: {error}"
        return None

    def _output_violation(self, text: str) -> str | None:
        if not self.json_object:
            return None
        if len(text) > MAX_CHECKED_BYTES:
            return f"{len(text)} characters of JSON: more than the {MAX_CHECKED_BYTES} checked"
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return f"the answer is not valid JSON, as response_format asks: {exc}"
        if self.output is None:
            return None if isinstance(value, dict) else "the answer is JSON but not an object, as json_object asks"
        error = _first_error(self.output, value)
        return None if error is None else f"the answer does not match response_format's schema: {error}"


def _functions(tools: Any) -> tuple[dict[str, Validator], set[str]]:
    """Function tools by name with their compiled parameters; the names of the other tools."""
    if tools is None:
        return {}, set()
    if not isinstance(tools, list):
        raise APIError(400, "tools must be a list of tools", param="tools", code="invalid_tools")
    functions: dict[str, Validator] = {}
    other: set[str] = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise APIError(400, f"tools[{i}] must be an object", param=f"tools[{i}]", code="invalid_tools")
        if tool.get("type", "function") != "function":
            custom = tool.get(str(tool.get("type")))
            if isinstance(custom, Mapping) and isinstance(custom.get("name"), str):
                other.add(custom["name"])
            continue
        function = tool.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) or not function["name"]:
            raise APIError(400, f"tools[{i}].function must be an object with a name", param=f"tools[{i}].function",
                           code="invalid_tools")
        name = function["name"]
        if name in functions:
            raise APIError(400, f"tools[{i}]: the function name {name!r} is given twice",
                           param=f"tools[{i}].function.name", code="invalid_tools")
        parameters = function.get("parameters")
        functions[name] = _compile(NO_PARAMETERS if parameters is None else parameters,
                                   f"tools[{i}].function.parameters")
    return functions, other


def _tool_choice(choice: Any, functions: dict[str, Validator], other: set[str],
                 has_tools: bool) -> tuple[str, frozenset[str] | None]:
    """(auto | none | required | function, the functions it allows or None for all)."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice or "auto", None
    if not has_tools:
        raise APIError(400, "tool_choice names a tool, but the request has no tools", param="tool_choice",
                       code="invalid_tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), Mapping) else None
        if name not in functions:
            raise APIError(400, f"tool_choice names the function {name!r}, which is not in tools",
                           param="tool_choice", code="invalid_tool_choice")
        return "function", frozenset({name})
    if isinstance(choice, Mapping) and choice.get("type") == "allowed_tools":
        spec = choice.get("allowed_tools") if isinstance(choice.get("allowed_tools"), Mapping) else {}
        names = {_tool_name(t) for t in spec.get("tools") or []}
        unknown = sorted(str(n) for n in names if n not in functions and n not in other)
        if unknown or not names:
            raise APIError(400, f"tool_choice.allowed_tools names tools that are not in tools: {unknown}"
                           if unknown else "tool_choice.allowed_tools.tools must name at least one tool",
                           param="tool_choice", code="invalid_tool_choice")
        mode = spec.get("mode", "auto")
        return ("required" if mode == "required" else "auto"), frozenset(names)
    if isinstance(choice, Mapping) and choice.get("type") == "custom":
        return "auto", None  # a custom tool's calls are not checked
    raise APIError(400, f"tool_choice must be auto, none, required or a tool, got {choice!r:.100}",
                   param="tool_choice", code="invalid_tool_choice")


def _tool_name(tool: Any) -> str | None:
    """The name in a tool reference: {"type": "function", "function": {"name": ...}} (or custom)."""
    if not isinstance(tool, Mapping):
        return None
    spec = tool.get(str(tool.get("type", "function")))
    return spec.get("name") if isinstance(spec, Mapping) else None


def _response_format(response_format: Any) -> tuple[Validator | None, bool]:
    """(the json_schema's validator, whether the text must be JSON)."""
    if response_format is None:
        return None, False
    if not isinstance(response_format, Mapping):
        raise APIError(400, "response_format must be an object", param="response_format", code="invalid_response_format")
    kind = response_format.get("type")
    if kind == "json_object":
        return None, True
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping) or "schema" not in spec:
            raise APIError(400, "response_format.json_schema must be an object with a schema",
                           param="response_format.json_schema", code="invalid_response_format")
        return _compile(spec["schema"], "response_format.json_schema.schema"), True
    return None, False  # text, or a format this gateway does not check (it still reaches the upstream)
