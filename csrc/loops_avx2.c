/* The avx2 SIMD path: loops.h compiled with this unit's target flags (see setup.py). */
#define FASTOPT_LOOP_TABLE fastopt_loops_avx2
#include "loops.h"
