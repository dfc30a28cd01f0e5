"""TerminalService: the facepay.terminal.v1 API, one area of handlers per domain concern."""

from __future__ import annotations

from facepay.terminal.v1 import terminal_pb2_grpc as pb_grpc
from facepayd.rpc.diagnose import DiagnoseArea
from facepayd.rpc.face import FaceArea
from facepayd.rpc.handlers import Domain
from facepayd.rpc.payments import PaymentsArea
from facepayd.rpc.payscore import PayScoreArea
from facepayd.rpc.refunds import RefundsArea
from facepayd.rpc.terminal import TerminalArea

__all__ = ["Domain", "TerminalService"]


class TerminalService(
    TerminalArea,
    FaceArea,
    PaymentsArea,
    RefundsArea,
    PayScoreArea,
    DiagnoseArea,
    pb_grpc.TerminalServiceServicer,  # type: ignore[misc]
):
    """The facepay.terminal.v1 API over the daemon's domain."""

    def __init__(self, domain: Domain) -> None:
        self._d = domain
