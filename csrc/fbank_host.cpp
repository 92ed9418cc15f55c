// libastedge_fbank_host: the kernel's per-frame arithmetic (fbank_frame.h) run on the CPU, one frame
// at a time. It is what the CPU tests check against astedge.features, and what ties the GPU output to
// that reference: the GPU tests compare the kernel with this library.
#include <vector>

#include "fbank_common.h"

using namespace astedge_fbank;

extern "C" int astedge_fbank_host_run(const astedge_fbank_config* config, const float* input, float* output,
                                      int32_t batch, int64_t samples) {
    int status = validate(config);
    if (status != ASTEDGE_FBANK_OK) return status;
    if (batch < 0 || (batch > 0 && (input == nullptr || output == nullptr)))
        return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "need batch >= 0 and input/output buffers");
    int32_t frames = 0, rows = 0;
    if ((status = count_frames(*config, samples, &frames)) != ASTEDGE_FBANK_OK) return status;
    if ((status = count_rows(*config, samples, &rows)) != ASTEDGE_FBANK_OK) return status;

    const std::vector<Complex> table = twiddles(config->n_fft);
    Spec spec = scalars(*config);
    spec.window = config->window;
    spec.twiddle = table.data();
    spec.mel_indptr = config->mel_indptr;
    spec.mel_indices = config->mel_indices;
    spec.mel_weights = config->mel_weights;

    std::vector<float> memory(scratch_floats(config->n_fft));
    const Scratch scratch = make_scratch(memory.data(), config->n_fft);
    const HostGroup group;
    for (int64_t clip = 0; clip < batch; ++clip) {
        const float* wave = input + clip * samples;
        for (int32_t row = 0; row < rows; ++row) {
            float* out = output + (clip * rows + row) * static_cast<int64_t>(config->num_mel_bins);
            if (row < frames)
                frame(group, spec, wave + static_cast<int64_t>(row) * config->window_shift, scratch, out);
            else
                pad_row(group, spec, out);
        }
    }
    return ok();
}
