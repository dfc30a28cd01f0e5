import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_FIELD: _ClassVar[ErrorReason]
    ERROR_REASON_TERMINAL_BUSY: _ClassVar[ErrorReason]
    ERROR_REASON_SDK_NOT_READY: _ClassVar[ErrorReason]
    ERROR_REASON_DEVICE_LOST: _ClassVar[ErrorReason]
    ERROR_REASON_DEVICE_TIMEOUT: _ClassVar[ErrorReason]
    ERROR_REASON_SDK_ERROR: _ClassVar[ErrorReason]
    ERROR_REASON_FACE_SESSION_ENDED: _ClassVar[ErrorReason]
    ERROR_REASON_NOT_SUPPORTED_BY_SDK: _ClassVar[ErrorReason]
    ERROR_REASON_BACKEND_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_BACKEND_RESPONSE_NOT_TRUSTED: _ClassVar[ErrorReason]
    ERROR_REASON_BACKEND_REJECTED: _ClassVar[ErrorReason]
    ERROR_REASON_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_ALREADY_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_ORDER_STATE: _ClassVar[ErrorReason]
    ERROR_REASON_INTERNAL: _ClassVar[ErrorReason]
    ERROR_REASON_CONFIG_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_DEVICE_ERROR: _ClassVar[ErrorReason]
    ERROR_REASON_DEVICE_APP_MISSING: _ClassVar[ErrorReason]
    ERROR_REASON_BACKEND_ERROR: _ClassVar[ErrorReason]
    ERROR_REASON_JOURNAL_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_WRONG_STATE: _ClassVar[ErrorReason]
    ERROR_REASON_REFUND_EXCEEDS_PAID: _ClassVar[ErrorReason]

class LifecycleState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIFECYCLE_STATE_UNSPECIFIED: _ClassVar[LifecycleState]
    LIFECYCLE_STATE_DISCONNECTED: _ClassVar[LifecycleState]
    LIFECYCLE_STATE_UNINITIALIZED: _ClassVar[LifecycleState]
    LIFECYCLE_STATE_INITIALIZING: _ClassVar[LifecycleState]
    LIFECYCLE_STATE_READY: _ClassVar[LifecycleState]
    LIFECYCLE_STATE_IN_SESSION: _ClassVar[LifecycleState]
    LIFECYCLE_STATE_RELEASING: _ClassVar[LifecycleState]
    LIFECYCLE_STATE_FAULT: _ClassVar[LifecycleState]
    LIFECYCLE_STATE_STOPPING: _ClassVar[LifecycleState]
    LIFECYCLE_STATE_INIT_FAILED: _ClassVar[LifecycleState]

class SdkMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SDK_MODE_UNSPECIFIED: _ClassVar[SdkMode]
    SDK_MODE_NON_AGGREGATE: _ClassVar[SdkMode]
    SDK_MODE_AGGREGATE: _ClassVar[SdkMode]

class PaymentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_STATE_UNSPECIFIED: _ClassVar[PaymentState]
    PAYMENT_STATE_CAPTURING: _ClassVar[PaymentState]
    PAYMENT_STATE_PAYING: _ClassVar[PaymentState]
    PAYMENT_STATE_PENDING: _ClassVar[PaymentState]
    PAYMENT_STATE_REVERSING: _ClassVar[PaymentState]
    PAYMENT_STATE_SUCCEEDED: _ClassVar[PaymentState]
    PAYMENT_STATE_FAILED: _ClassVar[PaymentState]
    PAYMENT_STATE_REVERSED: _ClassVar[PaymentState]
    PAYMENT_STATE_CANCELLED: _ClassVar[PaymentState]
    PAYMENT_STATE_CLOSED: _ClassVar[PaymentState]
    PAYMENT_STATE_NEEDS_ATTENTION: _ClassVar[PaymentState]

class PaymentSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_SOURCE_UNSPECIFIED: _ClassVar[PaymentSource]
    PAYMENT_SOURCE_FACE: _ClassVar[PaymentSource]
    PAYMENT_SOURCE_CODE: _ClassVar[PaymentSource]

class PayResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAY_RESULT_UNSPECIFIED: _ClassVar[PayResult]
    PAY_RESULT_SUCCESS: _ClassVar[PayResult]
    PAY_RESULT_ERROR: _ClassVar[PayResult]

class RefundState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUND_STATE_UNSPECIFIED: _ClassVar[RefundState]
    REFUND_STATE_RECORDED: _ClassVar[RefundState]
    REFUND_STATE_SENDING: _ClassVar[RefundState]
    REFUND_STATE_PROCESSING: _ClassVar[RefundState]
    REFUND_STATE_SUCCEEDED: _ClassVar[RefundState]
    REFUND_STATE_CLOSED: _ClassVar[RefundState]
    REFUND_STATE_CHANGE: _ClassVar[RefundState]
    REFUND_STATE_FAILED: _ClassVar[RefundState]
    REFUND_STATE_NEEDS_ATTENTION: _ClassVar[RefundState]

class PayScoreOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAY_SCORE_OUTCOME_UNSPECIFIED: _ClassVar[PayScoreOutcome]
    PAY_SCORE_OUTCOME_SUCCESS: _ClassVar[PayScoreOutcome]
    PAY_SCORE_OUTCOME_ERROR: _ClassVar[PayScoreOutcome]
    PAY_SCORE_OUTCOME_USER_CANCEL: _ClassVar[PayScoreOutcome]
    PAY_SCORE_OUTCOME_SCAN_PAYMENT: _ClassVar[PayScoreOutcome]

class ServiceOrderState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVICE_ORDER_STATE_UNSPECIFIED: _ClassVar[ServiceOrderState]
    SERVICE_ORDER_STATE_CREATED: _ClassVar[ServiceOrderState]
    SERVICE_ORDER_STATE_DOING: _ClassVar[ServiceOrderState]
    SERVICE_ORDER_STATE_DONE: _ClassVar[ServiceOrderState]
    SERVICE_ORDER_STATE_REVOKED: _ClassVar[ServiceOrderState]
    SERVICE_ORDER_STATE_EXPIRED: _ClassVar[ServiceOrderState]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_INVALID_FIELD: ErrorReason
