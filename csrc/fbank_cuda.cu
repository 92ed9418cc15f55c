// libastedge_fbank: the whole feature pipeline as one kernel launch per batch.
//
// Grid: x = output rows / frames_per_block, y = clips (grid-stride beyond 65535). Block: 64 threads per
// frame (x) times frames_per_block frames (y), each frame with its own shared-memory scratch; the CTA's
// body is fbank_kernel.h, which the CPU emulation (fbank_emulate.cpp) runs too. A frame's
// arithmetic depends only on its own samples (fbank_frame.h), so results are deterministic and the same
// for a frame whatever the batch size or its position. No atomics, no allocation, no host sync in
// astedge_fbank_run_device: it can be captured in a CUDA graph.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "fbank_common.h"
#include "fbank_kernel.h"

using namespace astedge_fbank;

namespace {

struct DeviceGroup {
    __device__ int rank() const { return threadIdx.x; }
    __device__ int size() const { return kFrameThreads; }
    // All frames of a CTA run the same barrier sequence, so a block-wide barrier serves each of them.
    __device__ void sync() const { __syncthreads(); }
};

__global__ void __launch_bounds__(kFrameThreads * kMaxFramesPerBlock) fbank_kernel(const Launch p) {
    extern __shared__ __align__(16) float shared[];
    fbank_cta(DeviceGroup{}, p, blockIdx.x, blockIdx.y, gridDim.y, threadIdx.y, blockDim.y, shared);
}

int cuda_status(cudaError_t error, const char* what) {
    if (error == cudaSuccess) return ok();
    const std::string detail = std::string(what) + ": " + cudaGetErrorName(error) + ": " + cudaGetErrorString(error);
    switch (error) {
        case cudaErrorInsufficientDriver: {  // also what the runtime says when there is no driver at all
            int runtime = 0;
            cudaRuntimeGetVersion(&runtime);
            return fail(ASTEDGE_FBANK_ERROR_NO_DEVICE,
                        detail + " (no NVIDIA driver, or one older than this library's CUDA " +
                            std::to_string(runtime / 1000) + "." + std::to_string(runtime % 1000 / 10) + " runtime)");
        }
        case cudaErrorNoDevice:
        case cudaErrorInitializationError:
        case cudaErrorSystemDriverMismatch:
        case cudaErrorCompatNotSupportedOnDevice:
            return fail(ASTEDGE_FBANK_ERROR_NO_DEVICE, detail);
        case cudaErrorMemoryAllocation:
            return fail(ASTEDGE_FBANK_ERROR_OUT_OF_MEMORY, detail);
        case cudaErrorNoKernelImageForDevice:
        case cudaErrorInvalidDeviceFunction:
            return fail(ASTEDGE_FBANK_ERROR_UNSUPPORTED,
                        detail + " (the library has no code for this GPU: rebuild with CMAKE_CUDA_ARCHITECTURES "
                                 "including its compute capability)");
        default:
            return fail(ASTEDGE_FBANK_ERROR_CUDA, detail);
    }
}

size_t align16(size_t bytes) { return (bytes + 15) & ~static_cast<size_t>(15); }

}  // namespace

struct astedge_fbank_plan {
    astedge_fbank_config config{};  // table pointers cleared: the tables live in `tables`
    int device = -1;
    void* tables = nullptr;         // window, twiddles, CSR in one device allocation
    Spec spec{};
    cudaStream_t stream = nullptr;  // run_host's stream when the caller gives none (non-blocking)
    cudaEvent_t done = nullptr;     // run_host waits on it: a blocking-sync event sleeps instead of spinning
    float* staging_in = nullptr;    // run_host's device buffers: the largest chunk's needs, capped
    float* staging_out = nullptr;
    size_t staging_in_count = 0, staging_out_count = 0;
    int64_t staging_limit = ASTEDGE_FBANK_DEFAULT_STAGING_BYTES;
};

namespace {

void free_staging(astedge_fbank_plan* plan) {
    cudaFree(plan->staging_in);
    cudaFree(plan->staging_out);
    plan->staging_in = plan->staging_out = nullptr;
    plan->staging_in_count = plan->staging_out_count = 0;
}

int64_t staging_bytes(const astedge_fbank_plan* plan) {
    return static_cast<int64_t>(sizeof(float) * (plan->staging_in_count + plan->staging_out_count));
}

// Grows one staging buffer to exactly `need` floats (never keeps a bigger one than the limit allows).
int grow(float** buffer, size_t* have, size_t need, const char* what) {
    if (*have >= need) return ok();
    cudaFree(*buffer);
    *buffer = nullptr;
    *have = 0;
    const int result = cuda_status(cudaMalloc(reinterpret_cast<void**>(buffer), need * sizeof(float)), what);
    if (result == ASTEDGE_FBANK_OK) *have = need;
    return result;
}

}  // namespace

