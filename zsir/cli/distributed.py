r"""Dataset-scale runs of ``zsir restore`` and ``zsir bench`` on several processes, with Hugging Face accelerate.

``accelerate launch --num_processes N -m zsir restore DIR -o OUT ...`` (or ``torchrun --nproc_per_node N -m zsir
...``) starts N copies of the command; each one sees the same inputs and takes its own share of them. Without a
launcher, the command runs in one process, as before. accelerate is the optional extra ``zsir[distributed]``; it is
only imported when a launcher started the command.

**The seed of an image.** The random draws of input ``NAME`` (the simulated noise, a random operator and the
sampler's noise) come from its own seed (:func:`image_seed`)::

    int.from_bytes(hashlib.sha256(f"{seed}\0{name}".encode()).digest()[:8], "big") >> 1

the first 8 bytes of the SHA-256 digest of the run seed ``--seed``, a NUL byte and the file name (with its suffix,
without its folder), read big-endian and cut to 63 bits. It never depends on the order of the inputs, on the other
inputs, on the process that restores the image or on the number of processes.

**Work units.** ``zsir restore`` cuts the full input list (sorted folders, files in the order given) into
consecutive chunks of ``--batch-size`` inputs (:func:`chunks`); a chunk's inputs of the same size are restored in
one solve call, which draws from the seed of its first input. A chunk is the same for any process count and on
resume (a partly finished chunk is restored whole, only its missing outputs are written), so every output is
identical for 1, 2 or 8 processes (on the same device type: CPU and CUDA kernels round differently). With
``--batch-size 1`` (the default) each image depends on its own seed only. ``zsir bench`` makes one work unit of
every (task, sampler, image).

**Sharding and progress.** Unit ``i`` of the work list goes to process ``i mod N``. The processes advance in
lockstep rounds of one unit each; after a round the numbers of images done are summed onto the main process, whose
single progress bar counts the whole dataset (:meth:`Processes.run`). Each process restores on its own device
(``accelerator.device``: ``cuda:LOCAL_RANK`` on a multi-GPU machine, the CPU with ``--device cpu`` or without a
GPU). A failing unit is reported by its process and the others go on; the failures are gathered at the end and
every process exits with 1.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from zsir.cli.common import UsageError, device_from, note

__all__ = ["image_seed", "chunks", "to_do", "launched", "Processes", "processes"]

T = TypeVar("T")


def image_seed(seed: int, name: str) -> int:
    """The seed of the image file called ``name`` in a run with seed ``seed`` (see the module docstring).

    A stable hash (SHA-256), unlike Python's ``hash()``, which is salted per interpreter: the same pair gives the
    same 63-bit seed in every process, on every machine, in every Python version.
    """
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def chunks(inputs: Sequence[T], todo: Sequence[tuple[T, Any]], size: int) -> list[list[tuple[T, Any]]]:
    """The chunks of ``size`` consecutive ``inputs`` that hold an entry of ``todo`` (``(input, payload)`` pairs).

    A chunk lists all its inputs, each with its payload, or with ``None`` when it is not to do (finished): a
    resumed run restores a partly finished batch whole, so the batch and its outputs stay the same, and writes
    only the missing ones.
    """
    payload = dict(todo)
    out = []
    for start in range(0, len(inputs), size):
        chunk = [(x, payload.get(x)) for x in inputs[start : start + size]]
        if any(p is not None for _, p in chunk):
            out.append(chunk)
    return out


def to_do(chunk: Sequence[tuple[Any, Any]]) -> int:
    """The number of entries of a chunk that are to do (for the progress bar)."""
    return sum(p is not None for _, p in chunk)


def launched() -> bool:
    """Whether a launcher (``accelerate launch``, ``torchrun``, SLURM + torchrun) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or any(k.startswith("ACCELERATE_") for k in os.environ)


@dataclass
class Processes:
    """This process's view of the run: its rank among ``world`` processes and its device.

    ``state`` is accelerate's ``PartialState`` (``None`` for a plain single-process run).
    """

    rank: int
    world: int
    device: torch.device
    state: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        """Block until every process gets here."""
        if self.state is not None:
            self.state.wait_for_everyone()

    def gather(self, items: list) -> list:
        """The concatenation of every process's ``items`` in rank order, on every process."""
        if self.world == 1:
            return list(items)
        from accelerate.utils import gather_object

        return list(gather_object(list(items)))

    def _sum(self, n: int) -> int:
        if self.world == 1:
            return n
        from accelerate.utils import reduce

        return int(reduce(torch.tensor([n], device=self.state.device), reduction="sum").item())

    def summary(self, images: int, seconds: float) -> str:
        """``N process(es) on DEVICES: IMAGES image(s) in S s, R images/s`` (a collective call: every process)."""
        devices = self.gather([str(self.device)])
        rate = images / seconds if seconds > 0 else float("nan")
        return (
            f"{self.world} process(es) on {', '.join(devices)}: {images} image(s) in {seconds:.1f} s, "
            f"{rate:.3g} images/s"
        )

    def run(self, units: Sequence[T], bar, size: Callable[[T], int] = len) -> Iterator[T]:
        """Yield this process's share of ``units`` (unit ``i`` goes to process ``i mod world``).

        Every process runs the same number of rounds, one unit each (or none when its share is used up); after a
        round, the ``size`` of the units done (images) is summed over the processes into ``bar.update``.
        """
        mine = units[self.rank :: self.world]
        for r in range(-(-len(units) // self.world)):
            n = 0
            if r < len(mine):
                yield mine[r]
                n = size(mine[r])
            bar.update(self._sum(n))


def processes(args) -> Processes:
    """The processes of this run: accelerate's when a launcher started it, else this one on ``--device``.

    Under a launcher, ``--device auto`` or ``cuda`` takes ``accelerator.device`` (one GPU per process), ``--device
    cpu`` (or a machine without CUDA) the CPU with the gloo backend. Other processes than the main one turn their
    progress bars off (``args.no_progress``).
    """
    device = device_from(args.device)
    if not launched():
        return Processes(0, 1, device)
    try:
        from accelerate import PartialState
    except ImportError:
        raise UsageError(
            "this command was started by a distributed launcher (WORLD_SIZE="
            f"{os.environ.get('WORLD_SIZE', '1')}) but Hugging Face accelerate is not installed; install the "
            "extra: pip install 'zsir[distributed]'"
        ) from None
    cpu = device.type == "cpu" or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    state = PartialState(cpu=cpu)
    if state.num_processes == 1 and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ:
        note(
            "accelerate launch --cpu --num_processes N started a single process (accelerate starts several CPU "
            "processes only through mpirun); for N CPU processes use accelerate launch --multi_gpu "
            "--num_processes N ... --device cpu, or torchrun --nproc_per_node N -m zsir ... --device cpu"
        )
    if state.process_index != 0:
        args.no_progress = True
    return Processes(state.process_index, state.num_processes, torch.device("cpu") if cpu else state.device, state)
