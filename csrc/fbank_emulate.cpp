// The CUDA kernel's thread blocks run on the CPU, for tests on machines without a GPU: the kernel's own
// CTA body and launch geometry (fbank_kernel.h), one std::thread per CUDA thread of a block (64 per
// frame slot), a real barrier for __syncthreads. Blocks run one after another, so it is slow (about a
// second per 10 s clip) but it exercises what only the GPU would otherwise run: thread indexing, barrier
// placement, the shared-memory layout (filled with NaN before each block, as uninitialised shared memory
// would be garbage), padding and cropping rows, the clip grid-stride loop. Its output must equal
// astedge_fbank_host_run bit for bit: the per-frame arithmetic does not depend on the thread count.
#include <algorithm>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "fbank_common.h"

using namespace astedge_fbank;

namespace {

// A reusable barrier (std::barrier is C++20; this library builds as C++17).
class Barrier {
public:
    explicit Barrier(int count) : count_(count), waiting_(count) {}

    void arrive_and_wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        const unsigned long generation = generation_;
        if (--waiting_ == 0) {
            waiting_ = count_;
            ++generation_;
            wake_.notify_all();
            return;
        }
        wake_.wait(lock, [&] { return generation != generation_; });
    }

private:
    std::mutex mutex_;
    std::condition_variable wake_;
    const int count_;
    int waiting_;
    unsigned long generation_ = 0;
};

struct EmulatedGroup {
    int lane;
    Barrier* barrier;
    int rank() const { return lane; }
    int size() const { return kFrameThreads; }
    void sync() const { barrier->arrive_and_wait(); }
};

}  // namespace

extern "C" int astedge_fbank_emulate_run(const astedge_fbank_config* config, const float* input, float* output,
                                         int32_t batch, int64_t samples, int32_t max_grid_y) {
    int status = validate(config);
    if (status != ASTEDGE_FBANK_OK) return status;
    if (max_grid_y < 1 || max_grid_y > kMaxGridY)
        return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "max_grid_y must be in 1.." + std::to_string(kMaxGridY));
    std::vector<Complex> table;
    Launch p{};
    status = make_launch(*config, host_spec(*config, table), input, output, batch, samples, &p);
    if (status != ASTEDGE_FBANK_OK || batch == 0) return status;

    const Geometry shape = geometry(config->n_fft, p.rows, batch, max_grid_y);
    std::vector<float> shared(shape.shared_bytes / sizeof(float));
    const int threads = kFrameThreads * shape.frames_per_block;
    Barrier barrier(threads);
    // Threads start together once all exist; if one cannot be created the others leave without running.
    std::mutex gate_mutex;
    std::condition_variable gate;
    enum { kWait, kGo, kAbort } state = kWait;

    auto cuda_thread = [&](int tid) {
        {
            std::unique_lock<std::mutex> lock(gate_mutex);
            gate.wait(lock, [&] { return state != kWait; });
            if (state == kAbort) return;
        }
        const EmulatedGroup group{tid % kFrameThreads, &barrier};
        const int slot = tid / kFrameThreads;  // threadIdx.y
        for (int block_y = 0; block_y < shape.grid_y; ++block_y)
            for (int block_x = 0; block_x < shape.grid_x; ++block_x) {
                if (tid == 0) std::fill(shared.begin(), shared.end(), std::numeric_limits<float>::quiet_NaN());
                barrier.arrive_and_wait();
                fbank_cta(group, p, block_x, block_y, shape.grid_y, slot, shape.frames_per_block, shared.data());
                barrier.arrive_and_wait();  // the block retires before the next one takes the shared memory
            }
    };
    std::vector<std::thread> pool;
    pool.reserve(threads);
    try {
        for (int tid = 0; tid < threads; ++tid) pool.emplace_back(cuda_thread, tid);
    } catch (const std::system_error& err) {
        status = fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, std::string("cannot start the emulated block: ") + err.what());
    }
    {
        std::lock_guard<std::mutex> lock(gate_mutex);
        state = status == ASTEDGE_FBANK_OK ? kGo : kAbort;
    }
    gate.notify_all();
    for (std::thread& thread : pool) thread.join();
    return status == ASTEDGE_FBANK_OK ? ok() : status;
}
