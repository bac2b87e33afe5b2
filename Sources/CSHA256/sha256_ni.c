// SHA-256 compression with the x86 SHA extensions. The target attribute enables the instructions for
// this one function only, so the package builds with default flags and runs on CPUs without them
// (callers check csha256_ni_available() first).
#include "csha256.h"

#if defined(__x86_64__)

#include <cpuid.h>
#include <immintrin.h>

int csha256_ni_available(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int ssse3 = (c >> 9) & 1, sse41 = (c >> 19) & 1;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const int sha = (b >> 29) & 1;
    return ssse3 && sse41 && sha;
}

static const uint32_t K[64] __attribute__((aligned(16))) = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

__attribute__((target("sha,sse4.1,ssse3")))
void csha256_ni_compress(uint32_t state[8], const uint8_t *data, size_t blocks) {
    // SHA256RNDS2 keeps the working variables as two vectors, lanes listed low to high:
    // abef = {f, e, b, a} and cdgh = {h, g, d, c}.
    const __m128i lo = _mm_loadu_si128((const __m128i *)&state[0]);      // {a, b, c, d}
    const __m128i hi = _mm_loadu_si128((const __m128i *)&state[4]);      // {e, f, g, h}
    const __m128i badc = _mm_shuffle_epi32(lo, 0xB1);                    // {b, a, d, c}
    const __m128i hgfe = _mm_shuffle_epi32(hi, 0x1B);                    // {h, g, f, e}
    __m128i abef = _mm_alignr_epi8(badc, hgfe, 8);                       // {f, e, b, a}
    __m128i cdgh = _mm_blend_epi16(hgfe, badc, 0xF0);                    // {h, g, d, c}

    // Message words are big-endian: reverse the bytes of each 32-bit lane.
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);

    for (; blocks > 0; blocks--, data += 64) {
        const __m128i abef0 = abef, cdgh0 = cdgh;
        __m128i w[4];   // w[g % 4] holds message words 4g .. 4g+3
#if defined(__clang__)
#pragma clang loop unroll(full)
#endif
        for (int g = 0; g < 16; g++) {
            __m128i m;
            if (g < 4) {
                m = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16 * g)), bswap);
            } else {
                // W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16] for t = 4g .. 4g+3:
                // msg1 adds s0 terms, the alignr supplies W[t-7], msg2 adds the s1 terms
                // (computing the last two from the first two of this group).
                const __m128i prev = w[(g - 1) & 3], prev2 = w[(g - 2) & 3];
                m = _mm_sha256msg1_epu32(w[g & 3], w[(g - 3) & 3]);
                m = _mm_add_epi32(m, _mm_alignr_epi8(prev, prev2, 4));
                m = _mm_sha256msg2_epu32(m, prev);
            }
            w[g & 3] = m;
            __m128i wk = _mm_add_epi32(m, _mm_load_si128((const __m128i *)&K[4 * g]));
            // Two rounds take W+K from the low two lanes; each call returns the new abef and the
            // old abef becomes the new cdgh, so the two vectors swap roles between calls.
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
            wk = _mm_shuffle_epi32(wk, 0x0E);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, wk);
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }

    const __m128i abfe = _mm_shuffle_epi32(abef, 0x1B);                  // {a, b, e, f}
    const __m128i ghcd = _mm_shuffle_epi32(cdgh, 0xB1);                  // {g, h, c, d}
    _mm_storeu_si128((__m128i *)&state[0], _mm_blend_epi16(abfe, ghcd, 0xF0));   // {a, b, c, d}
    _mm_storeu_si128((__m128i *)&state[4], _mm_alignr_epi8(ghcd, abfe, 8));      // {e, f, g, h}
}

#else

int csha256_ni_available(void) { return 0; }

void csha256_ni_compress(uint32_t state[8], const uint8_t *data, size_t blocks) {
    (void)state; (void)data; (void)blocks;
}

#endif
