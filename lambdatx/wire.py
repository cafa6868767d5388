"""
The one mapping from invoke outcomes and service errors to the Invoke API wire shape.

Protocol (spec/invoke-api.md §5, §7): a service error is an HTTP status, ``Content-Type:
application/json``, ``x-amzn-RequestId``, ``x-amzn-ErrorType: <code>`` and a JSON body
``{"Type":"User"|"Service","message"|"Message":…}``; ``ValidationException`` carries ``message``
only, ``ResourceNotFoundException`` and ``ServiceException`` use ``Message`` (the AWS model's
casing), 429 adds ``Retry-After: 1`` and a ``Reason``, 405 adds ``Allow``. An outcome (the
function ran) is always 200, with ``X-Amz-Executed-Version`` and, for function errors,
``X-Amz-Function-Error: Unhandled``.

Everything here is wire-neutral: a status, a list of ``(name, value)`` byte pairs and a body, so
the HTTP front end and the AMQP consumer (which adds ``X-Lambdatx-Status-Code``) share it.
"""

from __future__ import annotations

import json

from lambdatx.config import Config
from lambdatx.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestEntityTooLargeException,
    ResourceNotFoundException,
    ServiceError,
    ServiceException,
    TooManyRequestsException,
    UnknownOperationException,
    UnsupportedMediaTypeException,
    ValidationException,
)
from lambdatx.invocation import JSON, Outcome

Headers = list[tuple[bytes, bytes]]

REQUEST_ID = b"x-amzn-RequestId"
ERROR_TYPE = b"x-amzn-ErrorType"
CONTENT_TYPE = b"Content-Type"
EXECUTED_VERSION = b"X-Amz-Executed-Version"
FUNCTION_ERROR = b"X-Amz-Function-Error"
LOG_RESULT = b"X-Amz-Log-Result"
RETRY_AFTER = b"Retry-After"
ALLOW = b"Allow"
UNHANDLED = b"Unhandled"
APPLICATION_JSON = JSON.encode("ascii")

THROTTLE_REASON = "ReservedFunctionConcurrentInvocationLimitExceeded"


class _Shape:
    """How one error class looks on the wire."""

    __slots__ = ("status", "fault", "member", "typed")

    def __init__(
        self, status: int, fault: str = "User", member: str = "message", typed: bool = True
    ):
        self.status = status
        self.fault = fault
        self.member = member
        #: False for ValidationException, whose body has no ``Type``.
        self.typed = typed


# Most specific first; a subclass without its own row takes its nearest ancestor's.
_SHAPES: dict[type[ServiceError], _Shape] = {
    ValidationException: _Shape(400, typed=False),
    InvalidParameterValueException: _Shape(400),
    InvalidRequestContentException: _Shape(400),
    ResourceNotFoundException: _Shape(404, member="Message"),
    UnknownOperationException: _Shape(404),
    RequestEntityTooLargeException: _Shape(413),
    UnsupportedMediaTypeException: _Shape(415),
    TooManyRequestsException: _Shape(429),
    ServiceException: _Shape(500, fault="Service", member="Message"),
    ServiceError: _Shape(500, fault="Service", member="Message"),
}


def _shape(error_class: type[ServiceError]) -> _Shape:
    shape = _SHAPES.get(error_class)
    if shape is None:
        shape = next(_SHAPES[c] for c in error_class.__mro__ if c in _SHAPES)
        _SHAPES[error_class] = shape
    return shape


def error_body(error: ServiceError) -> bytes:
    """The JSON body of a service error."""
    shape = _shape(type(error))
    document: dict[str, str] = {"Type": shape.fault} if shape.typed else {}
    document[shape.member] = error.message
    if isinstance(error, TooManyRequestsException):
        document["Reason"] = THROTTLE_REASON
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def error_response(
    error: ServiceError, request_id: str, allow: bytes = b"POST"
) -> tuple[int, Headers, bytes]:
    """
    Status, headers and body answering ``error`` (errors.md E01-E18).

    ``allow`` is the ``Allow`` value of a 405 (the invoke path accepts POST only).
    """
    shape = _shape(type(error))
    status = shape.status
    headers: Headers = [
        (CONTENT_TYPE, APPLICATION_JSON),
        (REQUEST_ID, request_id.encode("ascii")),
        (ERROR_TYPE, error.error_type.encode("ascii")),
    ]
    if isinstance(error, UnknownOperationException) and error.method_not_allowed:
        status = 405
        headers.append((ALLOW, allow))
    elif isinstance(error, TooManyRequestsException):
        headers.append((RETRY_AFTER, b"1"))
    return status, headers, error_body(error)


def internal_error(request_id: str) -> ServiceException:
    """E18: an unexpected exception before dispatch (a bug)."""
    return ServiceException(f"Internal error (request {request_id}).")


def outcome_headers(outcome: Outcome, config: Config) -> Headers:
    """
    Headers of a 200 for an outcome (invoke-api.md §5), without ``x-amzn-RequestId``.

    The AMQP consumer uses the same pairs as reply headers.
    """
    headers: Headers = [
        (EXECUTED_VERSION, config.function_version.encode("utf-8")),
        (
            CONTENT_TYPE,
            (
                APPLICATION_JSON
                if not outcome.content_type or outcome.content_type == JSON
                else outcome.content_type.encode("utf-8")
            ),
        ),
    ]
    if outcome.function_error:
        headers.append((FUNCTION_ERROR, UNHANDLED))
    if outcome.log_result is not None:
        headers.append((LOG_RESULT, outcome.log_result.encode("ascii")))
    return headers
