// The kernel's launch geometry and the body of one CTA (thread block), shared by the CUDA kernel
// (fbank_cuda.cu) and its CPU emulation (fbank_emulate.cpp, one std::thread per CUDA thread, a real
// barrier for __syncthreads). So the indexing, padding, cropping, grid-stride and barrier logic that
// only the GPU would otherwise run is tested on machines without one.
#ifndef ASTEDGE_FBANK_KERNEL_H
#define ASTEDGE_FBANK_KERNEL_H

#include <stddef.h>

#include "fbank_frame.h"

namespace astedge_fbank {

constexpr int kFrameThreads = 64;  // one radix-4 butterfly per thread per stage at n_fft = 512
constexpr int kMaxFramesPerBlock = 4;
constexpr int kMaxGridY = 65535;   // CUDA's limit on gridDim.y; more clips are grid-strided

// The kernel's argument (by value: no device allocation per launch).
struct Launch {
    Spec spec;
    const float* input;  // [batch, samples]
    float* output;       // [batch, rows, num_mel_bins]
    int batch;
    long long samples;
    int frames;  // real frames per clip
    int rows;    // output rows per clip (padding rows past `frames`, cropping below it)
};

struct Geometry {
    int grid_x, grid_y;    // blocks: output rows / frames_per_block, clips (capped)
    int frames_per_block;  // blockDim.y; blockDim.x = kFrameThreads
    size_t shared_bytes;   // dynamic shared memory per block
};

// 4 frames per CTA (256 threads, ~9 KB at n_fft = 512); fewer for long FFTs to stay under 48 KB.
inline Geometry geometry(int n_fft, int rows, int batch, int max_grid_y = kMaxGridY) {
    Geometry g{};
    g.frames_per_block = n_fft <= 1024 ? kMaxFramesPerBlock : (n_fft <= 2048 ? 2 : 1);
    g.shared_bytes = sizeof(float) * static_cast<size_t>(scratch_floats(n_fft)) * g.frames_per_block;
    g.grid_x = (rows + g.frames_per_block - 1) / g.frames_per_block;
    g.grid_y = batch < max_grid_y ? batch : max_grid_y;
    return g;
}

// One CTA: frame slot `slot` (threadIdx.y) of block (block_x, block_y), its threads forming `g`
// (threadIdx.x). Every barrier is block-wide (g.sync()), and every thread of a block passes the same
// sequence of them: padding-only blocks skip `frame` as a whole block; rows past the frame count or the
// output still run `frame` with null pointers.
template <class Group>
AE_HD void fbank_cta(const Group& g, const Launch& p, int block_x, int block_y, int grid_y, int slot, int slots,
                     float* shared) {
    const Spec& s = p.spec;
    const int first_row = block_x * slots;
    const int row = first_row + slot;
    const Scratch scratch = make_scratch(shared + slot * scratch_floats(s.n_fft), s.n_fft);
    for (int clip = block_y; clip < p.batch; clip += grid_y) {
        float* out = row < p.rows ? p.output + (static_cast<long long>(clip) * p.rows + row) * s.num_mel_bins : nullptr;
        if (first_row >= p.frames) {  // padding rows only: uniform over the block, no barriers
            if (out != nullptr) pad_row(g, s, out);
            continue;
        }
        const bool real = row < p.frames && out != nullptr;
        const float* samples = real ? p.input + clip * p.samples + static_cast<long long>(row) * s.window_shift : nullptr;
        frame(g, s, samples, scratch, out);
        g.sync();  // the next clip reuses the scratch
    }
}

}  // namespace astedge_fbank

#endif  // ASTEDGE_FBANK_KERNEL_H
