"""A PyTorch model that faults on purpose, recorded op by op with ``vrrl_gpu.torch.record_ops``.

    python examples/torch_fault.py crash.vrrl                 # CUDA tensors on a GPU (the twin without one)
    python examples/torch_fault.py crash.vrrl --device twin   # CPU tensors, breadcrumbs through the twin
    vrrl replay crash.vrrl --registry examples/torch_registry.py:REGISTRY \\
        --device twin --minimize -o small.vrrl

An embedding lookup gets an index past the table at step ``--fault-at``. On the CPU (the twin) PyTorch's
bounds check raises ``IndexError`` at the op itself: the fault is simulated by that check, and the log
records ``aten::embedding`` as FAILED_AT_LAUNCH. On a GPU the same bug is a device-side assert (710) that
surfaces later, at some other call; the recorder attributes it to the op whose breadcrumb the device wrote
last. The script prints the log's last ops and the op the failure record names.
"""

from __future__ import annotations

import argparse
import sys

import torch

from vrrl_gpu import Recorder, RingLog, SlotStatus
from vrrl_gpu.format import read_sidecar
from vrrl_gpu.torch import record_ops


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 8)
        self.lin = torch.nn.Linear(8, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(self.emb(ids))).sum()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--device", default="auto", choices=["auto", "cupy", "twin"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--fault-at", type=int, default=3)
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    on_gpu = a.device != "twin" and torch.cuda.is_available()
    dev = "cuda" if on_gpu else "cpu"
    model = Model().to(dev)
    failed: BaseException | None = None
    with Recorder(a.log, device=a.device, capacity=1 << 14, breadcrumbs="begin+end") as rec:
        try:
            with torch.no_grad(), record_ops(rec):
                for step in range(a.steps):
                    rec.epoch = step
                    ids = torch.tensor([1, 2, 3, 4, 5, 6], device=dev)
                    if step == a.fault_at:
                        ids = ids + 10  # the bug: indices past the 10-row table
                    model(ids)
                    rec.synchronize()  # on a GPU an asynchronous fault surfaces here at the latest
        except (IndexError, RuntimeError) as e:
            failed = e
    side = read_sidecar(a.log)
    names = side.opcode_names if side is not None else {}
    with RingLog.open(a.log, readonly=True) as log:
        recs = log.records()
    status = recs["slot_status"]
    bad = recs[(status == SlotStatus.FAILED_AT_LAUNCH) | (status == SlotStatus.FAULTED)]
    print(f"raised: {type(failed).__name__}: {str(failed).splitlines()[0] if failed else '-'}")
    for r in bad:
        status = SlotStatus(int(r["slot_status"])).name
        print(
            f"the log names {names.get(int(r['opcode']), hex(int(r['opcode'])))} (call #{int(r['args'][0])}, "
            f"epoch {int(r['epoch'])}, {status}, code {int(r['backend_error_code']):#x})"
        )
    return 0 if failed is not None and len(bad) else 1


if __name__ == "__main__":
    sys.exit(main())
