"""Every ErrorInfo reason the daemon can send is a value of the API's ErrorReason enum."""

from __future__ import annotations

import importlib
import pkgutil

import grpc
from google.rpc import error_details_pb2, status_pb2

import facepayd
from facepay.terminal.v1 import terminal_pb2 as pb
from facepay_client import client
from facepayd import errors
from facepayd.rpc import status

API_REASONS = {
    name.removeprefix("ERROR_REASON_")
    for name in pb.ErrorReason.keys()  # noqa: SIM118 - an enum wrapper, not a dict
    if name != "ERROR_REASON_UNSPECIFIED"
}


def _all_error_classes() -> set[type[errors.FacepayError]]:
    for module in pkgutil.walk_packages(facepayd.__path__, "facepayd."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found: set[type[errors.FacepayError]] = set()
    pending: list[type[errors.FacepayError]] = [errors.FacepayError]
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_class_has_a_reason_the_api_names() -> None:
    classes = _all_error_classes()
    assert len(classes) > 15, "the walk found the error classes"
    unknown = {f"{cls.__module__}.{cls.__name__}": cls.reason for cls in classes}
    unknown = {name: reason for name, reason in unknown.items() if reason not in API_REASONS}
    assert unknown == {}


def _reason(rich: grpc.Status) -> str:
    ((key, value),) = rich.trailing_metadata
    assert key == "grpc-status-details-bin"
    info = error_details_pb2.ErrorInfo()
    assert status_pb2.Status.FromString(value).details[0].Unpack(info)
    return info.reason


def test_statuses_carry_api_reasons() -> None:
    assert _reason(status.unavailable("starting")) in API_REASONS
    assert _reason(status.to_status(errors.FacepayError("a bug"))) == "INTERNAL"


def test_the_client_maps_every_reason_but_the_generic_ones_to_a_specific_error() -> None:
    mapped = set(client._ERROR_BY_REASON)
    assert mapped <= API_REASONS
    # INTERNAL and CONFIG_INVALID are the client's generic FacepayClientError.
    assert API_REASONS - mapped == {"INTERNAL", "CONFIG_INVALID"}
