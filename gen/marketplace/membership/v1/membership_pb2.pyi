from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_UNSPECIFIED: _ClassVar[Tier]
    TIER_BRONZE: _ClassVar[Tier]
    TIER_SILVER: _ClassVar[Tier]
    TIER_GOLD: _ClassVar[Tier]
    TIER_PLATINUM: _ClassVar[Tier]

class ReservationStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESERVATION_STATUS_UNSPECIFIED: _ClassVar[ReservationStatus]
    RESERVATION_STATUS_RESERVED: _ClassVar[ReservationStatus]
    RESERVATION_STATUS_COMMITTED: _ClassVar[ReservationStatus]
    RESERVATION_STATUS_RELEASED: _ClassVar[ReservationStatus]
TIER_UNSPECIFIED: Tier
TIER_BRONZE: Tier
TIER_SILVER: Tier
TIER_GOLD: Tier
TIER_PLATINUM: Tier
RESERVATION_STATUS_UNSPECIFIED: ReservationStatus
RESERVATION_STATUS_RESERVED: ReservationStatus
RESERVATION_STATUS_COMMITTED: ReservationStatus
RESERVATION_STATUS_RELEASED: ReservationStatus

class GetMemberRequest(_message.Message):
    __slots__ = ("member_id",)
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    def __init__(self, member_id: _Optional[str] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("id", "tier", "discount_bps", "points_balance")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_BPS_FIELD_NUMBER: _ClassVar[int]
    POINTS_BALANCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    tier: Tier
    discount_bps: int
    points_balance: int
    def __init__(self, id: _Optional[str] = ..., tier: _Optional[_Union[Tier, str]] = ..., discount_bps: _Optional[int] = ..., points_balance: _Optional[int] = ...) -> None: ...

class ReservePointsRequest(_message.Message):
    __slots__ = ("order_id", "member_id", "points")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    member_id: str
    points: int
    def __init__(self, order_id: _Optional[str] = ..., member_id: _Optional[str] = ..., points: _Optional[int] = ...) -> None: ...

class PointsReservationRef(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class PointsReservation(_message.Message):
    __slots__ = ("order_id", "member_id", "points", "status", "points_balance")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    POINTS_BALANCE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    member_id: str
    points: int
    status: ReservationStatus
    points_balance: int
    def __init__(self, order_id: _Optional[str] = ..., member_id: _Optional[str] = ..., points: _Optional[int] = ..., status: _Optional[_Union[ReservationStatus, str]] = ..., points_balance: _Optional[int] = ...) -> None: ...
