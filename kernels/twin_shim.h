// twin_shim.h: lets the kernels/ sources compile with the system C++ compiler for the CPU twin.
//
//     g++ -std=c++17 -O2 -shared -fPIC -DVRRL_TWIN -include twin_shim.h ...
//
// What it supplies: the CUDA qualifiers, thread/block indices (thread-local, set by the grid runner), %globaltimer
// (CLOCK_REALTIME ns, so the twin's ts_offset is 0), fences (seq_cst atomic fences), atomics (GCC __atomic
// builtins), and twin spellings of trap / exit / wild store / assert that throw C++ exceptions the grid runner
// turns into CUDA error codes (719 / none / 700 / 710). A real wild access in a kernel (SIGSEGV / SIGBUS on a
// grid-runner thread or fiber) becomes 700 too, as on a GPU: the runner catches the signal and ends the grid. The runner executes the threads of a grid on up to
// `max_workers` OS threads; a grid makes forward progress like a GPU with that many resident threads.
//
// Blocks and barriers: kernels of a source that uses __syncthreads (the build says so: launch<true>) run block by
// block, each block's threads as ucontext fibers on one OS thread; __syncthreads() switches to the next fiber of
// the block until every thread that has not exited reached it. Static __shared__ variables are then `static
// thread_local`: shared by a block's fibers, private to the OS thread running it (one block at a time). Dynamic
// (extern) shared memory, warp primitives (__syncwarp, shuffles, votes) and __syncthreads_count/and/or are not
// supported: a compile error here, not a silent miscompile.
#pragma once

#ifndef VRRL_TWIN
#error "twin_shim.h is for the CPU twin only: compile with -DVRRL_TWIN"
#endif

#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cmath>  // CUDA's math functions (sinf, sincosf, atan2f, ...): the same names in glibc
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __constant__
#define __shared__ static thread_local
#define __syncthreads() vrrl_twin::syncthreads()
#define __syncwarp(...) static_assert(false, "__syncwarp is not supported by the vrrl CPU twin")

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};
struct uint4 {
    unsigned int x, y, z, w;
};
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) { return uint4{x, y, z, w}; }

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace vrrl_twin {

// Thrown by VRRL_EXIT_THREAD(): ends this CUDA thread, not an error.
struct ThreadExit {};

// Thrown by a simulated device fault; `code` is the cudaError_t the host will see.
struct Fault {
    int code;
    const char* what;
};

// The grid's abort flag: set by a fault in any thread of the grid, or by the host (the backend closing).
inline thread_local const int* t_host_abort = nullptr;
inline thread_local const std::atomic<int>* t_grid_abort = nullptr;

inline void check_abort() {
    if ((t_host_abort != nullptr && __atomic_load_n(t_host_abort, __ATOMIC_RELAXED) != 0) ||
        (t_grid_abort != nullptr && t_grid_abort->load(std::memory_order_relaxed) != 0)) {
        throw ThreadExit{};
    }
}

// Clock reads double as cancellation points, so spinning kernels end when their grid is killed.
inline unsigned long long globaltimer() {
    check_abort();
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<unsigned long long>(ts.tv_sec) * 1000000000ull + static_cast<unsigned long long>(ts.tv_nsec);
}

inline void spin_hint() {
    check_abort();
    sched_yield();
}

[[noreturn]] inline void fault(int code, const char* what) { throw Fault{code, what}; }

inline void store_commit(unsigned long long* p, unsigned long long v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

// ---- real faults in kernel code -----------------------------------------------------------------------------
// A wild store on a GPU is a sticky cudaErrorIllegalAddress (700); on the CPU it is a SIGSEGV (or SIGBUS) that
// would kill the host process with no failure record. While a grid-runner thread runs kernel code, t_fault_jmp
// points at a jump buffer of the runner (per OS thread, or per fiber) and the handler jumps back there, which
// ends the grid with 700. Any other thread's fault goes to the handler installed before ours (Python's
// faulthandler, or the default: the process dies as it would have). Every twin library compiles its own copy
// (-fvisibility=hidden), so the handlers chain: each one passes on what is not its own thread's.
inline thread_local sigjmp_buf* t_fault_jmp = nullptr;
inline thread_local int t_fault_sig = 0;
inline thread_local void* t_fault_addr = nullptr;

struct PrevActions {
    struct sigaction segv;
    struct sigaction bus;
};
inline PrevActions g_prev{};

inline void pass_on(int sig, siginfo_t* info, void* ctx) {
    const struct sigaction& prev = sig == SIGBUS ? g_prev.bus : g_prev.segv;
    if ((prev.sa_flags & SA_SIGINFO) != 0 && prev.sa_sigaction != nullptr) {
        prev.sa_sigaction(sig, info, ctx);
        return;
    }
    if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN && prev.sa_handler != nullptr) {
        prev.sa_handler(sig);
        return;
    }
    // Default action: reinstate it; returning re-executes the faulting instruction, which now kills the process.
    signal(sig, SIG_DFL);
}

inline void on_fault(int sig, siginfo_t* info, void* ctx) {
    sigjmp_buf* jb = t_fault_jmp;
    if (jb == nullptr) {
        pass_on(sig, info, ctx);
        return;
    }
    t_fault_jmp = nullptr;  // a second fault before the runner is back is not ours to catch
    t_fault_sig = sig;
    t_fault_addr = info != nullptr ? info->si_addr : nullptr;
    siglongjmp(*jb, 1);
}

inline bool install_fault_handler() {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = &on_fault;
    // SA_NODEFER: the runner's sigsetjmp does not save the mask (a syscall less per grid), so the handler must
    // not leave SIGSEGV blocked on a thread that jumps out of it.
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_prev.segv);
    sigaction(SIGBUS, &sa, &g_prev.bus);
    return true;
}

