# C declarations of pgwarden/sealing.py (Cython's pure-Python mode reads them beside the .py when
# it compiles it; at build time only): OpenSSL's SHA-256 functions, found in the process at import.

ctypedef int (*sha256_init_t)(void *ctx) noexcept nogil
ctypedef int (*sha256_update_t)(void *ctx, const void *data, size_t size) noexcept nogil
ctypedef int (*sha256_final_t)(unsigned char *digest, void *ctx) noexcept nogil

cdef sha256_init_t _init
cdef sha256_update_t _update
cdef sha256_final_t _final
