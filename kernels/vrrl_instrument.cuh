// vrrl_instrument.cuh: breadcrumbs an instrumented kernel writes itself (rec.instrument rewrites a kernel so
// that its body becomes a __device__ function called between these two).
#pragma once
#include "vrrl_record.cuh"

// The generated wrapper spells out its extra parameters (vrrl_records, vrrl_commits, vrrl_mask, vrrl_counter,
// vrrl_done, vrrl_done_slot, vrrl_tenant, vrrl_opcode, vrrl_a0..vrrl_a3, vrrl_epoch, vrrl_end, vrrl_ts_offset):
// the launchers read kernel signatures from the source text. These macros use those names.

// Thread 0 of block 0 claims a sequence from the device counter (so every replay of a captured graph gets its
// own) and writes the BEGIN record before the body runs.
#define VRRL_INSTR_BEGIN()                                                                                     \
    do {                                                                                                      \
        if ((blockIdx.x | blockIdx.y | blockIdx.z | threadIdx.x | threadIdx.y | threadIdx.z) == 0u) {         \
            const unsigned long long vrrl_s = atomicAdd(vrrl_counter, 1ull);                                  \
            vrrl_write_commit(vrrl_records, vrrl_commits, vrrl_mask, vrrl_s, static_cast<unsigned int>(vrrl_s), \
                              vrrl_tenant, vrrl_opcode, vrrl_a0, vrrl_a1, vrrl_a2, vrrl_a3, vrrl_epoch,       \
                              VRRL_STATUS_BEGIN, VRRL_CLASS_NONE, 0u, vrrl_ts_offset);                        \
        }                                                                                                     \
    } while (0)

// With begin+end: the last thread of the grid to finish the body (a device-memory counter per launch, which it
// resets for the next launch using the slot) writes the COMPLETED record. Counting threads, not blocks, needs
// no __syncthreads (the twin has none); one atomic per thread is device time, see docs/recorder.md.
#define VRRL_INSTR_END()                                                                                       \
    do {                                                                                                      \
        if (vrrl_end != 0u) {                                                                                 \
            const unsigned int vrrl_total = gridDim.x * gridDim.y * gridDim.z * blockDim.x * blockDim.y *      \
                                            blockDim.z;                                                       \
            __threadfence();                                                                                  \
            if (atomicAdd(vrrl_done + vrrl_done_slot, 1u) == vrrl_total - 1u) {                               \
                atomicExch(vrrl_done + vrrl_done_slot, 0u);                                                   \
                const unsigned long long vrrl_s = atomicAdd(vrrl_counter, 1ull);                              \
                vrrl_write_commit(vrrl_records, vrrl_commits, vrrl_mask, vrrl_s,                              \
                                  static_cast<unsigned int>(vrrl_s), vrrl_tenant, vrrl_opcode, vrrl_a0,       \
                                  vrrl_a1, vrrl_a2, vrrl_a3, vrrl_epoch, VRRL_STATUS_COMPLETED,               \
                                  VRRL_CLASS_NONE, 0u, vrrl_ts_offset);                                       \
            }                                                                                                 \
        }                                                                                                     \
    } while (0)
