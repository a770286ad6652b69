// recvmmsg/sendmmsg on mesh-dns's UDP socket, N-API in plain C (no node-addon-api: nothing to install).
//
// Why: under load Node's dgram costs one recvmsg, one sendmsg, a Buffer, an rinfo object, a send
// request and two calls between C++ and JS per datagram; the DNS work itself is a small part. Here a
// readable socket is drained with recvmmsg in batches straight into buffers JS allocated once, JS is
// called once per batch (it reads the queries and writes the answers in place), and the answers go
// out with one sendmmsg. One thread: a uv_poll_t on Node's own event loop, no locks.
//
// The socket stays Node's: JS passes the fd of a bound dgram socket (stopping dgram's own reading
// first) and this module polls a dup() of it, so libuv's watcher of the original fd is untouched and
// the socket can still be handed over (hot restart) and closed by dgram as before. close() stops the
// poll and closes only the duplicate.
//
// JS API (src/native-udp.ts is the only caller):
//   open(fd, batch, rxSlot, txSlot, rx, tx, addrs, lens, onBatch, onError) -> handle
//     rx: batch * rxSlot bytes, query i at i * rxSlot; tx: batch * txSlot bytes, answer i at i * txSlot
//     addrs: batch * 28 bytes, the sender of query i as the kernel wrote it (sockaddr_in / sockaddr_in6)
//     lens: Int32Array(2 * batch): lens[i] = length of query i, JS sets lens[batch + i] = length of
//           answer i (0: no answer)
//     onBatch(count): count queries are in; onError(errno, where): a receive or send failure
//   sendTo(handle, data, sockaddr) -> 0 | -errno   one datagram (answers that come later, e.g. forwarded)
//   stats(handle) -> { batches, datagrams, answers, sendErrors, recvErrors }
//   close(handle)                                 idempotent; no callback after it
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define ADDR_SLOT 28 /* sizeof(struct sockaddr_in6) */
/* batches drained per readable event before other work (timers, TCP, admin) gets the loop again */
#define ROUNDS 8

enum { REF_RX, REF_TX, REF_ADDRS, REF_LENS, REF_ON_BATCH, REF_ON_ERROR, REF_COUNT };

typedef struct {
  napi_env env;
  uv_poll_t poll;
  int fd;
  int closed;
  uint32_t batch, rx_slot, tx_slot;
  uint8_t *rx, *tx, *addrs;
  int32_t *lens;
  napi_ref refs[REF_COUNT];
  napi_async_context async_context;
  /* owners of this memory: the poll handle until libuv closed it, and the JS handle until collected */
  int owners;
  struct mmsghdr *rmsg, *smsg;
  struct iovec *riov, *siov;
  double batches, datagrams, answers, send_errors, recv_errors;
} batch_socket;