extern "C" {

int astedge_fbank_create(const astedge_fbank_config* config, astedge_fbank_plan** plan) {
    if (plan == nullptr) return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "plan is null");
    *plan = nullptr;
    int status = validate(config);
    if (status != ASTEDGE_FBANK_OK) return status;

    int count = 0, device = 0;
    if ((status = cuda_status(cudaGetDeviceCount(&count), "cudaGetDeviceCount")) != ASTEDGE_FBANK_OK) return status;
    if (count == 0) return fail(ASTEDGE_FBANK_ERROR_NO_DEVICE, "no CUDA device");
    if ((status = cuda_status(cudaGetDevice(&device), "cudaGetDevice")) != ASTEDGE_FBANK_OK) return status;
    // Fails here, not at the first run, when the library has no code for this GPU's architecture.
    cudaFuncAttributes attributes;
    if ((status = cuda_status(cudaFuncGetAttributes(&attributes, fbank_kernel), "cudaFuncGetAttributes")) != ASTEDGE_FBANK_OK)
        return status;

    // Pack the tables host-side, then one allocation and one copy.
    const int n = config->n_fft, nnz = mel_nonzeros(*config), bins = config->num_mel_bins;
    const std::vector<Complex> table = twiddles(n);
    const size_t off_twiddle = 0;
    const size_t off_window = align16(off_twiddle + sizeof(Complex) * n);
    const size_t off_indptr = align16(off_window + sizeof(float) * config->window_size);
    const size_t off_indices = align16(off_indptr + sizeof(int) * (bins + 1));
    const size_t off_weights = align16(off_indices + sizeof(int) * nnz);
    const size_t total = align16(off_weights + sizeof(float) * nnz);
    std::vector<unsigned char> host(total, 0);
    std::copy_n(reinterpret_cast<const unsigned char*>(table.data()), sizeof(Complex) * n, host.data() + off_twiddle);
    std::copy_n(reinterpret_cast<const unsigned char*>(config->window), sizeof(float) * config->window_size, host.data() + off_window);
    std::copy_n(reinterpret_cast<const unsigned char*>(config->mel_indptr), sizeof(int) * (bins + 1), host.data() + off_indptr);
    if (nnz > 0) {
        std::copy_n(reinterpret_cast<const unsigned char*>(config->mel_indices), sizeof(int) * nnz, host.data() + off_indices);
        std::copy_n(reinterpret_cast<const unsigned char*>(config->mel_weights), sizeof(float) * nnz, host.data() + off_weights);
    }

    auto* p = new astedge_fbank_plan;
    p->config = *config;
    p->config.window = nullptr;
    p->config.mel_indptr = p->config.mel_indices = nullptr;
    p->config.mel_weights = nullptr;
    p->device = device;
    status = cuda_status(cudaMalloc(&p->tables, total), "cudaMalloc(tables)");
    if (status == ASTEDGE_FBANK_OK)
        status = cuda_status(cudaMemcpy(p->tables, host.data(), total, cudaMemcpyHostToDevice), "cudaMemcpy(tables)");
    if (status == ASTEDGE_FBANK_OK)  // run_host's default: never the legacy default stream
        status = cuda_status(cudaStreamCreateWithFlags(&p->stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    if (status == ASTEDGE_FBANK_OK)  // whatever the context's scheduling flags, waiting on it does not spin a core
        status = cuda_status(cudaEventCreateWithFlags(&p->done, cudaEventBlockingSync | cudaEventDisableTiming),
                             "cudaEventCreateWithFlags");
    if (status != ASTEDGE_FBANK_OK) {
        if (p->stream != nullptr) cudaStreamDestroy(p->stream);
        cudaFree(p->tables);
        delete p;
        return status;
    }
    auto* base = static_cast<unsigned char*>(p->tables);
    p->spec = scalars(*config);
    p->spec.twiddle = reinterpret_cast<const Complex*>(base + off_twiddle);
    p->spec.window = reinterpret_cast<const float*>(base + off_window);
    p->spec.mel_indptr = reinterpret_cast<const int*>(base + off_indptr);
    p->spec.mel_indices = reinterpret_cast<const int*>(base + off_indices);
    p->spec.mel_weights = reinterpret_cast<const float*>(base + off_weights);
    *plan = p;
    return ok();
}

int astedge_fbank_destroy(astedge_fbank_plan* plan) {
    if (plan == nullptr) return ok();
    if (plan->stream != nullptr) cudaStreamSynchronize(plan->stream);
    free_staging(plan);
    cudaFree(plan->tables);
    if (plan->done != nullptr) cudaEventDestroy(plan->done);
    if (plan->stream != nullptr) cudaStreamDestroy(plan->stream);
    delete plan;
    return ok();
}

int astedge_fbank_output_rows(const astedge_fbank_plan* plan, int64_t samples, int32_t* rows) {
    if (plan == nullptr || rows == nullptr) return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "plan and rows are required");
    return count_rows(plan->config, samples, rows);
}

int astedge_fbank_run_device(const astedge_fbank_plan* plan, const float* input, float* output, int32_t batch,
                             int64_t samples, void* stream) {
    if (plan == nullptr) return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "plan is null");
    Launch launch{};
    int status = make_launch(plan->config, plan->spec, input, output, batch, samples, &launch);
    if (status != ASTEDGE_FBANK_OK || batch == 0) return status;
    int device = -1;
    if ((status = cuda_status(cudaGetDevice(&device), "cudaGetDevice")) != ASTEDGE_FBANK_OK) return status;
    if (device != plan->device)
        return fail(ASTEDGE_FBANK_ERROR_WRONG_DEVICE, "plan made on device " + std::to_string(plan->device) +
                                                          ", current device is " + std::to_string(device));
    const Geometry shape = geometry(plan->config.n_fft, launch.rows, batch);
    const dim3 grid(shape.grid_x, shape.grid_y), block(kFrameThreads, shape.frames_per_block);
    fbank_kernel<<<grid, block, shape.shared_bytes, static_cast<cudaStream_t>(stream)>>>(launch);
    return cuda_status(cudaGetLastError(), "fbank_kernel launch");
}