ERROR_REASON_TERMINAL_BUSY: ErrorReason
ERROR_REASON_SDK_NOT_READY: ErrorReason
ERROR_REASON_DEVICE_LOST: ErrorReason
ERROR_REASON_DEVICE_TIMEOUT: ErrorReason
ERROR_REASON_SDK_ERROR: ErrorReason
ERROR_REASON_FACE_SESSION_ENDED: ErrorReason
ERROR_REASON_NOT_SUPPORTED_BY_SDK: ErrorReason
ERROR_REASON_BACKEND_UNAVAILABLE: ErrorReason
ERROR_REASON_BACKEND_RESPONSE_NOT_TRUSTED: ErrorReason
ERROR_REASON_BACKEND_REJECTED: ErrorReason
ERROR_REASON_NOT_FOUND: ErrorReason
ERROR_REASON_ALREADY_EXISTS: ErrorReason
ERROR_REASON_UNAVAILABLE: ErrorReason
ERROR_REASON_ORDER_STATE: ErrorReason
ERROR_REASON_INTERNAL: ErrorReason
ERROR_REASON_CONFIG_INVALID: ErrorReason
ERROR_REASON_DEVICE_ERROR: ErrorReason
ERROR_REASON_DEVICE_APP_MISSING: ErrorReason
ERROR_REASON_BACKEND_ERROR: ErrorReason
ERROR_REASON_JOURNAL_UNAVAILABLE: ErrorReason
ERROR_REASON_WRONG_STATE: ErrorReason
ERROR_REASON_REFUND_EXCEEDS_PAID: ErrorReason
LIFECYCLE_STATE_UNSPECIFIED: LifecycleState
LIFECYCLE_STATE_DISCONNECTED: LifecycleState
LIFECYCLE_STATE_UNINITIALIZED: LifecycleState
LIFECYCLE_STATE_INITIALIZING: LifecycleState
LIFECYCLE_STATE_READY: LifecycleState
LIFECYCLE_STATE_IN_SESSION: LifecycleState
LIFECYCLE_STATE_RELEASING: LifecycleState
LIFECYCLE_STATE_FAULT: LifecycleState
LIFECYCLE_STATE_STOPPING: LifecycleState
LIFECYCLE_STATE_INIT_FAILED: LifecycleState
SDK_MODE_UNSPECIFIED: SdkMode
SDK_MODE_NON_AGGREGATE: SdkMode
SDK_MODE_AGGREGATE: SdkMode
PAYMENT_STATE_UNSPECIFIED: PaymentState
PAYMENT_STATE_CAPTURING: PaymentState
PAYMENT_STATE_PAYING: PaymentState
PAYMENT_STATE_PENDING: PaymentState
PAYMENT_STATE_REVERSING: PaymentState
PAYMENT_STATE_SUCCEEDED: PaymentState
PAYMENT_STATE_FAILED: PaymentState
PAYMENT_STATE_REVERSED: PaymentState
PAYMENT_STATE_CANCELLED: PaymentState
PAYMENT_STATE_CLOSED: PaymentState
PAYMENT_STATE_NEEDS_ATTENTION: PaymentState
PAYMENT_SOURCE_UNSPECIFIED: PaymentSource
PAYMENT_SOURCE_FACE: PaymentSource
PAYMENT_SOURCE_CODE: PaymentSource
PAY_RESULT_UNSPECIFIED: PayResult
PAY_RESULT_SUCCESS: PayResult
PAY_RESULT_ERROR: PayResult
REFUND_STATE_UNSPECIFIED: RefundState
REFUND_STATE_RECORDED: RefundState
REFUND_STATE_SENDING: RefundState
REFUND_STATE_PROCESSING: RefundState
REFUND_STATE_SUCCEEDED: RefundState
REFUND_STATE_CLOSED: RefundState
REFUND_STATE_CHANGE: RefundState
REFUND_STATE_FAILED: RefundState
REFUND_STATE_NEEDS_ATTENTION: RefundState
PAY_SCORE_OUTCOME_UNSPECIFIED: PayScoreOutcome
PAY_SCORE_OUTCOME_SUCCESS: PayScoreOutcome
PAY_SCORE_OUTCOME_ERROR: PayScoreOutcome
PAY_SCORE_OUTCOME_USER_CANCEL: PayScoreOutcome
PAY_SCORE_OUTCOME_SCAN_PAYMENT: PayScoreOutcome
SERVICE_ORDER_STATE_UNSPECIFIED: ServiceOrderState
SERVICE_ORDER_STATE_CREATED: ServiceOrderState
SERVICE_ORDER_STATE_DOING: ServiceOrderState
SERVICE_ORDER_STATE_DONE: ServiceOrderState
SERVICE_ORDER_STATE_REVOKED: ServiceOrderState
SERVICE_ORDER_STATE_EXPIRED: ServiceOrderState

class DeviceInfo(_message.Message):
    __slots__ = ("transport", "serial", "model", "bridge_version", "sdk_version", "face_app_version", "bridge_app_version", "face_app_installed", "bridge_app_installed")
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BRIDGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SDK_VERSION_FIELD_NUMBER: _ClassVar[int]
    FACE_APP_VERSION_FIELD_NUMBER: _ClassVar[int]
    BRIDGE_APP_VERSION_FIELD_NUMBER: _ClassVar[int]
    FACE_APP_INSTALLED_FIELD_NUMBER: _ClassVar[int]
    BRIDGE_APP_INSTALLED_FIELD_NUMBER: _ClassVar[int]
    transport: str
    serial: str
    model: str
    bridge_version: str
    sdk_version: str
    face_app_version: str
    bridge_app_version: str
    face_app_installed: bool
    bridge_app_installed: bool
    def __init__(self, transport: _Optional[str] = ..., serial: _Optional[str] = ..., model: _Optional[str] = ..., bridge_version: _Optional[str] = ..., sdk_version: _Optional[str] = ..., face_app_version: _Optional[str] = ..., bridge_app_version: _Optional[str] = ..., face_app_installed: _Optional[bool] = ..., bridge_app_installed: _Optional[bool] = ...) -> None: ...

class TerminalCounters(_message.Message):
    __slots__ = ("inits", "releases", "authinfo_fetches", "captures", "bridge_calls", "reconnects")
    INITS_FIELD_NUMBER: _ClassVar[int]
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    AUTHINFO_FETCHES_FIELD_NUMBER: _ClassVar[int]
    CAPTURES_FIELD_NUMBER: _ClassVar[int]
    BRIDGE_CALLS_FIELD_NUMBER: _ClassVar[int]
    RECONNECTS_FIELD_NUMBER: _ClassVar[int]
    inits: int
    releases: int
    authinfo_fetches: int
    captures: int
    bridge_calls: int
    reconnects: int
    def __init__(self, inits: _Optional[int] = ..., releases: _Optional[int] = ..., authinfo_fetches: _Optional[int] = ..., captures: _Optional[int] = ..., bridge_calls: _Optional[int] = ..., reconnects: _Optional[int] = ...) -> None: ...

