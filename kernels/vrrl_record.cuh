// vrrl_record.cuh: the VRRL v1 record in C and the device side of the staging protocol.
//
// Include this from your own kernels to write records from inside them (megakernels, persistent kernels):
//
//     #include "vrrl_record.cuh"
//     vrrl_ring_view ring = vrrl_make_ring(records, commits, mask, dev_counter, ts_offset, tenant_id);
//     vrrl_record_devseq(ring, slot_idx, opcode, a0, a1, a2, a3, epoch, VRRL_STATUS_DEVICE_CLAIMED);
//
// The same source compiles with NVRTC (CUDA) and, with -DVRRL_TWIN -include twin_shim.h, with g++ (the CPU twin).
// Producer protocol (the contract shared with vrrl_gpu/capture/_staging.py): for sequence s, store commit[s & mask] = 0,
// __threadfence_system(), write all 64 bytes of record slot s & mask, __threadfence_system(), then a volatile
// 8-byte store commit[s & mask] = s + 1.
#pragma once

#ifndef VRRL_TWIN
// ---- CUDA spellings of the few operations that differ on the twin (twin_shim.h defines its own) ----
#define VRRL_EXIT_THREAD() asm volatile("exit;")
#define VRRL_TRAP() __trap()
// Sleeping a little between polls keeps a spinning thread from hogging the issue slots (sm_70+).
#define VRRL_SPIN_HINT() __nanosleep(64)
// A store through a pointer the device has not mapped: the context dies with 700 (cudaErrorIllegalAddress).
// The address is computed from a runtime value so the compiler cannot fold it into a trap.
#define VRRL_WILD_STORE(addr_bits, value) (*reinterpret_cast<volatile unsigned int*>(addr_bits) = (value))
// Device-side assert (710): what assert() expands to; NVRTC declares __assertfail itself, no <assert.h> needed.
#define VRRL_DEVICE_ASSERT(cond) \
    ((cond) ? (void)0 : __assertfail(#cond, __FILE__, __LINE__, __func__, sizeof(char)))
#endif

// The C record: must match vrrl_gpu/format/_layout.py RECORD_DTYPE field by field
// (tests/capture/test_kernels.py compares the offsets).
// The Python dtype is packed with a u64 timestamp at offset 4; an 8-byte field at a 4-byte offset would be a
// misaligned access on the GPU (error 716), so the two u64 fields are split into little-endian u32 halves here
// and every member is a naturally aligned u32: no padding, no packing attribute needed, 64 bytes exactly.
struct vrrl_record {
    unsigned int magic;               //  0  0xDEADBEEF
    unsigned int timestamp_ns_lo;     //  4  UNIX-epoch ns, low word
    unsigned int timestamp_ns_hi;     //  8  high word
    unsigned int slot_idx;            // 12
    unsigned int tenant_id;           // 16
    unsigned int opcode;              // 20
    unsigned int args[4];             // 24
    unsigned int epoch;               // 40
    unsigned int slot_status;         // 44  SlotStatus
    unsigned int failure_class;       // 48  FailureClass
    unsigned int backend_error_code;  // 52
    unsigned int output_digest_lo;    // 56
    unsigned int output_digest_hi;    // 60
};

static_assert(sizeof(vrrl_record) == 64, "vrrl_record must be 64 bytes (VRRL v1); must match vrrl_gpu/format/_layout.py");
// NVRTC 12.x (checked on 12.0, 12.4, 12.8, 12.9) does not know __builtin_offsetof in a constant expression
// ("type name is not allowed"); NVRTC 13, nvcc and g++ (the twin) do. NVRTC defines __CUDACC_RTC__ and
// __CUDACC_VER_MAJOR__. Where the offsets cannot be asserted, the size assert above still pins the layout: 16
// naturally aligned u32 members in 64 bytes leave no room for padding. tests/test_kernels.py checks the offsets
// against RECORD_DTYPE with g++.
#if !defined(__CUDACC_RTC__) || (defined(__CUDACC_VER_MAJOR__) && __CUDACC_VER_MAJOR__ >= 13)
static_assert(__builtin_offsetof(vrrl_record, magic) == 0, "magic at 0");
static_assert(__builtin_offsetof(vrrl_record, timestamp_ns_lo) == 4, "timestamp_ns at 4");
static_assert(__builtin_offsetof(vrrl_record, slot_idx) == 12, "slot_idx at 12");
static_assert(__builtin_offsetof(vrrl_record, tenant_id) == 16, "tenant_id at 16");
static_assert(__builtin_offsetof(vrrl_record, opcode) == 20, "opcode at 20");
static_assert(__builtin_offsetof(vrrl_record, args) == 24, "args at 24");
static_assert(__builtin_offsetof(vrrl_record, epoch) == 40, "epoch at 40");
static_assert(__builtin_offsetof(vrrl_record, slot_status) == 44, "slot_status at 44");
static_assert(__builtin_offsetof(vrrl_record, failure_class) == 48, "failure_class at 48");
static_assert(__builtin_offsetof(vrrl_record, backend_error_code) == 52, "backend_error_code at 52");
static_assert(__builtin_offsetof(vrrl_record, output_digest_lo) == 56, "output_digest at 56");
#endif

#define VRRL_RECORD_MAGIC 0xDEADBEEFu

// vrrl_gpu.format.SlotStatus
#define VRRL_STATUS_BEGIN 0u
#define VRRL_STATUS_COMPLETED 1u
#define VRRL_STATUS_FAILED_AT_LAUNCH 2u
#define VRRL_STATUS_FAULTED 3u
#define VRRL_STATUS_HUNG 4u
#define VRRL_STATUS_PUBLISHED 5u
#define VRRL_STATUS_DEVICE_CLAIMED 6u
#define VRRL_STATUS_DEVICE_REPORTED 7u

// vrrl_gpu.format.FailureClass
#define VRRL_CLASS_NONE 0u
#define VRRL_CLASS_DEVICE_LOSS 1u
#define VRRL_CLASS_TRANSIENT_QUEUE 2u
#define VRRL_CLASS_PROGRAM_BUG 3u
#define VRRL_CLASS_UNCLASSIFIED 4u

// The device's nanosecond clock. The host adds a calibrated offset (ts_offset) to get UNIX-epoch ns.
__device__ __forceinline__ unsigned long long vrrl_globaltimer() {
#ifdef VRRL_TWIN
    return vrrl_twin::globaltimer();
#else
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
#endif
}

// Everything a thread needs to append to one staging ring.
struct vrrl_ring_view {
    vrrl_record* records;              // N records (mapped host memory)
    unsigned long long* commits;       // N commit words (mapped host memory)
    unsigned long long mask;           // N - 1
    unsigned long long* counter;       // device-sequenced rings only: a u64 in DEVICE memory; else nullptr
    long long ts_offset;               // host-calibrated: UNIX ns = %globaltimer + ts_offset
    unsigned int tenant_id;
};

__device__ __forceinline__ vrrl_ring_view vrrl_make_ring(vrrl_record* records, unsigned long long* commits,
                                                         unsigned long long mask, unsigned long long* counter,
                                                         long long ts_offset, unsigned int tenant_id) {
    vrrl_ring_view r;
    r.records = records;
    r.commits = commits;
    r.mask = mask;
    r.counter = counter;
    r.ts_offset = ts_offset;
    r.tenant_id = tenant_id;
    return r;
}

// Write-fence-commit for sequence `seq`. The record goes out as four 16-byte stores (slots are 64-byte aligned
// in staging): the record itself is not atomic over PCIe, which is why the commit word is written last, alone.
__device__ __forceinline__ void vrrl_write_commit(vrrl_record* records, unsigned long long* commits,
                                                  unsigned long long mask, unsigned long long seq,
                                                  unsigned int slot_idx, unsigned int tenant_id,
                                                  unsigned int opcode, unsigned int a0, unsigned int a1,
                                                  unsigned int a2, unsigned int a3, unsigned int epoch,
                                                  unsigned int slot_status, unsigned int failure_class,
                                                  unsigned int error_code, long long ts_offset) {
    const unsigned long long ts = vrrl_globaltimer() + static_cast<unsigned long long>(ts_offset);
    const unsigned long long i = seq & mask;
    // Invalidate the slot before overwriting it: otherwise a consumer copying the slot's previous record while
    // this one is half-written would re-read the old commit word unchanged and keep a mixed record.
#ifdef VRRL_TWIN
    vrrl_twin::store_commit(commits + i, 0ull);
#else
    *reinterpret_cast<volatile unsigned long long*>(commits + i) = 0ull;
#endif
    __threadfence_system();
    uint4* dst = reinterpret_cast<uint4*>(records + i);
    dst[0] = make_uint4(VRRL_RECORD_MAGIC, static_cast<unsigned int>(ts), static_cast<unsigned int>(ts >> 32),
                        slot_idx);
    dst[1] = make_uint4(tenant_id, opcode, a0, a1);
    dst[2] = make_uint4(a2, a3, epoch, slot_status);
    dst[3] = make_uint4(failure_class, error_code, 0u, 0u);
    __threadfence_system();
#ifdef VRRL_TWIN
    vrrl_twin::store_commit(commits + i, seq + 1ull);
#else
    *reinterpret_cast<volatile unsigned long long*>(commits + i) = seq + 1ull;
#endif
}

// ---- one writer per slot (device-sequenced rings) ---------------------------------------------------------
// Writers that claim sequences from a shared counter can lap the ring while an earlier writer of the same slot
// is still writing (a grid with more threads in flight than the ring has slots): two writers in one slot would
// leave a record half of one and half of the other under a valid commit word. So the counter is followed, in
// DEVICE memory, by one turn word per slot: the sequence + 1 of the last record completed there. The writer of
// sequence s waits (rarely, and only on a lap) until the writer of s - N has finished, and every claimed
// sequence must be written (vrrl_claim is followed by a write, as in the functions below). The host allocates
// the counter with its turn words (Backend.alloc_counter(slots=N)); Recorder.device_ring() hands it out.
__device__ __forceinline__ void vrrl_wait_turn(unsigned long long* counter, unsigned long long mask,
                                               unsigned long long s) {
    if (s <= mask) {
        return;  // the first lap: nobody wrote this slot before
    }
    volatile unsigned long long* turn = reinterpret_cast<volatile unsigned long long*>(counter + 1 + (s & mask));
    const unsigned long long previous = s - mask;  // (s - N) + 1: the previous lap's writer is done
    while (*turn < previous) {
        VRRL_SPIN_HINT();
    }
}

__device__ __forceinline__ void vrrl_end_turn(unsigned long long* counter, unsigned long long mask,
                                              unsigned long long s) {
    __threadfence();
    *reinterpret_cast<volatile unsigned long long*>(counter + 1 + (s & mask)) = s + 1ull;
}

// Write-fence-commit for a sequence claimed from `counter`, one writer in the slot at a time.
__device__ __forceinline__ void vrrl_write_commit_claimed(vrrl_record* records, unsigned long long* commits,
                                                          unsigned long long mask, unsigned long long* counter,
                                                          unsigned long long seq, unsigned int slot_idx,
                                                          unsigned int tenant_id, unsigned int opcode,
                                                          unsigned int a0, unsigned int a1, unsigned int a2,
                                                          unsigned int a3, unsigned int epoch,
                                                          unsigned int slot_status, unsigned int failure_class,
                                                          unsigned int error_code, long long ts_offset) {
    vrrl_wait_turn(counter, mask, seq);
    vrrl_write_commit(records, commits, mask, seq, slot_idx, tenant_id, opcode, a0, a1, a2, a3, epoch, slot_status,
                      failure_class, error_code, ts_offset);
    vrrl_end_turn(counter, mask, seq);
}

// Host-sequenced: the host chose `seq` (one ring per sequence space; see the contract).
__device__ __forceinline__ void vrrl_record_hostseq(const vrrl_ring_view& ring, unsigned long long seq,
                                                    unsigned int slot_idx, unsigned int opcode, unsigned int a0,
                                                    unsigned int a1, unsigned int a2, unsigned int a3,
                                                    unsigned int epoch, unsigned int slot_status) {
    vrrl_write_commit(ring.records, ring.commits, ring.mask, seq, slot_idx, ring.tenant_id, opcode, a0, a1, a2, a3,
                      epoch, slot_status, VRRL_CLASS_NONE, 0u, ring.ts_offset);
}

// Device-sequenced: claim the sequence with an atomic on a counter in DEVICE memory (atomics on mapped host
// memory are not atomic over PCIe), then write-fence-commit. Returns the claimed sequence.
__device__ __forceinline__ unsigned long long vrrl_claim(const vrrl_ring_view& ring) {
    return atomicAdd(ring.counter, 1ull);
}

__device__ __forceinline__ unsigned long long vrrl_record_devseq(const vrrl_ring_view& ring, unsigned int slot_idx,
                                                                 unsigned int opcode, unsigned int a0,
                                                                 unsigned int a1, unsigned int a2, unsigned int a3,
                                                                 unsigned int epoch, unsigned int slot_status) {
    const unsigned long long s = vrrl_claim(ring);
    vrrl_write_commit_claimed(ring.records, ring.commits, ring.mask, ring.counter, s, slot_idx, ring.tenant_id,
                              opcode, a0, a1, a2, a3, epoch, slot_status, VRRL_CLASS_NONE, 0u, ring.ts_offset);
    return s;
}

// Report a bad state and end this thread WITHOUT trap, so the context survives: a device-sequenced record with
// slot_status DEVICE_REPORTED and the caller's failure class/code, fenced and committed, then `exit`.
// Other threads of the grid keep running. Never returns to the caller.
__device__ __forceinline__ void vrrl_fail_and_exit(const vrrl_ring_view& ring, unsigned int slot_idx,
                                                   unsigned int opcode, unsigned int a0, unsigned int a1,
                                                   unsigned int a2, unsigned int a3, unsigned int epoch,
                                                   unsigned int failure_class, unsigned int error_code) {
    const unsigned long long s = vrrl_claim(ring);
    vrrl_write_commit_claimed(ring.records, ring.commits, ring.mask, ring.counter, s, slot_idx, ring.tenant_id,
                              opcode, a0, a1, a2, a3, epoch, VRRL_STATUS_DEVICE_REPORTED, failure_class,
                              error_code, ring.ts_offset);
    VRRL_EXIT_THREAD();
}
