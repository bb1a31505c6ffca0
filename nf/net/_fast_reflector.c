/* The Session-Reflector's per-packet path in C: the speed target is out of the interpreter's reach.
 *
 * Python keeps everything that is not per packet: sessions, their states and deadlines, housekeeping,
 * drop logging. This module does what each datagram needs and nothing else:
 *   - Keys: an opaque holder of one test session's prepared AES and HMAC-SHA1 contexts. It is built from
 *     the key octets inside nf.twamp.test_keys and has no way to give them back.
 *   - Session: the reply builder of one test session (RFC 5357 s4.2.1, RFC 6038), driven by the field
 *     offsets Python takes from its layout tables (nf/twamp/test_packets.py), so the wire formats stay
 *     defined in one place. reflect() is pure: data, receive time, TTL and T3 in; reply or error code out.
 *   - Port: one UDP socket's batched receive loop (recvmmsg with kernel timestamps, sendto or sendmmsg),
 *     run with the GIL released. A datagram it cannot settle (no active session, bad HMAC, rate limit, send
 *     failure) is handed back to Python with a reason code, so the counters and log lines stay there.
 *
 * Threading: a Port's serve() runs on its port thread; add()/remove() may come from any thread and take
 * the port's mutex, which serve() holds while it works through one received batch. A Session's sequence
 * number, bucket and counters are touched by the port thread only (serve() or reflect() on it); its
 * activity deadline and Error Estimate are single aligned words written by the control side.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

/* EVP_MAC_init with no key restarts an HMAC only from OpenSSL 3.0.3 (openssl#17811, fixed by #18100); before
 * that every packet's HMAC would run on from the previous one. */
#define MIN_OPENSSL 0x30000030L
#if OPENSSL_VERSION_NUMBER < MIN_OPENSSL
#error "the reflector fast path needs OpenSSL 3.0.3 or newer"
#endif

#define MAX_UDP_PAYLOAD 65507 /* IPv4 bound; the largest reply ever built (as in test_packets.py) */
#define SLOT_SIZE 65536       /* one received datagram; UDP cannot exceed it, so nothing is truncated */
#define CONTROL_SIZE 128      /* a timespec and an int control message, with headers and alignment */
#define HEAD_MAX 128          /* the largest sender header through its HMAC (112 octets) */
#define NTP_UNIX_OFFSET 2208988800ULL
#define TEST_TTL 255 /* RFC 5357 s4.2.1: reported when the TTL cannot be read */

/* Reason codes handed to Python; the same numbers are named in nf/net/_fast_reflector.pyi. */
enum {
    RC_OK = 0,
    RC_UNHANDLED = 0, /* in a deferred item: no active session took it, Python decides */
    RC_SHORT = 1,
    RC_BAD_HMAC = 2,
    RC_TOO_LONG = 3,
    RC_RATE_LIMITED = 4,
    RC_SEND_FAILED = 5,
    RC_CRYPTO = 6, /* OpenSSL failed: an internal error, not the peer's */
};

static const unsigned char ZERO_IV[16];

/* Big-endian field access ----------------------------------------------------------------------------- */

static inline uint64_t get_be(const uint8_t *p, int size) {
    uint64_t v = 0;
    for (int i = 0; i < size; i++) v = (v << 8) | p[i];
    return v;
}

static inline void put_be(uint8_t *p, int size, uint64_t v) {
    for (int i = size - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline uint64_t ntp_of(const struct timespec *ts) {
    uint64_t seconds = ((uint64_t)ts->tv_sec + NTP_UNIX_OFFSET) & 0xFFFFFFFFULL;
    uint64_t fraction = ((uint64_t)ts->tv_nsec << 32) / 1000000000ULL;
    return (seconds << 32) | fraction;
}

static inline uint64_t ntp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ntp_of(&ts);
}

static inline int64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Keys ------------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *encrypt; /* AES-128-CBC, no padding; re-armed with a zero IV per packet */
    EVP_CIPHER_CTX *decrypt;
    EVP_MAC_CTX *mac; /* HMAC-SHA1 keyed once; EVP_MAC_init without a key restarts it */
} KeysObject;

static void keys_free_contexts(EVP_CIPHER_CTX **encrypt, EVP_CIPHER_CTX **decrypt, EVP_MAC_CTX **mac) {
    EVP_CIPHER_CTX_free(*encrypt); /* the free functions cleanse the key schedules */
    EVP_CIPHER_CTX_free(*decrypt);
    EVP_MAC_CTX_free(*mac);
    *encrypt = NULL;
    *decrypt = NULL;
    *mac = NULL;
}

static void Keys_dealloc(KeysObject *self) {
    keys_free_contexts(&self->encrypt, &self->decrypt, &self->mac);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Keys_init(KeysObject *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"aes_key", "hmac_key", NULL};
    Py_buffer aes, hmac;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*", names, &aes, &hmac)) return -1;
    int ok = 0;
    if (aes.len != 16 || hmac.len != 32) {
        PyErr_SetString(PyExc_ValueError, "test session keys must be 16 (AES) and 32 (HMAC) octets");
        goto done;
    }
    keys_free_contexts(&self->encrypt, &self->decrypt, &self->mac);
    self->encrypt = EVP_CIPHER_CTX_new();
    self->decrypt = EVP_CIPHER_CTX_new();
    EVP_MAC *algorithm = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (algorithm != NULL) self->mac = EVP_MAC_CTX_new(algorithm);
    EVP_MAC_free(algorithm);
    char digest[] = "SHA1";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    if (self->encrypt == NULL || self->decrypt == NULL || self->mac == NULL
        || !EVP_CipherInit_ex(self->encrypt, EVP_aes_128_cbc(), NULL, aes.buf, ZERO_IV, 1)
        || !EVP_CipherInit_ex(self->decrypt, EVP_aes_128_cbc(), NULL, aes.buf, ZERO_IV, 0)
        || !EVP_CIPHER_CTX_set_padding(self->encrypt, 0) || !EVP_CIPHER_CTX_set_padding(self->decrypt, 0)
        || !EVP_MAC_init(self->mac, hmac.buf, 32, params)) {
        keys_free_contexts(&self->encrypt, &self->decrypt, &self->mac);
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not prepare the test session keys");
        goto done;
    }
    ok = 1;
done:
    PyBuffer_Release(&aes);
    PyBuffer_Release(&hmac);
    return ok ? 0 : -1;
}