class TerminalStatus(_message.Message):
    __slots__ = ("state", "mode", "device", "fault", "active_session_id", "firewall_enabled", "authinfo_expires_at", "counters", "daemon_version", "unfinished_payments", "needs_attention_payments", "journal_bytes", "unfinished_refunds", "needs_attention_refunds")
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FIREWALL_ENABLED_FIELD_NUMBER: _ClassVar[int]
    AUTHINFO_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    DAEMON_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNFINISHED_PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_ATTENTION_PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNFINISHED_REFUNDS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_ATTENTION_REFUNDS_FIELD_NUMBER: _ClassVar[int]
    state: LifecycleState
    mode: SdkMode
    device: DeviceInfo
    fault: str
    active_session_id: str
    firewall_enabled: bool
    authinfo_expires_at: _timestamp_pb2.Timestamp
    counters: TerminalCounters
    daemon_version: str
    unfinished_payments: int
    needs_attention_payments: int
    journal_bytes: int
    unfinished_refunds: int
    needs_attention_refunds: int
    def __init__(self, state: _Optional[_Union[LifecycleState, str]] = ..., mode: _Optional[_Union[SdkMode, str]] = ..., device: _Optional[_Union[DeviceInfo, _Mapping]] = ..., fault: _Optional[str] = ..., active_session_id: _Optional[str] = ..., firewall_enabled: _Optional[bool] = ..., authinfo_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., counters: _Optional[_Union[TerminalCounters, _Mapping]] = ..., daemon_version: _Optional[str] = ..., unfinished_payments: _Optional[int] = ..., needs_attention_payments: _Optional[int] = ..., journal_bytes: _Optional[int] = ..., unfinished_refunds: _Optional[int] = ..., needs_attention_refunds: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DiagnoseRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DiagnosticCheck(_message.Message):
    __slots__ = ("name", "ok", "detail", "fix")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    FIX_FIELD_NUMBER: _ClassVar[int]
    name: str
    ok: bool
    detail: str
    fix: str
    def __init__(self, name: _Optional[str] = ..., ok: _Optional[bool] = ..., detail: _Optional[str] = ..., fix: _Optional[str] = ...) -> None: ...

class DiagnoseResponse(_message.Message):
    __slots__ = ("checks",)
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    checks: _containers.RepeatedCompositeFieldContainer[DiagnosticCheck]
    def __init__(self, checks: _Optional[_Iterable[_Union[DiagnosticCheck, _Mapping]]] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: TerminalStatus
    def __init__(self, status: _Optional[_Union[TerminalStatus, _Mapping]] = ...) -> None: ...

class WatchStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchStatusResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: TerminalStatus
    def __init__(self, status: _Optional[_Union[TerminalStatus, _Mapping]] = ...) -> None: ...

class ReinitializeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReinitializeResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: TerminalStatus
    def __init__(self, status: _Optional[_Union[TerminalStatus, _Mapping]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: TerminalStatus
    def __init__(self, status: _Optional[_Union[TerminalStatus, _Mapping]] = ...) -> None: ...

class EnableFirewallRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnableFirewallResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: TerminalStatus
    def __init__(self, status: _Optional[_Union[TerminalStatus, _Mapping]] = ...) -> None: ...

class DisableFirewallRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DisableFirewallResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: TerminalStatus
    def __init__(self, status: _Optional[_Union[TerminalStatus, _Mapping]] = ...) -> None: ...

class FaceOptions(_message.Message):
    __slots__ = ("openid", "screen_index", "overlay_option", "face_authtype", "wait_if_busy", "ask_unionid", "telephone", "ask_face_permit", "ask_ret_page", "ignore_update_pay_result")
    OPENID_FIELD_NUMBER: _ClassVar[int]
    SCREEN_INDEX_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_OPTION_FIELD_NUMBER: _ClassVar[int]
    FACE_AUTHTYPE_FIELD_NUMBER: _ClassVar[int]
    WAIT_IF_BUSY_FIELD_NUMBER: _ClassVar[int]
    ASK_UNIONID_FIELD_NUMBER: _ClassVar[int]
    TELEPHONE_FIELD_NUMBER: _ClassVar[int]
    ASK_FACE_PERMIT_FIELD_NUMBER: _ClassVar[int]
    ASK_RET_PAGE_FIELD_NUMBER: _ClassVar[int]
    IGNORE_UPDATE_PAY_RESULT_FIELD_NUMBER: _ClassVar[int]
    openid: str
    screen_index: str
    overlay_option: str
    face_authtype: str
    wait_if_busy: bool
    ask_unionid: bool
    telephone: str
    ask_face_permit: str
    ask_ret_page: str
    ignore_update_pay_result: str
    def __init__(self, openid: _Optional[str] = ..., screen_index: _Optional[str] = ..., overlay_option: _Optional[str] = ..., face_authtype: _Optional[str] = ..., wait_if_busy: _Optional[bool] = ..., ask_unionid: _Optional[bool] = ..., telephone: _Optional[str] = ..., ask_face_permit: _Optional[str] = ..., ask_ret_page: _Optional[str] = ..., ignore_update_pay_result: _Optional[str] = ...) -> None: ...

class StartFacePayRequest(_message.Message):
    __slots__ = ("out_trade_no", "total_fee", "body", "attach", "detail", "fee_type", "goods_tag", "limit_pay", "time_expire", "scene_info", "receipt", "face", "time_start")
    OUT_TRADE_NO_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FEE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    ATTACH_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    FEE_TYPE_FIELD_NUMBER: _ClassVar[int]
    GOODS_TAG_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PAY_FIELD_NUMBER: _ClassVar[int]
    TIME_EXPIRE_FIELD_NUMBER: _ClassVar[int]
    SCENE_INFO_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    TIME_START_FIELD_NUMBER: _ClassVar[int]
    out_trade_no: str
    total_fee: int
    body: str
    attach: str
    detail: str
    fee_type: str
    goods_tag: str
    limit_pay: str
    time_expire: str
    scene_info: str
    receipt: str
    face: FaceOptions
    time_start: str
    def __init__(self, out_trade_no: _Optional[str] = ..., total_fee: _Optional[int] = ..., body: _Optional[str] = ..., attach: _Optional[str] = ..., detail: _Optional[str] = ..., fee_type: _Optional[str] = ..., goods_tag: _Optional[str] = ..., limit_pay: _Optional[str] = ..., time_expire: _Optional[str] = ..., scene_info: _Optional[str] = ..., receipt: _Optional[str] = ..., face: _Optional[_Union[FaceOptions, _Mapping]] = ..., time_start: _Optional[str] = ...) -> None: ...

class SessionStarted(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class FaceCaptured(_message.Message):
    __slots__ = ("face_code", "openid", "sub_openid", "underage_state", "telephone_used")
    FACE_CODE_FIELD_NUMBER: _ClassVar[int]
    OPENID_FIELD_NUMBER: _ClassVar[int]
    SUB_OPENID_FIELD_NUMBER: _ClassVar[int]
    UNDERAGE_STATE_FIELD_NUMBER: _ClassVar[int]
    TELEPHONE_USED_FIELD_NUMBER: _ClassVar[int]
    face_code: str
    openid: str
    sub_openid: str
    underage_state: int
    telephone_used: int
    def __init__(self, face_code: _Optional[str] = ..., openid: _Optional[str] = ..., sub_openid: _Optional[str] = ..., underage_state: _Optional[int] = ..., telephone_used: _Optional[int] = ...) -> None: ...

class PaymentPending(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Coupon(_message.Message):
    __slots__ = ("coupon_id", "coupon_type", "coupon_fee")
    COUPON_ID_FIELD_NUMBER: _ClassVar[int]
    COUPON_TYPE_FIELD_NUMBER: _ClassVar[int]
    COUPON_FEE_FIELD_NUMBER: _ClassVar[int]
    coupon_id: str
    coupon_type: str
    coupon_fee: int
    def __init__(self, coupon_id: _Optional[str] = ..., coupon_type: _Optional[str] = ..., coupon_fee: _Optional[int] = ...) -> None: ...

class PaymentSucceeded(_message.Message):
    __slots__ = ("transaction_id", "total_fee", "cash_fee", "fee_type", "bank_type", "time_end", "openid", "settlement_total_fee", "coupon_fee", "coupon_count", "coupons", "cash_fee_type", "promotion_detail", "is_subscribe", "trade_type", "sub_openid", "attach", "trade_state_desc", "device_info", "trade_state")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FEE_FIELD_NUMBER: _ClassVar[int]
    CASH_FEE_FIELD_NUMBER: _ClassVar[int]
    FEE_TYPE_FIELD_NUMBER: _ClassVar[int]
    BANK_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIME_END_FIELD_NUMBER: _ClassVar[int]
    OPENID_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_TOTAL_FEE_FIELD_NUMBER: _ClassVar[int]
    COUPON_FEE_FIELD_NUMBER: _ClassVar[int]
    COUPON_COUNT_FIELD_NUMBER: _ClassVar[int]
    COUPONS_FIELD_NUMBER: _ClassVar[int]
    CASH_FEE_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_DETAIL_FIELD_NUMBER: _ClassVar[int]
    IS_SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    TRADE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SUB_OPENID_FIELD_NUMBER: _ClassVar[int]
    ATTACH_FIELD_NUMBER: _ClassVar[int]
    TRADE_STATE_DESC_FIELD_NUMBER: _ClassVar[int]
    DEVICE_INFO_FIELD_NUMBER: _ClassVar[int]
    TRADE_STATE_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    total_fee: int
    cash_fee: int
    fee_type: str
    bank_type: str
    time_end: str
    openid: str
    settlement_total_fee: int
    coupon_fee: int
    coupon_count: int
    coupons: _containers.RepeatedCompositeFieldContainer[Coupon]
    cash_fee_type: str
    promotion_detail: str
    is_subscribe: str
    trade_type: str
    sub_openid: str
    attach: str
    trade_state_desc: str
    device_info: str
    trade_state: str
    def __init__(self, transaction_id: _Optional[str] = ..., total_fee: _Optional[int] = ..., cash_fee: _Optional[int] = ..., fee_type: _Optional[str] = ..., bank_type: _Optional[str] = ..., time_end: _Optional[str] = ..., openid: _Optional[str] = ..., settlement_total_fee: _Optional[int] = ..., coupon_fee: _Optional[int] = ..., coupon_count: _Optional[int] = ..., coupons: _Optional[_Iterable[_Union[Coupon, _Mapping]]] = ..., cash_fee_type: _Optional[str] = ..., promotion_detail: _Optional[str] = ..., is_subscribe: _Optional[str] = ..., trade_type: _Optional[str] = ..., sub_openid: _Optional[str] = ..., attach: _Optional[str] = ..., trade_state_desc: _Optional[str] = ..., device_info: _Optional[str] = ..., trade_state: _Optional[str] = ...) -> None: ...

class PaymentFailed(_message.Message):
    __slots__ = ("err_code", "description")
    ERR_CODE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    err_code: str
    description: str
    def __init__(self, err_code: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class PaymentReversed(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class PaymentClosed(_message.Message):
    __slots__ = ("reason", "description")
    REASON_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    reason: str
    description: str
    def __init__(self, reason: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class PaymentNeedsAttention(_message.Message):
    __slots__ = ("reason", "action", "description")
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    reason: str
    action: str
    description: str
    def __init__(self, reason: _Optional[str] = ..., action: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class SessionCancelled(_message.Message):
    __slots__ = ("reason", "description", "continue_with_code_pay")
    REASON_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_WITH_CODE_PAY_FIELD_NUMBER: _ClassVar[int]
    reason: str
    description: str
    continue_with_code_pay: bool
    def __init__(self, reason: _Optional[str] = ..., description: _Optional[str] = ..., continue_with_code_pay: _Optional[bool] = ...) -> None: ...

class CodeReceived(_message.Message):
    __slots__ = ("source", "continued")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONTINUED_FIELD_NUMBER: _ClassVar[int]
    source: PaymentSource
    continued: bool
    def __init__(self, source: _Optional[_Union[PaymentSource, str]] = ..., continued: _Optional[bool] = ...) -> None: ...

class PaymentEvent(_message.Message):
    __slots__ = ("out_trade_no", "seq", "time", "state", "session_started", "face_captured", "pending", "succeeded", "failed", "reversed", "cancelled", "closed", "needs_attention", "code_received")
    OUT_TRADE_NO_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SESSION_STARTED_FIELD_NUMBER: _ClassVar[int]
    FACE_CAPTURED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    REVERSED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    NEEDS_ATTENTION_FIELD_NUMBER: _ClassVar[int]
    CODE_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    out_trade_no: str
    seq: int
    time: _timestamp_pb2.Timestamp
    state: PaymentState
    session_started: SessionStarted
    face_captured: FaceCaptured
    pending: PaymentPending
    succeeded: PaymentSucceeded
    failed: PaymentFailed
    reversed: PaymentReversed
    cancelled: SessionCancelled
    closed: PaymentClosed
    needs_attention: PaymentNeedsAttention
    code_received: CodeReceived
    def __init__(self, out_trade_no: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[PaymentState, str]] = ..., session_started: _Optional[_Union[SessionStarted, _Mapping]] = ..., face_captured: _Optional[_Union[FaceCaptured, _Mapping]] = ..., pending: _Optional[_Union[PaymentPending, _Mapping]] = ..., succeeded: _Optional[_Union[PaymentSucceeded, _Mapping]] = ..., failed: _Optional[_Union[PaymentFailed, _Mapping]] = ..., reversed: _Optional[_Union[PaymentReversed, _Mapping]] = ..., cancelled: _Optional[_Union[SessionCancelled, _Mapping]] = ..., closed: _Optional[_Union[PaymentClosed, _Mapping]] = ..., needs_attention: _Optional[_Union[PaymentNeedsAttention, _Mapping]] = ..., code_received: _Optional[_Union[CodeReceived, _Mapping]] = ...) -> None: ...

class SessionEnded(_message.Message):
    __slots__ = ("session_id", "reason", "return_msg")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RETURN_MSG_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    reason: str
    return_msg: str
    def __init__(self, session_id: _Optional[str] = ..., reason: _Optional[str] = ..., return_msg: _Optional[str] = ...) -> None: ...

class PaymentProgress(_message.Message):
    __slots__ = ("out_trade_no", "state", "activity", "attempt", "since", "next_at", "reason")
    OUT_TRADE_NO_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    NEXT_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    out_trade_no: str
    state: PaymentState
    activity: str
    attempt: int
    since: _timestamp_pb2.Timestamp
    next_at: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, out_trade_no: _Optional[str] = ..., state: _Optional[_Union[PaymentState, str]] = ..., activity: _Optional[str] = ..., attempt: _Optional[int] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class StartFacePayResponse(_message.Message):
    __slots__ = ("event", "session_ended", "progress")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ENDED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    event: PaymentEvent
    session_ended: SessionEnded
    progress: PaymentProgress
    def __init__(self, event: _Optional[_Union[PaymentEvent, _Mapping]] = ..., session_ended: _Optional[_Union[SessionEnded, _Mapping]] = ..., progress: _Optional[_Union[PaymentProgress, _Mapping]] = ...) -> None: ...

class StartCodePayRequest(_message.Message):
    __slots__ = ("out_trade_no", "total_fee", "body", "attach", "detail", "fee_type", "goods_tag", "limit_pay", "time_expire", "scene_info", "receipt", "auth_code", "time_start")
    OUT_TRADE_NO_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FEE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    ATTACH_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    FEE_TYPE_FIELD_NUMBER: _ClassVar[int]
    GOODS_TAG_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PAY_FIELD_NUMBER: _ClassVar[int]
    TIME_EXPIRE_FIELD_NUMBER: _ClassVar[int]
    SCENE_INFO_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    AUTH_CODE_FIELD_NUMBER: _ClassVar[int]
    TIME_START_FIELD_NUMBER: _ClassVar[int]
    out_trade_no: str
    total_fee: int
    body: str
    attach: str
    detail: str
    fee_type: str
    goods_tag: str
    limit_pay: str
    time_expire: str
    scene_info: str
    receipt: str
    auth_code: str
    time_start: str
    def __init__(self, out_trade_no: _Optional[str] = ..., total_fee: _Optional[int] = ..., body: _Optional[str] = ..., attach: _Optional[str] = ..., detail: _Optional[str] = ..., fee_type: _Optional[str] = ..., goods_tag: _Optional[str] = ..., limit_pay: _Optional[str] = ..., time_expire: _Optional[str] = ..., scene_info: _Optional[str] = ..., receipt: _Optional[str] = ..., auth_code: _Optional[str] = ..., time_start: _Optional[str] = ...) -> None: ...

class StartCodePayResponse(_message.Message):
    __slots__ = ("event", "progress")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    event: PaymentEvent
    progress: PaymentProgress
    def __init__(self, event: _Optional[_Union[PaymentEvent, _Mapping]] = ..., progress: _Optional[_Union[PaymentProgress, _Mapping]] = ...) -> None: ...

class CaptureFaceCodeRequest(_message.Message):
    __slots__ = ("out_trade_no", "total_fee", "face", "face_code_type")
    OUT_TRADE_NO_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FEE_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    FACE_CODE_TYPE_FIELD_NUMBER: _ClassVar[int]
    out_trade_no: str
    total_fee: int
    face: FaceOptions
    face_code_type: str
    def __init__(self, out_trade_no: _Optional[str] = ..., total_fee: _Optional[int] = ..., face: _Optional[_Union[FaceOptions, _Mapping]] = ..., face_code_type: _Optional[str] = ...) -> None: ...

class PayResultConfirmed(_message.Message):
    __slots__ = ("return_code", "return_msg")
    RETURN_CODE_FIELD_NUMBER: _ClassVar[int]
    RETURN_MSG_FIELD_NUMBER: _ClassVar[int]
    return_code: str
    return_msg: str
    def __init__(self, return_code: _Optional[str] = ..., return_msg: _Optional[str] = ...) -> None: ...

class CaptureEvent(_message.Message):
    __slots__ = ("session_started", "face_captured", "cancelled", "pay_result_confirmed", "session_ended")
    SESSION_STARTED_FIELD_NUMBER: _ClassVar[int]
    FACE_CAPTURED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    PAY_RESULT_CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    SESSION_ENDED_FIELD_NUMBER: _ClassVar[int]
    session_started: SessionStarted
    face_captured: FaceCaptured
    cancelled: SessionCancelled
    pay_result_confirmed: PayResultConfirmed
    session_ended: SessionEnded
    def __init__(self, session_started: _Optional[_Union[SessionStarted, _Mapping]] = ..., face_captured: _Optional[_Union[FaceCaptured, _Mapping]] = ..., cancelled: _Optional[_Union[SessionCancelled, _Mapping]] = ..., pay_result_confirmed: _Optional[_Union[PayResultConfirmed, _Mapping]] = ..., session_ended: _Optional[_Union[SessionEnded, _Mapping]] = ...) -> None: ...

class CaptureFaceCodeResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: CaptureEvent
    def __init__(self, event: _Optional[_Union[CaptureEvent, _Mapping]] = ...) -> None: ...

class CancelSessionRequest(_message.Message):
    __slots__ = ("session_id", "toast_text")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOAST_TEXT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    toast_text: str
    def __init__(self, session_id: _Optional[str] = ..., toast_text: _Optional[str] = ...) -> None: ...

class CancelSessionResponse(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ReportPayResultRequest(_message.Message):
    __slots__ = ("session_id", "result")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    result: PayResult
    def __init__(self, session_id: _Optional[str] = ..., result: _Optional[_Union[PayResult, str]] = ...) -> None: ...

class ReportPayResultResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetUserInfoRequest(_message.Message):
    __slots__ = ("face",)
    FACE_FIELD_NUMBER: _ClassVar[int]
    face: FaceOptions
    def __init__(self, face: _Optional[_Union[FaceOptions, _Mapping]] = ...) -> None: ...

class GetUserInfoResponse(_message.Message):
    __slots__ = ("openid", "sub_openid", "nickname", "token", "unionid_code", "unionid_msg")
    OPENID_FIELD_NUMBER: _ClassVar[int]
    SUB_OPENID_FIELD_NUMBER: _ClassVar[int]
    NICKNAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    UNIONID_CODE_FIELD_NUMBER: _ClassVar[int]
    UNIONID_MSG_FIELD_NUMBER: _ClassVar[int]
    openid: str
    sub_openid: str
    nickname: str
    token: str
    unionid_code: str
    unionid_msg: str
    def __init__(self, openid: _Optional[str] = ..., sub_openid: _Optional[str] = ..., nickname: _Optional[str] = ..., token: _Optional[str] = ..., unionid_code: _Optional[str] = ..., unionid_msg: _Optional[str] = ...) -> None: ...

class Payment(_message.Message):
    __slots__ = ("out_trade_no", "state", "total_fee", "body", "attach", "transaction_id", "openid", "bank_type", "cash_fee", "fee_type", "time_end", "err_code", "err_code_des", "created_at", "updated_at", "last_seq", "final", "attention_reason", "attention_action", "source", "settlement_total_fee", "coupon_fee", "coupon_count", "coupons", "cash_fee_type", "promotion_detail", "is_subscribe", "trade_type", "sub_openid", "echoed_attach", "trade_state_desc", "device_info", "trade_state", "time_start", "time_expire", "refunded_fee")
    OUT_TRADE_NO_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FEE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    ATTACH_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    OPENID_FIELD_NUMBER: _ClassVar[int]
    BANK_TYPE_FIELD_NUMBER: _ClassVar[int]
    CASH_FEE_FIELD_NUMBER: _ClassVar[int]
    FEE_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIME_END_FIELD_NUMBER: _ClassVar[int]
    ERR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERR_CODE_DES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_REASON_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_ACTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_TOTAL_FEE_FIELD_NUMBER: _ClassVar[int]
    COUPON_FEE_FIELD_NUMBER: _ClassVar[int]
    COUPON_COUNT_FIELD_NUMBER: _ClassVar[int]
    COUPONS_FIELD_NUMBER: _ClassVar[int]
    CASH_FEE_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_DETAIL_FIELD_NUMBER: _ClassVar[int]
    IS_SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    TRADE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SUB_OPENID_FIELD_NUMBER: _ClassVar[int]
    ECHOED_ATTACH_FIELD_NUMBER: _ClassVar[int]
    TRADE_STATE_DESC_FIELD_NUMBER: _ClassVar[int]
    DEVICE_INFO_FIELD_NUMBER: _ClassVar[int]
    TRADE_STATE_FIELD_NUMBER: _ClassVar[int]
    TIME_START_FIELD_NUMBER: _ClassVar[int]
    TIME_EXPIRE_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_FEE_FIELD_NUMBER: _ClassVar[int]
    out_trade_no: str
    state: PaymentState
    total_fee: int
    body: str
    attach: str
    transaction_id: str
    openid: str
    bank_type: str
    cash_fee: int
    fee_type: str
    time_end: str
    err_code: str
    err_code_des: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    last_seq: int
    final: bool
    attention_reason: str
    attention_action: str
    source: PaymentSource
    settlement_total_fee: int
    coupon_fee: int
    coupon_count: int
    coupons: _containers.RepeatedCompositeFieldContainer[Coupon]
    cash_fee_type: str
    promotion_detail: str
    is_subscribe: str
    trade_type: str
    sub_openid: str
    echoed_attach: str
    trade_state_desc: str
    device_info: str
    trade_state: str
    time_start: str
    time_expire: str
    refunded_fee: int
    def __init__(self, out_trade_no: _Optional[str] = ..., state: _Optional[_Union[PaymentState, str]] = ..., total_fee: _Optional[int] = ..., body: _Optional[str] = ..., attach: _Optional[str] = ..., transaction_id: _Optional[str] = ..., openid: _Optional[str] = ..., bank_type: _Optional[str] = ..., cash_fee: _Optional[int] = ..., fee_type: _Optional[str] = ..., time_end: _Optional[str] = ..., err_code: _Optional[str] = ..., err_code_des: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seq: _Optional[int] = ..., final: _Optional[bool] = ..., attention_reason: _Optional[str] = ..., attention_action: _Optional[str] = ..., source: _Optional[_Union[PaymentSource, str]] = ..., settlement_total_fee: _Optional[int] = ..., coupon_fee: _Optional[int] = ..., coupon_count: _Optional[int] = ..., coupons: _Optional[_Iterable[_Union[Coupon, _Mapping]]] = ..., cash_fee_type: _Optional[str] = ..., promotion_detail: _Optional[str] = ..., is_subscribe: _Optional[str] = ..., trade_type: _Optional[str] = ..., sub_openid: _Optional[str] = ..., echoed_attach: _Optional[str] = ..., trade_state_desc: _Optional[str] = ..., device_info: _Optional[str] = ..., trade_state: _Optional[str] = ..., time_start: _Optional[str] = ..., time_expire: _Optional[str] = ..., refunded_fee: _Optional[int] = ...) -> None: ...

class WatchPaymentRequest(_message.Message):
    __slots__ = ("out_trade_no", "after_seq")
    OUT_TRADE_NO_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    out_trade_no: str
    after_seq: int
    def __init__(self, out_trade_no: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class WatchPaymentResponse(_message.Message):
    __slots__ = ("event", "progress")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    event: PaymentEvent
    progress: PaymentProgress
    def __init__(self, event: _Optional[_Union[PaymentEvent, _Mapping]] = ..., progress: _Optional[_Union[PaymentProgress, _Mapping]] = ...) -> None: ...

class GetPaymentRequest(_message.Message):
    __slots__ = ("out_trade_no",)
    OUT_TRADE_NO_FIELD_NUMBER: _ClassVar[int]
    out_trade_no: str
    def __init__(self, out_trade_no: _Optional[str] = ...) -> None: ...

class GetPaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class ListPaymentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "states", "created_after", "created_before")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[PaymentState]
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[PaymentState, str]]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListPaymentsResponse(_message.Message):
    __slots__ = ("payments", "next_page_token")
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    payments: _containers.RepeatedCompositeFieldContainer[Payment]
    next_page_token: str
    def __init__(self, payments: _Optional[_Iterable[_Union[Payment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReversePaymentRequest(_message.Message):
    __slots__ = ("out_trade_no",)
    OUT_TRADE_NO_FIELD_NUMBER: _ClassVar[int]
    out_trade_no: str
    def __init__(self, out_trade_no: _Optional[str] = ...) -> None: ...

class ReversePaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class Refund(_message.Message):
    __slots__ = ("out_refund_no", "out_trade_no", "transaction_id", "refund_id", "state", "refund_fee", "total_fee", "refund_desc", "refund_account", "settlement_refund_fee", "cash_refund_fee", "coupon_refund_fee", "refund_channel", "success_time", "recv_account", "err_code", "err_code_des", "attention_reason", "attention_action", "created_at", "updated_at", "last_seq", "final", "attempts")
    OUT_REFUND_NO_FIELD_NUMBER: _ClassVar[int]
    OUT_TRADE_NO_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REFUND_FEE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FEE_FIELD_NUMBER: _ClassVar[int]
    REFUND_DESC_FIELD_NUMBER: _ClassVar[int]
    REFUND_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_REFUND_FEE_FIELD_NUMBER: _ClassVar[int]
    CASH_REFUND_FEE_FIELD_NUMBER: _ClassVar[int]
    COUPON_REFUND_FEE_FIELD_NUMBER: _ClassVar[int]
    REFUND_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_TIME_FIELD_NUMBER: _ClassVar[int]
    RECV_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ERR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERR_CODE_DES_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_REASON_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_ACTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    out_refund_no: str
    out_trade_no: str
    transaction_id: str
    refund_id: str
    state: RefundState
    refund_fee: int
    total_fee: int
    refund_desc: str
    refund_account: str
    settlement_refund_fee: int
    cash_refund_fee: int
    coupon_refund_fee: int
    refund_channel: str
    success_time: str
    recv_account: str
    err_code: str
    err_code_des: str
    attention_reason: str
    attention_action: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    last_seq: int
    final: bool
    attempts: int
    def __init__(self, out_refund_no: _Optional[str] = ..., out_trade_no: _Optional[str] = ..., transaction_id: _Optional[str] = ..., refund_id: _Optional[str] = ..., state: _Optional[_Union[RefundState, str]] = ..., refund_fee: _Optional[int] = ..., total_fee: _Optional[int] = ..., refund_desc: _Optional[str] = ..., refund_account: _Optional[str] = ..., settlement_refund_fee: _Optional[int] = ..., cash_refund_fee: _Optional[int] = ..., coupon_refund_fee: _Optional[int] = ..., refund_channel: _Optional[str] = ..., success_time: _Optional[str] = ..., recv_account: _Optional[str] = ..., err_code: _Optional[str] = ..., err_code_des: _Optional[str] = ..., attention_reason: _Optional[str] = ..., attention_action: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seq: _Optional[int] = ..., final: _Optional[bool] = ..., attempts: _Optional[int] = ...) -> None: ...

class RefundRecorded(_message.Message):
    __slots__ = ("refund_fee", "total_fee", "refund_desc", "reason")
    REFUND_FEE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FEE_FIELD_NUMBER: _ClassVar[int]
    REFUND_DESC_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    refund_fee: int
    total_fee: int
    refund_desc: str
    reason: str
    def __init__(self, refund_fee: _Optional[int] = ..., total_fee: _Optional[int] = ..., refund_desc: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RefundSending(_message.Message):
    __slots__ = ("attempt", "reason")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    reason: str
    def __init__(self, attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RefundProcessing(_message.Message):
    __slots__ = ("refund_id", "refund_fee", "settlement_refund_fee", "cash_refund_fee", "coupon_refund_fee", "refund_channel")
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_FEE_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_REFUND_FEE_FIELD_NUMBER: _ClassVar[int]
    CASH_REFUND_FEE_FIELD_NUMBER: _ClassVar[int]
    COUPON_REFUND_FEE_FIELD_NUMBER: _ClassVar[int]
    REFUND_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    refund_id: str
    refund_fee: int
    settlement_refund_fee: int
    cash_refund_fee: int
    coupon_refund_fee: int
    refund_channel: str
    def __init__(self, refund_id: _Optional[str] = ..., refund_fee: _Optional[int] = ..., settlement_refund_fee: _Optional[int] = ..., cash_refund_fee: _Optional[int] = ..., coupon_refund_fee: _Optional[int] = ..., refund_channel: _Optional[str] = ...) -> None: ...

class RefundSucceeded(_message.Message):
    __slots__ = ("refund_id", "refund_fee", "settlement_refund_fee", "cash_refund_fee", "coupon_refund_fee", "refund_channel", "success_time", "recv_account")
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_FEE_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_REFUND_FEE_FIELD_NUMBER: _ClassVar[int]
    CASH_REFUND_FEE_FIELD_NUMBER: _ClassVar[int]
    COUPON_REFUND_FEE_FIELD_NUMBER: _ClassVar[int]
    REFUND_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_TIME_FIELD_NUMBER: _ClassVar[int]
    RECV_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    refund_id: str
    refund_fee: int
    settlement_refund_fee: int
    cash_refund_fee: int
    coupon_refund_fee: int
    refund_channel: str
    success_time: str
    recv_account: str
    def __init__(self, refund_id: _Optional[str] = ..., refund_fee: _Optional[int] = ..., settlement_refund_fee: _Optional[int] = ..., cash_refund_fee: _Optional[int] = ..., coupon_refund_fee: _Optional[int] = ..., refund_channel: _Optional[str] = ..., success_time: _Optional[str] = ..., recv_account: _Optional[str] = ...) -> None: ...

class RefundClosed(_message.Message):
    __slots__ = ("reason", "description")
    REASON_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    reason: str
    description: str
    def __init__(self, reason: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class RefundChanged(_message.Message):
    __slots__ = ("recv_account", "action", "description")
    RECV_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    recv_account: str
    action: str
    description: str
    def __init__(self, recv_account: _Optional[str] = ..., action: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class RefundFailed(_message.Message):
    __slots__ = ("err_code", "description")
    ERR_CODE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    err_code: str
    description: str
    def __init__(self, err_code: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class RefundNeedsAttention(_message.Message):
    __slots__ = ("reason", "action", "description")
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    reason: str
    action: str
    description: str
    def __init__(self, reason: _Optional[str] = ..., action: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class RefundEvent(_message.Message):
    __slots__ = ("out_refund_no", "out_trade_no", "seq", "time", "state", "recorded", "sending", "processing", "succeeded", "closed", "change", "failed", "needs_attention")
    OUT_REFUND_NO_FIELD_NUMBER: _ClassVar[int]
    OUT_TRADE_NO_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    SENDING_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    NEEDS_ATTENTION_FIELD_NUMBER: _ClassVar[int]
    out_refund_no: str
    out_trade_no: str
    seq: int
    time: _timestamp_pb2.Timestamp
    state: RefundState
    recorded: RefundRecorded
    sending: RefundSending
    processing: RefundProcessing
    succeeded: RefundSucceeded
    closed: RefundClosed
    change: RefundChanged
    failed: RefundFailed
    needs_attention: RefundNeedsAttention
    def __init__(self, out_refund_no: _Optional[str] = ..., out_trade_no: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[RefundState, str]] = ..., recorded: _Optional[_Union[RefundRecorded, _Mapping]] = ..., sending: _Optional[_Union[RefundSending, _Mapping]] = ..., processing: _Optional[_Union[RefundProcessing, _Mapping]] = ..., succeeded: _Optional[_Union[RefundSucceeded, _Mapping]] = ..., closed: _Optional[_Union[RefundClosed, _Mapping]] = ..., change: _Optional[_Union[RefundChanged, _Mapping]] = ..., failed: _Optional[_Union[RefundFailed, _Mapping]] = ..., needs_attention: _Optional[_Union[RefundNeedsAttention, _Mapping]] = ...) -> None: ...

class RefundPaymentRequest(_message.Message):
    __slots__ = ("out_trade_no", "out_refund_no", "refund_fee", "refund_desc", "refund_account", "retry_failed")
    OUT_TRADE_NO_FIELD_NUMBER: _ClassVar[int]
    OUT_REFUND_NO_FIELD_NUMBER: _ClassVar[int]
    REFUND_FEE_FIELD_NUMBER: _ClassVar[int]
    REFUND_DESC_FIELD_NUMBER: _ClassVar[int]
    REFUND_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    RETRY_FAILED_FIELD_NUMBER: _ClassVar[int]
    out_trade_no: str
    out_refund_no: str
    refund_fee: int
    refund_desc: str
    refund_account: str
    retry_failed: bool
    def __init__(self, out_trade_no: _Optional[str] = ..., out_refund_no: _Optional[str] = ..., refund_fee: _Optional[int] = ..., refund_desc: _Optional[str] = ..., refund_account: _Optional[str] = ..., retry_failed: _Optional[bool] = ...) -> None: ...

class RefundPaymentResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: RefundEvent
    def __init__(self, event: _Optional[_Union[RefundEvent, _Mapping]] = ...) -> None: ...

class WatchRefundRequest(_message.Message):
    __slots__ = ("out_refund_no", "after_seq")
    OUT_REFUND_NO_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    out_refund_no: str
    after_seq: int
    def __init__(self, out_refund_no: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class WatchRefundResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: RefundEvent
    def __init__(self, event: _Optional[_Union[RefundEvent, _Mapping]] = ...) -> None: ...

class GetRefundRequest(_message.Message):
    __slots__ = ("out_refund_no",)
    OUT_REFUND_NO_FIELD_NUMBER: _ClassVar[int]
    out_refund_no: str
    def __init__(self, out_refund_no: _Optional[str] = ...) -> None: ...

class GetRefundResponse(_message.Message):
    __slots__ = ("refund",)
    REFUND_FIELD_NUMBER: _ClassVar[int]
    refund: Refund
    def __init__(self, refund: _Optional[_Union[Refund, _Mapping]] = ...) -> None: ...

class ListRefundsRequest(_message.Message):
    __slots__ = ("out_trade_no", "page_size", "page_token")
    OUT_TRADE_NO_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    out_trade_no: str
    page_size: int
    page_token: str
    def __init__(self, out_trade_no: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRefundsResponse(_message.Message):
    __slots__ = ("refunds", "next_page_token")
    REFUNDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    refunds: _containers.RepeatedCompositeFieldContainer[Refund]
    next_page_token: str
    def __init__(self, refunds: _Optional[_Iterable[_Union[Refund, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CheckPayScoreStatusRequest(_message.Message):
    __slots__ = ("out_trade_no", "payscore_out_request_no", "payscore_service_id", "face")
    OUT_TRADE_NO_FIELD_NUMBER: _ClassVar[int]
    PAYSCORE_OUT_REQUEST_NO_FIELD_NUMBER: _ClassVar[int]
    PAYSCORE_SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    out_trade_no: str
    payscore_out_request_no: str
    payscore_service_id: str
    face: FaceOptions
    def __init__(self, out_trade_no: _Optional[str] = ..., payscore_out_request_no: _Optional[str] = ..., payscore_service_id: _Optional[str] = ..., face: _Optional[_Union[FaceOptions, _Mapping]] = ...) -> None: ...

class CheckPayScoreStatusResponse(_message.Message):
    __slots__ = ("outcome", "openid", "sub_openid", "face_sid", "return_msg", "err_code")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OPENID_FIELD_NUMBER: _ClassVar[int]
    SUB_OPENID_FIELD_NUMBER: _ClassVar[int]
    FACE_SID_FIELD_NUMBER: _ClassVar[int]
    RETURN_MSG_FIELD_NUMBER: _ClassVar[int]
    ERR_CODE_FIELD_NUMBER: _ClassVar[int]
    outcome: PayScoreOutcome
    openid: str
    sub_openid: str
    face_sid: str
    return_msg: str
    err_code: str
    def __init__(self, outcome: _Optional[_Union[PayScoreOutcome, str]] = ..., openid: _Optional[str] = ..., sub_openid: _Optional[str] = ..., face_sid: _Optional[str] = ..., return_msg: _Optional[str] = ..., err_code: _Optional[str] = ...) -> None: ...

class PostPayment(_message.Message):
    __slots__ = ("name", "amount", "description", "count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    amount: int
    description: str
    count: int
    def __init__(self, name: _Optional[str] = ..., amount: _Optional[int] = ..., description: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class PostDiscount(_message.Message):
    __slots__ = ("name", "description", "amount", "count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    amount: int
    count: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., amount: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class TimeRange(_message.Message):
    __slots__ = ("start_time", "start_time_remark", "end_time", "end_time_remark")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_REMARK_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_REMARK_FIELD_NUMBER: _ClassVar[int]
    start_time: str
    start_time_remark: str
    end_time: str
    end_time_remark: str
    def __init__(self, start_time: _Optional[str] = ..., start_time_remark: _Optional[str] = ..., end_time: _Optional[str] = ..., end_time_remark: _Optional[str] = ...) -> None: ...

class Location(_message.Message):
    __slots__ = ("start_location", "end_location")
    START_LOCATION_FIELD_NUMBER: _ClassVar[int]
    END_LOCATION_FIELD_NUMBER: _ClassVar[int]
    start_location: str
    end_location: str
    def __init__(self, start_location: _Optional[str] = ..., end_location: _Optional[str] = ...) -> None: ...

class RiskFund(_message.Message):
    __slots__ = ("name", "amount", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    amount: int
    description: str
    def __init__(self, name: _Optional[str] = ..., amount: _Optional[int] = ..., description: _Optional[str] = ...) -> None: ...

class ServiceOrder(_message.Message):
    __slots__ = ("out_order_no", "service_id", "order_id", "state", "state_description", "service_introduction", "post_payments", "post_discounts", "risk_fund", "time_range", "location", "total_amount", "attach", "openid", "need_collection", "journal_state", "package", "notify_url", "appid", "mchid", "collection")
    OUT_ORDER_NO_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SERVICE_INTRODUCTION_FIELD_NUMBER: _ClassVar[int]
    POST_PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    POST_DISCOUNTS_FIELD_NUMBER: _ClassVar[int]
    RISK_FUND_FIELD_NUMBER: _ClassVar[int]
    TIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    ATTACH_FIELD_NUMBER: _ClassVar[int]
    OPENID_FIELD_NUMBER: _ClassVar[int]
    NEED_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_STATE_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_URL_FIELD_NUMBER: _ClassVar[int]
    APPID_FIELD_NUMBER: _ClassVar[int]
    MCHID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    out_order_no: str
    service_id: str
    order_id: str
    state: ServiceOrderState
    state_description: str
    service_introduction: str
    post_payments: _containers.RepeatedCompositeFieldContainer[PostPayment]
    post_discounts: _containers.RepeatedCompositeFieldContainer[PostDiscount]
    risk_fund: RiskFund
    time_range: TimeRange
    location: Location
    total_amount: int
    attach: str
    openid: str
    need_collection: bool
    journal_state: str
    package: str
    notify_url: str
    appid: str
    mchid: str
    collection: ServiceOrderCollection
    def __init__(self, out_order_no: _Optional[str] = ..., service_id: _Optional[str] = ..., order_id: _Optional[str] = ..., state: _Optional[_Union[ServiceOrderState, str]] = ..., state_description: _Optional[str] = ..., service_introduction: _Optional[str] = ..., post_payments: _Optional[_Iterable[_Union[PostPayment, _Mapping]]] = ..., post_discounts: _Optional[_Iterable[_Union[PostDiscount, _Mapping]]] = ..., risk_fund: _Optional[_Union[RiskFund, _Mapping]] = ..., time_range: _Optional[_Union[TimeRange, _Mapping]] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., total_amount: _Optional[int] = ..., attach: _Optional[str] = ..., openid: _Optional[str] = ..., need_collection: _Optional[bool] = ..., journal_state: _Optional[str] = ..., package: _Optional[str] = ..., notify_url: _Optional[str] = ..., appid: _Optional[str] = ..., mchid: _Optional[str] = ..., collection: _Optional[_Union[ServiceOrderCollection, _Mapping]] = ...) -> None: ...

class ServiceOrderCollection(_message.Message):
    __slots__ = ("state", "total_amount", "paying_amount", "paid_amount", "details")
    STATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PAYING_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PAID_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    state: str
    total_amount: int
    paying_amount: int
    paid_amount: int
    details: _containers.RepeatedCompositeFieldContainer[ServiceOrderPayment]
    def __init__(self, state: _Optional[str] = ..., total_amount: _Optional[int] = ..., paying_amount: _Optional[int] = ..., paid_amount: _Optional[int] = ..., details: _Optional[_Iterable[_Union[ServiceOrderPayment, _Mapping]]] = ...) -> None: ...

class ServiceOrderPayment(_message.Message):
    __slots__ = ("amount", "paid_type", "paid_time", "transaction_id")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PAID_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAID_TIME_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    amount: int
    paid_type: str
    paid_time: str
    transaction_id: str
    def __init__(self, amount: _Optional[int] = ..., paid_type: _Optional[str] = ..., paid_time: _Optional[str] = ..., transaction_id: _Optional[str] = ...) -> None: ...

class CreateServiceOrderRequest(_message.Message):
    __slots__ = ("out_order_no", "service_id", "service_introduction", "post_payments", "post_discounts", "time_range", "location", "risk_fund", "attach", "notify_url", "openid", "need_user_confirm")
    OUT_ORDER_NO_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_INTRODUCTION_FIELD_NUMBER: _ClassVar[int]
    POST_PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    POST_DISCOUNTS_FIELD_NUMBER: _ClassVar[int]
    TIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    RISK_FUND_FIELD_NUMBER: _ClassVar[int]
    ATTACH_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_URL_FIELD_NUMBER: _ClassVar[int]
    OPENID_FIELD_NUMBER: _ClassVar[int]
    NEED_USER_CONFIRM_FIELD_NUMBER: _ClassVar[int]
    out_order_no: str
    service_id: str
    service_introduction: str
    post_payments: _containers.RepeatedCompositeFieldContainer[PostPayment]
    post_discounts: _containers.RepeatedCompositeFieldContainer[PostDiscount]
    time_range: TimeRange
    location: Location
    risk_fund: RiskFund
    attach: str
    notify_url: str
    openid: str
    need_user_confirm: bool
    def __init__(self, out_order_no: _Optional[str] = ..., service_id: _Optional[str] = ..., service_introduction: _Optional[str] = ..., post_payments: _Optional[_Iterable[_Union[PostPayment, _Mapping]]] = ..., post_discounts: _Optional[_Iterable[_Union[PostDiscount, _Mapping]]] = ..., time_range: _Optional[_Union[TimeRange, _Mapping]] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., risk_fund: _Optional[_Union[RiskFund, _Mapping]] = ..., attach: _Optional[str] = ..., notify_url: _Optional[str] = ..., openid: _Optional[str] = ..., need_user_confirm: _Optional[bool] = ...) -> None: ...

class CreateServiceOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: ServiceOrder
    def __init__(self, order: _Optional[_Union[ServiceOrder, _Mapping]] = ...) -> None: ...

class CompleteServiceOrderRequest(_message.Message):
    __slots__ = ("out_order_no", "post_payments", "post_discounts", "total_amount", "time_range", "location", "profit_sharing", "goods_tag")
    OUT_ORDER_NO_FIELD_NUMBER: _ClassVar[int]
    POST_PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    POST_DISCOUNTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    TIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    PROFIT_SHARING_FIELD_NUMBER: _ClassVar[int]
    GOODS_TAG_FIELD_NUMBER: _ClassVar[int]
    out_order_no: str
    post_payments: _containers.RepeatedCompositeFieldContainer[PostPayment]
    post_discounts: _containers.RepeatedCompositeFieldContainer[PostDiscount]
    total_amount: int
    time_range: TimeRange
    location: Location
    profit_sharing: bool
    goods_tag: str
    def __init__(self, out_order_no: _Optional[str] = ..., post_payments: _Optional[_Iterable[_Union[PostPayment, _Mapping]]] = ..., post_discounts: _Optional[_Iterable[_Union[PostDiscount, _Mapping]]] = ..., total_amount: _Optional[int] = ..., time_range: _Optional[_Union[TimeRange, _Mapping]] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., profit_sharing: _Optional[bool] = ..., goods_tag: _Optional[str] = ...) -> None: ...

class CompleteServiceOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: ServiceOrder
    def __init__(self, order: _Optional[_Union[ServiceOrder, _Mapping]] = ...) -> None: ...

class SyncServiceOrderRequest(_message.Message):
    __slots__ = ("out_order_no", "type", "paid_time")
    OUT_ORDER_NO_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PAID_TIME_FIELD_NUMBER: _ClassVar[int]
    out_order_no: str
    type: str
    paid_time: str
    def __init__(self, out_order_no: _Optional[str] = ..., type: _Optional[str] = ..., paid_time: _Optional[str] = ...) -> None: ...

class SyncServiceOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: ServiceOrder
    def __init__(self, order: _Optional[_Union[ServiceOrder, _Mapping]] = ...) -> None: ...

class GetServiceOrderRequest(_message.Message):
    __slots__ = ("out_order_no",)
    OUT_ORDER_NO_FIELD_NUMBER: _ClassVar[int]
    out_order_no: str
    def __init__(self, out_order_no: _Optional[str] = ...) -> None: ...

class GetServiceOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: ServiceOrder
    def __init__(self, order: _Optional[_Union[ServiceOrder, _Mapping]] = ...) -> None: ...

class CancelServiceOrderRequest(_message.Message):
    __slots__ = ("out_order_no", "reason")
    OUT_ORDER_NO_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    out_order_no: str
    reason: str
    def __init__(self, out_order_no: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelServiceOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: ServiceOrder
    def __init__(self, order: _Optional[_Union[ServiceOrder, _Mapping]] = ...) -> None: ...

class GetUnionIdRequest(_message.Message):
    __slots__ = ("face_sid",)
    FACE_SID_FIELD_NUMBER: _ClassVar[int]
    face_sid: str
    def __init__(self, face_sid: _Optional[str] = ...) -> None: ...

class GetUnionIdResponse(_message.Message):
    __slots__ = ("unionid", "openid")
    UNIONID_FIELD_NUMBER: _ClassVar[int]
    OPENID_FIELD_NUMBER: _ClassVar[int]
    unionid: str
    openid: str
    def __init__(self, unionid: _Optional[str] = ..., openid: _Optional[str] = ...) -> None: ...
