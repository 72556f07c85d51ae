// Writers that lap a device-sequenced ring while an earlier writer of the same slot is still writing: every
// thread claims one sequence; the thread that claimed sequence 0 holds its write until `lead` sequences were
// claimed (the ring lapped past it). The writers of slot 0 on later laps must wait their turn
// (kernels/vrrl_record.cuh), so each slot ends with the record of its newest sequence, whole.
#include "vrrl_record.cuh"

extern "C" __global__ void lapping_writers(vrrl_record* records, unsigned long long* commits,
                                           unsigned long long mask, unsigned long long* counter,
                                           unsigned long long lead, unsigned int n) {
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) {
        return;
    }
    const vrrl_ring_view ring = vrrl_make_ring(records, commits, mask, counter, 0, 0u);
    const unsigned long long s = vrrl_claim(ring);
    if (s == 0ull) {
        const unsigned long long t0 = vrrl_globaltimer();
        while (*reinterpret_cast<volatile unsigned long long*>(counter) < lead &&
               vrrl_globaltimer() - t0 < 2000000000ull) {
            VRRL_SPIN_HINT();
        }
    }
    const unsigned int lo = static_cast<unsigned int>(s);
    vrrl_write_commit_claimed(records, commits, mask, counter, s, lo, 0u, 1u, lo, static_cast<unsigned int>(s >> 32),
                              ~lo, i, 0u, VRRL_STATUS_DEVICE_CLAIMED, 0u, 0u, 0ll);
}
