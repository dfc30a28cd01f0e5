"""Diagnose: the daemon-side checks of `facepay doctor`, for any client."""

from __future__ import annotations

import grpc

from facepay.terminal.v1 import terminal_pb2 as pb
from facepayd import errors
from facepayd.rpc.handlers import Area, unary


class DiagnoseArea(Area):
    """Every check the daemon can run on itself, each with its fix."""

    @unary
    async def Diagnose(
        self, request: pb.DiagnoseRequest, context: grpc.aio.ServicerContext
    ) -> pb.DiagnoseResponse:
        """Run every check; a failing check is an answer (ok false), not an error."""
        diagnostics = self._d.diagnostics
        if diagnostics is None:
            raise errors.Unavailable("diagnostics are not wired in this daemon")
        checks = await diagnostics.run()
        return pb.DiagnoseResponse(
            checks=[
                pb.DiagnosticCheck(name=c.name, ok=c.ok, detail=c.detail, fix=c.fix) for c in checks
            ]
        )
