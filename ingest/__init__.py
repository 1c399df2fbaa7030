"""Ingestion: MQTT subscription, decoding, batching and writing readings."""

from __future__ import annotations

from fastapi import APIRouter

from ingest.link import BrokerLink
from pantau.context import ServiceContext
from pantau.supervisor import Worker


def workers(ctx: ServiceContext) -> list[Worker]:
    link = BrokerLink(ctx.settings.mqtt, ctx.registry)
    ctx.readiness.add("broker", link.check)
    return [link.worker()]


def routers() -> list[APIRouter]:
    return []
