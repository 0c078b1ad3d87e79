"""Scans and censuses on several processes: ``torch.distributed`` as ``torchrun`` starts it.

Under ``torchrun --nproc_per_node=K`` (or ``srun`` + ``torchrun`` over nodes) every process runs the same
program; :func:`init_from_env` joins the process group that the launcher's environment variables
(``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) describe: gloo for CPU tensors, and NCCL for
CUDA tensors where CUDA is present (``"cpu:gloo,cuda:nccl"``). A dataset pass (Hamblin et al. 2024,
section 2: a scan or a layer census) then gives rank ``r`` of ``w`` the indices of shard ``(r, w)``
(:func:`~lucent_inhibit.core.distributed.shard_indices`, the rule of ``--shard``), and the ranks exchange their
rows with :func:`all_gather`, so every rank ends with the one-process result.
Renders split the same way by batch: :func:`map_chunks` deals the render batches of a combination sweep
or of the atlas icons round robin over the ranks, with per-image seeds that do not depend on the rank.

Everything exchanged travels as ``.npz`` bytes (numpy arrays, ``allow_pickle=False``) over CPU tensors,
never as pickles. Every collective here also carries errors: when one rank fails (bad input, a bad
image in its share), every rank raises :class:`DistributedError` naming that rank, instead of the others
waiting for it until a timeout. :func:`agree` compares a fingerprint of the arguments across ranks
before any work, so ranks given different features or datasets refuse at once.
"""
from __future__ import annotations

import atexit
import hashlib
import io
import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .validate import InputError, check_int, parse_shard

Arrays = Dict[str, np.ndarray]


