// getsockopt(SO_ORIGINAL_DST) for sockets accepted after an iptables REDIRECT/DNAT.
// Returns { address, port } of the pre-NAT destination, or null when there is none
// (not redirected, no conntrack entry) — the caller then falls back to the Host header.
#include <napi.h>
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <cstring>

static Napi::Value GetOriginalDst(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "getOriginalDst(fd: number)").ThrowAsJavaScriptException();
    return env.Null();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  std::memset(&ss, 0, sizeof(ss));
  char text[INET6_ADDRSTRLEN] = {0};
  int port = 0;
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &len) == 0 && ss.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<struct sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text));
    port = ntohs(sin->sin_port);
  } else {
    len = sizeof(ss);
    std::memset(&ss, 0, sizeof(ss));
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &len) == 0 && ss.ss_family == AF_INET6) {
      auto* sin6 = reinterpret_cast<struct sockaddr_in6*>(&ss);
      inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof(text));
      port = ntohs(sin6->sin6_port);
    } else {
      return env.Null();
    }
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("address", Napi::String::New(env, text));
  out.Set("port", Napi::Number::New(env, port));
  return out;
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("getOriginalDst", Napi::Function::New(env, GetOriginalDst));
  return exports;
}

NODE_API_MODULE(original_dst, Init)
