"""The routing rules, as one import: models, the `when` language, compiling, the index,
deciding, linting, loading.

`load_rules(doc, source_bytes)` validates the routing sections of a loaded `ConfigDocument`
(structure through `intake.config.validate`, then the cross-references: desks, skill groups,
categories, calendars, SLA policies, escalations, message keys), compiles every route's
condition (`match` and `when`, one tree) into closures, lints it and runs the inline tests;
every problem names `file:line: field`. The result is a `RuleSet`: immutable, compiled once per
revision, so `decide` reads the message without parsing anything.

The parts, one module each: `models` (the config's routing sections), `check` (references
between them), `expr` (the `when` parser and printer), `evaluate` (the tree as closures, value
semantics, explanations), `paths` (message field paths), `compile` (routes and targets),
`index` (per-channel plans: word lookups and pattern screens), `plan` (SLA, escalation, split),
`decide` (`RuleSet.decide`), `lint` (DNF: shadowed, unreachable, overlapping), `inline_tests`,
`load` (`load_rules`, `analyse`).
"""

from __future__ import annotations

from .check import Finding, cross_check
from .compile import (
    MATCH_MAX_CHARS,
    CompiledCondition,
    CompiledRoute,
    CompiledTarget,
    compile_route,
    compile_where,
)
from .decide import MAX_TRIED, SAW_MAX_CHARS, SAW_MAX_ITEMS, RuleSet, new_decision_id
from .index import SCREEN_MIN_ROUTES, ChannelPlan, Screen
from .load import Analysis, analyse, load_rules
from .models import (
    CHANNELS,
    DEFAULT_ROUTE_ID,
    ID_PATTERN,
    LEAD_ROLE,
    MODE_ROLES,
    OPERATORS,
    Category,
    Condition,
    DefaultRoute,
    Delivery,
    Desk,
    Match,
    Route,
    RouteMode,
    RoutingConfig,
    SkillGroup,
    Target,
    delivery_roles,
)
from .paths import MISSING, resolve_path

__all__ = [
    "CHANNELS", "DEFAULT_ROUTE_ID", "ID_PATTERN", "LEAD_ROLE", "MATCH_MAX_CHARS", "MAX_TRIED",
    "MISSING", "MODE_ROLES", "OPERATORS", "SAW_MAX_CHARS", "SAW_MAX_ITEMS", "SCREEN_MIN_ROUTES",
    "Analysis", "Category", "ChannelPlan", "CompiledCondition", "CompiledRoute",
    "CompiledTarget", "Condition", "DefaultRoute", "Delivery", "Desk", "Finding", "Match",
    "Route", "RouteMode", "RoutingConfig", "RuleSet", "Screen", "SkillGroup", "Target",
    "analyse", "compile_route", "compile_where", "cross_check", "delivery_roles", "load_rules",
    "new_decision_id", "resolve_path",
]
