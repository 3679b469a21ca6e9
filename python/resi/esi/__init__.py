"""Typed ESI: the SolarNetwork ESI dialect from Python.

Typed async clients of the three services over any :class:`resi.Client`
(plain, through a gateway, or redundant in-process):
:class:`FacilityClient` (``DerFacilityService``), :class:`ExchangeClient`
(``DerFacilityExchange``), :class:`RegistryClient`
(``DerFacilityExchangeRegistry``), and :class:`OfferNegotiation` for the
bidi ``ProposePriceMapOffer``.

Every message and enum of the proto package ``solarnetwork.esi.domain`` as
a standard ``protobuf`` class, flat (``from resi.esi import DerRoute,
PowerParameters``), plus the well-known types the messages use
(:class:`Empty`, :class:`Timestamp`, :class:`Duration`).

The classes are generated from ``proto/solarnetwork/esi`` by
``tools/gen_esi_python.py`` and live in ``resi.esi._proto``; their
descriptors are identical to those built from SolarNetwork's own files, so
they mix with grpcio and with modules a user generated from those files.
See docs/python.md, "Typed ESI".
"""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.empty_pb2 import Empty
from google.protobuf.timestamp_pb2 import Timestamp

from ._clients import ExchangeClient, FacilityClient, OfferNegotiation, RegistryClient
from ._proto.solarnetwork.esi.domain.crypto_key_pb2 import CryptoKey
from ._proto.solarnetwork.esi.domain.datum_request_pb2 import DatumRequest
from ._proto.solarnetwork.esi.domain.der_characteristics_pb2 import DerCharacteristics
from ._proto.solarnetwork.esi.domain.der_facility_exchange_info_pb2 import DerFacilityExchangeInfo
from ._proto.solarnetwork.esi.domain.der_facility_exchange_request_pb2 import DerFacilityExchangeRequest
from ._proto.solarnetwork.esi.domain.der_facility_registration_form_data_pb2 import DerFacilityRegistrationFormData
from ._proto.solarnetwork.esi.domain.der_facility_registration_form_data_receipt_pb2 import DerFacilityRegistrationFormDataReceipt
from ._proto.solarnetwork.esi.domain.der_facility_registration_form_pb2 import DerFacilityRegistrationForm
from ._proto.solarnetwork.esi.domain.der_facility_registration_form_request_pb2 import DerFacilityRegistrationFormRequest
from ._proto.solarnetwork.esi.domain.der_facility_registration_pb2 import DerFacilityRegistration
from ._proto.solarnetwork.esi.domain.der_program_set_pb2 import DerProgramSet
from ._proto.solarnetwork.esi.domain.der_program_type_pb2 import DerProgramType
from ._proto.solarnetwork.esi.domain.der_route_pb2 import DerRoute
from ._proto.solarnetwork.esi.domain.duration_range_pb2 import DurationRange
from ._proto.solarnetwork.esi.domain.float_range_pb2 import FloatRange
from ._proto.solarnetwork.esi.domain.form_data_pb2 import FormData
from ._proto.solarnetwork.esi.domain.form_pb2 import Form
from ._proto.solarnetwork.esi.domain.form_setting_pb2 import FormSetting
from ._proto.solarnetwork.esi.domain.latlng_pb2 import LatLng
from ._proto.solarnetwork.esi.domain.location_pb2 import Location
from ._proto.solarnetwork.esi.domain.message_signature_pb2 import MessageSignature
from ._proto.solarnetwork.esi.domain.money_pb2 import Money
from ._proto.solarnetwork.esi.domain.money_range_pb2 import MoneyRange
from ._proto.solarnetwork.esi.domain.power_components_pb2 import PowerComponents
from ._proto.solarnetwork.esi.domain.power_parameters_pb2 import PowerParameters
from ._proto.solarnetwork.esi.domain.power_profile_datum_pb2 import PowerProfileDatum
from ._proto.solarnetwork.esi.domain.price_components_pb2 import PriceComponents
from ._proto.solarnetwork.esi.domain.price_datum_pb2 import PriceDatum
from ._proto.solarnetwork.esi.domain.price_map_characteristics_pb2 import PriceMapCharacteristics
from ._proto.solarnetwork.esi.domain.price_map_offer_feedback_pb2 import PriceMapOfferFeedback
from ._proto.solarnetwork.esi.domain.price_map_offer_feedback_response_pb2 import PriceMapOfferFeedbackResponse
from ._proto.solarnetwork.esi.domain.price_map_offer_pb2 import PriceMapOffer
from ._proto.solarnetwork.esi.domain.price_map_offer_response_pb2 import PriceMapOfferResponse
from ._proto.solarnetwork.esi.domain.price_map_offer_status_pb2 import PriceMapOfferStatus
from ._proto.solarnetwork.esi.domain.price_map_offer_status_request_pb2 import PriceMapOfferStatusRequest
from ._proto.solarnetwork.esi.domain.price_map_offer_status_response_pb2 import PriceMapOfferStatusResponse
from ._proto.solarnetwork.esi.domain.price_map_pb2 import PriceMap
from ._proto.solarnetwork.esi.domain.price_parameters_pb2 import PriceParameters
from ._proto.solarnetwork.esi.domain.signed_int32_range_pb2 import SignedInt32Range
from ._proto.solarnetwork.esi.domain.time_concept_pb2 import TimeConcept
from ._proto.solarnetwork.esi.domain.time_unit_pb2 import TimeUnit
from ._proto.solarnetwork.esi.domain.timestamp_range_pb2 import TimestampRange
from ._proto.solarnetwork.esi.domain.uuid_pb2 import Uuid

__all__ = [
    "CryptoKey",
    "DatumRequest",
    "DerCharacteristics",
    "DerFacilityExchangeInfo",
    "DerFacilityExchangeRequest",
    "DerFacilityRegistration",
    "DerFacilityRegistrationForm",
    "DerFacilityRegistrationFormData",
    "DerFacilityRegistrationFormDataReceipt",
    "DerFacilityRegistrationFormRequest",
    "DerProgramSet",
    "DerProgramType",
    "DerRoute",
    "Duration",
    "DurationRange",
    "Empty",
    "ExchangeClient",
    "FacilityClient",
    "FloatRange",
    "Form",
    "FormData",
    "FormSetting",
    "LatLng",
    "Location",
    "MessageSignature",
    "Money",
    "MoneyRange",
    "OfferNegotiation",
    "PowerComponents",
    "PowerParameters",
    "PowerProfileDatum",
    "PriceComponents",
    "PriceDatum",
    "PriceMap",
    "PriceMapCharacteristics",
    "PriceMapOffer",
    "PriceMapOfferFeedback",
    "PriceMapOfferFeedbackResponse",
    "PriceMapOfferResponse",
    "PriceMapOfferStatus",
    "PriceMapOfferStatusRequest",
    "PriceMapOfferStatusResponse",
    "PriceParameters",
    "RegistryClient",
    "SignedInt32Range",
    "TimeConcept",
    "TimeUnit",
    "Timestamp",
    "TimestampRange",
    "Uuid",
]
