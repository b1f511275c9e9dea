"""Notify provider ``sns``: SMS through Amazon SNS (``sns.publish(PhoneNumber=...)``) with boto3.

One boto3 client per provider instance, created on first use: boto3 *clients* are thread-safe (the
hub's worker threads share it and its connection pool), boto3 *sessions* are not, so the session is
used once, under a lock, to make the client. botocore's own retries are switched off: the hub
retries with backoff and fails over, and two retry layers would multiply the wait on an outage.

SNS sends one SMS per ``publish`` call and has no idempotency key for SMS. An error that stops a
batch is raised only when nothing in it was sent; once an SMS went out, the recipients not sent come
back ``retry`` and the core hands only those to the next provider (or a later attempt), so nobody
is texted twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from hub import hookimpl
from hub.capabilities import HealthResult, Message, NotifyResult, Provider, ProviderContext, RecipientResult
from hub.errors import ConfigurationError, PermanentError, ProviderError, TransientError, UnsupportedError
from hub.http import parse_retry_after, transport_error

__all__ = ["SnsSettings", "SnsSms", "register_providers"]

#: SNS refuses a publish of more than 1,600 characters to a phone number.
MAX_SMS_CHARACTERS = 1600

# botocore error codes, by what the hub should do about them.
_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "KMSThrottlingException",
    }
)
_SERVER_CODES = frozenset({"InternalError", "InternalFailure", "ServiceUnavailable", "InternalErrorException"})
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClient",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "InvalidSecurity",
        "OptInRequired",
    }
)
_RECIPIENT_CODES = frozenset({"InvalidParameter", "InvalidParameterValue", "ParameterValueInvalid"})


class SnsSettings(Schema):
    """``providers.<name>`` settings of an ``sns`` provider."""

    #: AWS region; absent: ``AWS_REGION``, then boto3's chain (``AWS_DEFAULT_REGION``, ~/.aws/config).
    region = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(r"^[a-z]{2}(-[a-z0-9]+)+$"))
    #: Optional: without keys boto3's default credential chain is used (instance role, profile...).
    access_key_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    secret_access_key = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    session_token = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    #: Another SNS endpoint (a VPC endpoint, or moto in tests).
    endpoint_url = fields.Url(load_default=None, allow_none=True, require_tld=False, schemes={"http", "https"})
    #: Alphanumeric sender ID (where the destination country supports them): 1-11 letters/digits, one letter.
    sender_id = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(
            r"^(?=.*[A-Za-z])[A-Za-z0-9]{1,11}$", error="1 to 11 letters or digits, at least one letter"
        ),
    )
    #: SNS's own default is Promotional; ``priority: high`` messages are always sent Transactional.
    sms_type = fields.String(load_default="Promotional", validate=validate.OneOf(["Promotional", "Transactional"]))
    #: Most USD one SMS may cost (``AWS.SNS.SMS.MaxPrice``); SNS drops a message that would cost more.
    max_price = fields.Decimal(load_default=None, allow_none=True, places=5, validate=validate.Range(min=0))
    #: Connect and read timeout of each API call, in seconds.
    timeout = fields.Float(load_default=10.0, validate=validate.Range(min=0.1, max=120))

    @validates_schema
    def _keys_in_pairs(self, data: dict[str, Any], **_: Any) -> None:
        if bool(data.get("access_key_id")) != bool(data.get("secret_access_key")):
            missing = "secret_access_key" if data.get("access_key_id") else "access_key_id"
            raise ValidationError({missing: ["set access_key_id and secret_access_key together (or neither)"]})
        if data.get("session_token") and not data.get("access_key_id"):
            raise ValidationError({"session_token": ["a session token needs access_key_id and secret_access_key"]})


class SnsSms(Provider):
    type_name = "sns"
    capability = "notify"
    channels = ("sms",)
    settings_schema: ClassVar[type[Schema]] = SnsSettings
    env_settings: ClassVar[dict[str, str]] = {
        "region": "AWS_REGION",
        "access_key_id": "AWS_ACCESS_KEY_ID",
        "secret_access_key": "AWS_SECRET_ACCESS_KEY",
        "session_token": "AWS_SESSION_TOKEN",
    }
    secret_settings: ClassVar[tuple[str, ...]] = ("access_key_id", "secret_access_key", "session_token")
    description = "SMS through Amazon SNS (publish to a phone number)."

    def __init__(self, name: str, settings: dict[str, Any], context: ProviderContext) -> None:
        super().__init__(name, settings, context)
        self._client: Any = None
        self._client_lock = threading.Lock()

    # --- the client --------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The provider's boto3 SNS client, made on first use."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        settings = self.settings
        try:
            session = boto3.session.Session(
                aws_access_key_id=settings["access_key_id"],
                aws_secret_access_key=settings["secret_access_key"],
                aws_session_token=settings["session_token"],
                region_name=settings["region"],
            )
            return session.client(
                "sns",
                endpoint_url=settings["endpoint_url"],
                config=Config(
                    connect_timeout=settings["timeout"],
                    read_timeout=settings["timeout"],
                    retries={"mode": "standard", "total_max_attempts": 1},
                    max_pool_connections=20,
                    user_agent_extra="integration-hub",
                ),
            )
        except Exception as error:
            raise self._provider_error(error) from None

    # --- notify ------------------------------------------------------------------------------------

    def message_attributes(self, priority: str) -> dict[str, dict[str, str]]:
        """The ``AWS.SNS.SMS.*`` attributes of every publish for a message of this priority."""
        sms_type = "Transactional" if priority == "high" else self.settings["sms_type"]
        attributes = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": sms_type}}
        if self.settings["sender_id"]:
            attributes["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": self.settings["sender_id"]}
        if self.settings["max_price"] is not None:
            price = format(self.settings["max_price"].normalize(), "f")  # "0.25", never "0.25000" or "1E+1"
            attributes["AWS.SNS.SMS.MaxPrice"] = {"DataType": "Number", "StringValue": price}
        return attributes

    @hookimpl
    def notify(self, message: Message) -> NotifyResult:
        if message.channel != "sms":
            raise UnsupportedError(f"sns delivers SMS only, not {message.channel}")
        if not message.text.strip():
            raise PermanentError("the SMS text is empty", provider_code="EmptyMessage")
        if len(message.text) > MAX_SMS_CHARACTERS:
            raise PermanentError(
                f"the SMS text has {len(message.text)} characters; SNS sends at most {MAX_SMS_CHARACTERS}",
                provider_code="MessageTooLong",
            )
        attributes = self.message_attributes(message.priority)
        client = self.client
        results: list[RecipientResult] = []
        for recipient in message.recipients:
            address = recipient.address
            try:
                response = client.publish(PhoneNumber=address, Message=message.text, MessageAttributes=attributes)
            except Exception as error:
                refusal = self._recipient_refusal(error)
                if refusal is None:
                    return NotifyResult.cut_short(message, results, self._provider_error(error))
                results.append(RecipientResult(address, "failed", error=refusal))
                continue
            results.append(RecipientResult(address, "sent", provider_message_id=response["MessageId"]))
        failed = sum(1 for result in results if result.status == "failed")
        self.log.info("sns: message %s: %d SMS sent, %d refused", message.id, len(results) - failed, failed)
        return NotifyResult(results)

    # --- health and close --------------------------------------------------------------------------

    @hookimpl
    def health(self) -> HealthResult:
        try:
            client = self.client
            # The cheapest signed call SNS has: it proves the region, endpoint and credentials.
            client.get_sms_attributes(attributes=["DefaultSMSType"])
        except Exception as error:
            mapped = error if isinstance(error, ProviderError) else self._provider_error(error)
            return HealthResult("error", mapped.message)
        return HealthResult("success", f"SNS credentials accepted in {client.meta.region_name}")

    @hookimpl
    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()

    # --- errors ------------------------------------------------------------------------------------

    @staticmethod
    def _recipient_refusal(error: Exception) -> str | None:
        """The reason when SNS refused this one phone number (``InvalidParameter``), else ``None``."""
        from botocore.exceptions import ClientError

        if isinstance(error, ClientError):
            details = error.response.get("Error", {})
            if details.get("Code") in _RECIPIENT_CODES:
                return f"{details.get('Code')}: {str(details.get('Message') or 'refused by SNS')[:300]}"
        return None

    @staticmethod
    def _provider_error(error: Exception) -> ProviderError:
        """The hub error for a boto3/botocore exception. Messages carry AWS's error code and never a
        credential (AWS's text for credential errors can quote the access key id, so it is dropped)."""
        from botocore import exceptions as aws

        if isinstance(error, aws.ClientError):
            details = error.response.get("Error", {})
            metadata = error.response.get("ResponseMetadata", {})
            code = str(details.get("Code") or "Unknown")
            status = int(metadata.get("HTTPStatusCode") or 0)
            text = str(details.get("Message") or "")[:300]
            retry_after = parse_retry_after((metadata.get("HTTPHeaders") or {}).get("retry-after"))
            if code in _THROTTLING_CODES or status == 429:
                return TransientError(
                    f"SNS throttled the request ({code})", provider_code=code, retry_after=retry_after
                )
            if code in _SERVER_CODES or status >= 500:
                return TransientError(
                    f"SNS failed ({code}, HTTP {status})", provider_code=code, retry_after=retry_after
                )
            if code in _CREDENTIAL_CODES or code.startswith("KMS") or status in (401, 403):
                return ConfigurationError(f"SNS refused the credentials or permissions ({code})", provider_code=code)
            return ConfigurationError(f"SNS refused the request ({code}): {text}", provider_code=code)
        if isinstance(error, aws.NoRegionError):
            return ConfigurationError("no AWS region: set region (or AWS_REGION)", provider_code="NoRegion")
        if isinstance(error, aws.NoCredentialsError | aws.PartialCredentialsError):
            return ConfigurationError(
                "no AWS credentials: set access_key_id and secret_access_key, or give the hub a role",
                provider_code=type(error).__name__,
            )
        if isinstance(error, aws.ParamValidationError):
            return ConfigurationError("boto3 refused the request parameters", provider_code="ParamValidation")
        if isinstance(error, aws.ConnectionError | aws.HTTPClientError):
            # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError...: botocore
            # keeps urllib3's errors underneath, so the hub's one transport mapping reads them.
            return transport_error(error, service="SNS")
        return TransientError(f"SNS call failed ({type(error).__name__})", provider_code=type(error).__name__)


@hookimpl
def register_providers(register: Callable[[type], None]) -> None:
    register(SnsSms)
