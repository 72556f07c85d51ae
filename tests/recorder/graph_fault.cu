// A graph node whose fault depends on memory, not on its frozen arguments: thread 0 stores through `bad`
// while the flag in mapped host memory is set, so one replay of a captured graph can fault and the others not.
extern "C" __global__ void graph_step(float* out, const unsigned int* flag, unsigned long long bad, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) {
        return;
    }
    bool wild = i == 0 && *reinterpret_cast<const volatile unsigned int*>(flag) != 0u;
    float* p = wild ? reinterpret_cast<float*>(bad) : out;
    p[i] = 2.0f + static_cast<float>(i);
}
