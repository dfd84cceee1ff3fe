/* The baseline SIMD path: loops.h compiled with this unit's target flags (see setup.py). */
#define FASTOPT_UNIT fastopt_unit_baseline
#include "loops.h"