static PyObject *Keys_repr(PyObject *self) {
    (void)self;
    return PyUnicode_FromString("Keys(<hidden>)");
}

static PyTypeObject KeysType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nf.net._fast_reflector.Keys",
    .tp_doc = "One test session's AES and HMAC-SHA1 contexts; the key octets cannot be read back.",
    .tp_basicsize = sizeof(KeysObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Keys_init,
    .tp_dealloc = (destructor)Keys_dealloc,
    .tp_repr = Keys_repr,
};

/* Session --------------------------------------------------------------------------------------------- */

/* Offsets of the fields a reflector reads from a Session-Sender packet and writes into its reply; -1 for
 * a field the layout does not have (the HMAC of the open layouts). */
typedef struct {
    int size, seq, timestamp, error_estimate, hmac, covered;
} SenderLayout;

typedef struct {
    int size, seq, timestamp, error_estimate, receive_timestamp, sender_seq, sender_timestamp,
        sender_error_estimate, sender_ttl, hmac, covered;
} ReplyLayout;

typedef struct {
    PyObject_HEAD
    int ready;    /* initialised once; never re-initialised (a Port may be using it without the GIL) */
    int attached; /* in a Port's table: only that port's thread may use it */
    SenderLayout in;
    ReplyLayout out;
    int keep_octets; /* octets at the start of the padding kept despite truncation (RFC 6038) */
    EVP_CIPHER_CTX *encrypt; /* own copies: the Keys object may be shared or dropped */
    EVP_CIPHER_CTX *decrypt;
    EVP_MAC_CTX *mac;
    uint32_t seq;
    uint16_t error_estimate; /* written by the control side (clock sync changes) */
    int64_t active_until;    /* monotonic ns; 0: not reflecting (Python decides what a packet means) */
    double rate, burst, tokens; /* packets per second; rate 0: no limit */
    int64_t bucket_time;
    int64_t last_activity; /* monotonic ns of the last reflected packet */
    unsigned long long reflected;
} SessionObject;

static void Session_dealloc(SessionObject *self) {
    keys_free_contexts(&self->encrypt, &self->decrypt, &self->mac);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int layout_fits(int offset, int width, int size) {
    return offset >= 0 && width <= size && offset <= size - width; /* no int overflow for any input */
}

static int Session_init(SessionObject *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"sender", "reply", "keys", "keep_octets", "rate", "burst", "now_ns", NULL};
    PyObject *keys = Py_None;
    SenderLayout in;
    ReplyLayout out;
    double rate = 0.0, burst = 1.0;
    long long now = 0;
    int keep_octets = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "(iiiiii)(iiiiiiiiiii)|OiddL", names, &in.size, &in.seq,
            &in.timestamp, &in.error_estimate, &in.hmac, &in.covered, &out.size, &out.seq, &out.timestamp,
            &out.error_estimate, &out.receive_timestamp, &out.sender_seq, &out.sender_timestamp,
            &out.sender_error_estimate, &out.sender_ttl, &out.hmac, &out.covered, &keys, &keep_octets,
            &rate, &burst, &now))
        return -1;
    if (self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "a Session is initialised once");
        return -1;
    }
    int protected_ = keys != Py_None;
    if (protected_ && !PyObject_TypeCheck(keys, &KeysType)) {
        PyErr_SetString(PyExc_TypeError, "keys must be a Keys object or None");
        return -1;
    }
    int covers_ok = protected_
        ? (in.covered > 0 && in.covered % 16 == 0 && in.covered <= in.hmac && layout_fits(in.hmac, 16, in.size)
           && in.hmac <= HEAD_MAX - 16 && out.covered > 0 && out.covered % 16 == 0 && out.covered <= out.hmac
           && layout_fits(out.hmac, 16, out.size))
        : (in.covered == 0 && out.covered == 0 && in.hmac < 0 && out.hmac < 0);
    if (!covers_ok || in.size > HEAD_MAX || out.size > HEAD_MAX || in.size <= 0 || !layout_fits(in.seq, 4, in.size)
        || !layout_fits(in.timestamp, 8, in.size) || !layout_fits(in.error_estimate, 2, in.size)
        || !layout_fits(out.seq, 4, out.size) || !layout_fits(out.timestamp, 8, out.size)
        || !layout_fits(out.error_estimate, 2, out.size) || !layout_fits(out.receive_timestamp, 8, out.size)
        || !layout_fits(out.sender_seq, 4, out.size) || !layout_fits(out.sender_timestamp, 8, out.size)
        || !layout_fits(out.sender_error_estimate, 2, out.size) || !layout_fits(out.sender_ttl, 1, out.size)
        || out.size < in.size) {
        PyErr_SetString(PyExc_ValueError, "the layouts do not describe TWAMP-Test packets of that protection");
        return -1;
    }
    if (keep_octets < 0 || keep_octets > 0xFFFF || !(rate >= 0) || !(burst >= 1)) { /* NaN fails too */
        PyErr_SetString(PyExc_ValueError, "keep_octets, rate or burst out of range");
        return -1;
    }
    if (protected_) {
        KeysObject *k = (KeysObject *)keys;
        if (k->encrypt == NULL) {
            PyErr_SetString(PyExc_ValueError, "the Keys object was not initialised");
            return -1;
        }
        self->encrypt = EVP_CIPHER_CTX_new();
        self->decrypt = EVP_CIPHER_CTX_new();
        self->mac = EVP_MAC_CTX_dup(k->mac);
        if (self->encrypt == NULL || self->decrypt == NULL || self->mac == NULL
            || !EVP_CIPHER_CTX_copy(self->encrypt, k->encrypt) || !EVP_CIPHER_CTX_copy(self->decrypt, k->decrypt)) {
            keys_free_contexts(&self->encrypt, &self->decrypt, &self->mac);
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not copy the test session keys");
            return -1;
        }
    }
    self->in = in;
    self->out = out;
    self->keep_octets = keep_octets;
    self->seq = 0;
    self->error_estimate = 0;
    self->active_until = 0;
    self->rate = rate;
    self->burst = burst;
    self->tokens = burst;
    self->bucket_time = now;
    self->last_activity = now;
    self->reflected = 0;
    self->ready = 1;
    return 0;
}

