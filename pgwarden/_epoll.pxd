# Declarations of <sys/epoll.h> for pgwarden/rawio.py (Cython ships none): read when rawio is
# compiled, at build time only.
from libc.stdint cimport uint32_t, uint64_t


cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64

    cdef struct epoll_event:
        uint32_t events
        epoll_data_t data

    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
