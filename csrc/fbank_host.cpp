// libastedge_fbank_host: the kernel's per-frame arithmetic (fbank_frame.h) run on the CPU, one frame
// at a time. It is what the CPU tests check against astedge.features, and what ties the GPU output to
// that reference: the GPU tests compare the kernel with this library.
#include <algorithm>
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

extern "C" int astedge_fbank_host_run_staged(const astedge_fbank_config* config, const float* input, float* output,
                                             int32_t batch, int64_t samples, int64_t limit_bytes, int64_t* peak_bytes,
                                             int32_t* chunk_count) {
    int status = validate(config);
    if (status != ASTEDGE_FBANK_OK) return status;
    if (peak_bytes == nullptr || chunk_count == nullptr)
        return fail(ASTEDGE_FBANK_ERROR_INVALID_ARGUMENT, "peak_bytes and chunks are required");
    *peak_bytes = 0;
    *chunk_count = 0;
    std::vector<Complex> table;
    Launch p{};
    status = make_launch(*config, host_spec(*config, table), input, output, batch, samples, &p);
    if (status != ASTEDGE_FBANK_OK || batch == 0) return status;
    std::vector<Chunk> chunks;
    int64_t in_floats = 0, out_floats = 0;
    const int64_t limit = (limit_bytes > 0 ? limit_bytes : ASTEDGE_FBANK_DEFAULT_STAGING_BYTES) / 4;
    status = plan_chunks(*config, batch, samples, limit, &chunks, &in_floats, &out_floats);
    if (status != ASTEDGE_FBANK_OK) return status;
    // Staging sized as the CUDA library sizes its device buffers: exactly the largest chunk's needs.
    std::vector<float> staging_in(static_cast<size_t>(in_floats)), staging_out(static_cast<size_t>(out_floats));
    *peak_bytes = 4 * (in_floats + out_floats);
    *chunk_count = static_cast<int32_t>(chunks.size());
    const int64_t bins = config->num_mel_bins;
    for (const Chunk& chunk : chunks) {
        for (int32_t i = 0; i < chunk.clips; ++i)  // the 2-D copy of cudaMemcpy2DAsync(H2D)
            std::copy_n(input + (chunk.clip0 + i) * samples + chunk.sample0, chunk.span, staging_in.data() + i * chunk.span);
        status = astedge_fbank_host_run(config, staging_in.data(), staging_out.data(), chunk.clips, chunk.span);
        if (status != ASTEDGE_FBANK_OK) return status;
        for (int32_t i = 0; i < chunk.clips; ++i)  // and of cudaMemcpy2DAsync(D2H)
            std::copy_n(staging_out.data() + i * chunk.rows * bins, chunk.rows * bins,
                        output + ((chunk.clip0 + i) * p.rows + chunk.row0) * bins);
    }
    return ok();
}
