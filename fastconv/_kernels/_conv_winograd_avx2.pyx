# _conv_winograd.pyx built with AVX2 and FMA; fastconv._dispatch imports it only on a CPU with both.
include "_conv_winograd.pyx"
