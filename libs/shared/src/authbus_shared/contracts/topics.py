"""Every Kafka topic authbus uses, with its shape. The major contract version is in the name.

Two kinds of readers:
- a *group* topic is read by one consumer group (the service's instances share its partitions);
- a *broadcast* topic is read whole by every instance of the reading service, without a group.

Any service creates the topics it touches at start (idempotent), so a fresh broker needs no
set-up step; partition counts here are the defaults for a new cluster (see docs/contracts.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    purpose: str
    config: dict[str, str] = field(default_factory=dict)


# api -> authz (group "authz"): VerifyCredential, keyed by a hash of the credential's identity.
AUTH_VERIFY = TopicSpec(
    "auth.verify.v1", 12, "credential checks asked of authz", {"retention.ms": str(HOUR_MS)}
)
# admin CLI / api -> authz (group "authz"): management commands (create account, issue token).
AUTHZ_COMMANDS = TopicSpec(
    "authz.commands.v1", 6, "management commands for authz", {"retention.ms": str(DAY_MS)}
)
# authz -> the asking instance: replies to both topics above (see docs/adr/0004).
REPLIES = TopicSpec(
    "authbus.replies.v1",
    32,
    "replies, one reader partition per asking instance",
    {"retention.ms": str(HOUR_MS)},
)
# authz -> every api (broadcast, compacted): public keys (JWT verification, credential sealing).
AUTHZ_KEYS = TopicSpec(
    "authz.keys.v1",
    1,
    "authz public keys, compacted by key id",
    {"cleanup.policy": "compact"},
)
# authz -> every api (broadcast): what turns a valid credential invalid (revocations...).
AUTH_CHANGES = TopicSpec(
    "auth.changes.v1", 3, "credential and account changes", {"retention.ms": str(7 * DAY_MS)}
)
# authz -> any consumer: audit events (SPEC V1).
AUTH_AUDIT = TopicSpec(
    "auth.audit.v1", 3, "audit trail of auth events", {"retention.ms": str(30 * DAY_MS)}
)
# api -> authz (group "authz"): credential uses, batched (last-used times, key-used audit).
AUTH_USAGE = TopicSpec(
    "auth.usage.v1", 6, "credential uses reported by the api", {"retention.ms": str(DAY_MS)}
)
# api -> ratelimit (group "ratelimit"): lease asks and releases, keyed by limit key so one
# owner sees all of a key's asks in order (and the owner's strike checkpoints, in the key's
# partition). The broker stamps each record (LogAppendTime): the owner's clock, identical on a
# replay (ADR 0010). Retention covers the replay horizon.
RATELIMIT_LEASES = TopicSpec(
    "ratelimit.leases.v1",
    12,
    "quota lease asks, in order per limit key",
    {"retention.ms": str(DAY_MS), "message.timestamp.type": "LogAppendTime"},
)
# ratelimit -> every api (broadcast): subjects locked out, until when (R3); recalls of unspent
# units from the instances holding them (R9).
RATELIMIT_DECISIONS = TopicSpec(
    "ratelimit.decisions.v1",
    3,
    "lockouts and recalls for the api instances",
    {"retention.ms": str(HOUR_MS)},
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    AUTH_VERIFY,
    AUTHZ_COMMANDS,
    REPLIES,
    AUTHZ_KEYS,
    AUTH_CHANGES,
    AUTH_AUDIT,
    AUTH_USAGE,
    RATELIMIT_LEASES,
    RATELIMIT_DECISIONS,
)
