# _pool.pyx built with AVX2 and FMA; fastconv._dispatch imports it only on a CPU with both.
include "_pool.pyx"
