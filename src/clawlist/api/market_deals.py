"""Native REST endpoints of the marketplace (being built)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["market"])
