"""Artefacts (flake models, RL policies) in the JetStream object store, named by digest.

The bucket :data:`BUCKET` holds one object per artefact; its name is the digest, so a
second put of the same model stores nothing new and a get checks the bytes against
the name. nats-py exceptions are translated here, so none leaves this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from aqe.errors import ConfigError, LogError, LogUnavailableError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.object_store import ObjectStore

__all__ = ["BUCKET", "ModelStore"]

BUCKET = "AQE_MODELS"


@asynccontextmanager
async def _translated(what: str) -> AsyncIterator[None]:
    import nats.errors
    import nats.js.errors

    try:
        yield
    except nats.js.errors.ObjectNotFoundError as exc:
        raise ConfigError(f"{what}: no such object in bucket {BUCKET}") from exc
    except (TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        raise LogUnavailableError(f"{what}: the object store did not answer") from exc
    except nats.js.errors.ServiceUnavailableError as exc:
        raise LogUnavailableError(f"{what}: JetStream temporarily unavailable") from exc
    except nats.errors.Error as exc:
        raise LogError(f"{what}: {type(exc).__name__}: {exc}") from exc


class ModelStore:
    """Put and get model artefacts by digest in the :data:`BUCKET` object store."""

    def __init__(self, nc: Client) -> None:
        self._js = nc.jetstream()
        self._bucket: ObjectStore | None = None

    async def _store(self) -> ObjectStore:
        if self._bucket is None:
            async with _translated(f"bucket {BUCKET}"):
                # Creating an existing bucket with the same config returns it.
                self._bucket = await self._js.create_object_store(
                    BUCKET, description="aqe model artefacts, named by sha256 digest"
                )
        return self._bucket

    async def put(self, data: bytes) -> str:
        """Store ``data`` (unless an object of that digest is there); return the digest."""
        digest = hashlib.sha256(data).hexdigest()
        store = await self._store()
        import nats.js.errors

        async with _translated(f"model {digest[:16]}"):
            try:
                info = await store.get_info(digest)
                if info.size == len(data):
                    return digest
            except nats.js.errors.ObjectNotFoundError:
                pass
            await store.put(digest, data)
        return digest

    async def get(self, digest: str) -> bytes:
        """The artefact named ``digest``, checked against it.

        Raises:
            ConfigError: No such object, or its bytes do not hash to ``digest``.
        """
        store = await self._store()
        async with _translated(f"model {digest[:16]}"):
            result = await store.get(digest)
        data = bytes(result.data or b"")
        if hashlib.sha256(data).hexdigest() != digest:
            raise ConfigError(f"model {digest[:16]}: stored bytes do not match their digest")
        return data
