"""Typed async client for facepayd's TerminalService, and the `facepay` command line."""

from facepay_client.client import (
    DEFAULT_SOCKET_PATH,
    ERROR_DOMAIN,
    AlreadyExistsError,
    BackendError,
    DaemonUnavailableError,
    DeviceError,
    FacepayClientError,
    FaceSessionEndedError,
    InvalidArgumentError,
    NotFoundError,
    OrderStateError,
    TerminalBusyError,
    TerminalClient,
    WrongStateError,
    connect,
    error_from_rpc,
)

__all__ = [
    "DEFAULT_SOCKET_PATH",
    "ERROR_DOMAIN",
    "AlreadyExistsError",
    "BackendError",
    "DaemonUnavailableError",
    "DeviceError",
    "FaceSessionEndedError",
    "FacepayClientError",
    "InvalidArgumentError",
    "NotFoundError",
    "OrderStateError",
    "TerminalBusyError",
    "TerminalClient",
    "WrongStateError",
    "connect",
    "error_from_rpc",
]
