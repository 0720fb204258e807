# C declarations of pgwarden/stamp.py (read by Cython beside the .py when it compiles it; at build
# time only): the second the compiled `now` last wrote, and its text.

cdef long long _c_second
cdef char _c_prefix[32]
cdef Py_ssize_t _c_prefix_len