/* AES-CBC with a zero IV over whole blocks; for one block that is the ECB the authenticated mode uses. */
static int cbc(EVP_CIPHER_CTX *ctx, const uint8_t *in, uint8_t *out, int length) {
    int written = 0;
    return EVP_CipherInit_ex(ctx, NULL, NULL, NULL, ZERO_IV, -1) && EVP_CipherUpdate(ctx, out, &written, in, length)
        && written == length;
}

static int hmac16(EVP_MAC_CTX *mac, const uint8_t *data, int length, uint8_t out[16]) {
    uint8_t digest[EVP_MAX_MD_SIZE];
    size_t written = 0;
    if (!EVP_MAC_init(mac, NULL, 0, NULL) || !EVP_MAC_update(mac, data, (size_t)length)
        || !EVP_MAC_final(mac, digest, &written, sizeof digest) || written < 16)
        return 0;
    memcpy(out, digest, 16);
    return 1;
}

/* The reply to `data` in `reply` (room for MAX_UDP_PAYLOAD), T3 included unless it is written in clear
 * after the protection (*stamp_later set: the caller writes it just before sending). */
static int build_reply(SessionObject *s, const uint8_t *data, Py_ssize_t n, uint64_t receive_ntp, int ttl,
    const uint64_t *t3, uint8_t *reply, Py_ssize_t *reply_length, int *stamp_later) {
    const SenderLayout *in = &s->in;
    const ReplyLayout *out = &s->out;
    if (n < in->size) return RC_SHORT;
    const uint8_t *head = data;
    uint8_t clear[HEAD_MAX];
    if (in->covered) { /* decrypt the covered part, check its HMAC, read the rest in clear */
        uint8_t expected[16];
        memcpy(clear, data, (size_t)in->size); /* n >= in->size; the reference reads the rest in clear too */
        if (!cbc(s->decrypt, data, clear, in->covered) || !hmac16(s->mac, clear, in->covered, expected)) {
            ERR_clear_error();
            return RC_CRYPTO;
        }
        if (CRYPTO_memcmp(expected, data + in->hmac, 16) != 0) return RC_BAD_HMAC;
        head = clear;
    }
    /* RFC 5357 s4.2.1: as long as the sender's packet (padding cut by the header difference); RFC 6038: the
     * octets the session reflects, which start the padding, survive the cut as far as the sender sent them
     * (never a zero fill: a reply cannot outgrow its request by more than the header difference). */
    Py_ssize_t padding_in = n - in->size;
    Py_ssize_t padding_out = padding_in - (out->size - in->size);
    Py_ssize_t keep = s->keep_octets < padding_in ? s->keep_octets : padding_in;
    if (padding_out < keep) padding_out = keep;
    if (out->size + padding_out > MAX_UDP_PAYLOAD) return RC_TOO_LONG;
    Py_ssize_t copied = padding_in < padding_out ? padding_in : padding_out;
    memset(reply, 0, (size_t)out->size);
    memcpy(reply + out->size, data + in->size, (size_t)copied);
    memset(reply + out->size + copied, 0, (size_t)(padding_out - copied));

    put_be(reply + out->seq, 4, s->seq);
    put_be(reply + out->error_estimate, 2, __atomic_load_n(&s->error_estimate, __ATOMIC_RELAXED));
    put_be(reply + out->receive_timestamp, 8, receive_ntp);
    memcpy(reply + out->sender_seq, head + in->seq, 4);
    memcpy(reply + out->sender_timestamp, head + in->timestamp, 8);
    memcpy(reply + out->sender_error_estimate, head + in->error_estimate, 2);
    reply[out->sender_ttl] = (uint8_t)ttl;
    *stamp_later = out->timestamp >= out->covered; /* open and authenticated: T3 is outside the protection */
    if (!*stamp_later) put_be(reply + out->timestamp, 8, t3 ? *t3 : ntp_now());
    if (out->covered) {
        uint8_t plain[HEAD_MAX];
        memcpy(plain, reply, (size_t)out->covered);
        if (!hmac16(s->mac, plain, out->covered, reply + out->hmac) || !cbc(s->encrypt, plain, reply, out->covered)) {
            ERR_clear_error();
            return RC_CRYPTO;
        }
    }
    if (*stamp_later && t3 != NULL) put_be(reply + out->timestamp, 8, *t3);
    __atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELAXED); /* only a built reply uses a sequence number */
    *reply_length = out->size + padding_out;
    return RC_OK;
}

