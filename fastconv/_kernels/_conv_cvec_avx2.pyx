# _conv_cvec.pyx built with AVX2 and FMA; fastconv._dispatch imports it only on a CPU with both.
include "_conv_cvec.pyx"