int astedge_fbank_run_host(astedge_fbank_plan* plan, const float* input, float* output, int32_t batch, int64_t samples,
                           void* stream) {
    if (plan == nullptr) return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "plan is null");
    Launch launch{};
    int status = make_launch(plan->config, plan->spec, input, output, batch, samples, &launch);
    if (status != ASTEDGE_FBANK_OK || batch == 0) return status;
    std::vector<Chunk> chunks;
    int64_t in_floats = 0, out_floats = 0;
    status = plan_chunks(plan->config, batch, samples, plan->staging_limit / static_cast<int64_t>(sizeof(float)), &chunks,
                         &in_floats, &out_floats);
    if (status != ASTEDGE_FBANK_OK) return status;
    if ((status = grow(&plan->staging_in, &plan->staging_in_count, static_cast<size_t>(in_floats), "cudaMalloc(input)")) !=
            ASTEDGE_FBANK_OK ||
        (status = grow(&plan->staging_out, &plan->staging_out_count, static_cast<size_t>(out_floats), "cudaMalloc(output)")) !=
            ASTEDGE_FBANK_OK) {
        free_staging(plan);
        return status;
    }
    const auto s = stream != nullptr ? static_cast<cudaStream_t>(stream) : plan->stream;
    const size_t bins = static_cast<size_t>(plan->config.num_mel_bins), f = sizeof(float);
    for (const Chunk& chunk : chunks) {
        if (status != ASTEDGE_FBANK_OK) break;
        // Only the samples that make this chunk's rows; one 2-D copy for its clips (rows of `span` samples).
        status = cuda_status(cudaMemcpy2DAsync(plan->staging_in, chunk.span * f, input + chunk.clip0 * samples + chunk.sample0,
                                               samples * f, chunk.span * f, chunk.clips, cudaMemcpyHostToDevice, s),
                             "cudaMemcpy2DAsync(input)");
        if (status == ASTEDGE_FBANK_OK)
            status = astedge_fbank_run_device(plan, plan->staging_in, plan->staging_out, chunk.clips, chunk.span, s);
        if (status == ASTEDGE_FBANK_OK)
            status = cuda_status(cudaMemcpy2DAsync(output + (chunk.clip0 * launch.rows + chunk.row0) * bins, launch.rows * bins * f,
                                                   plan->staging_out, chunk.rows * bins * f, chunk.rows * bins * f, chunk.clips,
                                                   cudaMemcpyDeviceToHost, s),
                                 "cudaMemcpy2DAsync(output)");
    }
    int synced = cuda_status(cudaEventRecord(plan->done, s), "cudaEventRecord");
    synced = synced == ASTEDGE_FBANK_OK ? cuda_status(cudaEventSynchronize(plan->done), "cudaEventSynchronize")
                                        : cuda_status(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    if (status == ASTEDGE_FBANK_OK) status = synced;
    if (staging_bytes(plan) > plan->staging_limit) free_staging(plan);  // one clip alone was bigger: do not keep it
    return status;
}

int astedge_fbank_set_staging_limit(astedge_fbank_plan* plan, int64_t bytes) {
    if (plan == nullptr) return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "plan is null");
    plan->staging_limit = bytes > 0 ? bytes : ASTEDGE_FBANK_DEFAULT_STAGING_BYTES;
    if (staging_bytes(plan) > plan->staging_limit) {
        if (plan->stream != nullptr) cudaStreamSynchronize(plan->stream);
        free_staging(plan);
    }
    return ok();
}

int astedge_fbank_staging_bytes(const astedge_fbank_plan* plan, int64_t* bytes) {
    if (plan == nullptr || bytes == nullptr) return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "plan and bytes are required");
    *bytes = staging_bytes(plan);
    return ok();
}

}  // extern "C"
