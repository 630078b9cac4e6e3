// The registry of live handles: every handle crossing the ABI is a token looked up here before use.
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "internal.h"

namespace {

// Token layout: bit 52 marks a token, bits 44..51 the kind, bits 0..43 the id (2^44 handles per process,
// never reused). The kind in the token lets a freed or wrong-kind handle be named precisely.
constexpr uint64_t kTokenTag = 1ull << 52;
constexpr int kKindShift = 44;
constexpr uint64_t kIdMask = (1ull << kKindShift) - 1;

struct Entry {
  void *object;
  pkv::Kind kind;
  pkv_runtime *rt;  // the runtime it belongs to (itself for a runtime; set by adopt)
};

struct Registry {
  std::mutex mutex;
  std::unordered_map<uint64_t, Entry> by_token;
  std::unordered_map<const void *, uint64_t> by_object;
  uint64_t last_id = 0;
};

Registry &registry() {
  static auto *r = new Registry();  // never destroyed: safe for calls made during exit
  return *r;
}

// The live entry of `token` if it is of `kind`, else an empty one.
Entry find_entry(uint64_t token, pkv::Kind kind) {
  Registry &r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto it = r.by_token.find(token);
  return it != r.by_token.end() && it->second.kind == kind ? it->second : Entry{nullptr, kind, nullptr};
}

bool looks_like_token(uint64_t token) { return (token & ~((1ull << 53) - 1)) == 0 && (token & kTokenTag) != 0; }

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

uint64_t register_handle(void *object, Kind kind) {
  Registry &r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  // 2^44 ids outlast any process (one per nanosecond for hours); running out is a hard stop, not reuse.
  if (r.last_id == kIdMask) throw std::length_error("handle ids exhausted");
  const uint64_t token = kTokenTag | (uint64_t)kind << kKindShift | ++r.last_id;
  r.by_token[token] = Entry{object, kind, kind == Kind::Runtime ? static_cast<pkv_runtime *>(object) : nullptr};
  try {
    r.by_object[object] = token;
  } catch (...) {
    r.by_token.erase(token);
    throw;
  }
  return token;
}

void unregister_handle(void *object) {
  Registry &r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto it = r.by_object.find(object);
  if (it == r.by_object.end()) return;
  r.by_token.erase(it->second);
  r.by_object.erase(it);
}

uint64_t token_of(const void *object) {
  Registry &r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto it = r.by_object.find(object);
  return it == r.by_object.end() ? 0 : it->second;
}

bool token_is_live(uint64_t token) {
  Registry &r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.by_token.count(token) != 0;
}

Kind token_kind(uint64_t token) { return (Kind)((token >> kKindShift) & 0xff); }

void note_capture_use(pkv_runtime *rt, cudaStream_t stream, const void *object) {
  if (object && is_capturing(rt, stream)) rt->capture_uses.push_back({stream, token_of(object)});
}

void *lookup_handle(uint64_t token, Kind kind) { return find_entry(token, kind).object; }

pkv_status resolve_handle(const void *handle, Kind kind, const char *func, const char *arg, void **object) {
  *object = nullptr;
  if (handle == nullptr) return fail(PKV_ERR_INVALID_HANDLE, "%s: %s is NULL", func, arg);
  const uint64_t token = (uint64_t)(uintptr_t)handle;
  const Entry entry = find_entry(token, kind);
  pkv_runtime *rt = entry.rt;
  *object = entry.object;
  // With runtimes on several devices, CUDA work goes to the thread's current device: every call on an
  // object makes its runtime's device current, so allocations, launches and events land where they belong.
  if (*object && rt && on_cuda(rt)) {
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess || current != rt->device) {
      cudaError_t e = cudaSetDevice(rt->device);
      if (e != cudaSuccess) {
        *object = nullptr;
        return fail_cuda(e, "cudaSetDevice", func);
      }
    }
  }
  if (*object) return PKV_OK;
  const char *want = kind_name(kind);
  if (!looks_like_token(token))
    return fail(PKV_ERR_INVALID_HANDLE, "%s: %s (0x%llx) is not a live %s: this library never handed it out", func,
                arg, (unsigned long long)token, want);
  if (token_kind(token) != kind)
    return fail(PKV_ERR_INVALID_HANDLE, "%s: %s is not a live %s: it is a %s handle", func, arg, want,
                kind_name(token_kind(token)));
  return fail(PKV_ERR_INVALID_HANDLE, "%s: %s is not a live %s: it was freed or destroyed (or its runtime was)",
              func, arg, want);
}

pkv_status check_stream(pkv_runtime *rt, pkv_stream *&stream, const char *func) {
  if (!stream) return PKV_OK;
  PKV_TRY(resolve(stream, Kind::Stream, func, "stream"));
  if (stream->rt != rt) return fail(PKV_ERR_INVALID_ARGUMENT, "%s: the stream belongs to another runtime", func);
  return PKV_OK;
}

// All or nothing: if either step throws (out of memory), the child is destroyed (`destroy` disowns
// nothing it does not hold) and the exception goes on to PKV_API_END.
uint64_t adopt(pkv_runtime *rt, void *child, Kind kind, void (*destroy)(void *)) {
  try {
    const uint64_t token = register_handle(child, kind);
    {
      Registry &r = registry();
      std::lock_guard<std::mutex> lock(r.mutex);
      r.by_token[token].rt = rt;
    }
    rt->children.push_back({child, kind, destroy});
    return token;
  } catch (...) {
    destroy(child);
    throw;
  }
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