inline void ensure_fault_handler() {
    static const bool installed = install_fault_handler();
    (void)installed;
}

inline std::string fault_message() {
    char what[96];
    std::snprintf(what, sizeof what, "illegal memory access (%s at address %p)",
                  t_fault_sig == SIGBUS ? "SIGBUS" : "SIGSEGV", t_fault_addr);
    return what;
}

// One block's threads as fibers (launch<true>): the scheduler context, and per fiber its context and state.
enum FiberState : unsigned char { kRunnable, kAtBarrier, kDone };
struct Fiber {
    ucontext_t ctx;
    uint3 tid;
    FiberState state;
    sigjmp_buf* fault_jmp;  // on this fiber's own stack: a fault jumps back within the same stack
};
struct BlockRun {
    ucontext_t sched;
    Fiber* fibers;
    unsigned int current;
    void (*body)(BlockRun*);  // runs the kernel for fiber `current` (catches everything)
    void* kernel_state;
};
inline thread_local BlockRun* t_block = nullptr;

inline void syncthreads() {
    BlockRun* b = t_block;
    if (b == nullptr) {
        if (1ull * blockDim.x * blockDim.y * blockDim.z == 1) {
            return;  // one thread: the barrier is trivially met
        }
        // A kernel built without barriers (its source did not spell __syncthreads, a header of it did).
        fault(999, "__syncthreads in a kernel the twin built without block barriers (its source must name it)");
    }
    check_abort();
    Fiber& f = b->fibers[b->current];
    f.state = kAtBarrier;
    swapcontext(&f.ctx, &b->sched);
}

}  // namespace vrrl_twin

#define VRRL_EXIT_THREAD() throw vrrl_twin::ThreadExit {}
#define VRRL_TRAP() vrrl_twin::fault(719, "trap")
#define VRRL_SPIN_HINT() vrrl_twin::spin_hint()
#define VRRL_WILD_STORE(addr_bits, value) \
    ((void)(addr_bits), (void)(value), vrrl_twin::fault(700, "store through a wild pointer (simulated)"))
#define VRRL_DEVICE_ASSERT(cond) ((cond) ? (void)0 : vrrl_twin::fault(710, "device assert: " #cond))

