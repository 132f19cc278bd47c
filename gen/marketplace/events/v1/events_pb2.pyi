import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from marketplace.common.v1 import money_pb2 as _money_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OrderLine(_message.Message):
    __slots__ = ("sku_id", "product_id", "merchant_id", "category", "quantity", "unit_price", "line_total")
    SKU_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    LINE_TOTAL_FIELD_NUMBER: _ClassVar[int]
    sku_id: str
    product_id: str
    merchant_id: str
    category: str
    quantity: int
    unit_price: int
    line_total: int
    def __init__(self, sku_id: _Optional[str] = ..., product_id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., category: _Optional[str] = ..., quantity: _Optional[int] = ..., unit_price: _Optional[int] = ..., line_total: _Optional[int] = ...) -> None: ...

class OrderPlaced(_message.Message):
    __slots__ = ("order_id", "member_id", "lines", "subtotal", "discount", "points_redeemed", "total", "placed_at")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    SUBTOTAL_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_FIELD_NUMBER: _ClassVar[int]
    POINTS_REDEEMED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PLACED_AT_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    member_id: str
    lines: _containers.RepeatedCompositeFieldContainer[OrderLine]
    subtotal: _money_pb2.Money
    discount: _money_pb2.Money
    points_redeemed: int
    total: _money_pb2.Money
    placed_at: _timestamp_pb2.Timestamp
    def __init__(self, order_id: _Optional[str] = ..., member_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[OrderLine, _Mapping]]] = ..., subtotal: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., discount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., points_redeemed: _Optional[int] = ..., total: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., placed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class OrderConfirmed(_message.Message):
    __slots__ = ("order_id", "member_id", "lines", "total", "payment_id", "points_redeemed", "confirmed_at")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_REDEEMED_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_AT_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    member_id: str
    lines: _containers.RepeatedCompositeFieldContainer[OrderLine]
    total: _money_pb2.Money
    payment_id: str
    points_redeemed: int
    confirmed_at: _timestamp_pb2.Timestamp
    def __init__(self, order_id: _Optional[str] = ..., member_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[OrderLine, _Mapping]]] = ..., total: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., payment_id: _Optional[str] = ..., points_redeemed: _Optional[int] = ..., confirmed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class OrderCancelled(_message.Message):
    __slots__ = ("order_id", "member_id", "reason", "cancelled_at")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_AT_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    member_id: str
    reason: str
    cancelled_at: _timestamp_pb2.Timestamp
    def __init__(self, order_id: _Optional[str] = ..., member_id: _Optional[str] = ..., reason: _Optional[str] = ..., cancelled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class OrderRefunded(_message.Message):
    __slots__ = ("order_id", "member_id", "refunded", "payment_id", "refunded_at", "refunded_total")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_AT_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    member_id: str
    refunded: _money_pb2.Money
    payment_id: str
    refunded_at: _timestamp_pb2.Timestamp
    refunded_total: _money_pb2.Money
    def __init__(self, order_id: _Optional[str] = ..., member_id: _Optional[str] = ..., refunded: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., payment_id: _Optional[str] = ..., refunded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., refunded_total: _Optional[_Union[_money_pb2.Money, _Mapping]] = ...) -> None: ...

class PaymentChanged(_message.Message):
    __slots__ = ("payment_id", "order_id", "member_id", "status", "amount", "captured", "refunded", "decline_code", "occurred_at")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_FIELD_NUMBER: _ClassVar[int]
    DECLINE_CODE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    order_id: str
    member_id: str
    status: str
    amount: _money_pb2.Money
    captured: int
    refunded: int
    decline_code: str
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, payment_id: _Optional[str] = ..., order_id: _Optional[str] = ..., member_id: _Optional[str] = ..., status: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., captured: _Optional[int] = ..., refunded: _Optional[int] = ..., decline_code: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MemberRegistered(_message.Message):
    __slots__ = ("member_id", "age_band", "region", "gender", "registered_at")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    AGE_BAND_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    GENDER_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    age_band: str
    region: str
    gender: str
    registered_at: _timestamp_pb2.Timestamp
    def __init__(self, member_id: _Optional[str] = ..., age_band: _Optional[str] = ..., region: _Optional[str] = ..., gender: _Optional[str] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TierChanged(_message.Message):
    __slots__ = ("member_id", "old_tier", "new_tier", "changed_at")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    OLD_TIER_FIELD_NUMBER: _ClassVar[int]
    NEW_TIER_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    old_tier: str
    new_tier: str
    changed_at: _timestamp_pb2.Timestamp
    def __init__(self, member_id: _Optional[str] = ..., old_tier: _Optional[str] = ..., new_tier: _Optional[str] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PointsChanged(_message.Message):
    __slots__ = ("member_id", "delta", "balance", "reason", "order_id")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    delta: int
    balance: int
    reason: str
    order_id: str
    def __init__(self, member_id: _Optional[str] = ..., delta: _Optional[int] = ..., balance: _Optional[int] = ..., reason: _Optional[str] = ..., order_id: _Optional[str] = ...) -> None: ...

class ProductChanged(_message.Message):
    __slots__ = ("product_id", "merchant_id", "title", "category", "sku_ids")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SKU_IDS_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    merchant_id: str
    title: str
    category: str
    sku_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product_id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., title: _Optional[str] = ..., category: _Optional[str] = ..., sku_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class StockChanged(_message.Message):
    __slots__ = ("sku_id", "product_id", "delta", "stock", "reason")
    SKU_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    STOCK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    sku_id: str
    product_id: str
    delta: int
    stock: int
    reason: str
    def __init__(self, sku_id: _Optional[str] = ..., product_id: _Optional[str] = ..., delta: _Optional[int] = ..., stock: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class MerchantChanged(_message.Message):
    __slots__ = ("merchant_id", "name", "api_key_hash", "occurred_at")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    API_KEY_HASH_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    name: str
    api_key_hash: str
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, merchant_id: _Optional[str] = ..., name: _Optional[str] = ..., api_key_hash: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
