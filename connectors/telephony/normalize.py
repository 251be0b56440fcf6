"""Pure functions of the telephony channel: numbers, the call a set of events makes, messages.

No I/O and no clock: the record of a call is a function of the *set* of its events (what
order they came in, or how often, changes nothing), which is what makes reordered and
repeated PBX events harmless.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

import orjson
import phonenumbers
from pydantic import BaseModel, ConfigDict, Field

from intake import Attachment, Call, CallLeg, Identity, Message, Sender, Thread

# `cdr`: the PBX's billing record of the call (Asterisk's cdr_manager `Event: Cdr`), at its
# end: it confirms the end and the PBX's durations, and closes a call whose hangup was lost.
EventType = Literal["ringing", "answered", "transferred", "ended", "missed", "voicemail",
                    "recording", "cdr"]
TERMINAL: frozenset[str] = frozenset({"ended", "missed", "voicemail", "cdr"})
# The cause of an end a PBX client inferred after a reconnect: the PBX no longer listed the
# call, so it ended while the link was down, at a time nobody told; a CDR knows when.
GONE_AFTER_RECONNECT = "gone_after_reconnect"
LIVE_STATES = ("ringing", "answered", "ended")

# What PBXs and carriers put where a number was withheld. Twilio sends numbers that parse:
# +266696687 ANONYMOUS, +7378742833 RESTRICTED, +8656696 UNKNOWN, +2562533 BLOCKED and
# +86282452253 UNAVAILABLE (which a naive parser reads as a Chengdu number).
WITHHELD_WORDS = frozenset({"", "anonymous", "restricted", "private", "unknown", "unavailable",
                            "<unknown>", "withheld", "blocked", "_undef_", "null", "none"})
TWILIO_SENTINELS = frozenset({"+266696687", "+7378742833", "+8656696", "+2562533",
                              "+86282452253"})
_EXTENSION_SPLIT = re.compile(r"^(?P<main>.+?)\s*(?:-|转|轉)\s*(?P<ext>\d{1,8})$")
_SIP = re.compile(r"^sips?:(?P<user>[^@;]+)", re.IGNORECASE)
_NAME_PLACEHOLDERS = frozenset({"<unknown>", "_undef_", "unknown", ""})


@dataclass(frozen=True)
class PhoneNumber:
    """A number as the PBX had it (`raw`) and what it is: E.164 and extension, or withheld,
    or invalid (kept raw, no identity)."""

    raw: str
    e164: str | None = None
    ext: str | None = None
    withheld: bool = False
    region: str | None = None
    display: str | None = None

    @property
    def valid(self) -> bool:
        return self.e164 is not None

    @property
    def callable(self) -> bool:
        return self.valid and not self.withheld


@lru_cache(maxsize=4096)
def parse_number(raw: str | None, region: str) -> PhoneNumber:
    """Any shape a PBX sends (national, `00…`, `tel:`/`sip:` URIs, `ext.`, `;ext=`,
    `010-65529988-8001`, `…转8001`, IP-dial prefixes) to E.164 plus extension.

    Cached: a call's record is folded from its events several times, and phonenumbers'
    parse is the costliest step of a fold."""
    text = (raw or "").strip()
    if text.lower() in WITHHELD_WORDS or text in TWILIO_SENTINELS:
        return PhoneNumber(raw=text, withheld=True)
    candidate = text
    sip = _SIP.match(candidate)
    if sip:
        candidate = sip.group("user")
    if candidate.lower().startswith("tel:"):
        candidate = candidate[4:]
    if candidate.lower() in WITHHELD_WORDS:
        return PhoneNumber(raw=text, withheld=True)
    number = _parse(candidate, region)
    ext: str | None = None
    if number is None:
        # `010-65529988-8001` and `010-65529988转8001`: phonenumbers reads neither; when the
        # whole is no valid number but the part before the last `-`/`转` is, the rest is the
        # extension.
        split = _EXTENSION_SPLIT.match(candidate)
        if split:
            number = _parse(split.group("main"), region)
            ext = split.group("ext") if number is not None else None
    if number is None:
        return PhoneNumber(raw=text)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if e164 in TWILIO_SENTINELS:
        return PhoneNumber(raw=text, withheld=True)
    home = phonenumbers.region_code_for_number(number)
    display = phonenumbers.format_number(
        number, phonenumbers.PhoneNumberFormat.NATIONAL if home == region
        else phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return PhoneNumber(raw=text, e164=e164, ext=ext or number.extension or None,
                       region=home, display=re.sub(r"\s*ext\..*$", "", display))


def _parse(text: str, region: str) -> phonenumbers.PhoneNumber | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def caller_name(name: str | None) -> str | None:
    """A PBX's name, or None for its placeholders of an empty one."""
    if name is None:
        return None
    name = name.strip()
    return None if name.lower() in _NAME_PLACEHOLDERS else name[:512]