inline void __trap() { vrrl_twin::fault(719, "__trap()"); }
inline void __nanosleep(unsigned int) { vrrl_twin::spin_hint(); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline unsigned int atomicAdd(unsigned int* p, unsigned int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline float atomicAdd(float* p, float v) {
    float old;
    __atomic_load(p, &old, __ATOMIC_RELAXED);
    for (;;) {
        float desired = old + v;
        if (__atomic_compare_exchange(p, &old, &desired, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
            return old;
        }
    }
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long expected, unsigned long long desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}
inline unsigned int atomicCAS(unsigned int* p, unsigned int expected, unsigned int desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}
inline unsigned long long atomicExch(unsigned long long* p, unsigned long long v) {
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
inline unsigned int atomicExch(unsigned int* p, unsigned int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }

namespace vrrl_twin {

// numpy type codes of a kernel's parameters ('p' = pointer), so the host can check its own parse of the source.
template <typename T>
constexpr char sig_char() {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_pointer_v<U>) {
        return 'p';
    } else if constexpr (std::is_same_v<U, bool>) {
        return '?';
    } else if constexpr (std::is_floating_point_v<U>) {
        return sizeof(U) == 4 ? 'f' : (sizeof(U) == 8 ? 'd' : 'x');
    } else if constexpr (std::is_integral_v<U>) {
        constexpr const char* s = "bhxixxxq";
        constexpr const char* u = "BHXIXXXQ";
        return std::is_signed_v<U> ? s[sizeof(U) - 1] : u[sizeof(U) - 1];
    } else {
        return 'x';
    }
}

template <typename... P>
const char* signature(void (*)(P...)) {
    static const char s[] = {sig_char<P>()..., '\0'};
    return s;
}

template <typename... P, std::size_t... I>
void invoke(void (*k)(P...), void** a, std::index_sequence<I...>) {
    k(*static_cast<std::remove_cv_t<std::remove_reference_t<P>>*>(a[I])...);
}

constexpr std::size_t kFiberStack = 128 * 1024;

// The fibers of one OS thread's blocks: stacks mapped once (untouched pages cost nothing) and reused.
struct FiberPool {
    char* stacks = nullptr;
    std::size_t count = 0;
    std::vector<Fiber> fibers;
    ~FiberPool() {
        if (stacks != nullptr) {
            munmap(stacks, count * kFiberStack);
        }
    }
    bool reserve(std::size_t n) {
        if (n <= count) {
            return true;
        }
        if (stacks != nullptr) {
            munmap(stacks, count * kFiberStack);
        }
        void* p = mmap(nullptr, n * kFiberStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        if (p == MAP_FAILED) {
            stacks = nullptr;
            count = 0;
            return false;
        }
        stacks = static_cast<char*>(p);
        count = n;
        fibers.resize(n);
        return true;
    }
};

inline void fiber_entry() {
    BlockRun* b = t_block;
    b->body(b);
    b->fibers[b->current].state = kDone;
    swapcontext(&b->fibers[b->current].ctx, &b->sched);
}

// Runs every thread of the grid; returns 0 or the first fault's cudaError_t (message into err). With Barriers,
// workers take whole blocks and run each block's threads as fibers (see the top of this file).
template <bool Barriers = false, typename... P>
int launch(void (*k)(P...), const unsigned int* dims, void** args, unsigned int max_workers, const int* host_abort,
           char* err, std::size_t errlen) {
    const dim3 g{dims[0], dims[1], dims[2]};
    const dim3 b{dims[3], dims[4], dims[5]};
    const unsigned long long per_block = 1ull * b.x * b.y * b.z;
    const unsigned long long total = per_block * g.x * g.y * g.z;
    std::atomic<unsigned long long> next{0};
    std::atomic<int> grid_abort{0};
    std::mutex m;
    int code = 0;
    ensure_fault_handler();
    std::string msg;
    auto record = [&](int c, const std::string& what) {
        std::lock_guard<std::mutex> lock(m);
        if (code == 0) {
            code = c;
            char where[160];
            std::snprintf(where, sizeof where, " at block (%u,%u,%u) thread (%u,%u,%u)", blockIdx.x, blockIdx.y,
                          blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
            msg = what + where;
        }
        grid_abort.store(1);
    };
    // One thread of the kernel, its indices already set; what it throws becomes the grid's error.
    auto run_thread = [&]() {
        try {
            invoke(k, args, std::index_sequence_for<P...>{});
        } catch (const ThreadExit&) {
            // asm("exit;"): this thread is done, the grid goes on
        } catch (const Fault& f) {
            record(f.code, f.what);
        } catch (const std::exception& e) {
            record(999, std::string("C++ exception in kernel: ") + e.what());
        } catch (...) {
            record(999, "unknown C++ exception in kernel");
        }
    };
    auto block_work = [&]() {
        t_host_abort = host_abort;
        t_grid_abort = &grid_abort;
        blockDim = b;
        gridDim = g;
        static thread_local FiberPool pool;
        const unsigned long long blocks = 1ull * g.x * g.y * g.z;
        if (!pool.reserve(per_block)) {
            record(2, "the twin could not map fiber stacks for a block");
            t_host_abort = nullptr;
            t_grid_abort = nullptr;
            return;
        }
        // Each fiber's jump buffer lives on its own stack, so a fault jumps back within the stack it happened on.
        auto run_fiber = [&]() {
            sigjmp_buf jb;
            Fiber& self = t_block->fibers[t_block->current];
            if (sigsetjmp(jb, 0) != 0) {
                self.fault_jmp = nullptr;
                record(700, fault_message());
                return;
            }
            self.fault_jmp = &jb;
            t_fault_jmp = &jb;
            run_thread();
            t_fault_jmp = nullptr;
            self.fault_jmp = nullptr;
        };
        struct Ctx {
            decltype(run_fiber)* run;
        } state{&run_fiber};
        BlockRun run{};
        run.fibers = pool.fibers.data();
        run.kernel_state = &state;
        run.body = [](BlockRun* r) { (*static_cast<Ctx*>(r->kernel_state)->run)(); };
        for (;;) {
            if (grid_abort.load(std::memory_order_relaxed) != 0 || __atomic_load_n(host_abort, __ATOMIC_RELAXED) != 0) {
                break;
            }
            const unsigned long long blk = next.fetch_add(1);
            if (blk >= blocks) {
                break;
            }
            blockIdx = uint3{static_cast<unsigned int>(blk % g.x), static_cast<unsigned int>((blk / g.x) % g.y),
                             static_cast<unsigned int>(blk / (1ull * g.x * g.y))};
            for (unsigned long long t = 0; t < per_block; ++t) {
                Fiber& f = run.fibers[t];
                f.tid = uint3{static_cast<unsigned int>(t % b.x), static_cast<unsigned int>((t / b.x) % b.y),
                              static_cast<unsigned int>(t / (1ull * b.x * b.y))};
                f.state = kRunnable;
                f.fault_jmp = nullptr;
                getcontext(&f.ctx);
                f.ctx.uc_stack.ss_sp = pool.stacks + t * kFiberStack;
                f.ctx.uc_stack.ss_size = kFiberStack;
                f.ctx.uc_link = nullptr;
                makecontext(&f.ctx, fiber_entry, 0);
            }
            t_block = &run;
            // Round robin: run every runnable fiber until it finishes or reaches the barrier; when none is left
            // runnable, release the barrier (threads that exited count as arrived, as on sm_70+).
            for (;;) {
                bool waiting = false;
                for (unsigned long long t = 0; t < per_block; ++t) {
                    Fiber& f = run.fibers[t];
                    if (f.state != kRunnable) {
                        waiting = waiting || f.state == kAtBarrier;
                        continue;
                    }
                    run.current = static_cast<unsigned int>(t);
                    threadIdx = f.tid;
                    t_fault_jmp = f.fault_jmp;  // a fiber resumed after the barrier: its own buffer again
                    swapcontext(&run.sched, &f.ctx);
                    t_fault_jmp = nullptr;
                    waiting = waiting || f.state == kAtBarrier;
                }
                if (!waiting || grid_abort.load(std::memory_order_relaxed) != 0) {
                    break;  // all done, or a fault: the fibers still at the barrier are abandoned
                }
                for (unsigned long long t = 0; t < per_block; ++t) {
                    if (run.fibers[t].state == kAtBarrier) {
                        run.fibers[t].state = kRunnable;
                    }
                }
            }
            t_block = nullptr;
        }
        t_host_abort = nullptr;
        t_grid_abort = nullptr;
    };
    auto work = [&]() {
        t_host_abort = host_abort;
        t_grid_abort = &grid_abort;
        blockDim = b;
        gridDim = g;
        sigjmp_buf jb;
        // One jump buffer per runner thread, not per CUDA thread: a fault ends the whole grid anyway.
        if (sigsetjmp(jb, 0) != 0) {
            record(700, fault_message());
            t_host_abort = nullptr;
            t_grid_abort = nullptr;
            return;
        }
        t_fault_jmp = &jb;
        for (;;) {
            if (grid_abort.load(std::memory_order_relaxed) != 0 || __atomic_load_n(host_abort, __ATOMIC_RELAXED) != 0) {
                break;
            }
            const unsigned long long idx = next.fetch_add(1);
            if (idx >= total) {
                break;
            }
            const unsigned long long t = idx % per_block;
            const unsigned long long blk = idx / per_block;
            threadIdx = uint3{static_cast<unsigned int>(t % b.x), static_cast<unsigned int>((t / b.x) % b.y),
                              static_cast<unsigned int>(t / (1ull * b.x * b.y))};
            blockIdx = uint3{static_cast<unsigned int>(blk % g.x), static_cast<unsigned int>((blk / g.x) % g.y),
                             static_cast<unsigned int>(blk / (1ull * g.x * g.y))};
            run_thread();
        }
        t_fault_jmp = nullptr;
        t_host_abort = nullptr;
        t_grid_abort = nullptr;
    };
    const bool fibers = Barriers && per_block > 1;
    const unsigned long long units = fibers ? total / per_block : total;
    const unsigned long long want = std::min<unsigned long long>(units, max_workers == 0 ? 1u : max_workers);
    std::vector<std::thread> pool;
    for (unsigned long long i = 1; i < want; ++i) {
        try {
            if (fibers) {
                pool.emplace_back(block_work);
            } else {
                pool.emplace_back(work);
            }
        } catch (const std::system_error&) {
            break;  // fewer OS threads than asked: the grid still runs, with less concurrency
        }
    }
    if (fibers) {
        block_work();
    } else {
        work();
    }
    for (auto& th : pool) {
        th.join();
    }
    if (code != 0 && err != nullptr && errlen > 0) {
        std::snprintf(err, errlen, "%s", msg.c_str());
    }
    return code;
}

}  // namespace vrrl_twin