#define CHECK(env, call)                                   \
  do {                                                     \
    if ((call) != napi_ok) {                               \
      napi_throw_error((env), NULL, "udp_batch: " #call);  \
      return NULL;                                         \
    }                                                      \
  } while (0)

static void free_socket(batch_socket *s) {
  if (--s->owners > 0) return;
  free(s->rmsg);
  free(s->smsg);
  free(s->riov);
  free(s->siov);
  free(s);
}

static void on_poll_closed(uv_handle_t *handle) {
  batch_socket *s = (batch_socket *)handle->data;
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
  free_socket(s);
}

/* Stops polling and drops the references; the memory goes once libuv has closed the poll handle. */
static void stop_socket(batch_socket *s) {
  if (s->closed) return;
  s->closed = 1;
  uv_poll_stop(&s->poll);
  for (int i = 0; i < REF_COUNT; i++) {
    if (s->refs[i] != NULL) napi_delete_reference(s->env, s->refs[i]);
    s->refs[i] = NULL;
  }
  if (s->async_context != NULL) napi_async_destroy(s->env, s->async_context);
  s->async_context = NULL;
  uv_close((uv_handle_t *)&s->poll, on_poll_closed);
}

static void on_external_collected(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free_socket((batch_socket *)data);
}

static void on_env_cleanup(void *arg) {
  stop_socket((batch_socket *)arg);
}

/* Calls a JS callback as an event from the loop (microtasks and nextTicks run after it). */
static void call_js(batch_socket *s, int which, size_t argc, napi_value *argv) {
  napi_env env = s->env;
  napi_value fn, recv, result;
  if (s->closed || napi_get_reference_value(env, s->refs[which], &fn) != napi_ok || fn == NULL) return;
  napi_get_global(env, &recv); // napi_make_callback wants an object as `this`
  napi_status st = napi_make_callback(env, s->async_context, recv, fn, argc, argv, &result);
  if (st == napi_pending_exception) {
    // The JS side catches everything; should something escape, it is an uncaught exception as for any event.
    napi_value err;
    if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
  }
}

static void report_error(batch_socket *s, int err, const char *where) {
  napi_value argv[2];
  napi_create_int32(s->env, err, &argv[0]);
  napi_create_string_utf8(s->env, where, NAPI_AUTO_LENGTH, &argv[1]);
  call_js(s, REF_ON_ERROR, 2, argv);
}

static socklen_t addr_len(const uint8_t *addr) {
  sa_family_t family;
  memcpy(&family, addr, sizeof(family));
  return family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* Sends the answers JS wrote for the last batch of `count` queries; a failing datagram is skipped and counted. */
static void send_answers(batch_socket *s, int count) {
  int m = 0;
  for (int i = 0; i < count; i++) {
    int32_t len = s->lens[s->batch + i];
    if (len <= 0) continue;
    if ((uint32_t)len > s->tx_slot) len = (int32_t)s->tx_slot;
    struct msghdr *h = &s->smsg[m].msg_hdr;
    memset(h, 0, sizeof(*h));
    h->msg_name = s->addrs + (size_t)i * ADDR_SLOT;
    h->msg_namelen = addr_len(s->addrs + (size_t)i * ADDR_SLOT);
    s->siov[m].iov_base = s->tx + (size_t)i * s->tx_slot;
    s->siov[m].iov_len = (size_t)len;
    h->msg_iov = &s->siov[m];
    h->msg_iovlen = 1;
    m++;
  }
  int off = 0, last_errno = 0;
  while (off < m) {
    int sent = sendmmsg(s->fd, s->smsg + off, (unsigned)(m - off), MSG_DONTWAIT);
    if (sent < 0) {
      if (errno == EINTR) continue;
      // This datagram failed (EAGAIN with a full send buffer, EPERM from a firewall, ...): drop it as
      // a UDP server drops under overload, and go on with the rest.
      last_errno = errno;
      s->send_errors++;
      off++;
      continue;
    }
    s->answers += sent;
    off += sent;
  }
  if (last_errno != 0) report_error(s, -last_errno, "sendmmsg");
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  (void)events;
  batch_socket *s = (batch_socket *)handle->data;
  if (s->closed) return;
  napi_handle_scope scope;
  if (napi_open_handle_scope(s->env, &scope) != napi_ok) return;
  if (status < 0) {
    s->recv_errors++;
    report_error(s, status, "poll");
  } else {
    for (int round = 0; round < ROUNDS && !s->closed; round++) {
      for (uint32_t i = 0; i < s->batch; i++) {
        struct msghdr *h = &s->rmsg[i].msg_hdr;
        h->msg_namelen = ADDR_SLOT;
        h->msg_flags = 0;
        s->rmsg[i].msg_len = 0;
      }
      int n;
      do n = recvmmsg(s->fd, s->rmsg, s->batch, MSG_DONTWAIT, NULL);
      while (n < 0 && errno == EINTR);
      if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          s->recv_errors++;
          report_error(s, -errno, "recvmmsg");
        }
        break;
      }
      if (n == 0) break;
      for (int i = 0; i < n; i++) {
        // a datagram longer than the slot arrives cut to the slot (MSG_TRUNC): its header and question are all there
        s->lens[i] = (int32_t)s->rmsg[i].msg_len;
        s->lens[s->batch + i] = 0;
        if (s->rmsg[i].msg_hdr.msg_namelen > ADDR_SLOT) s->lens[i] = 0;
      }
      s->batches++;
      s->datagrams += n;
      napi_value argv[1];
      napi_create_int32(s->env, n, &argv[0]);
      call_js(s, REF_ON_BATCH, 1, argv);
      if (s->closed) break; // JS closed it from the callback: the fd may no longer be ours to use
      send_answers(s, n);
      if ((uint32_t)n < s->batch) break; // drained
    }
  }
  napi_close_handle_scope(s->env, scope);
}

