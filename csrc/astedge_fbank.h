/* astedge_fbank: AST's Kaldi log-mel filter banks as one fused CUDA kernel, behind a small C API.
 *
 * The computation is astedge.features.model_input (or .fbank): snip_edges framing, per-frame DC
 * removal, pre-emphasis, Hann window, 512-point power spectrum, sparse mel projection, log with the
 * float32-epsilon floor, then optionally pad/crop to target_length and (v - mean) / (2 std).
 *
 * The window table and the mel weights are inputs, not constants baked in here: the Python side
 * passes astedge.features.window() and mel_filterbank() (as CSR), so the feature configuration has
 * one home. A plan copies them to the device once.
 *
 * Threading: a plan may run on several streams at once through astedge_fbank_run_device (it only
 * reads the plan); astedge_fbank_run_host reuses plan-owned staging buffers, so one thread at a time.
 *
 * Streams: this header needs no CUDA headers, streams are passed as void* (a cudaStream_t or a driver
 * API CUstream: the two are the same handle). The library never picks the legacy default stream itself:
 * astedge_fbank_run_host given NULL runs on the plan's own non-blocking stream, and astedge_fbank_run_device
 * launches on exactly the stream it is given (0 there is the caller's choice, e.g. torch's default stream).
 * Runtime calls use the calling thread's current context, i.e. the device's primary context, which is also
 * what the driver API's cuDevicePrimaryCtxRetain returns: a plan made under either serves both.
 */
#ifndef ASTEDGE_FBANK_H
#define ASTEDGE_FBANK_H

#include <stdint.h>

#if defined(_WIN32)
#define ASTEDGE_FBANK_API __declspec(dllexport)
#else
#define ASTEDGE_FBANK_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever astedge_fbank_config or a signature changes; the Python binding checks it. */
#define ASTEDGE_FBANK_ABI_VERSION 2

typedef enum astedge_fbank_status {
    ASTEDGE_FBANK_OK = 0,
    ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT = 1, /* null pointer, negative size, malformed table */
    ASTEDGE_FBANK_ERROR_UNSUPPORTED = 2,      /* a configuration the kernel does not handle (n_fft) */
    ASTEDGE_FBANK_ERROR_TOO_SHORT = 3,        /* fewer samples than one window */
    ASTEDGE_FBANK_ERROR_NO_DEVICE = 4,        /* no CUDA device or no (new enough) driver */
    ASTEDGE_FBANK_ERROR_WRONG_DEVICE = 5,     /* the current device is not the plan's */
    ASTEDGE_FBANK_ERROR_OUT_OF_MEMORY = 6,
    ASTEDGE_FBANK_ERROR_CUDA = 7              /* any other CUDA runtime error; see astedge_fbank_last_error */
} astedge_fbank_status;

typedef struct astedge_fbank_config {
    int32_t sample_rate;    /* Hz; informational (the tables encode it) */
    int32_t window_size;    /* samples per frame (400) */
    int32_t window_shift;   /* samples between frames (160) */
    int32_t n_fft;          /* power of two >= window_size, 8..4096 (512) */
    int32_t num_mel_bins;   /* rows of the mel matrix (128) */
    int32_t target_length;  /* output rows: pad with zero rows / crop; <= 0 keeps every frame */
    int32_t normalize;      /* nonzero: (v - mean) / (2 std), pad rows included */
    float preemphasis;      /* 0.97 */
    double mean;            /* normalization statistics, rounded to float32 as numpy does */
    double std;
    const float* window;        /* [window_size] host pointer: astedge.features.window() */
    const int32_t* mel_indptr;  /* [num_mel_bins + 1] CSR row pointers of mel_filterbank() */
    const int32_t* mel_indices; /* [nnz] FFT bins in 0..n_fft/2, ascending within a row */
    const float* mel_weights;   /* [nnz] */
} astedge_fbank_config;

typedef struct astedge_fbank_plan astedge_fbank_plan;

ASTEDGE_FBANK_API int astedge_fbank_abi_version(void);
/* A static description of a status code ("invalid argument", ...). */
ASTEDGE_FBANK_API const char* astedge_fbank_error_string(int status);
/* Details of the last failure in the calling thread (e.g. the CUDA error), "" if none. */
ASTEDGE_FBANK_API const char* astedge_fbank_last_error(void);

