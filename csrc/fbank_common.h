// Host-side pieces shared by the CUDA library and the host library: config validation, the twiddle
// table, output sizes and error reporting. Plain C++, compiled by the host compiler for both.
#ifndef ASTEDGE_FBANK_COMMON_H
#define ASTEDGE_FBANK_COMMON_H

#include <cstdint>
#include <string>
#include <vector>

#include "astedge_fbank.h"
#include "fbank_frame.h"
#include "fbank_kernel.h"

namespace astedge_fbank {

// Records `detail` as the calling thread's last error and returns `status` (for `return fail(...)`).
int fail(int status, const std::string& detail);
// Clears the last error and returns ASTEDGE_FBANK_OK.
int ok();

// Checks every field and table of a config; the error detail names the offending field.
int validate(const astedge_fbank_config* config);

// exp(-2 pi i k / n_fft) for k = 0 .. n_fft - 1, evaluated in double and rounded once to float.
std::vector<Complex> twiddles(int n_fft);

// Frames of one clip (snip_edges): 1 + (samples - window) / shift; TOO_SHORT below one window.
int count_frames(const astedge_fbank_config& config, int64_t samples, int32_t* frames);
// Rows of one clip's output: target_length when positive, else the frame count.
int count_rows(const astedge_fbank_config& config, int64_t samples, int32_t* rows);

// The scalar part of the per-frame spec (table pointers are filled in by the caller).
Spec scalars(const astedge_fbank_config& config);

// Checks a run's arguments and fills `launch` (spec, buffers, frame and row counts); batch 0 is valid
// (nothing to do) and needs no buffers.
int make_launch(const astedge_fbank_config& config, const Spec& spec, const float* input, float* output,
                int32_t batch, int64_t samples, Launch* launch);

// One piece of a staged run (astedge_fbank_run_host): clips [clip0, clip0 + clips) of the batch, output
// rows [row0, row0 + rows) of each, computed by a kernel run over `span` samples per clip starting at
// sample `sample0` of each clip. Frames depend only on their own samples, so any split gives the same bits.
struct Chunk {
    int64_t clip0;
    int32_t clips;
    int32_t row0;
    int32_t rows;
    int64_t sample0;
    int64_t span;
};

// Splits a run so that each chunk's staging (clips * span input floats + clips * rows * bins output floats)
// fits `limit_floats`: whole clips when one clip fits (several per chunk), else, for raw log-mel output
// (target_length <= 0), row ranges of one clip; a padded/cropped clip too big for the limit is one chunk
// alone. Only samples that make output rows are covered: a cropped clip's tail is never copied. The
// largest chunk's needs are returned in *in_floats / *out_floats. Arguments must have passed make_launch.
int plan_chunks(const astedge_fbank_config& config, int32_t batch, int64_t samples, int64_t limit_floats,
                std::vector<Chunk>* chunks, int64_t* in_floats, int64_t* out_floats);

// The spec with host-side tables (fbank_host.cpp); `table` receives the twiddles it points to.
Spec host_spec(const astedge_fbank_config& config, std::vector<Complex>& table);

// Non-zeros of the mel matrix.
inline int mel_nonzeros(const astedge_fbank_config& config) { return config.mel_indptr[config.num_mel_bins]; }

}  // namespace astedge_fbank

#endif  // ASTEDGE_FBANK_COMMON_H
