"""Domain errors → google.rpc.Status with ErrorInfo and BadRequest details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from facepayd import errors

DOMAIN = "facepay.terminal.v1"

# Most specific class first: the first isinstance match wins.
_CODES: tuple[tuple[type[errors.FacepayError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.TerminalBusy, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.NotSupported, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.WrongState, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.SdkNotReady, grpc.StatusCode.UNAVAILABLE),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeviceLost, grpc.StatusCode.UNAVAILABLE),
    (errors.DeviceTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.FaceSessionEnded, grpc.StatusCode.ABORTED),
    (errors.SdkError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.DeviceError, grpc.StatusCode.UNAVAILABLE),
    (errors.BackendUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ResponseNotTrusted, grpc.StatusCode.UNAVAILABLE),
    # Reason ORDER_STATE, metadata code INVALID_ORDER_STATE / ORDER_DONE / ORDER_CANCELED.
    (errors.OrderStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.BackendRejected, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
)


def grpc_code(exc: errors.FacepayError) -> grpc.StatusCode:
    """The gRPC code for a domain error."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def metadata(exc: errors.FacepayError) -> dict[str, str]:
    """ErrorInfo metadata: the error's identifying codes, never secrets."""
    if isinstance(exc, errors.TerminalBusy):
        return {"session_id": exc.session_id}
    if isinstance(exc, errors.SdkError):
        meta = {"method": exc.method, "return_code": exc.return_code}
        if exc.err_code:
            meta["err_code"] = exc.err_code
        return meta
    if isinstance(exc, errors.BackendRejected):
        return {"code": exc.code}
    if isinstance(exc, errors.Internal):
        return {"correlation_id": exc.correlation_id}
    return {}


def to_status(exc: errors.FacepayError) -> grpc.Status:
    """Build the rich status for exc."""
    code = grpc_code(exc)
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=metadata(exc))
    details = [_pack(info)]
    if isinstance(exc, errors.InvalidArgument):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=rule)
                for field, rule in exc.violations
            ]
        )
        details.append(_pack(bad))
    status = status_pb2.Status(code=_code_number(code), message=str(exc), details=details)
    return rpc_status.to_status(status)


def unavailable(message: str) -> grpc.Status:
    """A rich UNAVAILABLE status for a daemon that is starting or stopping."""
    info = error_details_pb2.ErrorInfo(reason="UNAVAILABLE", domain=DOMAIN)
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message, details=[_pack(info)])
    return rpc_status.to_status(status)


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _code_number(code: grpc.StatusCode) -> int:
    value: int = code.value[0]
    return value
