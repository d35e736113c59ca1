"""The worker's side of update compression: encode what a trained client sends.

The platform (``flowerbed.simulation.virtual_grid``) marks a training message whose reply
is to be compressed (:data:`~flowerbed.core.wire.CODEC_KEY`). For such a message the client
sends, instead of its trained model ``y``, the encoded update C(y - x) (x: the model it
received), with the run's codec (:mod:`flowerbed.core.codecs`); the grid decodes it into
x + C(y - x) before the strategy sees the reply, so every strategy works unchanged and the
ledger counts the encoded bytes.

With ``error-feedback`` the client's residual e (what compression dropped) is kept in the
platform's per-client store under the ``codec.`` prefix, beside a client rule's own state:
it survives checkpoint/resume and re-sharding, and is never counted as traffic.

Not compressed: a client rule's extra outputs (``rule-outputs``, e.g. SCAFFOLD's control
variate change) and metrics travel as they are; an update that is not finite (a crashed
or corrupted client) is sent uncompressed, so the server rejects it as it would without a
codec.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from flowerbed.core.arrays import State, from_record, to_record
from flowerbed.core.codecs import STATE_PREFIX, Codec
from flowerbed.core.params import Config
from flowerbed.core.records import filled
from flowerbed.core.rng import Stream, stream
from flowerbed.core.wire import (
    CLIENT_STATE_KEY,
    CODEC_KEY,
    CODEC_PAYLOAD_KEY,
    client_state_of,
    round_and_attempt,
)


def codec_rng(seed: int, server_round: int, client: int) -> np.random.Generator:
    """The codec's draws for one client in one round (the same on every path)."""
    return stream(seed, Stream.CODEC, server_round, client)


def without_codec_state(state: State | None) -> State | None:
    """A client's kept state minus the codec's entries (what a client rule sees)."""
    if not state:
        return state
    rest = {k: v for k, v in state.items() if not k.startswith(STATE_PREFIX)}
    return rest or None


def residual_of(content: RecordDict) -> State:
    """The error-feedback residual the platform attached to this message (or {})."""
    kept = client_state_of(content)
    if kept is None:
        return {}
    return {k[len(STATE_PREFIX):]: v for k, v in from_record(kept).items()
            if k.startswith(STATE_PREFIX)}


def compress_reply(reply: RecordDict, received: State, content: RecordDict, cfg: Config,
                   vid: int) -> RecordDict:
    """``reply`` with its model replaced by the encoded update, if the message asks for it."""
    if CODEC_KEY not in content or "arrays" not in reply:
        return reply
    codec = Codec.from_config(cfg)
    model = from_record(reply["arrays"])  # type: ignore[arg-type]
    delta = {k: np.asarray(v, np.float32) - np.asarray(received[k], np.float32)
             for k, v in model.items()}
    if not all(np.isfinite(v).all() for v in delta.values()):
        return reply
    server_round, _ = round_and_attempt(content)
    payload, _, residual = codec.compress(delta, residual_of(content),
                                          codec_rng(cfg.seed, server_round, vid))
    records: dict[str, object] = {CODEC_PAYLOAD_KEY: to_record(payload)}
    records.update((k, v) for k, v in reply.items() if k not in ("arrays", CLIENT_STATE_KEY))
    kept = dict(from_record(reply[CLIENT_STATE_KEY])  # type: ignore[arg-type]
                ) if CLIENT_STATE_KEY in reply else {}
    kept.update({STATE_PREFIX + k: v for k, v in residual.items()})
    if kept:
        records[CLIENT_STATE_KEY] = to_record(kept)
    return filled(RecordDict(), records)


def decompress(codec: Codec, payload: ArrayRecord, received: State) -> State:
    """The model x + C(y - x) a compressed reply stands for (x: ``received``)."""
    delta = codec.decode(from_record(payload, copy=False),
                         {k: tuple(np.shape(v)) for k, v in received.items()})
    return {k: (np.asarray(received[k], np.float32) + delta[k]).astype(np.float32)
            for k in received}


__all__ = ["codec_rng", "compress_reply", "decompress", "residual_of", "without_codec_state"]
