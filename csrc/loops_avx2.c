/* The avx2 SIMD path: loops.h compiled with this unit's target flags (see setup.py). */
#define FASTOPT_UNIT fastopt_unit_avx2
#include "loops.h"
