"""The worker's side of update compression: encode what a trained client sends.

The platform (``flowerbed.simulation.virtual_grid``) marks a training message whose reply
is to be compressed (:data:`~flowerbed.core.wire.CODEC_KEY`). For such a message the client
sends, instead of its trained model ``y``, the encoded update C(y - x) (x: the model it
received), with the run's codec (:mod:`flowerbed.core.codecs`), under
:data:`~flowerbed.core.wire.CODEC_PAYLOAD_KEY`; the grid decodes it into x + C(y - x)
before the strategy sees the reply, so every strategy works unchanged and the ledger counts
the encoded bytes.

With ``error-feedback`` the client's residual e (what compression dropped) is kept in the
platform's per-client store under the ``codec.`` prefix, beside a client rule's own state:
it survives checkpoint/resume and re-sharding, and is never counted as traffic.

Not compressed: a client rule's extra outputs (``rule-outputs``, e.g. SCAFFOLD's control
variate change) and metrics travel as they are; an update that is not finite (a crashed
or corrupted client) is sent uncompressed, so the server rejects it as it would without a
codec.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from flowerbed.core.arrays import State, fast_numpy, from_record, stacked_numpy
from flowerbed.core.codecs import STATE_PREFIX, Codec
from flowerbed.core.params import Config
from flowerbed.core.rng import Stream, stream
from flowerbed.core.wire import client_state_of, round_and_attempt


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


def encode_update(model: State, kept: State | None, received: State, content: RecordDict,
                  cfg: Config, vid: int) -> tuple[State, State | None] | None:
    """(the payload C(y - x) to send instead of the model y, the state the client keeps:
    ``kept`` plus the new error-feedback residual), or None when the update is not finite
    (it is then sent uncompressed, for the server to reject)."""
    delta = {k: np.asarray(v, np.float32) - np.asarray(received[k], np.float32)
             for k, v in model.items()}
    if not all(np.isfinite(v).all() for v in delta.values()):
        return None
    codec = Codec.from_config(cfg)
    server_round, _ = round_and_attempt(content)
    rng = codec_rng(cfg.seed, server_round, vid) if codec.random else None
    payload, _, residual = codec.compress(delta, residual_of(content), rng)
    if residual:
        kept = {**(kept or {}), **{STATE_PREFIX + k: v for k, v in residual.items()}}
    return payload, kept or None


# (model, kept state, model received, the message, the client): encode_update's arguments
Encodable = tuple[State, State | None, State, RecordDict, int]


def encode_updates(batch: Sequence[Encodable], cfg: Config
                   ) -> list[tuple[State, State | None] | None]:
    """:func:`encode_update` of every client of a worker's batch: with a deterministic
    codec (:data:`~flowerbed.core.codecs.ROW_WISE`) each tensor of all the updates is
    encoded in one call, as rows of a clients x entries matrix (the same values as client
    by client, tested); otherwise client by client."""
    codec = Codec.from_config(cfg)
    if not codec.row_wise or len(batch) < 2:
        return [encode_update(m, kept, r, content, cfg, vid)
                for m, kept, r, content, vid in batch]
    names = list(batch[0][0])
    kept_records = [client_state_of(content) for _, _, _, content, _ in batch]
    shared = batch[0][2]  # one sent model for the whole batch (the common case)
    same_sent = all(r is shared for _, _, r, _, _ in batch)
    rows: dict[str, np.ndarray] = {}
    for name in names:
        p = np.stack([np.asarray(m[name], np.float32).ravel() for m, *_ in batch])
        if same_sent:
            p -= np.asarray(shared[name], np.float32).reshape(1, -1)
        else:
            p -= np.stack([np.asarray(r[name], np.float32).ravel() for _, _, r, _, _ in batch])
        if codec.error_feedback:  # p = delta + e (no residual yet: e = 0)
            key = STATE_PREFIX + name
            found = [(i, rec[key]) for i, rec in enumerate(kept_records)
                     if rec is not None and key in rec]
            if found:
                have, arrays = [i for i, _ in found], [a for _, a in found]
                try:  # all residuals' bytes at once
                    e = stacked_numpy(arrays).reshape(len(have), -1)
                except ValueError:
                    e = np.stack([fast_numpy(a, copy=False).ravel() for a in arrays])
                p[have] += e
        rows[name] = p
    finite = np.logical_and.reduce([np.isfinite(p).all(axis=1) for p in rows.values()])
    encoded = {name: codec.encode_rows(p) for name, p in rows.items()}
    keys = [(f"{name}|{part}", arr) for name in names for part, arr in encoded[name][0].items()]
    shapes = {name: np.shape(batch[0][0][name]) for name in names}
    residuals = [(STATE_PREFIX + name, encoded[name][1].reshape(-1, *shapes[name]))
                 for name in names] if codec.error_feedback else []
    out: list[tuple[State, State | None] | None] = []
    for i, (_, kept, _, _, _) in enumerate(batch):
        if not finite[i]:
            out.append(None)  # sent uncompressed, for the server to reject
            continue
        payload = {key: arr[i] for key, arr in keys}
        if residuals:
            kept = {**(kept or {}), **{key: arr[i] for key, arr in residuals}}
        out.append((payload, kept or None))
    return out


def decompress(codec: Codec, payload: ArrayRecord, received: State) -> State:
    """The model x + C(y - x) a compressed reply stands for (x: ``received``)."""
    delta = codec.decode(from_record(payload, copy=False),
                         {k: tuple(np.shape(v)) for k, v in received.items()})
    return {k: (np.asarray(received[k], np.float32) + delta[k]).astype(np.float32)
            for k in received}


def decompress_batch(codec: Codec, payloads: Sequence[ArrayRecord], received: State
                     ) -> list[State] | None:
    """:func:`decompress` of many payloads answering the same sent model ``received``, each
    tensor of all of them decoded in one call (:meth:`~flowerbed.core.codecs.Codec.
    decode_rows`): the same models as one by one (tested). None when the payloads do not
    all have the layout of the first one, or one of them does not fit the model: the
    caller then decodes them one by one, which names each bad payload."""
    if not payloads:
        return []
    first_rec = payloads[0]
    keys = list(first_rec)
    tensor_of = {key: key.rpartition("|") for key in keys}
    if any(name not in received for name, _, _ in tensor_of.values()):
        return None
    if any(list(p) != keys for p in payloads):
        return None
    try:
        stacked = {key: stacked_numpy([p[key] for p in payloads]) for key in keys}
        out: dict[str, np.ndarray] = {}
        for name, x in received.items():
            parts = {part: stacked[key] for key, (tensor, _, part) in tensor_of.items()
                     if tensor == name}
            x32 = np.asarray(x, np.float32)
            out[name] = (x32.reshape(1, -1) + codec.decode_rows(parts, x32.size)).astype(
                np.float32, copy=False).reshape(len(payloads), *x32.shape)
    except (KeyError, ValueError, IndexError):
        return None
    return [{name: rows[i] for name, rows in out.items()} for i in range(len(payloads))]


__all__ = ["codec_rng", "decompress", "decompress_batch", "encode_update", "encode_updates",
           "residual_of", "without_codec_state"]