static int bucket_take(SessionObject *s, int64_t now) {
    if (s->rate <= 0) return 1;
    double tokens = s->tokens + (double)(now - s->bucket_time) / 1e9 * s->rate;
    s->bucket_time = now;
    if (tokens > s->burst) tokens = s->burst;
    if (tokens >= 1.0) {
        s->tokens = tokens - 1.0;
        return 1;
    }
    s->tokens = tokens;
    return 0;
}

static PyObject *Session_reflect(SessionObject *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"data", "receive_ntp", "ttl", "t3", NULL};
    Py_buffer data;
    unsigned long long receive_ntp;
    int ttl;
    PyObject *t3_object = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*Ki|O", names, &data, &receive_ntp, &ttl, &t3_object))
        return NULL;
    if (!self->ready) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_RuntimeError, "the Session was not initialised");
        return NULL;
    }
    uint64_t t3 = 0;
    if (t3_object != Py_None) {
        t3 = PyLong_AsUnsignedLongLong(t3_object);
        if (PyErr_Occurred()) {
            PyBuffer_Release(&data);
            return NULL;
        }
    }
    PyObject *result = NULL;
    uint8_t *reply = PyMem_Malloc(MAX_UDP_PAYLOAD);
    if (reply == NULL) {
        PyBuffer_Release(&data);
        return PyErr_NoMemory();
    }
    Py_ssize_t length = 0;
    int stamp_later = 0;
    const uint64_t *given = t3_object == Py_None ? NULL : &t3;
    int code = build_reply(self, data.buf, data.len, receive_ntp, ttl & 0xFF, given, reply, &length, &stamp_later);
    if (code == RC_OK) {
        if (stamp_later && t3_object == Py_None) put_be(reply + self->out.timestamp, 8, ntp_now());
        result = PyBytes_FromStringAndSize((const char *)reply, length);
    } else {
        result = PyLong_FromLong(code);
    }
    PyMem_Free(reply);
    PyBuffer_Release(&data);
    return result;
}

static PyObject *Session_take(SessionObject *self, PyObject *arg) {
    long long now = PyLong_AsLongLong(arg);
    if (now == -1 && PyErr_Occurred()) return NULL;
    return PyBool_FromLong(bucket_take(self, now));
}

static PyObject *Session_activate(SessionObject *self, PyObject *arg) {
    long long until = PyLong_AsLongLong(arg);
    if (until == -1 && PyErr_Occurred()) return NULL;
    __atomic_store_n(&self->active_until, (int64_t)until, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyObject *Session_get_error_estimate(SessionObject *self, void *closure) {
    (void)closure;
    return PyLong_FromLong(__atomic_load_n(&self->error_estimate, __ATOMIC_RELAXED));
}

static int Session_set_error_estimate(SessionObject *self, PyObject *value, void *closure) {
    (void)closure;
    long word = value == NULL ? -1 : PyLong_AsLong(value);
    if (word == -1 && PyErr_Occurred()) return -1;
    if (word < 0 || word > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "the Error Estimate is a 16-bit word");
        return -1;
    }
    __atomic_store_n(&self->error_estimate, (uint16_t)word, __ATOMIC_RELAXED);
    return 0;
}

static PyObject *Session_repr(SessionObject *self) {
    return PyUnicode_FromFormat("Session(%s, seq=%lu, reflected=%llu)", self->out.covered ? "protected" : "open",
        (unsigned long)__atomic_load_n(&self->seq, __ATOMIC_RELAXED),
        __atomic_load_n(&self->reflected, __ATOMIC_RELAXED));
}

static PyMethodDef Session_methods[] = {
    {"reflect", (PyCFunction)(void (*)(void))Session_reflect, METH_VARARGS | METH_KEYWORDS,
        "The reply to one datagram (bytes), or the reason code (int) it cannot be reflected; counts nothing."},
    {"take", (PyCFunction)Session_take, METH_O, "One packet from the session's rate limit at monotonic now_ns."},
    {"activate", (PyCFunction)Session_activate, METH_O,
        "Reflect in serve() until this monotonic time in ns (0: hand every packet to Python)."},
    {NULL, NULL, 0, NULL},
};

static PyObject *Session_get_seq(SessionObject *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLong(__atomic_load_n(&self->seq, __ATOMIC_RELAXED));
}

static PyObject *Session_get_reflected(SessionObject *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&self->reflected, __ATOMIC_RELAXED));
}

static PyObject *Session_get_last_activity(SessionObject *self, void *closure) {
    (void)closure;
    return PyLong_FromLongLong(__atomic_load_n(&self->last_activity, __ATOMIC_RELAXED));
}

