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
            vrrl_write_commit_claimed(vrrl_records, vrrl_commits, vrrl_mask, vrrl_counter, vrrl_s,            \
                                      static_cast<unsigned int>(vrrl_s), vrrl_tenant, vrrl_opcode, vrrl_a0,   \
                                      vrrl_a1, vrrl_a2, vrrl_a3, vrrl_epoch, VRRL_STATUS_BEGIN,               \
                                      VRRL_CLASS_NONE, 0u, vrrl_ts_offset);                                   \
        }                                                                                                     \
    } while (0)

// With begin+end: the last block (GPU) or the last thread (twin, which has no __syncthreads) to finish the body
// writes the COMPLETED record. The count is a per-launch counter in device memory (slot vrrl_done_slot), reset by
// its last writer for the next launch that uses the slot. The body is a function: an early return reaches here.
#ifdef VRRL_TWIN
#define VRRL_INSTR_LAST_ARRIVAL()                                                                              \
    (atomicAdd(vrrl_done + vrrl_done_slot, 1u) ==                                                             \
     gridDim.x * gridDim.y * gridDim.z * blockDim.x * blockDim.y * blockDim.z - 1u)
#else
#define VRRL_INSTR_LAST_ARRIVAL()                                                                              \
    (__syncthreads(), (threadIdx.x | threadIdx.y | threadIdx.z) == 0u &&                                      \
                          (__threadfence(), atomicAdd(vrrl_done + vrrl_done_slot, 1u) ==                      \
                                                gridDim.x * gridDim.y * gridDim.z - 1u))
#endif

#define VRRL_INSTR_END()                                                                                       \
    do {                                                                                                      \
        if (vrrl_end != 0u) {                                                                                 \
            __threadfence();                                                                                  \
            if (VRRL_INSTR_LAST_ARRIVAL()) {                                                                  \
                atomicExch(vrrl_done + vrrl_done_slot, 0u);                                                   \
                const unsigned long long vrrl_s = atomicAdd(vrrl_counter, 1ull);                              \
                vrrl_write_commit_claimed(vrrl_records, vrrl_commits, vrrl_mask, vrrl_counter, vrrl_s,        \
                                          static_cast<unsigned int>(vrrl_s), vrrl_tenant, vrrl_opcode,        \
                                          vrrl_a0, vrrl_a1, vrrl_a2, vrrl_a3, vrrl_epoch,                     \
                                          VRRL_STATUS_COMPLETED, VRRL_CLASS_NONE, 0u, vrrl_ts_offset);        \
            }                                                                                                 \
        }                                                                                                     \
    } while (0)
