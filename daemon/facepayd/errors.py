"""The daemon's exception tree; every foreign error is translated into one of these at its boundary.

FacepayError
├── Internal                     an unexpected failure (a bug); only its correlation id leaves
├── ConfigError                  bad or unsafe configuration (unknown key, readable secret file)
├── InvalidArgument              a request field breaks a rule (field, rule)
├── TerminalBusy                 the camera is held by another face session (session_id)
├── NotFound                     no such payment, session or order
├── AlreadyExists                same key, different parameters
├── WrongState                   the payment, session or SDK is not in a state for the call
│   └── RefundExceedsPaid        a refund would take back more than was paid (or than is left)
├── NotSupported                 the peripheral's SDK version lacks the call
├── DeviceError                  the peripheral side
│   ├── DeviceLost               the bridge stream closed or could not be opened
│   ├── DeviceTimeout            a call or callback missed its deadline (frozen peripheral)
│   └── SdkError                 the SDK answered return_code != SUCCESS (return_code, err_code)
│       ├── SdkNotInitialized    err_code 271378620: init, then call again
│       ├── SdkInitializing      err_code 271378621: wait ~500 ms, then init again
│       ├── AuthinfoRejected     the SDK refused the authinfo: refresh it and call again
│       └── FaceSessionEnded     the user cancelled, chose to scan, timed out, or the camera failed
├── SdkNotReady                  the lifecycle is not in a state that allows the call
├── Unavailable                  the daemon is starting or stopping
│   └── JournalError             the journal cannot be read or written (disk full, I/O error)
└── BackendError                 WeChat Pay's side
    ├── BackendUnavailable       no answer we can use; the outcome of a sent request is unknown
    ├── ResponseNotTrusted       an answer that is not XML/JSON, unsigned, forged or oversized
    └── BackendRejected          a signed, definite error answer (code, message)
        └── OrderStateError      the order's state refuses the call (ORDER_DONE, ...)
"""

from __future__ import annotations

# SDK secondary codes (err_code) from the reference.
SDK_NOT_INITIALIZED = "271378620"
SDK_INITIALIZING = "271378621"


class FacepayError(Exception):
    """Root of every error the daemon raises on purpose."""

    reason = "INTERNAL"


class Internal(FacepayError):
    """An unexpected failure inside the daemon; the client sees only its correlation id."""

    reason = "INTERNAL"

    def __init__(self, correlation_id: str) -> None:
        super().__init__(f"internal error; the daemon's log names it {correlation_id}")
        self.correlation_id = correlation_id


class ConfigError(FacepayError):
    """Configuration is missing, malformed or unsafe."""

    reason = "CONFIG_INVALID"


class InvalidArgument(FacepayError):
    """A request field breaks a rule."""

    reason = "INVALID_FIELD"

    def __init__(self, field: str, rule: str, *more: tuple[str, str]) -> None:
        self.violations = [(field, rule), *more]
        super().__init__("; ".join(f"{f}: {r}" for f, r in self.violations))
        self.field = field
        self.rule = rule


class TerminalBusy(FacepayError):
    """The camera is held by another face session."""

    reason = "TERMINAL_BUSY"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"face session {session_id} holds the terminal")
        self.session_id = session_id


class NotFound(FacepayError):
    """The named payment, session or order does not exist."""

    reason = "NOT_FOUND"


class AlreadyExists(FacepayError):
    """The key exists with different parameters."""

    reason = "ALREADY_EXISTS"


class WrongState(FacepayError):
    """The payment, session or SDK is not in a state that allows the call."""

    reason = "WRONG_STATE"


class RefundExceedsPaid(WrongState):
    """The refunds of a payment would exceed what was paid; nothing was recorded or sent."""

    reason = "REFUND_EXCEEDS_PAID"


class NotSupported(FacepayError):
    """The peripheral's SDK version does not offer this call."""

    reason = "NOT_SUPPORTED_BY_SDK"


class DeviceError(FacepayError):
    """Something went wrong on the peripheral side."""

    reason = "DEVICE_ERROR"


class DeviceLost(DeviceError):
    """The bridge stream closed or could not be opened."""

    reason = "DEVICE_LOST"


class DeviceTimeout(DeviceError):
    """A bridge call or callback missed its deadline."""

    reason = "DEVICE_TIMEOUT"


class SdkError(DeviceError):
    """The face SDK answered with a return_code other than SUCCESS."""

    reason = "SDK_ERROR"

    def __init__(self, method: str, return_code: str, return_msg: str, err_code: str = "") -> None:
        detail = f" err_code={err_code}" if err_code else ""
        super().__init__(f"{method}: {return_code}{detail}: {return_msg}")
        self.method = method
        self.return_code = return_code
        self.return_msg = return_msg
        self.err_code = err_code


class SdkNotInitialized(SdkError):
    """The SDK is not initialized (err_code 271378620)."""


class SdkInitializing(SdkError):
    """The SDK is still initializing (err_code 271378621)."""


class AuthinfoRejected(SdkError):
    """The SDK refused the authinfo as invalid or expired."""


class FaceSessionEnded(SdkError):
    """The face UI ended without a face code (cancel, scan instead, timeout, camera error)."""

    reason = "FACE_SESSION_ENDED"


class SdkNotReady(FacepayError):
    """The SDK lifecycle is not in a state that allows the call."""

    reason = "SDK_NOT_READY"


class Unavailable(FacepayError):
    """The daemon is starting or stopping."""

    reason = "UNAVAILABLE"


class JournalError(Unavailable):
    """The journal cannot be read or written: nothing that depends on it is done."""

    reason = "JOURNAL_UNAVAILABLE"


class BackendError(FacepayError):
    """Something went wrong talking to WeChat Pay."""

    reason = "BACKEND_ERROR"


class BackendUnavailable(BackendError):
    """No usable answer; if the request was sent its outcome is unknown."""

    reason = "BACKEND_UNAVAILABLE"


class ResponseNotTrusted(BackendError):
    """An answer that is malformed, oversized, unsigned or fails verification."""

    reason = "BACKEND_RESPONSE_NOT_TRUSTED"


class BackendRejected(BackendError):
    """A verified, definite error answer from WeChat Pay."""

    reason = "BACKEND_REJECTED"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class OrderStateError(BackendRejected):
    """The order is not in a state that allows the call (INVALID_ORDER_STATE, ORDER_DONE, ...)."""

    reason = "ORDER_STATE"
