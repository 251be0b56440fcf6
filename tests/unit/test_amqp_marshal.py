"""The hand-written publish frames are byte for byte what pamqp marshals."""

from __future__ import annotations

from typing import Any

from aiormq.abc import ChannelFrame
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from intake.amqp import marshal_publish


def pamqp_frames(channel: int, max_content: int, exchange: str, routing_key: str,
                 mandatory: bool, properties: spec.Basic.Properties, body: bytes) -> bytes:
    bodies = [ContentBody(body[i:i + max_content]) for i in range(0, len(body), max_content)]
    frames: list[Any] = [
        spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory),
        ContentHeader(properties=properties, body_size=len(body)), *bodies]
    return ChannelFrame.marshall(frames=frames, channel_number=channel).payload


names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                max_size=80)
# An exchange name as AMQP allows it (pamqp validates it when it marshals the cached frame).
exchanges = st.from_regex(r"[a-zA-Z0-9_.:-]{0,127}", fullmatch=True)
maybe_headers = st.one_of(st.none(), st.just({}), st.dictionaries(
    st.text(min_size=1, max_size=10), st.one_of(st.integers(-5, 5), st.text(max_size=10)),
    min_size=1, max_size=3))


@given(channel=st.integers(1, 2047), max_content=st.integers(1, 300), exchange=exchanges,
       routing_key=names, mandatory=st.booleans(), body=st.binary(max_size=1000),
       content_type=st.one_of(st.none(), st.just("application/json"), names),
       headers=maybe_headers, delivery_mode=st.one_of(st.none(), st.sampled_from([1, 2])),
       message_id=st.one_of(st.none(), names), timestamp=st.booleans())
def test_every_publish_marshals_as_pamqp_does(
        channel: int, max_content: int, exchange: str, routing_key: str, mandatory: bool,
        body: bytes, content_type: str | None, headers: dict[str, Any] | None,
        delivery_mode: int | None, message_id: str | None, timestamp: bool) -> None:
    def properties() -> spec.Basic.Properties:
        # pamqp may normalise what it marshals, so each side gets its own copy
        return spec.Basic.Properties(
            content_type=content_type, headers=headers, delivery_mode=delivery_mode,
            message_id=message_id, app_id="intake" if timestamp else None)

    ours = marshal_publish(channel, max_content, exchange, routing_key, mandatory,
                           properties(), body)
    assert ours == pamqp_frames(channel, max_content, exchange, routing_key, mandatory,
                                properties(), body)


def test_the_method_frame_cache_keeps_channels_and_flags_apart() -> None:
    properties = spec.Basic.Properties(content_type="application/json", headers={},
                                       delivery_mode=2, message_id="m1")
    first = marshal_publish(1, 100, "x", "k", True, properties, b"a")
    assert marshal_publish(2, 100, "x", "k", True, properties, b"a") != first
    assert marshal_publish(1, 100, "x", "k", False, properties, b"a") != first
    assert marshal_publish(1, 100, "x", "k", True, properties, b"a") == first
