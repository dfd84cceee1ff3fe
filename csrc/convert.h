/* The 16-bit storage types (bfloat16, IEEE float16) and their conversions to and from float32,
 * the compute type of both, in integer and float operations the vectoriser can widen.
 *
 * - to float: exact (every bfloat16 and float16 value is a float32), also under flush-to-zero
 *   and denormals-are-zero (no subnormal float is an input or an output here);
 * - from float, to nearest (ties to even): NumPy's float32 -> float16 and ml_dtypes' float32
 *   -> bfloat16, including subnormals, overflow to infinity and NaN (kept a NaN, its sign kept);
 * - from float, stochastic (bfloat16 only): up or down with probability proportional to the
 *   distance, the 16 random bits from fo_random16 (a hash of the element's index and a stream
 *   number derived from seed, step, key and array: the same bits on any split or SIMD path).
 */
#ifndef FASTOPT_CONVERT_H
#define FASTOPT_CONVERT_H

#include <stdint.h>
#include <string.h>

static inline uint32_t fo_float_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float fo_bits_float(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static inline float fo_bf16_to_float(uint16_t h)
{
    return fo_bits_float((uint32_t)h << 16);
}

static inline uint16_t fo_bf16_from_float(float x)
{
    const uint32_t u = fo_float_bits(x);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = (u >> 16) | 0x40u; /* quiet, sign and high payload kept */
    return (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

static inline float fo_f16_to_float(uint16_t h)
{
    const uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    const uint32_t magnitude = (uint32_t)h & 0x7FFFu;
    /* subnormal (and zero): magnitude * 2**-24, exact in float32 */
    const float subnormal = (float)(int32_t)magnitude * 0x1p-24f;
    const uint32_t normal = (magnitude << 13) + 0x38000000u; /* exponent rebiased by 112 */
    const uint32_t special = (magnitude << 13) | 0x7F800000u; /* infinity, NaN */
    const uint32_t bits = magnitude >= 0x7C00u ? special
                          : magnitude >= 0x0400u ? normal : fo_float_bits(subnormal);
    return fo_bits_float(bits | sign);
}

static inline uint16_t fo_f16_from_float(float x)
{
    const uint32_t u = fo_float_bits(x);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const uint32_t magnitude = u & 0x7FFFFFFFu;
    /* |x| < 2**-14: adding 0.5 leaves the float's last place at 2**-24, float16's subnormal
     * step, and the float addition rounds to nearest even; the bits above 0.5's are the
     * result (0x400, the smallest normal, when it rounds up to it) */
    const float small = fo_bits_float(magnitude) + 0.5f;
    const uint32_t subnormal = fo_float_bits(small) - 0x3F000000u;
    /* normal: rebias the exponent (-112) and round the 13 dropped bits to nearest even */
    const uint32_t normal = (magnitude + 0xC8000FFFu + ((magnitude >> 13) & 1u)) >> 13;
    const uint32_t special = magnitude > 0x7F800000u ? 0x7E00u : 0x7C00u; /* NaN, infinity */
    const uint32_t bits = magnitude >= 0x477FF000u ? special /* >= 65520 rounds to infinity */
                          : magnitude >= 0x38800000u ? normal : subnormal;
    return (uint16_t)(bits | sign);
}

/* The random bits of one element: two rounds of a 32-bit integer hash ("lowbias32", Chris
 * Wellons' hash-prospector) over the element index, keyed by the array's stream number. */
static inline uint32_t fo_hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

static inline uint32_t fo_random16(uint64_t stream, uint64_t element)
{
    uint32_t h = fo_hash32((uint32_t)element ^ (uint32_t)stream);
    h = fo_hash32(h ^ (uint32_t)(element >> 32) ^ (uint32_t)(stream >> 32));
    return h & 0xFFFFu;
}

static inline uint16_t fo_bf16_stochastic(float x, uint32_t random16)
{
    const uint32_t u = fo_float_bits(x);
    const uint32_t rounded = (u + random16) >> 16; /* up with probability (low bits)/2**16 */
    const uint32_t nan = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

/* splitmix64's finaliser: the stream number of (seed, step, key, array) is four rounds of it. */
static inline uint64_t fo_mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15u;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static inline uint64_t fo_stream(uint64_t seed, uint64_t step, uint64_t key, uint64_t array)
{
    return fo_mix64(fo_mix64(fo_mix64(fo_mix64(seed) ^ step) ^ key) ^ array);
}

#endif