static PyGetSetDef Session_getset[] = {
    {"seq", (getter)Session_get_seq, NULL, "the reflector's next sequence number", NULL},
    {"reflected", (getter)Session_get_reflected, NULL, "replies serve() handed to the kernel", NULL},
    {"last_activity", (getter)Session_get_last_activity, NULL, "monotonic ns of the last packet serve() took",
        NULL},
    {"error_estimate", (getter)Session_get_error_estimate, (setter)Session_set_error_estimate,
        "the raw Error Estimate word of the reflector's clock", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SessionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nf.net._fast_reflector.Session",
    .tp_doc = "The replies of one test session, built from the field offsets of its layouts.",
    .tp_basicsize = sizeof(SessionObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Session_init,
    .tp_dealloc = (destructor)Session_dealloc,
    .tp_repr = (reprfunc)Session_repr,
    .tp_methods = Session_methods,
    .tp_getset = Session_getset,
};

/* Port ------------------------------------------------------------------------------------------------ */

typedef struct {
    SessionObject *session; /* a strong reference */
    int any_host, any_port; /* wildcards: the request named no sender address / port 0 */
    uint8_t host[16];
    uint16_t port; /* host order */
    int dscp;
} Entry;

typedef struct {
    int index, code, value; /* value: errno of a send failure, else the datagram's length */
    uint64_t receive_ntp;
    int ttl;
} Deferred;

typedef struct {
    PyObject_HEAD
    int ready; /* every buffer allocated; set last, checked by serve() and add() */
    int fd, family, batch, send_batch;
    pthread_mutex_t lock;
    int serving;
    int stopping; /* set by stop() from any thread: serve() returns after its current batch */
    Entry *entries;
    Py_ssize_t count, capacity;
    int dscp;
    unsigned long long receive_calls, send_calls;
    uint8_t *slots, *control, *replies;
    struct sockaddr_in6 *names;
    struct iovec *iov, *reply_iov;
    struct mmsghdr *headers, *reply_headers;
    Deferred *deferred;
    int *reply_index; /* the received datagram each queued reply answers */
    SessionObject **reply_session;
} PortObject;

static void Port_clear_entries(PortObject *self) {
    for (Py_ssize_t i = 0; i < self->count; i++) Py_CLEAR(self->entries[i].session);
    self->count = 0;
}

static void Port_free_buffers(PortObject *self) {
    void **buffers[] = {(void **)&self->slots, (void **)&self->control, (void **)&self->replies,
        (void **)&self->names, (void **)&self->iov, (void **)&self->reply_iov, (void **)&self->headers,
        (void **)&self->reply_headers, (void **)&self->deferred, (void **)&self->reply_index,
        (void **)&self->reply_session};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++) {
        PyMem_RawFree(*buffers[i]);
        *buffers[i] = NULL;
    }
}

static void Port_dealloc(PortObject *self) {
    Port_clear_entries(self);
    PyMem_RawFree(self->entries);
    Port_free_buffers(self);
    pthread_mutex_destroy(&self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Port_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    PortObject *self = (PortObject *)type->tp_alloc(type, 0);
    if (self != NULL) pthread_mutex_init(&self->lock, NULL);
    return (PyObject *)self;
}

static int Port_init(PortObject *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"fd", "batch", "send_batch", NULL};
    int fd, batch = 16, send_batch = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|ii", names, &fd, &batch, &send_batch)) return -1;
    if (self->ready || self->slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a Port is initialised once");
        return -1;
    }
    if (batch < 1 || batch > 1024 || send_batch < 1 || send_batch > batch) {
        PyErr_SetString(PyExc_ValueError, "batch must be 1..1024 and send_batch 1..batch");
        return -1;
    }
    struct sockaddr_storage local;
    socklen_t length = sizeof local;
    if (getsockname(fd, (struct sockaddr *)&local, &length) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (local.ss_family != AF_INET && local.ss_family != AF_INET6) {
        PyErr_SetString(PyExc_ValueError, "the socket is neither IPv4 nor IPv6");
        return -1;
    }
    self->fd = fd;
    self->family = local.ss_family;
    self->batch = batch;
    self->send_batch = send_batch;
    self->dscp = 0;
    /* Large slots are only reserved here; the kernel backs the pages the datagrams actually touch. */
    self->slots = PyMem_RawMalloc((size_t)batch * SLOT_SIZE);
    self->replies = PyMem_RawMalloc((size_t)send_batch * SLOT_SIZE);
    self->control = PyMem_RawCalloc((size_t)batch, CONTROL_SIZE);
    self->names = PyMem_RawCalloc((size_t)batch, sizeof(struct sockaddr_in6));
    self->iov = PyMem_RawCalloc((size_t)batch, sizeof(struct iovec));
    self->reply_iov = PyMem_RawCalloc((size_t)send_batch, sizeof(struct iovec));
    self->headers = PyMem_RawCalloc((size_t)batch, sizeof(struct mmsghdr));
    self->reply_headers = PyMem_RawCalloc((size_t)send_batch, sizeof(struct mmsghdr));
    self->deferred = PyMem_RawCalloc((size_t)batch, sizeof(Deferred));
    self->reply_index = PyMem_RawCalloc((size_t)send_batch, sizeof(int));
    self->reply_session = PyMem_RawCalloc((size_t)send_batch, sizeof(SessionObject *));
    if (!self->slots || !self->replies || !self->control || !self->names || !self->iov || !self->reply_iov
        || !self->headers || !self->reply_headers || !self->deferred || !self->reply_index || !self->reply_session) {
        Port_free_buffers(self);
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < batch; i++) {
        self->iov[i].iov_base = self->slots + (size_t)i * SLOT_SIZE;
        self->iov[i].iov_len = SLOT_SIZE;
    }
    for (int i = 0; i < send_batch; i++) {
        self->reply_iov[i].iov_base = self->replies + (size_t)i * SLOT_SIZE;
        self->reply_headers[i].msg_hdr.msg_iov = &self->reply_iov[i];
        self->reply_headers[i].msg_hdr.msg_iovlen = 1;
    }
    self->ready = 1;
    return 0;
}

/* add(session, host, port, dscp): host is the packed address (4 or 16 octets) or b"" for any sender. */
static PyObject *Port_add(PortObject *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"session", "host", "port", "dscp", NULL};
    PyObject *session;
    Py_buffer host;
    int port, dscp;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!y*ii", names, &SessionType, &session, &host, &port, &dscp))
        return NULL;
    SessionObject *s = (SessionObject *)session;
    if (!self->ready || !s->ready || s->attached) {
        PyBuffer_Release(&host);
        PyErr_SetString(PyExc_RuntimeError,
            !self->ready ? "the Port was not initialised"
            : !s->ready  ? "the Session was not initialised"
                         : "the Session already belongs to a Port");
        return NULL;
    }
    Py_ssize_t host_length = host.len;
    Entry entry = {0};
    if (host_length) memcpy(entry.host, host.buf, host_length <= 16 ? (size_t)host_length : 16);
    PyBuffer_Release(&host);
    Py_ssize_t wanted = self->family == AF_INET ? 4 : 16;
    if ((host_length != 0 && host_length != wanted) || port < 0 || port > 0xFFFF || dscp < 0 || dscp > 63) {
        PyErr_SetString(PyExc_ValueError, "host must be a packed address of the socket's family or b\"\"");
        return NULL;
    }
    entry.any_host = host_length == 0;
    entry.any_port = port == 0;
    entry.port = (uint16_t)port;
    entry.dscp = dscp;
    entry.session = (SessionObject *)session;
    Py_INCREF(session);
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    if (self->count == self->capacity) {
        Py_ssize_t capacity = self->capacity ? self->capacity * 2 : 4;
        Entry *grown = PyMem_RawRealloc(self->entries, (size_t)capacity * sizeof(Entry));
        if (grown == NULL) failed = 1;
        else {
            self->entries = grown;
            self->capacity = capacity;
        }
    }
    if (!failed) {
        self->entries[self->count++] = entry;
        s->attached = 1;
    }
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    if (failed) {
        Py_DECREF(session);
        return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

static PyObject *Port_remove(PortObject *self, PyObject *session) {
    SessionObject *removed = NULL;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    for (Py_ssize_t i = 0; i < self->count; i++) {
        if ((PyObject *)self->entries[i].session == session) {
            removed = self->entries[i].session;
            removed->attached = 0;
            memmove(&self->entries[i], &self->entries[i + 1], (size_t)(self->count - i - 1) * sizeof(Entry));
            self->count -= 1;
            break;
        }
    }
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    Py_XDECREF(removed);
    return PyBool_FromLong(removed != NULL);
}

static Entry *find_entry(PortObject *self, const struct sockaddr_in6 *name, socklen_t length) {
    const uint8_t *host;
    uint16_t port;
    if (self->family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)name;
        if (length < (socklen_t)sizeof *v4 || v4->sin_family != AF_INET) return NULL;
        host = (const uint8_t *)&v4->sin_addr;
        port = ntohs(v4->sin_port);
    } else {
        if (length < (socklen_t)sizeof *name || name->sin6_family != AF_INET6) return NULL;
        host = (const uint8_t *)&name->sin6_addr;
        port = ntohs(name->sin6_port);
    }
    size_t host_length = self->family == AF_INET ? 4 : 16;
    /* Exact entries first, then wildcards in the order they were added, as Python's find() does. */
    for (int wildcards = 0; wildcards < 2; wildcards++) {
        for (Py_ssize_t i = 0; i < self->count; i++) {
            Entry *e = &self->entries[i];
            if ((e->any_host || e->any_port) != wildcards) continue;
            if ((e->any_host || memcmp(e->host, host, host_length) == 0) && (e->any_port || e->port == port))
                return e;
        }
    }
    return NULL;
}

static int set_dscp(PortObject *self, int dscp) {
    int tos = dscp << 2;
    int done = self->family == AF_INET6 ? setsockopt(self->fd, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof tos)
                                        : setsockopt(self->fd, IPPROTO_IP, IP_TOS, &tos, sizeof tos);
    if (done != 0) return errno;
    self->dscp = dscp;
    return 0;
}

static void read_control(const struct msghdr *hdr, uint64_t *receive_ntp, int *ttl) {
    *receive_ntp = 0;
    *ttl = TEST_TTL;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(hdr); c != NULL; c = CMSG_NXTHDR((struct msghdr *)hdr, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS
            && c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            *receive_ntp = ntp_of(&ts);
        } else if (((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TTL)
                       || (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT))
                   && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int value;
            memcpy(&value, CMSG_DATA(c), sizeof value);
            *ttl = value & 0xFF;
        }
    }
    if (*receive_ntp == 0) *receive_ntp = ntp_now(); /* no kernel timestamp: now is the best there is */
}

static void defer(PortObject *self, int *deferred, int index, int code, int value, uint64_t receive_ntp, int ttl) {
    Deferred *d = &self->deferred[(*deferred)++];
    d->index = index;
    d->code = code;
    d->value = value;
    d->receive_ntp = receive_ntp;
    d->ttl = ttl;
}

/* Sends the queued replies; a reply the kernel did not take is uncounted and deferred as send-failed. */
static void flush(PortObject *self, int *queued, int *deferred) {
    int start = 0;
    while (start < *queued) {
        __atomic_fetch_add(&self->send_calls, 1, __ATOMIC_RELAXED); /* read live by Python */
        int sent = sendmmsg(self->fd, self->reply_headers + start, (unsigned)(*queued - start), MSG_DONTWAIT);
        if (sent > 0) {
            start += sent;
            continue;
        }
        /* The reply at `start` failed (a short count is followed by the failing call): only that one is lost. */
        int error = sent < 0 ? errno : EIO;
        SessionObject *s = self->reply_session[start];
        __atomic_store_n(&s->reflected, s->reflected - 1, __ATOMIC_RELAXED);
        defer(self, deferred, self->reply_index[start], RC_SEND_FAILED, error, 0, 0);
        start += 1;
    }
    *queued = 0;
}

/* One received batch: reflect what an active session takes, defer the rest. Called with the lock held. */
static int reflect_batch(PortObject *self, int got, int64_t now) {
    int deferred = 0, queued = 0;
    for (int i = 0; i < got; i++) {
        struct msghdr *hdr = &self->headers[i].msg_hdr;
        int length = (int)self->headers[i].msg_len;
        uint64_t receive_ntp;
        int ttl;
        read_control(hdr, &receive_ntp, &ttl);
        Entry *e = find_entry(self, &self->names[i], hdr->msg_namelen);
        if (e == NULL) {
            defer(self, &deferred, i, RC_UNHANDLED, length, receive_ntp, ttl);
            continue;
        }
        SessionObject *s = e->session;
        int64_t until = __atomic_load_n(&s->active_until, __ATOMIC_ACQUIRE);
        if (until == 0 || now > until) { /* not started, or past its Timeout: Python ends it and counts it */
            defer(self, &deferred, i, RC_UNHANDLED, length, receive_ntp, ttl);
            continue;
        }
        if (!bucket_take(s, now)) {
            defer(self, &deferred, i, RC_RATE_LIMITED, length, receive_ntp, ttl);
            continue;
        }
        __atomic_store_n(&s->last_activity, now, __ATOMIC_RELAXED);
        if (e->dscp != self->dscp) flush(self, &queued, &deferred); /* those leave with their own DSCP */
        int batched = self->send_batch > 1 && got > 1;
        uint8_t *reply = batched ? self->replies + (size_t)queued * SLOT_SIZE : self->replies;
        Py_ssize_t reply_length = 0;
        int stamp_later = 0;
        int code = build_reply(s, self->slots + (size_t)i * SLOT_SIZE, length, receive_ntp, ttl, NULL, reply,
            &reply_length, &stamp_later);
        if (code != RC_OK) {
            defer(self, &deferred, i, code, length, receive_ntp, ttl);
            continue;
        }
        if (e->dscp != self->dscp) { /* after the build, as the reference: a failure still used a number */
            int error = set_dscp(self, e->dscp);
            if (error) {
                defer(self, &deferred, i, RC_SEND_FAILED, error, receive_ntp, ttl);
                continue;
            }
        }
        /* counted before the send: a sender holding its reply finds it in the totals */
        __atomic_store_n(&s->reflected, s->reflected + 1, __ATOMIC_RELAXED);
        if (stamp_later) put_be(reply + s->out.timestamp, 8, ntp_now());
        if (batched) {
            struct msghdr *out = &self->reply_headers[queued].msg_hdr;
            out->msg_name = &self->names[i];
            out->msg_namelen = hdr->msg_namelen;
            self->reply_iov[queued].iov_len = (size_t)reply_length;
            self->reply_index[queued] = i;
            self->reply_session[queued] = s;
            if (++queued == self->send_batch) flush(self, &queued, &deferred);
            continue;
        }
        __atomic_fetch_add(&self->send_calls, 1, __ATOMIC_RELAXED); /* read live by Python */
        /* never blocks holding the lock that add()/remove() wait for: a full queue is a lost reply */
        if (sendto(self->fd, reply, (size_t)reply_length, MSG_DONTWAIT, (struct sockaddr *)&self->names[i],
                hdr->msg_namelen) < 0) {
            __atomic_store_n(&s->reflected, s->reflected - 1, __ATOMIC_RELAXED);
            defer(self, &deferred, i, RC_SEND_FAILED, errno, receive_ntp, ttl);
        }
    }
    flush(self, &queued, &deferred);
    return deferred;
}

static PyObject *address_of(PortObject *self, int index) {
    const struct sockaddr_in6 *name = &self->names[index];
    char text[INET6_ADDRSTRLEN];
    if (self->family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)name;
        inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
        return Py_BuildValue("(si)", text, ntohs(v4->sin_port));
    }
    inet_ntop(AF_INET6, &name->sin6_addr, text, sizeof text);
    return Py_BuildValue("(siII)", text, ntohs(name->sin6_port), ntohl(name->sin6_flowinfo), name->sin6_scope_id);
}

