"""Reading a training reply's model and putting a crafted one in its place, with or without
a codec (the threat model's side of :mod:`flowerbed.simulation.virtual_grid`).

Without a codec a reply carries the trained model y; the attack reads it and puts the
crafted model m in its place. With a codec the reply carries the encoded update C(y - x)
(:mod:`flowerbed.clients.compression`): the attack reads what the server would decode,
x + C(y - x), for every reply (an omniscient attacker sees the honest updates as they
arrive), and a malicious client's crafted model is encoded like any other update,
C(m - x), with the same codec and the same per-(round, client) random stream, so the server
receives, decodes and counts it as it would an honest one. With error feedback the
malicious client's residual stays its own and follows what it actually sent: its residual
from before the round is added to the crafted update before encoding and the new residual,
what that encoding dropped, replaces the one its honest update left in its kept state
(the attack never touches another client's state).
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from flowerbed.clients.compression import codec_rng, decompress, residual_of
from flowerbed.core.arrays import State, from_record, to_record
from flowerbed.core.codecs import STATE_PREFIX, Codec
from flowerbed.core.records import first
from flowerbed.core.validation import check_reply_arrays
from flowerbed.core.wire import CLIENT_STATE_KEY, CODEC_PAYLOAD_KEY, client_state_of


def encoded(reply: RecordDict, codec: Codec | None) -> ArrayRecord | None:
    """The reply's codec payload, or None when it carries a plain model."""
    payload = reply.get(CODEC_PAYLOAD_KEY) if codec is not None else None
    return payload if isinstance(payload, ArrayRecord) else None


def model_of(reply: RecordDict, sent: State, codec: Codec | None) -> State | None:
    """The model the server would take from ``reply`` (decoded if encoded), or None when
    it is unusable (no model, undecodable, shapes unlike the model sent)."""
    payload = encoded(reply, codec)
    if payload is not None:
        assert codec is not None
        try:
            model = decompress(codec, payload, sent)
        except (KeyError, ValueError, IndexError):
            return None
    else:
        got = first(reply, ArrayRecord)
        if got is None:
            return None
        model = from_record(got, copy=False)
    shapes = {k: tuple(np.shape(v)) for k, v in sent.items()}
    return model if check_reply_arrays(shapes, model) is None else None


def with_model(reply: RecordDict, crafted: State, sent: State, codec: Codec | None,
               delivered: RecordDict, seed: int, server_round: int, node: int) -> RecordDict:
    """``reply`` sending ``crafted`` instead of its model: plainly, or encoded as C(m - x)
    with the client's own error-feedback residual (see the module docstring).

    ``delivered`` is the message the client was sent (its kept state from before the
    round rides on it).
    """
    if encoded(reply, codec) is None:
        name = next(k for k, rec in reply.items() if isinstance(rec, ArrayRecord)
                    and k != CLIENT_STATE_KEY)  # the model, not kept state
        return RecordDict({k: (to_record(crafted) if k == name else rec)
                           for k, rec in reply.items()})
    assert codec is not None
    delta = {k: np.asarray(crafted[k], np.float32) - np.asarray(sent[k], np.float32)
             for k in sent}
    rng = codec_rng(seed, server_round, node) if codec.random else None
    payload, _, residual = codec.compress(delta, residual_of(delivered), rng)
    out = {k: (to_record(payload) if k == CODEC_PAYLOAD_KEY else rec)
           for k, rec in reply.items()}
    kept = client_state_of(reply)
    if residual and kept is not None:
        state = dict(from_record(kept))
        state.update({STATE_PREFIX + k: v for k, v in residual.items()})
        out[CLIENT_STATE_KEY] = to_record(state)
    return RecordDict(out)


__all__ = ["encoded", "model_of", "with_model"]
