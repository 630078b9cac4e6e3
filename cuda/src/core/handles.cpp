// The registry of live handles: every pointer crossing the ABI is looked up before use.
#include <mutex>
#include <unordered_map>

#include "internal.h"

namespace {
std::mutex registry_mutex;
std::unordered_map<const void *, pkv::Kind> &registry() {
  static auto *live = new std::unordered_map<const void *, pkv::Kind>();  // never destroyed: safe at exit
  return *live;
}
}  // namespace

namespace pkv {

const char *kind_name(Kind kind) {
  switch (kind) {
    case Kind::Runtime: return "runtime";
    case Kind::Buffer: return "buffer";
    case Kind::Stream: return "stream";
    case Kind::Event: return "event";
    case Kind::KvPool: return "KV pool";
    case Kind::DecodeEngine: return "decode engine";
    case Kind::Graph: return "graph";
  }
  return "object";
}

void register_handle(void *handle, Kind kind) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  registry()[handle] = kind;
}

void unregister_handle(void *handle) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  registry().erase(handle);
}

bool is_live(const void *handle, Kind kind) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto it = registry().find(handle);
  return it != registry().end() && it->second == kind;
}

pkv_status check_handle(const void *handle, Kind kind, const char *func, const char *arg) {
  if (handle == nullptr) return fail(PKV_ERR_INVALID_HANDLE, "%s: %s is NULL", func, arg);
  if (!is_live(handle, kind))
    return fail(PKV_ERR_INVALID_HANDLE, "%s: %s is not a live %s (freed, destroyed or never created)", func, arg,
                kind_name(kind));
  return PKV_OK;
}

pkv_status check_stream(pkv_runtime *rt, pkv_stream *stream, const char *func) {
  if (!stream) return PKV_OK;
  PKV_TRY(check_handle(stream, Kind::Stream, func, "stream"));
  if (stream->rt != rt) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: the stream belongs to another runtime", func);
  return PKV_OK;
}

void adopt(pkv_runtime *rt, void *child, Kind kind, void (*destroy)(void *)) {
  register_handle(child, kind);
  rt->children.push_back({child, kind, destroy});
}

void disown(pkv_runtime *rt, void *child) {
  unregister_handle(child);
  for (size_t i = 0; i < rt->children.size(); i++) {
    if (rt->children[i].object == child) {
      rt->children[i] = rt->children.back();
      rt->children.pop_back();
      break;
    }
  }
}

}  // namespace pkv