class CallEvent(BaseModel):
    """One normalised event of any adapter; what the journal keeps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    line: str
    call_id: str = Field(min_length=1, max_length=200)
    type: EventType
    occurred_at: datetime
    adapter: str = "generic"
    direction: Literal["inbound", "outbound"] | None = None
    from_raw: str | None = None
    to_raw: str | None = None
    caller_name: str | None = None
    agent: str | None = None
    agents: list[str] = Field(default_factory=list)
    queue: str | None = None
    cause: str | None = None
    duration_s: float | None = None
    talk_s: float | None = None
    recording_url: str | None = None
    recording_duration_s: float | None = None

    @property
    def digest(self) -> str:
        """Names the event's content: the same event re-signed under a new id is a duplicate."""
        body = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(body).hexdigest()[:32]

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL


_TYPE_ORDER = {name: i for i, name in enumerate(
    ("ringing", "answered", "transferred", "recording", "voicemail", "missed", "ended",
     "cdr"))}
_OUTBOUND_CAUSES = {"busy": "busy", "no_answer": "no_answer", "no-answer": "no_answer",
                    "noanswer": "no_answer", "no answer": "no_answer",
                    "failed": "failed", "congestion": "failed",
                    "cancelled": "cancelled", "canceled": "cancelled", "cancel": "cancelled"}


@dataclass
class CallView:
    """The call a set of events makes; `state` is live (`ringing`, `answered`) until a terminal
    event, then final."""

    line: str
    call_id: str
    adapter: str
    direction: Literal["inbound", "outbound"]
    caller: PhoneNumber
    called: PhoneNumber
    name: str | None
    state: str
    terminal: bool
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None
    talk_s: float | None
    wait_s: float | None
    agent: str | None
    agents: list[str]
    legs: list[CallLeg]
    queue: str | None
    end_reason: str | None
    recording_url: str | None
    end_inferred: bool = False

    @property
    def customer(self) -> PhoneNumber:
        """The customer's side: the caller of an inbound call, the callee of an outbound one."""
        return self.caller if self.direction == "inbound" else self.called

    def call(self, state: str | None = None) -> Call:
        return Call.model_validate({
            "call_id": self.call_id, "line": self.line, "adapter": self.adapter,
            "direction": self.direction, "from": self.caller.e164, "to": self.called.e164,
            "from_ext": self.caller.ext, "to_ext": self.called.ext,
            "from_raw": self.caller.raw, "to_raw": self.called.raw,
            "withheld": self.customer.withheld, "state": state or self.state,
            "started_at": self.started_at, "answered_at": self.answered_at,
            "ended_at": self.ended_at, "duration_s": self.duration_s, "talk_s": self.talk_s,
            "wait_s": self.wait_s, "agent": self.agent, "agents": self.agents,
            "legs": self.legs, "queue": self.queue, "end_reason": self.end_reason,
            "recording_url": self.recording_url})


