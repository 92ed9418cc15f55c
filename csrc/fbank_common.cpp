#include "fbank_common.h"

#include <cmath>

namespace astedge_fbank {

namespace {
thread_local std::string last_error;
}

int fail(int status, const std::string& detail) {
    last_error = detail;
    return status;
}

int ok() {
    last_error.clear();
    return ASTEDGE_FBANK_OK;
}

int validate(const astedge_fbank_config* c) {
    if (c == nullptr) return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "config is null");
    if (c->window_size < 2) return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "window_size must be >= 2");
    if (c->window_shift < 1) return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "window_shift must be >= 1");
    if (c->num_mel_bins < 1) return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "num_mel_bins must be >= 1");
    if (c->n_fft < 8 || c->n_fft > 4096 || (c->n_fft & (c->n_fft - 1)) != 0)
        return fail(ASTEDGE_FBANK_ERROR_UNSUPPORTED, "n_fft must be a power of two in 8..4096, got " + std::to_string(c->n_fft));
    if (c->window_size > c->n_fft) return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "window_size exceeds n_fft");
    if (c->normalize && !(c->std > 0.0)) return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "std must be > 0 to normalize");
    if (c->window == nullptr || c->mel_indptr == nullptr)
        return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "window and mel_indptr are required");
    if (c->mel_indptr[0] != 0) return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "mel_indptr[0] must be 0");
    for (int m = 0; m < c->num_mel_bins; ++m)
        if (c->mel_indptr[m + 1] < c->mel_indptr[m])
            return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "mel_indptr must be non-decreasing");
    const int nnz = mel_nonzeros(*c);
    if (nnz > 0 && (c->mel_indices == nullptr || c->mel_weights == nullptr))
        return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "mel_indices and mel_weights are required");
    for (int i = 0; i < nnz; ++i)
        if (c->mel_indices[i] < 0 || c->mel_indices[i] > c->n_fft / 2)
            return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "mel index out of 0..n_fft/2 at " + std::to_string(i));
    return ok();
}

std::vector<Complex> twiddles(int n_fft) {
    std::vector<Complex> table(n_fft);
    const double step = 2.0 * 3.14159265358979323846 / n_fft;
    for (int k = 0; k < n_fft; ++k)
        table[k] = {static_cast<float>(std::cos(step * k)), static_cast<float>(-std::sin(step * k))};
    return table;
}

int count_frames(const astedge_fbank_config& c, int64_t samples, int32_t* frames) {
    if (samples < c.window_size)
        return fail(ASTEDGE_FBANK_ERROR_TOO_SHORT, std::to_string(samples) + " samples is shorter than one window of " +
                                                       std::to_string(c.window_size));
    const int64_t count = 1 + (samples - c.window_size) / c.window_shift;
    if (count > INT32_MAX) return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "too many frames in one clip");
    *frames = static_cast<int32_t>(count);
    return ok();
}

int count_rows(const astedge_fbank_config& c, int64_t samples, int32_t* rows) {
    int32_t frames = 0;
    const int status = count_frames(c, samples, &frames);
    if (status != ASTEDGE_FBANK_OK) return status;
    *rows = c.target_length > 0 ? c.target_length : frames;
    return ok();
}

int make_launch(const astedge_fbank_config& c, const Spec& spec, const float* input, float* output, int32_t batch,
                int64_t samples, Launch* launch) {
    if (batch < 0) return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "batch must be >= 0");
    *launch = Launch{};
    int status = count_frames(c, samples, &launch->frames);
    if (status == ASTEDGE_FBANK_OK) status = count_rows(c, samples, &launch->rows);
    if (status != ASTEDGE_FBANK_OK || batch == 0) return status;
    if (input == nullptr || output == nullptr)
        return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "input and output are required");
    launch->spec = spec;
    launch->input = input;
    launch->output = output;
    launch->batch = batch;
    launch->samples = samples;
    return ok();
}