static void *buffer_data(napi_env env, napi_value value, size_t *length) {
  void *data = NULL;
  bool is_buffer = false, is_typed = false;
  napi_is_buffer(env, value, &is_buffer);
  if (is_buffer) {
    if (napi_get_buffer_info(env, value, &data, length) != napi_ok) return NULL;
    return data;
  }
  napi_is_typedarray(env, value, &is_typed);
  if (is_typed) {
    napi_typedarray_type type;
    size_t count, offset;
    napi_value ab;
    if (napi_get_typedarray_info(env, value, &type, &count, &data, &ab, &offset) != napi_ok || type != napi_int32_array) return NULL;
    *length = count * sizeof(int32_t);
    return data;
  }
  return NULL;
}

static batch_socket *unwrap(napi_env env, napi_value value) {
  void *p = NULL;
  napi_valuetype t;
  if (napi_typeof(env, value, &t) != napi_ok || t != napi_external) return NULL;
  if (napi_get_value_external(env, value, &p) != napi_ok) return NULL;
  return (batch_socket *)p;
}

static napi_value Open(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 10) {
    napi_throw_type_error(env, NULL, "open(fd, batch, rxSlot, txSlot, rx, tx, addrs, lens, onBatch, onError)");
    return NULL;
  }
  int32_t fd, batch, rx_slot, tx_slot;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int32(env, argv[1], &batch) != napi_ok ||
      napi_get_value_int32(env, argv[2], &rx_slot) != napi_ok || napi_get_value_int32(env, argv[3], &tx_slot) != napi_ok ||
      fd < 0 || batch <= 0 || batch > 1024 || rx_slot < 512 || tx_slot < 512) {
    napi_throw_range_error(env, NULL, "open: fd >= 0, 1 <= batch <= 1024, rxSlot and txSlot >= 512");
    return NULL;
  }
  size_t rx_len = 0, tx_len = 0, addrs_len = 0, lens_len = 0;
  uint8_t *rx = buffer_data(env, argv[4], &rx_len), *tx = buffer_data(env, argv[5], &tx_len), *addrs = buffer_data(env, argv[6], &addrs_len);
  int32_t *lens = buffer_data(env, argv[7], &lens_len);
  if (rx == NULL || tx == NULL || addrs == NULL || lens == NULL || rx_len < (size_t)batch * rx_slot || tx_len < (size_t)batch * tx_slot ||
      addrs_len < (size_t)batch * ADDR_SLOT || lens_len < (size_t)batch * 2 * sizeof(int32_t)) {
    napi_throw_range_error(env, NULL, "open: rx, tx, addrs (Buffers) and lens (Int32Array) too small for the batch");
    return NULL;
  }
  napi_valuetype t1, t2;
  napi_typeof(env, argv[8], &t1);
  napi_typeof(env, argv[9], &t2);
  if (t1 != napi_function || t2 != napi_function) {
    napi_throw_type_error(env, NULL, "open: onBatch and onError must be functions");
    return NULL;
  }
  int dup_fd = dup(fd);
  if (dup_fd < 0) {
    napi_throw_error(env, "EBADF", "open: dup(fd) failed: not an open socket");
    return NULL;
  }
  batch_socket *s = calloc(1, sizeof(batch_socket));
  if (s == NULL) {
    close(dup_fd);
    napi_throw_error(env, NULL, "open: out of memory");
    return NULL;
  }
  s->env = env;
  s->owners = 1;
  s->fd = dup_fd;
  s->batch = (uint32_t)batch;
  s->rx_slot = (uint32_t)rx_slot;
  s->tx_slot = (uint32_t)tx_slot;
  s->rx = rx;
  s->tx = tx;
  s->addrs = addrs;
  s->lens = lens;
  s->rmsg = calloc((size_t)batch, sizeof(struct mmsghdr));
  s->smsg = calloc((size_t)batch, sizeof(struct mmsghdr));
  s->riov = calloc((size_t)batch, sizeof(struct iovec));
  s->siov = calloc((size_t)batch, sizeof(struct iovec));
  if (s->rmsg == NULL || s->smsg == NULL || s->riov == NULL || s->siov == NULL) {
    close(dup_fd);
    free_socket(s);
    napi_throw_error(env, NULL, "open: out of memory");
    return NULL;
  }
  for (int32_t i = 0; i < batch; i++) {
    s->riov[i].iov_base = rx + (size_t)i * rx_slot;
    s->riov[i].iov_len = (size_t)rx_slot;
    s->rmsg[i].msg_hdr.msg_iov = &s->riov[i];
    s->rmsg[i].msg_hdr.msg_iovlen = 1;
    s->rmsg[i].msg_hdr.msg_name = addrs + (size_t)i * ADDR_SLOT;
  }
  uv_loop_t *loop = NULL;
  napi_value resource, name;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &s->poll, dup_fd) != 0) {
    close(dup_fd);
    free_socket(s);
    napi_throw_error(env, NULL, "open: cannot poll the socket (uv_poll_init)");
    return NULL;
  }
  s->poll.data = s;
  for (int i = 0; i < REF_COUNT; i++) napi_create_reference(env, argv[4 + i], 1, &s->refs[i]);
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "MESH_DNS_UDP_BATCH", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, resource, name, &s->async_context);
  int rc = uv_poll_start(&s->poll, UV_READABLE, on_readable);
  if (rc != 0) {
    stop_socket(s); // closes the dup once the poll handle is closed
    napi_throw_error(env, NULL, "open: uv_poll_start failed");
    return NULL;
  }
  napi_add_env_cleanup_hook(env, on_env_cleanup, s);
  napi_value external;
  s->owners++;
  if (napi_create_external(env, s, on_external_collected, NULL, &external) != napi_ok) {
    s->owners--;
    napi_remove_env_cleanup_hook(env, on_env_cleanup, s);
    stop_socket(s);
    napi_throw_error(env, NULL, "open: napi_create_external failed");
    return NULL;
  }
  return external;
}

