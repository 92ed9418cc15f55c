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

// The spec with host-side tables (fbank_host.cpp); `table` receives the twiddles it points to.
Spec host_spec(const astedge_fbank_config& config, std::vector<Complex>& table);

// Non-zeros of the mel matrix.
inline int mel_nonzeros(const astedge_fbank_config& config) { return config.mel_indptr[config.num_mel_bins]; }

}  // namespace astedge_fbank

#endif  // ASTEDGE_FBANK_COMMON_H
