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
    std::vector<Complex> table;
    Launch p{};
    status = make_launch(*config, host_spec(*config, table), input, output, batch, samples, &p);
    if (status != ASTEDGE_FBANK_OK || batch == 0) return status;

    std::vector<float> memory(scratch_floats(config->n_fft));
    const Scratch scratch = make_scratch(memory.data(), config->n_fft);
    const HostGroup group;
    for (int64_t clip = 0; clip < batch; ++clip) {
        const float* wave = input + clip * samples;
        for (int32_t row = 0; row < p.rows; ++row) {
            float* out = output + (clip * p.rows + row) * static_cast<int64_t>(config->num_mel_bins);
            if (row < p.frames)
                frame(group, p.spec, wave + static_cast<int64_t>(row) * config->window_shift, scratch, out);
            else
                pad_row(group, p.spec, out);
        }
    }
    return ok();
}
