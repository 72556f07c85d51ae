// vrrl_pack.cu: the pack kernels the recorder enqueues before each wrapped launch (see the staging contract).
#include "vrrl_record.cuh"

// One thread writes one record for the host-chosen sequence `seq`. Launch with grid (1,), block (1,).
extern "C" __global__ void vrrl_pack(vrrl_record* records, unsigned long long* commits, unsigned long long mask,
                                     unsigned long long seq, unsigned int slot_idx, unsigned int tenant_id,
                                     unsigned int opcode, unsigned int a0, unsigned int a1, unsigned int a2,
                                     unsigned int a3, unsigned int epoch, unsigned int slot_status,
                                     long long ts_offset) {
    vrrl_write_commit(records, commits, mask, seq, slot_idx, tenant_id, opcode, a0, a1, a2, a3, epoch,
                      slot_status, VRRL_CLASS_NONE, 0u, ts_offset);
}

// Device-sequenced (launches under CUDA graph capture, where a host-chosen seq would be frozen into every replay):
// s = atomicAdd(dev_counter, 1); slot_idx = (unsigned int)s. Writes to the device-sequenced ring.
extern "C" __global__ void vrrl_pack_devseq(vrrl_record* records, unsigned long long* commits,
                                            unsigned long long mask, unsigned long long* dev_counter,
                                            unsigned int tenant_id, unsigned int opcode, unsigned int a0,
                                            unsigned int a1, unsigned int a2, unsigned int a3, unsigned int epoch,
                                            unsigned int slot_status, long long ts_offset) {
    const unsigned long long s = atomicAdd(dev_counter, 1ull);
    vrrl_write_commit_claimed(records, commits, mask, dev_counter, s, static_cast<unsigned int>(s), tenant_id,
                              opcode, a0, a1, a2, a3, epoch, slot_status, VRRL_CLASS_NONE, 0u, ts_offset);
}

// Clock calibration: one read of %globaltimer into (mapped) memory; the host brackets the launch with its clock.
extern "C" __global__ void vrrl_read_globaltimer(unsigned long long* out) {
    *reinterpret_cast<volatile unsigned long long*>(out) = vrrl_globaltimer();
    __threadfence_system();
}
