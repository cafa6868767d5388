"""
The domain's exceptions.

Nothing here knows HTTP or AMQP: each wire maps these to its own answer in exactly one place
(``lambdatx.wire`` for the Invoke API and AMQP replies, ``lambdatx.runtime_api`` for the Runtime
API).
"""


class LambdaTxError(Exception):
    """Base of every error lambdatx raises on purpose."""


# --- Invoke side: service errors (the function did not run) ---------------------------------


class ServiceError(LambdaTxError):
    """
    An invocation was refused before the function ran (spec/errors.md E01-E18).

    ``error_type`` is the AWS error code put in ``x-amzn-ErrorType``.
    """

    error_type = "ServiceException"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ValidationException(ServiceError):
    """A malformed name, qualifier or enumerated header (E03)."""

    error_type = "ValidationException"

    @classmethod
    def for_value(cls, value: str, member: str, constraint: str) -> "ValidationException":
        return cls(
            f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
            f"constraint: {constraint}"
        )


class InvalidParameterValueException(ServiceError):
    error_type = "InvalidParameterValueException"


class InvalidRequestContentException(ServiceError):
    error_type = "InvalidRequestContentException"


class ResourceNotFoundException(ServiceError):
    error_type = "ResourceNotFoundException"


class UnknownOperationException(ServiceError):
    error_type = "UnknownOperationException"

    def __init__(self, method: str, path: str, allowed: bool = False):
        super().__init__(f"Unknown operation: {method} {path}")
        #: True when the path is known but the method is not (405).
        self.method_not_allowed = allowed


class RequestEntityTooLargeException(ServiceError):
    error_type = "RequestEntityTooLargeException"


class UnsupportedMediaTypeException(ServiceError):
    error_type = "UnsupportedMediaTypeException"


class TooManyRequestsException(ServiceError):
    error_type = "TooManyRequestsException"

    def __init__(self) -> None:
        super().__init__("Rate Exceeded.")


class ServiceException(ServiceError):
    error_type = "ServiceException"


class ShuttingDown(ServiceException):
    def __init__(self) -> None:
        super().__init__("Service is shutting down.")


# --- Runtime side: misuse of the Runtime API (spec/runtime-api.md section 7) ------------------


class RuntimeApiError(LambdaTxError):
    """A runtime called the Runtime API in a way its state does not allow."""


class InvalidRequestID(RuntimeApiError):
    """The request id is unknown on this listener (R01)."""


class InvalidStateTransition(RuntimeApiError):
    """The call is not allowed in the instance's state (R02)."""

    def __init__(self, from_state: str, to_state: str):
        super().__init__(from_state, to_state)
        self.from_state = from_state
        self.to_state = to_state


class PayloadTooLarge(RuntimeApiError):
    """A POST body crossed the configured response limit (R03)."""

    def __init__(self, limit: int):
        super().__init__(limit)
        self.limit = limit


class InvalidFunctionResponseMode(RuntimeApiError):
    """``Lambda-Runtime-Function-Response-Mode`` is not buffered/streaming (R04)."""


class InvokeTimeout(RuntimeApiError):
    """An external runtime posted for an invocation that already timed out (R06)."""


class RuntimeShuttingDown(RuntimeApiError):
    """A pending external ``/next`` is released at shutdown (R07)."""


# --- Start-up ------------------------------------------------------------------------------


class ListenError(LambdaTxError):
    """A listener could not be opened at start (exit 69): ``address`` and the OS ``reason``."""

    def __init__(self, address: str, reason: str):
        super().__init__(f"cannot listen on {address}: {reason}")
        self.address = address
        self.reason = reason
