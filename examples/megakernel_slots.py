"""A persistent kernel that records its own slots; the host records what it published.

    python examples/megakernel_slots.py mk.vrrl       # the GPU through CuPy (the CPU twin if there is none)
    python examples/megakernel_slots.py mk.vrrl --device twin --slots 12 --poison 7

A "megakernel" is launched once and keeps running: the host hands it work by
writing a slot number into a ring in mapped host memory and raising a
``published`` counter. Two kinds of records meet in the log:

* the host's ``rec.publish(slot, ...)``: a PUBLISHED record, written when the
  slot was handed over;
* the kernel's own ``vrrl_record_devseq(...)`` (kernels/vrrl_record.cuh), through
  the pointers of ``rec.device_ring()``: a DEVICE_CLAIMED record when a thread
  picked the slot up. A slot the kernel finds bad is reported with
  ``vrrl_fail_and_exit`` (DEVICE_REPORTED, ProgramBug) and that thread exits
  without killing the context.

Slots with a PUBLISHED record and no DEVICE_CLAIMED one were handed over and
never reached. With one worker thread (the default) and ``--poison K``, the
worker reports slot K and exits, so every slot published after K stands out.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vrrl_gpu import Recorder, RingLog, SlotStatus

NO_POISON = 0xFFFFFFFF
FIRST_SLOT = 1000  # the host's slot numbers: any u32 the pipeline uses


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", help="the VRRL log to write")
    p.add_argument("--device", choices=("auto", "cupy", "twin"), default="auto")
    p.add_argument("--slots", type=int, default=12, help="work items to publish")
    p.add_argument("--poison", type=int, default=None, help="the item the kernel reports as bad and stops at")
    p.add_argument("--threads", type=int, default=1, help="worker threads of the persistent kernel")
    args = p.parse_args(argv)

    with Recorder(args.log, device=args.device, capacity=4096) as rec:
        b = rec.backend
        kernel = b.load("vrrl_demo.cu", "vrrl_demo_megakernel")
        work = b.alloc_pinned(4 * args.slots)  # the slot ring the device reads (mapped host memory)
        published = b.alloc_pinned(8)  # how many items are published
        stop = b.alloc_pinned(8)  # set when no more will come
        next_item = b.alloc_device(8)  # the device's claim counter
        data = b.alloc_device(4 * 16)
        for mem in (work, published, stop):
            mem.host[:] = 0  # page-locked memory comes uninitialised from CUDA
        ring = rec.device_ring()  # where the kernel's own records go
        item_op = rec.opcode("work_item")
        poison = NO_POISON if args.poison is None else FIRST_SLOT + args.poison
        rec.epoch = 1
        rec.launch(
            kernel, 1, args.threads,
            (work.device_ptr, published.device_ptr, stop.device_ptr, next_item, data, 16,
             ring["records"], ring["commits"], ring["mask"], ring["counter"], ring["ts_offset"],
             ring["tenant_id"], item_op, rec.epoch, poison),
            opcode=rec.opcode("megakernel"), words=(args.slots, args.threads, 0, 0),
        )  # fmt: skip
        slots = work.host.view(np.uint32)
        count = published.host.view(np.uint64)
        for i in range(args.slots):
            slot = FIRST_SLOT + i
            slots[i] = slot
            rec.publish(slot, item_op, words=(i, 0, 0, 0))  # recorded before the device can see it
            count[0] = i + 1
            time.sleep(0.001)
        stop.host.view(np.uint32)[0] = 1  # the kernel drains what was published, then returns
        rec.synchronize()

    with RingLog.open(args.log, readonly=True) as log:
        records = log.records()
    by_status = {
        s: records[records["slot_status"] == int(s)]["slot_idx"].tolist()
        for s in (SlotStatus.PUBLISHED, SlotStatus.DEVICE_CLAIMED, SlotStatus.DEVICE_REPORTED)
    }
    pub = by_status[SlotStatus.PUBLISHED]
    claimed = set(by_status[SlotStatus.DEVICE_CLAIMED])
    reported = set(by_status[SlotStatus.DEVICE_REPORTED])
    never = [s for s in pub if s not in claimed and s not in reported]
    print(f"published by the host:   {len(pub)} slots ({pub[0]}..{pub[-1]})")
    print(f"claimed by the device:   {len(claimed)} {sorted(claimed)}")
    print(f"reported bad by device:  {sorted(reported) or 'none'}")
    print(f"published, never reached: {never or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
