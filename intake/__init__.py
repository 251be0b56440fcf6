"""The shared kernel: what every connector and service imports, and nothing else."""

from .blobs import BlobStore, FileBlobStore, blob_ref, blob_store_for
from .bus import Bus, DeadLetter
from .channel import Channel, Command, Inbound, discover_channels
from .components import Consumer, Listener, Task, run_in_thread
from .config import ConfigDocument, load_document, merge_rules, validate
from .errors import (
    BrokerUnavailable,
    ConfigInvalid,
    Ignored,
    IntakeError,
    MessageTooLarge,
    Rejected,
    SchemaInvalid,
    SettingInvalid,
    StorageUnavailable,
    Transient,
    Unroutable,
    Unsupported,
    smtp_reply,
)
from .http import error_answer, error_response
from .logging import bind_message, configure_logging, get_logger
from .message import (
    Attachment,
    Call,
    CallLeg,
    DeliveryResult,
    Event,
    Form,
    Identity,
    Message,
    OutboundMessage,
    RouteDecision,
    RouteDelivery,
    RouteTrial,
    Sender,
    Sla,
    Thread,
    utcnow,
)
from .outbox import Outbox, Publisher
from .service import (
    ACCOUNTS,
    BLOBS,
    BUS,
    CONFIG,
    PUBLISHER,
    SERVICE_SETTINGS,
    SETTINGS,
    SUPERVISOR,
    Service,
    serve,
)
from .settings import IntakeSettings

__all__ = [
    "ACCOUNTS",
    "BLOBS",
    "BUS",
    "CONFIG",
    "PUBLISHER",
    "SERVICE_SETTINGS",
    "SETTINGS",
    "SUPERVISOR",
    "Attachment",
    "BlobStore",
    "BrokerUnavailable",
    "Bus",
    "Call",
    "CallLeg",
    "Channel",
    "Command",
    "ConfigDocument",
    "ConfigInvalid",
    "Consumer",
    "DeadLetter",
    "DeliveryResult",
    "Event",
    "FileBlobStore",
    "Form",
    "Identity",
    "Ignored",
    "Inbound",
    "IntakeError",
    "IntakeSettings",
    "Listener",
    "Message",
    "MessageTooLarge",
    "OutboundMessage",
    "Outbox",
    "Publisher",
    "Rejected",
    "RouteDecision",
    "RouteDelivery",
    "RouteTrial",
    "SchemaInvalid",
    "Sender",
    "Service",
    "SettingInvalid",
    "Sla",
    "StorageUnavailable",
    "Task",
    "Thread",
    "Transient",
    "Unroutable",
    "Unsupported",
    "bind_message",
    "blob_ref",
    "blob_store_for",
    "configure_logging",
    "discover_channels",
    "error_answer",
    "error_response",
    "get_logger",
    "load_document",
    "merge_rules",
    "run_in_thread",
    "serve",
    "smtp_reply",
    "utcnow",
    "validate",
]

# -- what every connector needs from the kernel (kernel-kit) -----------------------------------
from .blobs import BlobTooLarge, StoredBlob, digest_of
from .config import ConfigPattern
from .fields import clean_email, clean_phone, clean_text, plain_email
from .filenames import clean_original_filename, sanitize_filename
from .metrics import ERRORS, HANDLER_SECONDS, IGNORED, MESSAGES_IN
from .patterns import Pattern, PatternInvalid
from .patterns import compiled as compiled_pattern
from .ratelimit import RateLimiter, client_address
from .references import reference_for, reference_pattern
from .sending import (
    Failed,
    OutboundSender,
    RetryLater,
    SenderKit,
    SenderRunner,
    SendOutcome,
    Sent,
    Suppressed,
    Taken,
)
from .state import QueuedItem, StateNamespace, StateQueue, StateStore

__all__ += [
    "ERRORS",
    "HANDLER_SECONDS",
    "IGNORED",
    "MESSAGES_IN",
    "BlobTooLarge",
    "ConfigPattern",
    "Failed",
    "OutboundSender",
    "Pattern",
    "PatternInvalid",
    "QueuedItem",
    "RateLimiter",
    "RetryLater",
    "SendOutcome",
    "SenderKit",
    "SenderRunner",
    "Sent",
    "StateNamespace",
    "StateQueue",
    "StateStore",
    "StoredBlob",
    "Suppressed",
    "Taken",
    "clean_email",
    "clean_original_filename",
    "clean_phone",
    "clean_text",
    "client_address",
    "compiled_pattern",
    "digest_of",
    "plain_email",
    "reference_for",
    "reference_pattern",
    "sanitize_filename",
]