def fold(events: list[CallEvent], region: str, *,
         inferred_end: datetime | None = None) -> CallView:
    """The call `events` make, whatever their order or repeats. `inferred_end` closes a call
    no terminal event closed (a timeout): it ends then, flagged `end_inferred`."""
    unique = {e.digest: e for e in events}
    ordered = [unique[d] for d in sorted(
        unique, key=lambda d: (unique[d].occurred_at, _TYPE_ORDER[unique[d].type], d))]
    first = ordered[0]
    direction: Literal["inbound", "outbound"] = (
        "outbound" if any(e.direction == "outbound" for e in ordered) else "inbound")
    from_raw = next((e.from_raw for e in ordered if e.from_raw is not None), None)
    to_raw = next((e.to_raw for e in ordered if e.to_raw is not None), None)
    # Billing records only fill in: the call's own events say when it ended and why, and
    # who answered when, so that a record is the same whether its CDR came in time or not.
    cdrs = [e for e in ordered if e.type == "cdr"]
    terminal = next((e for e in ordered if e.terminal and e.type != "cdr"
                     and e.cause != GONE_AFTER_RECONNECT), cdrs[-1] if cdrs else None) \
        or next((e for e in ordered if e.terminal), None)
    answered = [e for e in ordered
                if e.type in ("answered", "transferred") and e.agent] or sorted(
        (cdr.model_copy(update={"type": "answered",
                                "occurred_at": cdr.occurred_at - timedelta(seconds=cdr.talk_s)})
         for cdr in cdrs if cdr.agent and cdr.talk_s is not None),
        key=lambda e: e.occurred_at)  # a CDR's answer: its end less its billable seconds
    answers: list[CallEvent] = []
    for e in answered:
        # The same agent answering again (a PBX client that adopted the call after a
        # reconnect, a retried event with a new time) is the same leg, from its first answer.
        if e.agent and (not answers or answers[-1].agent != e.agent):
            answers.append(e)
    started_at = first.occurred_at
    answered_at = answers[0].occurred_at if answers else None
    ended_at = terminal.occurred_at if terminal else inferred_end
    legs = [CallLeg(agent=a.agent or "", answered_at=a.occurred_at,
                    ended_at=(answers[i + 1].occurred_at if i + 1 < len(answers) else ended_at))
            for i, a in enumerate(answers)]
    agents: list[str] = []
    for e in ordered:
        for named in [*e.agents, *([e.agent] if e.agent else [])]:
            if named not in agents:
                agents.append(named)
    dialler = next((e.agent for e in ordered if e.agent), None)
    agent = legs[-1].agent if legs else (dialler if direction == "outbound" else None)
    reported = [e for e in ordered if e.type != "cdr"]
    duration_s = next((e.duration_s for e in reported if e.duration_s is not None), None)
    talk_s = next((e.talk_s for e in reported if e.talk_s is not None), None)
    if duration_s is None and any(c.duration_s is not None for c in cdrs):
        # From the first CDR's start to the last's end (Asterisk writes one per party dialled).
        duration_s = _seconds(max(c.occurred_at for c in cdrs) - min(
            c.occurred_at - timedelta(seconds=c.duration_s or 0) for c in cdrs))
    if talk_s is None and any(c.talk_s is not None for c in cdrs):
        talk_s = round(sum(c.talk_s or 0 for c in cdrs), 3)
    if duration_s is None and ended_at is not None:
        duration_s = _seconds(ended_at - started_at)
    if talk_s is None and ended_at is not None and answered_at is not None:
        talk_s = _seconds(ended_at - answered_at)
    wait_end = answered_at or ended_at
    wait_s = _seconds(wait_end - started_at) if wait_end is not None else None
    recording_url = next((e.recording_url for e in reversed(ordered) if e.recording_url), None)
    cause = terminal.cause if terminal else ("timeout" if inferred_end else None)
    state = _state(direction, terminal, answered_at is not None, inferred_end is not None,
                   any(e.type == "voicemail" for e in ordered), cause,
                   cdrs[-1].cause if cdrs else None)
    return CallView(
        line=first.line, call_id=first.call_id, adapter=first.adapter, direction=direction,
        caller=parse_number(from_raw, region), called=parse_number(to_raw, region),
        name=next((caller_name(e.caller_name) for e in ordered
                   if caller_name(e.caller_name)), None),
        state=state, terminal=terminal is not None or inferred_end is not None,
        started_at=started_at, answered_at=answered_at, ended_at=ended_at,
        duration_s=duration_s, talk_s=talk_s, wait_s=wait_s, agent=agent, agents=agents,
        legs=legs, queue=next((e.queue for e in ordered if e.queue), None), end_reason=cause,
        recording_url=recording_url, end_inferred=terminal is None and inferred_end is not None)


def _state(direction: str, terminal: CallEvent | None, answered: bool, inferred: bool,
           voicemail: bool, cause: str | None, disposition: str | None = None) -> str:
    if terminal is None and not inferred:
        return "answered" if answered else "ringing"
    if voicemail and not answered:
        return "voicemail"
    if answered:
        return "completed"
    if direction == "inbound":
        return "missed"
    return _OUTBOUND_CAUSES.get((cause or "").lower()) \
        or _OUTBOUND_CAUSES.get((disposition or "").lower(), "no_answer")


def _seconds(delta: timedelta) -> float:
    return max(0.0, round(delta.total_seconds(), 3))


# -- messages ------------------------------------------------------------------------------