/* Validates the config, selects nothing: the plan belongs to the current CUDA device. */
ASTEDGE_FBANK_API int astedge_fbank_create(const astedge_fbank_config* config, astedge_fbank_plan** plan);
ASTEDGE_FBANK_API int astedge_fbank_destroy(astedge_fbank_plan* plan);

/* Rows of one clip's output for `samples` input samples (target_length, or the frame count). */
ASTEDGE_FBANK_API int astedge_fbank_output_rows(const astedge_fbank_plan* plan, int64_t samples, int32_t* rows);

/* Device buffers: input [batch, samples] float32, output [batch, rows, num_mel_bins] float32.
 * One kernel launch on `stream`; no allocation, no synchronization: safe to capture in a CUDA graph.
 * batch == 0 is a no-op. Launch errors are returned; execution errors surface at the next sync. */
ASTEDGE_FBANK_API int astedge_fbank_run_device(const astedge_fbank_plan* plan, const float* input, float* output,
                                               int32_t batch, int64_t samples, void* stream);

/* Host buffers, same shapes: copy in, launch, copy out, wait for `stream` (NULL: the plan's own
 * non-blocking stream). Not for graph capture. The work is split into chunks (whole clips, or row ranges
 * of one long clip) whose device staging fits the plan's staging limit, so a 1 h file does not keep
 * hundreds of MB of device memory; staging above the limit (a single clip bigger than it) is freed
 * before returning. Only the samples that make output rows are copied (a cropped clip's tail is not).
 * The wait is a blocking-sync event: the calling thread sleeps instead of spinning a core. */
ASTEDGE_FBANK_API int astedge_fbank_run_host(astedge_fbank_plan* plan, const float* input, float* output,
                                             int32_t batch, int64_t samples, void* stream);

/* The staging limit in bytes (input + output device buffers of astedge_fbank_run_host); <= 0 restores
 * the default, ASTEDGE_FBANK_DEFAULT_STAGING_BYTES. Frees the staging buffers when they exceed it. */
#define ASTEDGE_FBANK_DEFAULT_STAGING_BYTES (32ll << 20)
ASTEDGE_FBANK_API int astedge_fbank_set_staging_limit(astedge_fbank_plan* plan, int64_t bytes);
/* Device bytes the plan's staging buffers hold now. */
ASTEDGE_FBANK_API int astedge_fbank_staging_bytes(const astedge_fbank_plan* plan, int64_t* bytes);

/* The same per-frame arithmetic compiled for the CPU (libastedge_fbank_host, no CUDA needed): the
 * output of astedge_fbank_run_host without a plan. For tests and for machines without a GPU. */
ASTEDGE_FBANK_API int astedge_fbank_host_run(const astedge_fbank_config* config, const float* input, float* output,
                                             int32_t batch, int64_t samples);

/* astedge_fbank_run_host's chunking on the CPU (libastedge_fbank_host, tests only): the same chunk plan
 * with memcpy for the copies and host buffers for the staging, which never hold more than `limit_bytes`
 * unless one clip alone needs more. Reports the largest staging held and the number of chunks. Equals
 * astedge_fbank_host_run bit for bit. */
ASTEDGE_FBANK_API int astedge_fbank_host_run_staged(const astedge_fbank_config* config, const float* input,
                                                    float* output, int32_t batch, int64_t samples,
                                                    int64_t limit_bytes, int64_t* peak_bytes, int32_t* chunks);

/* The CUDA kernel's thread blocks emulated on the CPU (libastedge_fbank_host, tests only): its CTA body
 * and launch geometry with one thread per CUDA thread and a barrier for __syncthreads, blocks one at a
 * time, gridDim.y capped at max_grid_y (65535 on the GPU; smaller to exercise the grid-stride loop).
 * Equals astedge_fbank_host_run bit for bit. */
ASTEDGE_FBANK_API int astedge_fbank_emulate_run(const astedge_fbank_config* config, const float* input, float* output,
                                                int32_t batch, int64_t samples, int32_t max_grid_y);

#ifdef __cplusplus
}
#endif

#endif /* ASTEDGE_FBANK_H */
