// vrrl_demo.cu: small built-in kernels for `vrrl demo`, the watchdog tests and examples/megakernel_slots.py.
#include "vrrl_record.cuh"

#define VRRL_FAULT_NONE 0u
#define VRRL_FAULT_ILLEGAL_ADDRESS 1u
#define VRRL_FAULT_TRAP 2u
#define VRRL_FAULT_ASSERT 3u

// y[i] += a * x[i]. fault_kind != 0 makes thread 0 misbehave: 1 = store through a wild pointer (700),
// 2 = __trap() (719 on current GPUs; 715 on some), 3 = device assert (710).
extern "C" __global__ void vrrl_demo_axpy(float* y, const float* x, float a, unsigned int n,
                                          unsigned int fault_kind) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (fault_kind != VRRL_FAULT_NONE && i == 0) {
        if (fault_kind == VRRL_FAULT_ILLEGAL_ADDRESS) {
            // 8 << 0 = address 8: in the never-mapped first page, but only known at run time.
            VRRL_WILD_STORE(static_cast<unsigned long long>(fault_kind) << 3, 0xBADu);
        } else if (fault_kind == VRRL_FAULT_TRAP) {
            VRRL_TRAP();
        } else if (fault_kind == VRRL_FAULT_ASSERT) {
            VRRL_DEVICE_ASSERT(fault_kind != VRRL_FAULT_ASSERT);
        }
    }
    if (i < n) {
        y[i] = a * x[i] + y[i];
    }
}

// Busy-waits `ns` nanoseconds on %globaltimer (a kernel that looks hung, for the watchdog).
extern "C" __global__ void vrrl_demo_spin(unsigned long long ns) {
    const unsigned long long t0 = vrrl_globaltimer();
    while (vrrl_globaltimer() - t0 < ns) {
        VRRL_SPIN_HINT();
    }
}

// Holds its stream until the host sets *flag (mapped host memory) or timeout_ns passes: tests use it to keep
// work queued behind it deterministically.
extern "C" __global__ void vrrl_demo_wait(const unsigned int* flag, unsigned long long timeout_ns) {
    const unsigned long long t0 = vrrl_globaltimer();
    while (*reinterpret_cast<const volatile unsigned int*>(flag) == 0u && vrrl_globaltimer() - t0 < timeout_ns) {
        VRRL_SPIN_HINT();
    }
}

// A persistent "megakernel": every thread loops, claiming work items from a counter in device memory. The host
// publishes items by writing work_slots[i] (mapped host memory) and then raising *published to i + 1; it sets
// *stop when no more will come. For each item picked up the thread records a device-sequenced breadcrumb with
// slot_status DEVICE_CLAIMED and the host's slot index, so the log shows which published slots the device reached.
// An item equal to poison_slot is reported with vrrl_fail_and_exit (DEVICE_REPORTED, ProgramBug, code 0xBAD)
// and ends that thread without killing the context. data[slot % n_data] += 1 is the "work".
extern "C" __global__ void vrrl_demo_megakernel(const unsigned int* work_slots, const unsigned long long* published,
                                                const unsigned int* stop, unsigned long long* next_item,
                                                float* data, unsigned int n_data, vrrl_record* records,
                                                unsigned long long* commits, unsigned long long mask,
                                                unsigned long long* seq_counter, long long ts_offset,
                                                unsigned int tenant_id, unsigned int opcode, unsigned int epoch,
                                                unsigned int poison_slot) {
    const vrrl_ring_view ring = vrrl_make_ring(records, commits, mask, seq_counter, ts_offset, tenant_id);
    for (;;) {
        const unsigned long long item = atomicAdd(next_item, 1ull);
        for (;;) {
            if (item < *reinterpret_cast<const volatile unsigned long long*>(published)) {
                break;
            }
            if (*reinterpret_cast<const volatile unsigned int*>(stop) != 0u &&
                item >= *reinterpret_cast<const volatile unsigned long long*>(published)) {
                return;  // this item will never be published
            }
            VRRL_SPIN_HINT();
        }
        // Order the read of the slot after the read of the count that published it.
        __threadfence_system();
        const unsigned int slot = reinterpret_cast<const volatile unsigned int*>(work_slots)[item];
        if (slot == poison_slot) {
            vrrl_fail_and_exit(ring, slot, opcode, static_cast<unsigned int>(item),
                               static_cast<unsigned int>(item >> 32), blockIdx.x, threadIdx.x, epoch,
                               VRRL_CLASS_PROGRAM_BUG, 0xBADu);
        }
        atomicAdd(data + (slot % n_data), 1.0f);
        vrrl_record_devseq(ring, slot, opcode, static_cast<unsigned int>(item), static_cast<unsigned int>(item >> 32),
                           blockIdx.x, threadIdx.x, epoch, VRRL_STATUS_DEVICE_CLAIMED);
    }
}

// Records `count` device-sequenced breadcrumbs per thread (tests: distinct sequences under contention), and,
// when report_thread matches this thread's global index, reports a failure and exits without trap first.
extern "C" __global__ void vrrl_demo_record_many(vrrl_record* records, unsigned long long* commits,
                                                 unsigned long long mask, unsigned long long* seq_counter,
                                                 long long ts_offset, unsigned int tenant_id, unsigned int opcode,
                                                 unsigned int count, unsigned int report_thread,
                                                 unsigned int* after_report) {
    const vrrl_ring_view ring = vrrl_make_ring(records, commits, mask, seq_counter, ts_offset, tenant_id);
    const unsigned int g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g == report_thread) {
        vrrl_fail_and_exit(ring, g, opcode, g, 0u, 0u, 0u, 0u, VRRL_CLASS_PROGRAM_BUG, 77u);
        after_report[g] = 1u;  // never reached: the thread has exited
    }
    for (unsigned int k = 0; k < count; ++k) {
        vrrl_record_devseq(ring, g, opcode, g, k, blockIdx.x, threadIdx.x, 0u, VRRL_STATUS_DEVICE_CLAIMED);
    }
}