SUMMARIES = {
    "en": {"inbound": "Call from {who}", "outbound": "Call to {who}",
           "completed": "{direction} call {state}, talked {talk} with {agent}.",
           "other": "{direction} call {state}."},
    "zh": {"inbound": "来电 {who}", "outbound": "去电 {who}",
           "completed": "{direction}，状态：{state}，通话 {talk}，坐席 {agent}。",
           "other": "{direction}，状态：{state}。"},
}
_STATE_WORDS = {"zh": {"completed": "已接通", "missed": "未接", "voicemail": "语音留言",
                       "no_answer": "无人接听", "busy": "忙线", "failed": "失败",
                       "cancelled": "已取消"},
                "en": {}}
_DIRECTION_WORDS = {"zh": {"inbound": "呼入", "outbound": "呼出"},
                    "en": {"inbound": "Inbound", "outbound": "Outbound"}}


def summary(view: CallView, language: str) -> tuple[str, str]:
    """The record's subject and text, in the line's language."""
    words = SUMMARIES[language]
    customer = view.customer
    who = customer.display or customer.e164 or ("withheld" if customer.withheld
                                                 else customer.raw or "?")
    if view.name:
        who = f"{view.name} ({who})"
    state = _STATE_WORDS[language].get(view.state, view.state.replace("_", " "))
    talk = f"{int(view.talk_s or 0) // 60}:{int(view.talk_s or 0) % 60:02d}"
    template = words["completed"] if view.state == "completed" else words["other"]
    text = template.format(direction=_DIRECTION_WORDS[language][view.direction], state=state,
                           talk=talk, agent=view.agent or "?")
    return words[view.direction].format(who=who), text


def sender_of(view: CallView) -> Sender:
    customer = view.customer
    identities = ([Identity(kind="phone", value=customer.e164)]
                  if customer.callable and customer.e164 else [])
    return Sender(name=view.name if view.direction == "inbound" else None, identities=identities)


def progress_message(view: CallView, state: str, *, received_at: datetime,
                     trace_id: str | None = None) -> Message:
    """The live-state message (`ringing`, `answered`, `ended`) that pops and updates a call."""
    return Message(
        idempotency_key=f"telephony:{view.line}:{view.call_id}:{state}", channel="telephony",
        account=view.line, kind="call", sender=sender_of(view), text="",
        thread=Thread(conversation_id=f"call:{view.line}:{view.call_id}"),
        call=view.call(state), occurred_at=view.started_at, received_at=received_at,
        flags=["withheld_number"] if view.customer.withheld else [], trace_id=trace_id)


def record_flags(view: CallView, *, recording_pending: bool = False) -> list[Any]:
    flags: list[Any] = []
    if view.direction == "inbound" and view.state in ("missed", "voicemail") \
            and view.customer.callable:
        flags.append("callback")
    if view.customer.withheld:
        flags.append("withheld_number")
    if view.end_inferred:
        flags.append("end_inferred")
    if recording_pending:
        flags.append("recording_pending")
    return flags


def record_message(view: CallView, *, language: str, join_latest_open: bool,
                   received_at: datetime, recording_pending: bool = False,
                   trace_id: str | None = None) -> Message:
    """The call's record: one per call, at its end or timeout."""
    subject, text = summary(view, language)
    flags = record_flags(view, recording_pending=recording_pending)
    # An unpicked missed call or voicemail from a callable number always opens a callback
    # ticket of its own; the ticket core applies an agent's pick over any of this.
    join = join_latest_open and "callback" not in flags
    return Message(
        idempotency_key=f"telephony:{view.line}:{view.call_id}:record", channel="telephony",
        account=view.line, kind="call", sender=sender_of(view), subject=subject, text=text,
        thread=Thread(conversation_id=f"call:{view.line}:{view.call_id}",
                      join_latest_open=True if join else None),
        call=view.call(), flags=flags, occurred_at=view.started_at, received_at=received_at,
        trace_id=trace_id)


def recording_id(url: str) -> str:
    """A recording's id in keys: its URL's digest (the same recording is one follow-up)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def recording_message(view: CallView, attachment: Attachment, url: str, *,
                      received_at: datetime, trace_id: str | None = None) -> Message:
    """A recording fetched after its call's record went out: it joins the record's ticket."""
    call = view.call().model_copy(update={"recording_url": url})
    return Message(
        idempotency_key=f"telephony:{view.line}:{view.call_id}:recording:{recording_id(url)}",
        channel="telephony", account=view.line, kind="call", sender=sender_of(view),
        subject=None, text="", thread=Thread(conversation_id=f"call:{view.line}:{view.call_id}"),
        call=call, attachments=[attachment], flags=["call_recording"],
        occurred_at=view.started_at, received_at=received_at, trace_id=trace_id)
