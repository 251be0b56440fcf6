"""The `tickets` section of the config: custom fields, quick replies, satisfaction, the phone
region, automatic transitions, the public URL and the statuses that count as an agent's load.

Validated by the ticket core at start and by `intake config check`, each mistake with its line:
unknown keys, a select without options, a pattern RE2 cannot run, a desk no routing section
declares, a placeholder naming no known variable.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from intake.config import ConfigDocument, validate
from intake.durations import Duration
from intake.errors import ConfigInvalid
from intake.placeholders import placeholders, problems

from .fields import FieldDefinition, FieldSet

LoadStatus = Literal["new", "open", "pending", "on_hold"]


class TicketsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuickReply(TicketsModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    title: str = Field(min_length=1, max_length=200)
    shortcut: str | None = Field(default=None, min_length=1, max_length=32)
    desks: list[str] = Field(default_factory=list)  # empty: every desk
    text: str = Field(min_length=1, max_length=10_000)


class Satisfaction(TicketsModel):
    on_resolve: bool = False
    on_auto_resolve: bool = False
    expires_after: Duration = timedelta(days=7)
    subject: str | None = Field(default=None, max_length=998)
    text: str = "请为本次服务评分：{{satisfaction.url}}"

    @field_validator("text")
    @classmethod
    def holds_the_link(cls, value: str) -> str:
        if not any(p.name == "satisfaction.url" for p in placeholders(value)):
            raise ValueError("the text must hold {{satisfaction.url}}, the rating page's link")
        return value


class TicketsConfig(TicketsModel):
    ticket_fields: list[FieldDefinition] = Field(default_factory=list)
    # None (absent): customer fields stay free-form, as before this section existed.
    customer_fields: list[FieldDefinition] | None = None
    quick_replies: list[QuickReply] = Field(default_factory=list)
    satisfaction: Satisfaction = Field(default_factory=Satisfaction)
    default_phone_region: str | None = None
    pending_auto_resolve_after: Duration | None = None
    resolved_auto_close_after: Duration | None = None
    public_base_url: Annotated[str, Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")] | None \
        = None
    load_statuses: list[LoadStatus] = Field(
        default_factory=lambda: list[LoadStatus](["new", "open"]), min_length=1)
    # Not config keys: the routing sections' ids, filled in by `load_tickets`.
    _desk_ids: frozenset[str] = PrivateAttr(default_factory=frozenset)
    _category_ids: frozenset[str] = PrivateAttr(default_factory=frozenset)

    def with_routing(self, desks: frozenset[str], categories: frozenset[str]) -> TicketsConfig:
        """This config knowing the desks and categories the routing sections declare."""
        copy = self.model_copy()
        copy._desk_ids, copy._category_ids = desks, categories
        return copy

    @property
    def desk_ids(self) -> frozenset[str]:
        return self._desk_ids

    @property
    def category_ids(self) -> frozenset[str]:
        """Empty when the config declares no categories: any category id is taken."""
        return self._category_ids

    @field_validator("default_phone_region")
    @classmethod
    def known_region(cls, value: str | None) -> str | None:
        if value is not None and value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a region phonenumbers knows (ISO 3166 "
                             "alpha-2, upper case, e.g. CN)")
        return value

    @field_validator("public_base_url")
    @classmethod
    def without_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @property
    def ticket_field_set(self) -> FieldSet:
        return FieldSet(self.ticket_fields, self.default_phone_region)

    @property
    def customer_field_set(self) -> FieldSet:
        return FieldSet(self.customer_fields, self.default_phone_region)


def placeholder_problems(text: str, config: TicketsConfig, *,
                         satisfaction: bool = False) -> list[str]:
    """Each placeholder of `text` that is malformed or names no known variable or field."""
    return problems(text, ticket_fields={f.key for f in config.ticket_fields},
                    customer_fields={f.key for f in config.customer_fields or []},
                    unavailable=() if satisfaction else ("satisfaction.url",))


def _ids(doc: ConfigDocument, section: str) -> frozenset[str]:
    entries = doc.section(section)
    return frozenset(str(e["id"]) for e in entries or []
                     if isinstance(e, dict) and "id" in e) if isinstance(entries, list) \
        else frozenset()


def load_tickets(doc: ConfigDocument) -> TicketsConfig:
    """The validated `tickets` section (defaults when absent); ConfigInvalid names the lines."""
    config = validate(doc, TicketsConfig, doc.section("tickets") or {}, prefix=("tickets",))
    desks, categories = _ids(doc, "desks"), _ids(doc, "categories")
    problems: list[str] = []

    def problem(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(f"{doc.where(('tickets', *loc))}: "
                        f"{'.'.join(map(str, ('tickets', *loc)))}: {message}")

    for section in ("ticket_fields", "customer_fields", "quick_replies"):
        seen: set[str] = set()
        for i, item in enumerate(getattr(config, section) or []):
            name = "key" if section != "quick_replies" else "id"
            ident = getattr(item, name)
            if ident in seen:
                problem((section, i, name), f"'{ident}' is listed twice")
            seen.add(ident)
            for j, desk in enumerate(item.desks):
                if desk not in desks:
                    problem((section, i, "desks", j), f"unknown desk '{desk}' (declared: "
                            f"{', '.join(sorted(desks)) or 'none'})")
    for i, reply in enumerate(config.quick_replies):
        for message in placeholder_problems(reply.text, config):
            problem(("quick_replies", i, "text"), message)
    for message in placeholder_problems(config.satisfaction.text, config, satisfaction=True):
        problem(("satisfaction", "text"), message)
    if problems:
        raise ConfigInvalid(problems)
    return config.with_routing(desks, categories)


def field_definitions(config: TicketsConfig, desk: str | None = None) -> dict[str, Any]:
    """`GET /api/v1/fields`: both kinds, as configured (a desk: only the fields it shows)."""
    def listed(fields: list[FieldDefinition]) -> list[dict[str, Any]]:
        return [f.model_dump(mode="json", exclude_none=True) for f in fields
                if desk is None or f.applies_to(desk)]

    return {"ticket_fields": listed(config.ticket_fields),
            "customer_fields": listed(config.customer_fields or [])}