/* serve(until_ns, busy_poll_ns) -> (idle, deferred)
 * Reflects until a batch leaves something for Python, the monotonic clock passes until_ns, the socket's
 * receive timeout (SO_RCVTIMEO) expires with nothing received (idle), or stop() was called. Each deferred item is
 * (code, datagram or None, address, receive_ntp, ttl, value); the datagram is there for RC_UNHANDLED. */
static PyObject *Port_serve(PortObject *self, PyObject *args) {
    long long until, busy_poll;
    if (!PyArg_ParseTuple(args, "LL", &until, &busy_poll)) return NULL;
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "the Port was not initialised");
        return NULL;
    }
    if (self->serving) {
        PyErr_SetString(PyExc_RuntimeError, "serve() is already running on another thread");
        return NULL;
    }
    self->serving = 1;
    int deferred = 0, idle = 0, error = 0;
    Py_BEGIN_ALLOW_THREADS
    int64_t spin_until = 0;
    for (;;) {
        if (__atomic_load_n(&self->stopping, __ATOMIC_ACQUIRE)) break;
        for (int i = 0; i < self->batch; i++) {
            struct msghdr *hdr = &self->headers[i].msg_hdr;
            hdr->msg_name = &self->names[i];
            hdr->msg_namelen = sizeof(struct sockaddr_in6);
            hdr->msg_iov = &self->iov[i];
            hdr->msg_iovlen = 1;
            hdr->msg_control = self->control + (size_t)i * CONTROL_SIZE;
            hdr->msg_controllen = CONTROL_SIZE;
            hdr->msg_flags = 0;
        }
        int spinning = spin_until != 0;
        int got = recvmmsg(self->fd, self->headers, (unsigned)self->batch,
            MSG_WAITFORONE | (spinning ? MSG_DONTWAIT : 0), NULL);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (spinning) {
                    if (monotonic_ns() >= spin_until) spin_until = 0;
                    continue;
                }
                idle = 1;
                break;
            }
            if (errno == EINTR) break;
            error = errno;
            break;
        }
        __atomic_fetch_add(&self->receive_calls, 1, __ATOMIC_RELAXED);
        int64_t now = monotonic_ns();
        pthread_mutex_lock(&self->lock);
        deferred = reflect_batch(self, got, now);
        pthread_mutex_unlock(&self->lock);
        if (busy_poll > 0) spin_until = now + busy_poll;
        if (deferred > 0 || now >= until) break;
    }
    Py_END_ALLOW_THREADS
    self->serving = 0;
    if (error) {
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *items = PyList_New(deferred);
    if (items == NULL) return NULL;
    for (int k = 0; k < deferred; k++) {
        Deferred *d = &self->deferred[k];
        PyObject *data = Py_None;
        Py_INCREF(data);
        if (d->code == RC_UNHANDLED) {
            Py_DECREF(data);
            data = PyBytes_FromStringAndSize((const char *)self->slots + (size_t)d->index * SLOT_SIZE, d->value);
        }
        PyObject *address = address_of(self, d->index);
        PyObject *item = data && address
            ? Py_BuildValue("(iOOKii)", d->code, data, address, (unsigned long long)d->receive_ntp, d->ttl, d->value)
            : NULL;
        Py_XDECREF(data);
        Py_XDECREF(address);
        if (item == NULL) {
            Py_DECREF(items);
            return NULL;
        }
        PyList_SET_ITEM(items, k, item);
    }
    return Py_BuildValue("(NN)", PyBool_FromLong(idle), items);
}

