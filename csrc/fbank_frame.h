// Per-frame fbank arithmetic, the one source for both the CUDA kernel and the host (CPU) build.
//
// Under nvcc every function is __host__ __device__; without nvcc the header is plain C++, which is how
// the CPU tests exercise the exact arithmetic the GPU runs. Work on a frame is split among the threads
// of a "group" (64 threads on the GPU, 1 on the host) by strided loops; no result depends on the group
// size: reductions follow a fixed order and every output element is computed by one thread.
//
// Rounding: each float operation goes through add/sub/mul/div below, which round once (the __f*_rn
// intrinsics on the device are never fused into an FMA), or through an explicit fmaf (cmul). The host
// build adds -ffp-contract=off because a compiler may still fuse a*b+c there after inlining. So host and
// device agree operation for operation; only logf may differ (CUDA's logf is within 1 ulp, glibc's is
// correctly rounded in most cases). The FFT is float32 throughout, as torchaudio's.
#ifndef ASTEDGE_FBANK_FRAME_H
#define ASTEDGE_FBANK_FRAME_H

#include <float.h>
#include <math.h>

// Fast math changes the rounding this code reproduces. GCC/Clang's -ffast-math and NVRTC's
// -use_fast_math=true say so by macro; nvcc's --use_fast_math defines none (CMakeLists.txt refuses it).
#if defined(__FAST_MATH__) || (defined(__USE_FAST_MATH__) && __USE_FAST_MATH__)
#error "fast-math changes the rounding this code reproduces; build without it"
#endif

#if defined(__CUDACC__)
#define AE_HD __host__ __device__ __forceinline__
#else
#define AE_HD inline
#endif
#if defined(__CUDA_ARCH__)
#define AE_UNROLL _Pragma("unroll")  // keeps the radix arrays in registers
#else
#define AE_UNROLL
#endif