static napi_value Close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  batch_socket *s = argc >= 1 ? unwrap(env, argv[0]) : NULL;
  if (s == NULL) {
    napi_throw_type_error(env, NULL, "close(handle)");
    return NULL;
  }
  if (!s->closed) {
    napi_remove_env_cleanup_hook(env, on_env_cleanup, s);
    stop_socket(s);
  }
  return NULL;
}

static napi_value SendTo(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  batch_socket *s = argc >= 3 ? unwrap(env, argv[0]) : NULL;
  size_t data_len = 0, addr_bytes = 0;
  void *data = argc >= 3 ? buffer_data(env, argv[1], &data_len) : NULL;
  uint8_t *addr = argc >= 3 ? buffer_data(env, argv[2], &addr_bytes) : NULL;
  if (s == NULL || data == NULL || addr == NULL || addr_bytes < ADDR_SLOT) {
    napi_throw_type_error(env, NULL, "sendTo(handle, data: Buffer, sockaddr: Buffer(28))");
    return NULL;
  }
  int result = 0;
  if (s->closed) result = -EBADF;
  else {
    ssize_t r;
    do r = sendto(s->fd, data, data_len, MSG_DONTWAIT, (const struct sockaddr *)addr, addr_len(addr));
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      result = -errno;
      s->send_errors++;
    } else s->answers++;
  }
  napi_value out;
  CHECK(env, napi_create_int32(env, result, &out));
  return out;
}

static napi_value Stats(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  batch_socket *s = argc >= 1 ? unwrap(env, argv[0]) : NULL;
  if (s == NULL) {
    napi_throw_type_error(env, NULL, "stats(handle)");
    return NULL;
  }
  napi_value out, v;
  CHECK(env, napi_create_object(env, &out));
  const char *names[] = {"batches", "datagrams", "answers", "sendErrors", "recvErrors"};
  double values[] = {s->batches, s->datagrams, s->answers, s->send_errors, s->recv_errors};
  for (int i = 0; i < 5; i++) {
    napi_create_double(env, values[i], &v);
    napi_set_named_property(env, out, names[i], v);
  }
  return out;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"open", NULL, Open, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, Close, NULL, NULL, NULL, napi_default, NULL},
      {"sendTo", NULL, SendTo, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, Stats, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}