static PyObject *Port_stop(PortObject *self, PyObject *unused) {
    (void)unused;
    __atomic_store_n(&self->stopping, 1, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyObject *Port_get_dscp(PortObject *self, void *closure) {
    (void)closure;
    return PyLong_FromLong(self->dscp);
}

static int Port_set_dscp(PortObject *self, PyObject *value, void *closure) {
    (void)closure;
    long dscp = value == NULL ? -1 : PyLong_AsLong(value);
    if (dscp == -1 && PyErr_Occurred()) return -1;
    if (dscp < 0 || dscp > 63) {
        PyErr_SetString(PyExc_ValueError, "DSCP is 0..63");
        return -1;
    }
    int error = set_dscp(self, (int)dscp);
    if (error) {
        errno = error;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static PyObject *Port_repr(PortObject *self) {
    return PyUnicode_FromFormat("Port(fd=%d, sessions=%zd, batch=%d)", self->fd, self->count, self->batch);
}

static PyMethodDef Port_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Port_add, METH_VARARGS | METH_KEYWORDS,
        "Reflect for a session: packets from host:port (b\"\" / 0: any) are its own."},
    {"remove", (PyCFunction)Port_remove, METH_O, "Forget a session; True if it was there."},
    {"serve", (PyCFunction)Port_serve, METH_VARARGS, "Receive and reflect until Python is needed."},
    {"stop", (PyCFunction)Port_stop, METH_NOARGS,
        "Make serve() return (within one receive timeout) and every later call return at once."},
    {NULL, NULL, 0, NULL},
};

static PyObject *Port_get_receive_calls(PortObject *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&self->receive_calls, __ATOMIC_RELAXED));
}