namespace astedge_fbank {

struct alignas(8) Complex {
    float re, im;
};

// Lanes of the DC-mean reduction: a constant, not the thread count, so the summation order is fixed.
constexpr int kMeanLanes = 64;

// Single-rounding float arithmetic (see the file comment).
AE_HD float add(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
AE_HD float sub(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}
AE_HD float mul(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
AE_HD float div(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

AE_HD Complex cadd(Complex a, Complex b) { return {add(a.re, b.re), add(a.im, b.im)}; }
AE_HD Complex csub(Complex a, Complex b) { return {sub(a.re, b.re), sub(a.im, b.im)}; }
// Complex product with one fused multiply-add per component: fmaf rounds once, exactly, in CUDA and in
// C alike, so host and device still agree; it lowers the FFT's float32 error a little (median max log-mel
// error on 10 s of noise 4.5e-4 -> 3.9e-4).
AE_HD Complex cmul(Complex a, Complex b) {
    return {fmaf(a.re, b.re, -mul(a.im, b.im)), fmaf(a.re, b.im, mul(a.im, b.re))};
}
AE_HD Complex times_minus_i(Complex a) { return {a.im, -a.re}; }  // exact

// Everything the per-frame math reads; pointers are device pointers in the kernel, host pointers on the CPU.
struct Spec {
    int window_size, window_shift, n_fft, num_mel_bins;
    float preemphasis;
    int normalize;
    float mean, scale, pad_value;  // scale = float32(2 std); pad_value = the normalized zero row
    const float* window;           // [window_size]
    const Complex* twiddle;        // [n_fft]: exp(-2 pi i k / n_fft), rounded from double
    const int* mel_indptr;         // CSR of the [num_mel_bins, n_fft/2 + 1] mel matrix
    const int* mel_indices;
    const float* mel_weights;
};

// Shared-memory (or host) scratch of one frame: two ping-pong buffers of n_fft/2 complex values and
// the mean lanes. 4 * n_fft + 4 * kMeanLanes bytes.
struct Scratch {
    Complex* a;
    Complex* b;
    float* lanes;
};

AE_HD int scratch_floats(int n_fft) { return 2 * n_fft + kMeanLanes; }

AE_HD Scratch make_scratch(float* base, int n_fft) {
    return {reinterpret_cast<Complex*>(base), reinterpret_cast<Complex*>(base + n_fft), base + 2 * n_fft};
}

// One radix-R Stockham stage (R = 2 or 4) of the n_fft/2-point complex FFT: sub-transforms of size
// `span` in `src` become sub-transforms of size R * span in `dst` (natural order, no bit reversal).
template <int R, class Group>
AE_HD void fft_stage(const Group& g, const Spec& s, const Complex* src, Complex* dst, int span) {
    const int m = s.n_fft / 2, quarter = m / R;
    const int stride = s.n_fft / (R * span);  // twiddle W_m^(r k m / (R span)) = table[r * k * stride]
    for (int j = g.rank(); j < quarter; j += g.size()) {
        const int k = j & (span - 1);
        Complex a[R];
        AE_UNROLL
        for (int r = 0; r < R; ++r) {
            a[r] = src[j + r * quarter];
            if (r > 0 && k > 0) a[r] = cmul(a[r], s.twiddle[r * k * stride]);
        }
        Complex b[R];
        if (R == 2) {
            b[0] = cadd(a[0], a[1]);
            b[1] = csub(a[0], a[1]);
        } else {
            const Complex t0 = cadd(a[0], a[R / 2]), t1 = csub(a[0], a[R / 2]);
            const Complex t2 = cadd(a[1], a[R - 1]), t3 = times_minus_i(csub(a[1], a[R - 1]));
            b[0] = cadd(t0, t2);
            b[R / 2] = csub(t0, t2);
            b[1] = cadd(t1, t3);
            b[R - 1] = csub(t1, t3);
        }
        const int base = (j - k) * R + k;
        AE_UNROLL
        for (int r = 0; r < R; ++r) dst[base + r * span] = b[r];
    }
    g.sync();
}

// In-place-by-ping-pong complex FFT of n_fft/2 points starting in `src`; returns the buffer holding
// the result (the other one is free). Radix 4, plus one radix-2 stage when log2(n_fft/2) is odd.
template <class Group>
AE_HD Complex* fft(const Group& g, const Spec& s, Complex* src, Complex* dst) {
    const int m = s.n_fft / 2;
    int stages = 0;
    for (int size = 1; size < m; size *= 2) ++stages;
    int span = 1;
    if ((stages & 1) != 0) {
        fft_stage<2>(g, s, src, dst, span);
        Complex* t = src; src = dst; dst = t;
        span = 2;
    }
    for (; span < m; span *= 4) {
        fft_stage<4>(g, s, src, dst, span);
        Complex* t = src; src = dst; dst = t;
    }
    return src;
}

// |X[k]|^2 of the n_fft-point real FFT from the n_fft/2-point complex FFT Z of z[n] = x[2n] + i x[2n+1]:
// X[k] = E[k] + W^k O[k], E = (Z[k] + conj Z[m-k]) / 2, O = (Z[k] - conj Z[m-k]) / 2i. k = 0..m.
AE_HD float power_bin(const Spec& s, const Complex* z, int k) {
    const int m = s.n_fft / 2;
    const Complex a = z[k & (m - 1)], b = z[(m - k) & (m - 1)];
    const Complex even = {mul(0.5f, add(a.re, b.re)), mul(0.5f, sub(a.im, b.im))};
    const Complex odd = {mul(0.5f, add(a.im, b.im)), mul(-0.5f, sub(a.re, b.re))};
    const Complex x = cadd(even, cmul(s.twiddle[k], odd));
    return add(mul(x.re, x.re), mul(x.im, x.im));
}

// One frame: `samples` points at the frame's first sample (window_size readable floats), or is null
// for a padding row, which still takes part in every barrier so that a whole CTA syncs together.
// Writes num_mel_bins floats to `out` (unless null): the log-mel energies, normalized if the spec says so.
template <class Group>
AE_HD void frame(const Group& g, const Spec& s, const float* samples, Scratch scratch, float* out) {
    const int n = s.n_fft, w = s.window_size;
    float* raw = reinterpret_cast<float*>(scratch.a);
    if (samples != nullptr)
        for (int j = g.rank(); j < w; j += g.size()) raw[j] = samples[j];
    g.sync();

    // DC mean: lane l sums samples l, l + 64, ... in order, then a fixed pairwise tree over the lanes.
    for (int l = g.rank(); l < kMeanLanes; l += g.size()) {
        float acc = 0.0f;
        if (samples != nullptr)
            for (int j = l; j < w; j += kMeanLanes) acc = add(acc, raw[j]);
        scratch.lanes[l] = acc;
    }
    g.sync();
    for (int half = kMeanLanes / 2; half > 0; half /= 2) {
        for (int l = g.rank(); l < half; l += g.size()) scratch.lanes[l] = add(scratch.lanes[l], scratch.lanes[l + half]);
        g.sync();
    }
    const float mean = div(scratch.lanes[0], static_cast<float>(w));

    // DC removal, pre-emphasis y[j] = x[j] - c x[j-1] with y[0] = x[0] - c x[0] (multiply, then subtract,
    // as torchaudio rounds it), window, zero padding to n_fft. Packed as n_fft/2 complex points.
    float* packed = reinterpret_cast<float*>(scratch.b);
    for (int j = g.rank(); j < n; j += g.size()) {
        float y = 0.0f;
        if (samples != nullptr && j < w) {
            const float x = sub(raw[j], mean), previous = j > 0 ? sub(raw[j - 1], mean) : x;
            y = mul(sub(x, mul(s.preemphasis, previous)), s.window[j]);
        }
        packed[j] = y;
    }
    g.sync();

    const Complex* z = fft(g, s, scratch.b, scratch.a);
    float* power = reinterpret_cast<float*>(z == scratch.a ? scratch.b : scratch.a);
    for (int k = g.rank(); k <= n / 2; k += g.size()) power[k] = power_bin(s, z, k);
    g.sync();

    // Sparse mel projection in CSR order (scipy's order), log floored at float32 epsilon, normalization.
    // A null `out` (a row past the output) computes nothing here.
    for (int m = g.rank(); out != nullptr && m < s.num_mel_bins; m += g.size()) {
        float energy = 0.0f;
        for (int i = s.mel_indptr[m]; i < s.mel_indptr[m + 1]; ++i)
            energy = add(energy, mul(s.mel_weights[i], power[s.mel_indices[i]]));
        float v = logf(fmaxf(energy, FLT_EPSILON));
        if (s.normalize) v = div(sub(v, s.mean), s.scale);
        out[m] = samples != nullptr ? v : s.pad_value;
    }
}

// A padding row (frame index >= frame count) of a CTA with no real frame in it: no barriers needed.
template <class Group>
AE_HD void pad_row(const Group& g, const Spec& s, float* out) {
    for (int m = g.rank(); m < s.num_mel_bins; m += g.size()) out[m] = s.pad_value;
}

// One thread doing a whole frame: the host build.
struct HostGroup {
    int rank() const { return 0; }
    int size() const { return 1; }
    void sync() const {}
};

}  // namespace astedge_fbank

#endif  // ASTEDGE_FBANK_FRAME_H
