"""Integration fixtures: the session's real Kafka and MongoDB-wire server, with a fresh topic
prefix, consumer groups and database for every test."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from pydantic import SecretStr

from authbus_authz.settings import AuthzSettings, MongoSettings, PasswordHashing
from authbus_authz.stores.mongo import connect
from authbus_dev.infra import InfraConfig
from authbus_dev.ports import free_port
from authbus_shared.settings import KafkaSettings, OpsSettings

Doc = dict[str, Any]


@pytest.fixture
def kafka(infrastructure: InfraConfig, unique: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=infrastructure.bootstrap, topic_prefix=f"{unique}.", linger_ms=0
    )


@pytest.fixture
async def mongo_db(
    infrastructure: InfraConfig, unique: str
) -> AsyncIterator[AsyncIOMotorDatabase[Doc]]:
    client = connect(MongoSettings(uri=infrastructure.mongo_uri))
    try:
        yield client[unique]
    finally:
        await client.drop_database(unique)
        client.close()


@pytest.fixture
def kek() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def authz_instance(
    infrastructure: InfraConfig, kafka: KafkaSettings, *, database: str, kek: str, instance: str
) -> AuthzSettings:
    """Settings for one in-process authz instance (cheap argon2 parameters for speed)."""
    return AuthzSettings(
        instance_id=instance,
        key_encryption_key=SecretStr(kek),
        kafka=kafka,
        mongo=MongoSettings(uri=infrastructure.mongo_uri, database=database),
        ops=OpsSettings(host="127.0.0.1", port=free_port()),
        passwords=PasswordHashing(time_cost=1, memory_kib=8192),
    )


@pytest.fixture
def authz_settings(
    infrastructure: InfraConfig, kafka: KafkaSettings, unique: str, kek: str
) -> AuthzSettings:
    return authz_instance(infrastructure, kafka, database=unique, kek=kek, instance="authz-0")