static PyObject *Port_get_send_calls(PortObject *self, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&self->send_calls, __ATOMIC_RELAXED));
}

static PyGetSetDef Port_getset[] = {
    {"dscp", (getter)Port_get_dscp, (setter)Port_set_dscp, "the DSCP the socket sends with now", NULL},
    {"receive_calls", (getter)Port_get_receive_calls, NULL, "recvmmsg calls that returned data (live)", NULL},
    {"send_calls", (getter)Port_get_send_calls, NULL, "sendto and sendmmsg calls (live)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PortType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nf.net._fast_reflector.Port",
    .tp_doc = "One reflector socket's batched receive-and-reflect loop.",
    .tp_basicsize = sizeof(PortObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Port_new,
    .tp_init = (initproc)Port_init,
    .tp_dealloc = (destructor)Port_dealloc,
    .tp_repr = (reprfunc)Port_repr,
    .tp_methods = Port_methods,
    .tp_getset = Port_getset,
};

/* Module ---------------------------------------------------------------------------------------------- */

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "nf.net._fast_reflector",
    .m_doc = "The Session-Reflector's per-packet path: reply building and the batched socket loop.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fast_reflector(void) {
    if (OpenSSL_version_num() < MIN_OPENSSL) { /* built against a newer one than the one loaded */
        PyErr_Format(PyExc_ImportError, "the reflector fast path needs OpenSSL 3.0.3 or newer, not %s",
            OpenSSL_version(OPENSSL_VERSION));
        return NULL;
    }
    if (PyType_Ready(&KeysType) < 0 || PyType_Ready(&SessionType) < 0 || PyType_Ready(&PortType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    struct {
        const char *name;
        long value;
    } constants[] = {
        {"UNHANDLED", RC_UNHANDLED}, {"SHORT", RC_SHORT}, {"BAD_HMAC", RC_BAD_HMAC}, {"TOO_LONG", RC_TOO_LONG},
        {"RATE_LIMITED", RC_RATE_LIMITED}, {"SEND_FAILED", RC_SEND_FAILED}, {"CRYPTO_FAILED", RC_CRYPTO},
        {"MAX_UDP_PAYLOAD", MAX_UDP_PAYLOAD},
    };
    for (size_t i = 0; i < sizeof constants / sizeof constants[0]; i++) {
        if (PyModule_AddIntConstant(m, constants[i].name, constants[i].value) < 0) goto fail;
    }
    PyTypeObject *types[] = {&KeysType, &SessionType, &PortType};
    const char *type_names[] = {"Keys", "Session", "Port"};
    for (int i = 0; i < 3; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, type_names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            goto fail;
        }
    }
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