class DistributedError(InputError):
    """The ranks of a distributed run disagree on their input, or one of them failed."""


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset or not an integer)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def init_from_env() -> Tuple[int, int]:
    """``(rank, world size)``: joins the process group from the launcher's environment when
    ``WORLD_SIZE > 1`` and no group exists yet; ``(0, 1)`` for a one-process run."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized() and env_world_size() > 1:
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        dist.init_process_group(backend=backend)
        atexit.register(_shutdown)
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _shutdown() -> None:
    """Leave the group that :func:`init_from_env` joined before the interpreter exits (a group left to the
    interpreter's teardown can abort the process: "terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def rank_indices(n_items: int, rank: int, world: int) -> np.ndarray:
    """(m,) int64 dataset indices of rank ``rank``: shard ``(rank, world)`` of ``n_items``; a world larger
    than the dataset is refused (call it on every rank: every rank then raises the same error)."""
    from .distributed import shard_indices

    if world > n_items:
        raise DistributedError(f"world size {world} is larger than the dataset ({n_items} images): every rank needs "
                               f"at least one image; run on at most {n_items} processes or scan more images")
    return shard_indices(n_items, (rank, world))


def digest(*items) -> str:
    """SHA-256 (hex, 16 characters) of arrays / tensors / a model's parameters and buffers, in order: a
    cheap fingerprint that ranks compare (:func:`agree`) before they share work."""
    h = hashlib.sha256()
    for item in items:
        tensors = list(item.state_dict().values()) if isinstance(item, torch.nn.Module) else [item]
        for t in tensors:
            if isinstance(t, np.ndarray) and t.dtype.kind in "biuf":
                t = torch.from_numpy(np.ascontiguousarray(t))  # the same digest as the equal tensor
            if torch.is_tensor(t):
                h.update(str((t.dtype, tuple(t.shape))).encode())
                h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                a = np.ascontiguousarray(t)
                h.update(str((a.dtype, a.shape)).encode())
                h.update(a.tobytes())
    return h.hexdigest()[:16]


def barrier() -> None:
    """Wait for every rank (nothing in a one-process run)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ------------------------------------------------------------------------------------------------
# exchange
# ------------------------------------------------------------------------------------------------
def _pack(arrays: Optional[Arrays]) -> bytes:
    if arrays is None:
        return b"N"
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return b"A" + buf.getvalue()


def _unpack(data: bytes) -> Optional[Arrays]:
    if data[:1] == b"N":
        return None
    with np.load(io.BytesIO(data[1:]), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _all_gather_bytes(data: bytes) -> List[bytes]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [data]
    world = dist.get_world_size()
    size = torch.tensor([len(data)], dtype=torch.int64)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    mine = torch.zeros(longest, dtype=torch.uint8)
    mine[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    bufs = [torch.zeros(longest, dtype=torch.uint8) for _ in range(world)]
    dist.all_gather(bufs, mine)
    return [b[: int(s.item())].numpy().tobytes() for b, s in zip(bufs, sizes)]


def all_gather(work: Callable[[], Optional[Arrays]]) -> List[Optional[Arrays]]:
    """Run ``work()`` on every rank and give every rank the list, in rank order, of what each returned
    (a dict of numpy arrays, or None). If ``work`` raises on some rank, that rank re-raises its error and
    every other rank raises :class:`DistributedError` naming it (no rank is left waiting)."""
    error: Optional[BaseException] = None
    try:
        data = _pack(work())
    except Exception as exc:  # noqa: BLE001 -- passed to the other ranks, then re-raised
        error, data = exc, b"E" + f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")
    gathered = _all_gather_bytes(data)
    if error is not None:
        raise error
    failed = [(r, d[1:].decode("utf-8", "replace")) for r, d in enumerate(gathered) if d[:1] == b"E"]
    if failed:
        r, message = failed[0]
        raise DistributedError(f"rank {r} of {len(gathered)} failed: {message}")
    return [_unpack(d) for d in gathered]


def agree(what: str, compute: Callable[[], Tuple[Any, dict]]) -> Any:
    """``value`` of ``compute() -> (value, fingerprint)`` after checking on every rank that every rank
    computed the same JSON ``fingerprint`` (the arguments of ``what``: feature, layers, dataset, ...);
    ranks that disagree raise :class:`DistributedError` naming the entries that differ from rank 0's."""
    box = {}

    def work():
        box["value"], fingerprint = compute()
        return {"fp": np.frombuffer(json.dumps(fingerprint, sort_keys=True, default=str).encode(), np.uint8)}

    prints = [json.loads(bytes(g["fp"]).decode()) for g in all_gather(work)]
    for r, fp in enumerate(prints[1:], 1):
        differ = sorted(k for k in set(fp) | set(prints[0]) if fp.get(k) != prints[0].get(k))
        if differ:
            k = differ[0]
            raise DistributedError(
                f"the ranks of this {what} disagree: rank {r} has {k}={fp.get(k)!r:.200}, rank 0 has "
                f"{k}={prints[0].get(k)!r:.200} (entries that differ: {differ}); every rank must get the same "
                "arguments and the same dataset")
    return box["value"]


def encode_result(result) -> Arrays:
    """A :class:`~lucent_inhibit.core.results.Result` as a dict of arrays (its file's encoding, in memory)."""
    arrays, fields = result._encode()
    return dict(arrays, __fields__=np.frombuffer(json.dumps(fields).encode("utf-8"), np.uint8))


def decode_result(cls, arrays: Arrays):
    """The ``cls`` result that :func:`encode_result` encoded."""
    arrays = dict(arrays)
    fields = json.loads(bytes(arrays.pop("__fields__")).decode("utf-8"))
    return cls._decode(arrays, fields)


# ------------------------------------------------------------------------------------------------
# renders split by chunk
# ------------------------------------------------------------------------------------------------
def rank0_seed(seed: Optional[int]) -> Optional[int]:
    """``seed`` unchanged in a one-process run; under ``torchrun`` rank 0's value (a fresh draw from
    rank 0's global torch RNG when it is None), so that every rank renders from the same noise."""
    rank, world = init_from_env()
    if world == 1:
        return seed
    mine = int(torch.randint(0, 2 ** 31 - 1, ()).item()) if seed is None else int(seed)
    return int(all_gather(lambda: {"seed": np.asarray(mine, np.int64)})[0]["seed"])


def chunk_owner(n_chunks: int, world: int) -> np.ndarray:
    """(n_chunks,) int64 rank that renders each chunk: chunk ``c`` goes to rank ``c % world`` (round
    robin, so the last, possibly shorter, chunk does not fall on a rank that already has the most)."""
    return np.arange(n_chunks, dtype=np.int64) % max(1, int(world))


def map_chunks(n_chunks: int, render_chunk: Callable[[int], Arrays],
               fingerprint: Optional[Callable[[], dict]] = None) -> List[Arrays]:
    """``[render_chunk(c) for c in range(n_chunks)]``, each a dict of numpy arrays; under ``torchrun``
    rank ``r`` computes the chunks :func:`chunk_owner` gives it and every rank gets the whole list, in
    chunk order (exchanged as ``.npz`` bytes). ``render_chunk(c)`` must depend on ``c`` only, never on
    the rank, for the result to equal the one-process run; ``fingerprint()`` (JSON: what the chunks render,
    the settings, :func:`digest` of the targets and of the model; only called under torchrun) is compared
    across ranks first
    (:func:`agree`), so ranks given different arguments stop instead of mixing their renders. A failure
    on any rank raises on every rank (:func:`all_gather`). Ranks beyond the number of chunks compute nothing."""
    rank, world = init_from_env()
    if world == 1:
        return [render_chunk(c) for c in range(n_chunks)]
    if fingerprint is not None:
        agree("render", lambda: (None, dict(fingerprint(), n_chunks=n_chunks)))
    mine = [int(c) for c in np.flatnonzero(chunk_owner(n_chunks, world) == rank)]

    def work() -> Arrays:
        return {f"{c:06d}.{k}": v for c in mine for k, v in render_chunk(c).items()}

    out: List[Arrays] = [{} for _ in range(n_chunks)]
    for part in all_gather(work):
        for key, value in (part or {}).items():
            c, name = key.split(".", 1)
            out[int(c)][name] = value
    return out


def shard_indices(n_items: int, shard) -> np.ndarray:
    """(m,) int64 dataset indices of shard ``(i, n)``: the ``i``-th of ``n`` contiguous, near-equal ranges."""
    i, n = parse_shard(shard)
    return np.array_split(np.arange(check_int("n_items", n_items, low=0), dtype=np.int64), n)[i]
