"""Loading: validate the routing sections of a config document and compile them (`load_rules`)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from intake.config import ROUTING_SECTIONS, ConfigDocument, validate
from intake.errors import ConfigInvalid

from .compile import compile_route
from .decide import RuleSet
from .index import plan_channel
from .models import CHANNELS, DEFAULT_ROUTE_ID, Loc, RoutingConfig, cross_check


def _where(doc: ConfigDocument, loc: Loc) -> str:
    source = doc.sources.get(str(loc[0])) if loc else None
    return (source or doc).where(loc)


def load_rules(doc: ConfigDocument, source_bytes: bytes | str) -> RuleSet:
    """Validate and compile the routing sections of `doc`; raise ConfigInvalid naming lines.

    `source_bytes` are the bytes of the file(s) the sections came from: the revision is their
    sha256, so ops can compare it with `sha256sum rules.yaml`.
    """
    data = {key: doc.data[key] for key in ROUTING_SECTIONS if key in doc.data}
    config = validate(doc, RoutingConfig, data)
    problems = cross_check(config)
    if problems:
        raise ConfigInvalid([f"{_where(doc, loc)}: {'.'.join(map(str, loc))}: {message}"
                             for loc, message in problems])
    raw = source_bytes.encode("utf-8") if isinstance(source_bytes, str) else source_bytes
    routes = tuple(compile_route(route, route.id, i) for i, route in enumerate(config.routes))
    default = compile_route(config.default_route, DEFAULT_ROUTE_ID, len(routes))
    plans = {channel: plan_channel(routes, channel) for channel in CHANNELS}
    sources = sorted({str(s.path) for s in doc.sources.values()} | (
        {str(doc.path)} if len(doc.sources) < len(data) else set()))
    return RuleSet(revision=hashlib.sha256(raw).hexdigest(), config=config, routes=routes,
                   default=default, plans=plans, loaded_at=datetime.now(UTC),
                   source=", ".join(sources))
