from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CallbackKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALLBACK_KIND_UNSPECIFIED: _ClassVar[CallbackKind]
    CALLBACK_KIND_RESULT: _ClassVar[CallbackKind]
    CALLBACK_KIND_UPDATE_RESULT: _ClassVar[CallbackKind]
CALLBACK_KIND_UNSPECIFIED: CallbackKind
CALLBACK_KIND_RESULT: CallbackKind
CALLBACK_KIND_UPDATE_RESULT: CallbackKind

class Frame(_message.Message):
    __slots__ = ("hello", "call", "callback", "call_error", "ping", "pong")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    CALL_ERROR_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    call: Call
    callback: Callback
    call_error: CallError
    ping: Ping
    pong: Pong
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., call: _Optional[_Union[Call, _Mapping]] = ..., callback: _Optional[_Union[Callback, _Mapping]] = ..., call_error: _Optional[_Union[CallError, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "bridge_version", "sdk_version", "device_serial", "device_model", "face_app_version")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BRIDGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SDK_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_SERIAL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MODEL_FIELD_NUMBER: _ClassVar[int]
    FACE_APP_VERSION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: str
    bridge_version: str
    sdk_version: str
    device_serial: str
    device_model: str
    face_app_version: str
    def __init__(self, protocol_version: _Optional[str] = ..., bridge_version: _Optional[str] = ..., sdk_version: _Optional[str] = ..., device_serial: _Optional[str] = ..., device_model: _Optional[str] = ..., face_app_version: _Optional[str] = ...) -> None: ...

class Call(_message.Message):
    __slots__ = ("call_id", "method", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    method: str
    params: _containers.ScalarMap[str, str]
    def __init__(self, call_id: _Optional[int] = ..., method: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Callback(_message.Message):
    __slots__ = ("call_id", "kind", "info")
    class InfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    kind: CallbackKind
    info: _containers.ScalarMap[str, str]
    def __init__(self, call_id: _Optional[int] = ..., kind: _Optional[_Union[CallbackKind, str]] = ..., info: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CallError(_message.Message):
    __slots__ = ("call_id", "message")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    message: str
    def __init__(self, call_id: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    def __init__(self, nonce: _Optional[int] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    def __init__(self, nonce: _Optional[int] = ...) -> None: ...
