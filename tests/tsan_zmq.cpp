// Linked into every executable of a ThreadSanitizer build (DROVER_SANITIZE=thread):
// tells TSan that a message's sender happens before its receiver.
//
// libzmq hands a message from one thread to another through lock-free pipes
// in its own, uninstrumented code, so TSan sees no order between what the
// sender wrote before zmq_msg_send() and what the receiver reads after
// zmq_msg_recv(). Over inproc, a message longer than libzmq's inline limit
// (max_vsm_size in its msg.hpp, 33 bytes) reaches the receiver in the very
// buffer the sender filled, and every read of it would be reported as a
// race. These wrappers release at the data's address before the send and
// acquire at it after the receive: the order libzmq guarantees. zmq_send()
// copies the buffer into a message here, as libzmq would, so that the copy
// is seen and ordered too. A message that arrives elsewhere (inline, or over
// tcp) gets no order from here; libzmq wrote and allocated the buffer it
// arrives in, and tests/tsan.supp answers for that.
#include <dlfcn.h>

#include <cerrno>
#include <cstring>

#include <zmq.h>

extern "C" {
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}

namespace {

template <typename F>
F next_definition(const char* name) {
    return reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" int zmq_msg_send(zmq_msg_t* msg, void* socket, int flags) {
    static const auto real = next_definition<int (*)(zmq_msg_t*, void*, int)>("zmq_msg_send");
    __tsan_release(zmq_msg_data(msg));
    return real(msg, socket, flags);
}

extern "C" int zmq_msg_recv(zmq_msg_t* msg, void* socket, int flags) {
    static const auto real = next_definition<int (*)(zmq_msg_t*, void*, int)>("zmq_msg_recv");
    const int rc = real(msg, socket, flags);
    if (rc >= 0) __tsan_acquire(zmq_msg_data(msg));
    return rc;
}

extern "C" int zmq_send(void* socket, const void* buf, size_t len, int flags) {
    zmq_msg_t msg;
    if (zmq_msg_init_size(&msg, len) != 0) return -1;
    if (len > 0) std::memcpy(zmq_msg_data(&msg), buf, len);
    const int rc = zmq_msg_send(&msg, socket, flags);
    if (rc < 0) {
        const int error = errno;
        zmq_msg_close(&msg);
        errno = error;
    }
    return rc;
}
