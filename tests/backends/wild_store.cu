// A kernel with a real wild store (no simulation macro): thread `fault_at` (every thread when it is 0xFFFFFFFF)
// writes through `bad`, the others through `out`. On a GPU the store to an unmapped address is a sticky
// cudaErrorIllegalAddress (700); the twin must turn the SIGSEGV into the same (tests/backends/contract.py).
extern "C" __global__ void wild_store(float* out, unsigned long long bad, unsigned int n, unsigned int fault_at) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) {
        return;
    }
    float* p = (i == fault_at || fault_at == 0xFFFFFFFFu) ? reinterpret_cast<float*>(bad) : out;
    p[i] = 1.0f + static_cast<float>(i);
}
