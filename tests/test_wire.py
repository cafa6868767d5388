"""Unit tests for lambdatx.wire: service-error and outcome wire shapes (invoke-api.md §5, §7)."""

from __future__ import annotations

import json

import pytest

from lambdatx.config import Config
from lambdatx.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestEntityTooLargeException,
    ResourceNotFoundException,
    ServiceError,
    ServiceException,
    ShuttingDown,
    TooManyRequestsException,
    UnknownOperationException,
    UnsupportedMediaTypeException,
    ValidationException,
)
from lambdatx.invocation import Outcome, timed_out
from lambdatx.wire import error_body, error_response, internal_error, outcome_headers


@pytest.mark.parametrize(
    "error, status, body",
    [
        (ValidationException("v"), 400, {"message": "v"}),
        (InvalidParameterValueException("p"), 400, {"Type": "User", "message": "p"}),
        (InvalidRequestContentException("c"), 400, {"Type": "User", "message": "c"}),
        (ResourceNotFoundException("n"), 404, {"Type": "User", "Message": "n"}),
        (
            UnknownOperationException("GET", "/x"),
            404,
            {"Type": "User", "message": "Unknown operation: GET /x"},
        ),
        (RequestEntityTooLargeException("big"), 413, {"Type": "User", "message": "big"}),
        (UnsupportedMediaTypeException("enc"), 415, {"Type": "User", "message": "enc"}),
        (
            TooManyRequestsException(),
            429,
            {
                "Type": "User",
                "message": "Rate Exceeded.",
                "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
            },
        ),
        (ServiceException("s"), 500, {"Type": "Service", "Message": "s"}),
        (ShuttingDown(), 500, {"Type": "Service", "Message": "Service is shutting down."}),
    ],
)
def test_error_shapes(error, status, body):
    """Each service error has its status, error type header, JSON type and AWS member casing."""
    got_status, headers, raw = error_response(error, "rid")
    assert got_status == status
    assert json.loads(raw) == body
    assert list(json.loads(raw)) == list(body)  # member order as in the spec
    assert (b"Content-Type", b"application/json") in headers
    assert (b"x-amzn-RequestId", b"rid") in headers
    assert (b"x-amzn-ErrorType", error.error_type.encode()) in headers
    assert not any(name == b"X-Amz-Function-Error" for name, _ in headers)


def test_throttle_retry_after():
    """A 429 carries Retry-After: 1."""
    _, headers, _ = error_response(TooManyRequestsException(), "rid")
    assert (b"Retry-After", b"1") in headers


def test_method_not_allowed():
    """A known path with the wrong method is a 405 with an Allow header."""
    status, headers, _ = error_response(UnknownOperationException("GET", "/p", allowed=True), "r")
    assert status == 405
    assert (b"Allow", b"POST") in headers
    _, headers, _ = error_response(
        UnknownOperationException("POST", "/_/ready", allowed=True), "r", allow=b"GET, HEAD"
    )
    assert (b"Allow", b"GET, HEAD") in headers


def test_unknown_subclass_uses_ancestor():
    """A ServiceError subclass without its own row is shaped like its nearest ancestor."""

    class Custom(ResourceNotFoundException):
        pass

    class Bare(ServiceError):
        pass

    assert error_response(Custom("x"), "r")[0] == 404
    assert json.loads(error_body(Custom("x"))) == {"Type": "User", "Message": "x"}
    assert error_response(Bare("y"), "r")[0] == 500


def test_internal_error():
    """An unexpected exception becomes the E18 ServiceException naming the request id."""
    error = internal_error("abc")
    assert error_response(error, "abc")[0] == 500
    assert error.message == "Internal error (request abc)."


def test_message_escaping():
    """Messages with quotes and non-ASCII text still give valid JSON."""
    error = ValidationException.for_value('a"b\u00e9', "functionName", "c")
    assert json.loads(error_body(error))["message"] == error.message


def test_outcome_headers_success():
    """A success carries the executed version and the runtime's content type only."""
    headers = outcome_headers(Outcome(b"hi", "text/plain"), Config(function_version="3"))
    assert headers == [(b"X-Amz-Executed-Version", b"3"), (b"Content-Type", b"text/plain")]


def test_outcome_headers_function_error_and_tail():
    """A function error adds X-Amz-Function-Error: Unhandled, and a tail X-Amz-Log-Result."""
    outcome = timed_out("rid", 3).with_log_result("bG9n")
    headers = dict(outcome_headers(outcome, Config()))
    assert headers == {
        b"X-Amz-Executed-Version": b"$LATEST",
        b"Content-Type": b"application/json",
        b"X-Amz-Function-Error": b"Unhandled",
        b"X-Amz-Log-Result": b"bG9n",
    }
