"""The contract of the AI control API: ``web/openapi/ai_control.json``, loaded once, with a
JSON Schema validator per operation; and the refusals, in the contract's Error shape.

Request bodies and path parameters are validated against that very file, so the document
an engine author reads and the server that answers cannot drift apart.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

log = logging.getLogger(__name__)

SPEC_PATH = Path(__file__).parent.parent / "openapi" / "ai_control.json"
_SPEC_URI = "urn:switchboard:ai-control"
_MAX_MESSAGE = 300


# ---- errors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    path: str
    message: str


class ApiError(Exception):
    """A refusal with its HTTP status; the middleware turns it into the Error schema."""

    def __init__(
        self,
        status: int,
        error: str,
        details: Iterable[Problem] = (),
        *,
        state: str | None = None,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = list(details)
        self.state = state
        self.code = code
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.error}
        if self.code is not None:
            body["code"] = self.code
        if self.details:
            body["details"] = [{"path": p.path, "message": p.message} for p in self.details]
        if self.state is not None:
            body["state"] = self.state
        body.update(self.extra)
        return web.json_response(body, status=self.status, headers=self.headers)


# ---- the contract ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One operation of the OpenAPI file, ready to check requests against."""

    operation_id: str
    parameters: Mapping[str, Any]  # path parameter name -> validator
    body: Any | None  # validator of the JSON body, if the operation takes one
    body_required: bool


class ControlApiSpec:
    """The OpenAPI description, loaded once, with a JSON Schema validator per operation.

    OpenAPI 3.1 schemas are JSON Schema 2020-12. Each validator starts from a ``$ref``
    to the schema's place inside the whole document, so the document's own
    ``#/components/...`` references resolve exactly as a reader of the file expects.
    """

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self._registry: Registry[Any] = Registry().with_resource(
            _SPEC_URI, DRAFT202012.create_resource(dict(document))
        )
        self.operations: dict[str, Operation] = {}
        for path, item in document["paths"].items():
            for method, op in item.items():
                pointer = f"/paths/{_escape(path)}/{method}"
                self.operations[op["operationId"]] = self._operation(op, pointer)

    @classmethod
    def load(cls, path: Path = SPEC_PATH) -> ControlApiSpec:
        return cls(json.loads(path.read_text()))

    def _operation(self, op: Mapping[str, Any], pointer: str) -> Operation:
        parameters: dict[str, Any] = {}
        for index, ref in enumerate(op.get("parameters", [])):
            param, where = self._deref(ref, f"{pointer}/parameters/{index}")
            if param.get("in") == "path":
                parameters[param["name"]] = self._validator(f"{where}/schema")
        body = None
        required = False
        if "requestBody" in op:
            request_body, where = self._deref(op["requestBody"], f"{pointer}/requestBody")
            body = self._validator(f"{where}/content/application~1json/schema")
            required = bool(request_body.get("required", False))
        return Operation(op["operationId"], parameters, body, required)

    def _deref(self, obj: Mapping[str, Any], pointer: str) -> tuple[Mapping[str, Any], str]:
        """Follow an OpenAPI-level ``$ref`` (parameters, request bodies) within the file."""
        while "$ref" in obj:
            pointer = str(obj["$ref"]).removeprefix("#")
            obj = self.document
            for part in pointer.strip("/").split("/"):
                obj = obj[part.replace("~1", "/").replace("~0", "~")]
        return obj, pointer

    def _validator(self, pointer: str) -> Any:
        return Draft202012Validator(
            {"$ref": f"{_SPEC_URI}#{pointer}"},
            registry=self._registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )

    def check_path(self, operation_id: str, values: Mapping[str, str]) -> None:
        op = self.operations[operation_id]
        problems = [
            problem
            for name, validator in op.parameters.items()
            for problem in _problems(validator, values.get(name), f"path.{name}")
        ]
        if problems:
            raise ApiError(400, "invalid path parameter", problems)

    def check_body(self, operation_id: str, body: bytes) -> dict[str, Any]:
        """The parsed body, or ApiError 400 saying what is wrong with it."""
        op = self.operations[operation_id]
        if not body.strip():
            if op.body_required:
                raise ApiError(400, "a JSON body is required",
                               [Problem("body", "the body is empty")])
            return {}
        try:
            value = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, "the body is not JSON", [Problem("body", str(exc))]) from None
        if op.body is None:
            raise ApiError(400, "this operation takes no body",
                           [Problem("body", "send no body")])
        problems = _problems(op.body, value, "body")
        if problems:
            raise ApiError(400, "the body does not match the API description", problems)
        assert isinstance(value, dict)  # every request schema is an object
        return value


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def _problems(validator: Any, instance: object, root: str) -> list[Problem]:
    found: dict[tuple[str, str], None] = {}
    for error in validator.iter_errors(instance):
        for problem in _explain(error, root):
            found[(problem.path, problem.message)] = None
    return sorted((Problem(path, message) for path, message in found), key=lambda p: p.path)


def _explain(error: Any, root: str) -> list[Problem]:
    """jsonschema's messages, pointed at the offending field and kept short.

    Its own text repeats the whole offending value, which for a 5000-character
    transcript line would drown the one useful word ("too long").
    """
    path = _path(root, error.absolute_path)
    keyword, expected = error.validator, error.validator_value
    instance = error.instance
    if keyword == "required" and isinstance(instance, dict):
        return [Problem(_path(root, [*error.absolute_path, name]), "is required")
                for name in expected if name not in instance]
    if keyword == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        return [Problem(_path(root, [*error.absolute_path, name]),
                        f"is not allowed here (allowed: {', '.join(allowed)})")
                for name in sorted(instance) if name not in allowed]
    if keyword == "maxLength" and isinstance(instance, str):
        message = f"is {len(instance)} characters long; at most {expected} are allowed"
    elif keyword == "minLength" and isinstance(instance, str):
        message = f"must be at least {expected} character{'s' if expected != 1 else ''} long"
    elif keyword == "enum":
        message = f"must be one of {', '.join(map(str, expected))}"
    else:
        message = error.message
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    return [Problem(path, message)]


def _path(root: str, parts: Iterable[object]) -> str:
    return root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


