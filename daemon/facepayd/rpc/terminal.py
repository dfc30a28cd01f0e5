"""Status and lifecycle: GetStatus, WatchStatus, Reinitialize, Release, the firewall."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from facepay.terminal.v1 import terminal_pb2 as pb
from facepayd import __version__, errors
from facepayd.ops.config import SdkMode
from facepayd.rpc.convert import LIFECYCLE_STATE, timestamp
from facepayd.rpc.handlers import Area, stream, unary


class TerminalArea(Area):
    """The terminal's status and the SDK lifecycle."""

    def status(self) -> pb.TerminalStatus:
        """The terminal's status as the API shows it."""
        d = self._d
        hello = d.lifecycle.hello
        info = d.lifecycle.peripheral
        device = pb.DeviceInfo(
            transport=d.lifecycle.transport_description,
            serial=info.serial or (hello.device_serial if hello else ""),
            model=info.model or (hello.device_model if hello else ""),
            bridge_version=hello.bridge_version if hello else "",
            sdk_version=hello.sdk_version if hello else "",
            face_app_version=info.face_app_version or (hello.face_app_version if hello else ""),
            bridge_app_version=info.bridge_app_version,
            face_app_installed=bool(info.face_app_installed)
            if info.face_app_installed is not None
            else bool(hello and hello.face_app_version),
            bridge_app_installed=bool(info.bridge_app_installed)
            if info.bridge_app_installed is not None
            else hello is not None,
        )
        status = pb.TerminalStatus(
            state=LIFECYCLE_STATE[d.lifecycle.state],
            mode=pb.SDK_MODE_AGGREGATE
            if d.lifecycle.mode is SdkMode.AGGREGATE
            else pb.SDK_MODE_NON_AGGREGATE,
            device=device,
            fault=d.lifecycle.fault,
            active_session_id=d.sessions.active.id if d.sessions.active else "",
            firewall_enabled=d.lifecycle.firewall_enabled,
            counters=pb.TerminalCounters(
                inits=d.lifecycle.counters.inits,
                releases=d.lifecycle.counters.releases,
                authinfo_fetches=d.authinfo.fetches,
                captures=d.sessions.captures,
                bridge_calls=d.lifecycle.bridge_calls,
                reconnects=d.lifecycle.counters.reconnects,
            ),
            daemon_version=__version__,
            unfinished_payments=d.payments.unfinished_count(),
            needs_attention_payments=d.payments.needs_attention_count(),
            journal_bytes=d.payments.journal_bytes(),
        )
        if d.refunds is not None:
            status.unfinished_refunds = d.refunds.unfinished_count()
            status.needs_attention_refunds = d.refunds.needs_attention_count()
        if d.authinfo.expires_at is not None:
            status.authinfo_expires_at.CopyFrom(timestamp(d.authinfo.expires_at))
        return status

    @unary
    async def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatusResponse:
        """Current status."""
        return pb.GetStatusResponse(status=self.status())

    @stream
    async def WatchStatus(
        self, request: pb.WatchStatusRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchStatusResponse]:
        """Current status first, then each change."""
        changed = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wake() -> None:
            # A turn of the loop later: a session's start is sent behind its face UI call.
            loop.call_soon(changed.set)

        self._d.lifecycle.add_listener(wake)
        try:
            last = None
            while True:
                changed.clear()
                current = self.status()
                if current != last:
                    yield pb.WatchStatusResponse(status=current)
                    last = current
                await changed.wait()
        finally:
            self._d.lifecycle.remove_listener(wake)

    # ------------------------------------------------------------------ lifecycle

    @unary
    async def Reinitialize(
        self, request: pb.ReinitializeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReinitializeResponse:
        """Release (if initialized) and init the SDK again; the way out of INIT_FAILED too."""
        # Only a session blocks it: INIT_FAILED and UNINITIALIZED are accepted by the lifecycle.
        self._require_idle()
        await self._d.lifecycle.reinitialize()
        return pb.ReinitializeResponse(status=self.status())

    @unary
    async def Release(
        self, request: pb.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleaseResponse:
        """Release the SDK."""
        self._require_idle()
        await self._d.lifecycle.release()
        return pb.ReleaseResponse(status=self.status())

    @unary
    async def EnableFirewall(
        self, request: pb.EnableFirewallRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnableFirewallResponse:
        """enableFirewall."""
        await self._d.lifecycle.enable_firewall()
        return pb.EnableFirewallResponse(status=self.status())

    @unary
    async def DisableFirewall(
        self, request: pb.DisableFirewallRequest, context: grpc.aio.ServicerContext
    ) -> pb.DisableFirewallResponse:
        """disableFirewall."""
        await self._d.lifecycle.disable_firewall()
        return pb.DisableFirewallResponse(status=self.status())

    def _require_idle(self) -> None:
        active = self._d.sessions.active
        if active is not None:
            raise errors.TerminalBusy(active.id)
