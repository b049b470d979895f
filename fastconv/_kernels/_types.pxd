# Types shared by every kernel module, declared once.

# The two float types every kernel is specialised for.
ctypedef fused floating:
    float
    double

# Sizes and indices: 64-bit everywhere, so tensors over 2**31 elements index correctly.
ctypedef Py_ssize_t index_t