int plan_chunks(const astedge_fbank_config& c, int32_t batch, int64_t samples, int64_t limit_floats,
                std::vector<Chunk>* chunks, int64_t* in_floats, int64_t* out_floats) {
    int32_t frames = 0, rows = 0;
    int status = count_frames(c, samples, &frames);
    if (status == ASTEDGE_FBANK_OK) status = count_rows(c, samples, &rows);
    if (status != ASTEDGE_FBANK_OK) return status;
    chunks->clear();
    *in_floats = *out_floats = 0;
    const int64_t shift = c.window_shift, window = c.window_size, bins = c.num_mel_bins;
    const int64_t used = frames < rows ? frames : rows;         // frames that make output rows
    const int64_t span = (used - 1) * shift + window;           // the samples they read
    const int64_t per_clip = span + static_cast<int64_t>(rows) * bins;
    auto add = [&](const Chunk& chunk) {
        chunks->push_back(chunk);
        const int64_t in = chunk.clips * chunk.span, out = chunk.clips * static_cast<int64_t>(chunk.rows) * bins;
        if (in > *in_floats) *in_floats = in;
        if (out > *out_floats) *out_floats = out;
    };
    if (per_clip <= limit_floats || c.target_length > 0) {
        // Whole clips, as many as fit (at least one: a padded/cropped clip is bounded by target_length).
        int64_t per_chunk = per_clip <= limit_floats ? limit_floats / per_clip : 1;
        if (per_chunk > batch) per_chunk = batch;
        for (int64_t clip = 0; clip < batch; clip += per_chunk) {
            const int64_t clips = batch - clip < per_chunk ? batch - clip : per_chunk;
            add({clip, static_cast<int32_t>(clips), 0, rows, 0, span});
        }
        return ok();
    }
    // Raw log-mel of long clips: row ranges. m rows read (m - 1) * shift + window samples.
    int64_t step = (limit_floats - (window - shift)) / (shift + bins);
    if (step < 1) step = 1;
    for (int64_t clip = 0; clip < batch; ++clip)
        for (int64_t row = 0; row < rows; row += step) {
            const int64_t count = rows - row < step ? rows - row : step;
            add({clip, 1, static_cast<int32_t>(row), static_cast<int32_t>(count), row * shift, (count - 1) * shift + window});
        }
    return ok();
}

Spec scalars(const astedge_fbank_config& c) {
    Spec s{};
    s.window_size = c.window_size;
    s.window_shift = c.window_shift;
    s.n_fft = c.n_fft;
    s.num_mel_bins = c.num_mel_bins;
    s.preemphasis = c.preemphasis;
    s.normalize = c.normalize != 0;
    // As numpy: np.float32(mean), np.float32(std * 2), pad = (0 - mean) / scale in float32.
    s.mean = static_cast<float>(c.mean);
    s.scale = static_cast<float>(c.std * 2.0);
    s.pad_value = s.normalize ? div(sub(0.0f, s.mean), s.scale) : 0.0f;
    return s;
}

Spec host_spec(const astedge_fbank_config& config, std::vector<Complex>& table) {
    table = twiddles(config.n_fft);
    Spec spec = scalars(config);
    spec.window = config.window;
    spec.twiddle = table.data();
    spec.mel_indptr = config.mel_indptr;
    spec.mel_indices = config.mel_indices;
    spec.mel_weights = config.mel_weights;
    return spec;
}

}  // namespace astedge_fbank

extern "C" {

int astedge_fbank_abi_version(void) { return ASTEDGE_FBANK_ABI_VERSION; }

const char* astedge_fbank_error_string(int status) {
    switch (status) {
        case ASTEDGE_FBANK_OK: return "success";
        case ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT: return "invalid argument";
        case ASTEDGE_FBANK_ERROR_UNSUPPORTED: return "unsupported configuration";
        case ASTEDGE_FBANK_ERROR_TOO_SHORT: return "audio shorter than one frame";
        case ASTEDGE_FBANK_ERROR_NO_DEVICE: return "no usable CUDA device";
        case ASTEDGE_FBANK_ERROR_WRONG_DEVICE: return "current CUDA device is not the plan's device";
        case ASTEDGE_FBANK_ERROR_OUT_OF_MEMORY: return "out of device memory";
        case ASTEDGE_FBANK_ERROR_CUDA: return "CUDA runtime error";
        default: return "unknown status";
    }
}

const char* astedge_fbank_last_error(void) { return astedge_fbank::last_error.c_str(); }

}  // extern "C"
