"""WebformSettings (environment, `INTAKE_WEBFORM_*`) and the forms of `channels.webform`."""

from __future__ import annotations

import re
from typing import Any, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from intake import ConfigPattern, compiled_pattern

MIB = 1024 * 1024
HONEYPOT_FIELD = "website"
TOKEN_FIELD = "_token"
# Form ids appear in URLs, routing keys and idempotency keys: keep them plain.
FORM_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
FIELD_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
FieldType = Literal["text", "textarea", "email", "phone", "select", "checkbox", "file"]


class WebformSettings(BaseSettings):
    """The web form service's own settings; the forms themselves live in the YAML config."""

    model_config = SettingsConfigDict(env_prefix="INTAKE_WEBFORM_", extra="ignore", frozen=True)

    port: int = 8001
    # Base of the public URL of every form, for QR codes, embeds and the schema's submit_url.
    public_url: str = "http://127.0.0.1:8001"
    max_body_bytes: int = Field(default=10 * MIB, ge=1024)
    max_file_bytes: int = Field(default=5 * MIB, ge=1)
    max_files: int = Field(default=5, ge=0)
    max_field_chars: int = Field(default=10_000, ge=1)
    rate_limit_per_minute: int = Field(default=30, ge=1)
    rate_limit_burst: int = Field(default=10, ge=1)
    # The rate limiter forgets the least recently seen addresses beyond this many.
    rate_limit_table_size: int = Field(default=10_000, ge=1)
    # Behind a reverse proxy: take the client address from the last X-Forwarded-For hop.
    trust_forwarded_for: bool = False
    retry_after_s: int = Field(default=5, ge=1)

    @field_validator("public_url")
    @classmethod
    def no_trailing_slash(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL such as https://forms.example.com")
        return value.rstrip("/")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldOption(Strict):
    value: str = Field(min_length=1, max_length=200)
    label: str = Field(min_length=1, max_length=200)


class FormField(Strict):
    """One input of a form; `options` for selects, `multiple` and `accept` for files."""

    name: str = Field(pattern=FIELD_NAME)
    type: FieldType = "text"
    label: str = Field(min_length=1, max_length=200)
    required: bool = False
    placeholder: str | None = None
    help: str | None = None
    options: list[FieldOption] | None = None
    max_length: int | None = Field(default=None, ge=1)
    # Run on customer text, so an RE2 pattern (linear in the text); what RE2 cannot run is
    # refused at load.
    pattern: ConfigPattern | None = None
    multiple: bool = False
    # MIME types (`image/*`, `application/pdf`) or extensions (`.pdf`); a string may list
    # several separated by commas, as in HTML.
    accept: list[str] | None = None

    @field_validator("options", mode="before")
    @classmethod
    def options_from_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"value": item, "label": item} if isinstance(item, str) else item
                    for item in value]
        return value

    @field_validator("accept", mode="before")
    @classmethod
    def accept_from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("accept")
    @classmethod
    def accept_entries(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            if not (entry.startswith(".") or re.match(r"^[\w.+-]+/(\*|[\w.+-]+)$", entry)):
                raise ValueError(f"{entry!r} is neither a MIME type (image/*) nor an extension"
                                 " (.pdf)")
        return [entry.lower() for entry in value] if value else value

    def pattern_holds(self, text: str) -> bool:
        """Whether `text` is in the field's format: all of it matches `pattern`, if any."""
        return self.pattern is None or compiled_pattern(self.pattern).fullmatch(text)

    @model_validator(mode="after")
    def options_fit_type(self) -> FormField:
        if self.type == "select":
            if not self.options:
                raise ValueError(f"field {self.name!r}: a select needs options")
            values = [option.value for option in self.options]
            if len(set(values)) != len(values):
                raise ValueError(f"field {self.name!r}: option values must be unique")
        elif self.options is not None:
            raise ValueError(f"field {self.name!r}: only a select takes options")
        if self.type != "file" and (self.multiple or self.accept):
            raise ValueError(f"field {self.name!r}: multiple and accept apply to file fields")
        if self.type in ("checkbox", "file", "select") and (self.pattern or self.max_length):
            raise ValueError(f"field {self.name!r}: pattern and max_length apply to text fields")
        return self


class FormDefinition(Strict):
    """A hosted form; its `id` is the `account` of the messages it produces."""

    id: str = Field(pattern=FORM_ID)
    title: str = Field(min_length=1, max_length=200)
    description: str | None = None
    theme_color: str = "#1d4ed8"
    success_message: str = "Thank you. We have received your message and will reply soon."
    submit_label: str | None = None
    # The page's language (`lang` attribute, and the wording of the page's own text).
    lang: str = Field(default="en", pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
    # Region for phone numbers written without a country code (ISO 3166, e.g. CN).
    default_region: str | None = None
    fields: list[FormField] = Field(min_length=1)
    sender_name_field: str | None = None
    subject_field: str | None = None
    text_field: str | None = None

    @field_validator("theme_color")
    @classmethod
    def hex_colour(cls, value: str) -> str:
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
            raise ValueError("must be a colour written #rrggbb")
        return value.lower()

    @field_validator("default_region")
    @classmethod
    def known_region(cls, value: str | None) -> str | None:
        if value is not None and value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a region code phonenumbers knows (e.g. CN, US)")
        return value.upper() if value else value

    @field_validator("fields")
    @classmethod
    def unique_names(cls, value: list[FormField]) -> list[FormField]:
        seen: set[str] = set()
        for field in value:
            if field.name in seen:
                raise ValueError(f"field name {field.name!r} is used twice")
            if field.name == HONEYPOT_FIELD:
                raise ValueError(f"field name {HONEYPOT_FIELD!r} is reserved for the honeypot")
            seen.add(field.name)
        return value

    @model_validator(mode="after")
    def roles_name_fields(self) -> FormDefinition:
        names = {field.name: field for field in self.fields}
        for attr in ("sender_name_field", "subject_field", "text_field"):
            name = getattr(self, attr)
            if name is None:
                continue
            if name not in names:
                raise ValueError(f"{attr}: the form has no field {name!r}")
            if names[name].type not in ("text", "textarea", "select"):
                raise ValueError(f"{attr}: field {name!r} is a {names[name].type}, "
                                 "not a text field")
        return self

    def field(self, name: str | None) -> FormField | None:
        return next((f for f in self.fields if f.name == name), None) if name else None

    def _first(self, name: str, *types: str) -> FormField | None:
        named = self.field(name)
        if named is not None and named.type in types:
            return named
        return None

    @property
    def name_field(self) -> FormField | None:
        return self.field(self.sender_name_field) or self._first("name", "text")

    @property
    def email_field(self) -> FormField | None:
        return next((f for f in self.fields if f.type == "email"), None)

    @property
    def phone_field(self) -> FormField | None:
        return next((f for f in self.fields if f.type == "phone"), None)

    @property
    def subject_role_field(self) -> FormField | None:
        return self.field(self.subject_field) or self._first("subject", "text", "select")

    @property
    def text_role_field(self) -> FormField | None:
        if self.text_field:
            return self.field(self.text_field)
        return self._first("message", "textarea", "text") or next(
            (f for f in self.fields if f.type == "textarea"), None)


class WebformAccounts(Strict):
    """The YAML section `channels.webform`."""

    forms: list[FormDefinition] = Field(default_factory=list)

    @field_validator("forms")
    @classmethod
    def unique_ids(cls, value: list[FormDefinition]) -> list[FormDefinition]:
        seen: set[str] = set()
        for index, form in enumerate(value):
            if form.id in seen:
                raise ValueError(f"form id {form.id!r} is used twice (again at item {index})")
            seen.add(form.id)
        return value

    def form(self, form_id: str) -> FormDefinition | None:
        return next((form for form in self.forms if form.id == form_id), None)
