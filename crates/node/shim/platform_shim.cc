// The C++ that the fork() support cannot express honestly in Rust: a heap object with a vtable
// that V8's platform owns through std::unique_ptr and deletes virtually, and a std::function
// handed to node::SetProcessExitHandler. Nothing else lives here.
//
// No V8 or Node header is included, so one build serves every Node version. The functions that are
// called are resolved by the Rust side with dlsym, by mangled name; the mangled name encodes the
// exact parameter types, so a symbol that is found has the signature declared below.
//
// Built without exceptions, RTTI or the C++ runtime library (see build.rs): everything used here is
// header-only, and the task allocates with malloc.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <utility>

namespace node {
class Environment;  // only ever behind a pointer
}

namespace {

// The ABI of v8::Task (v8-platform.h, unchanged from V8 11 to 14): a polymorphic class with a
// virtual destructor (complete and deleting entries) followed by `virtual void Run()`, and no data.
// Run() is not pure here so that no __cxa_pure_virtual from the C++ runtime is needed.
class PlatformTask {
 public:
  virtual ~PlatformTask() = default;
  virtual void Run() {}
};

using TaskFn = void (*)(void* data);

// A task that calls back into Rust: `run` when a platform worker runs it, `drop` when the platform
// deletes it (after running it, or unrun at shutdown).
class CallbackTask final : public PlatformTask {
 public:
  CallbackTask(TaskFn run, TaskFn drop, void* data) : run_(run), drop_(drop), data_(data) {}
  ~CallbackTask() override { drop_(data_); }
  void Run() override { run_(data_); }

  // noexcept: a null result makes the new-expression yield null instead of calling the
  // constructor, and no std::bad_alloc (C++ runtime) is involved.
  static void* operator new(std::size_t size) noexcept { return std::malloc(size); }
  static void operator delete(void* p) { std::free(p); }

 private:
  TaskFn run_;
  TaskFn drop_;
  void* data_;
};

// v8::TaskPriority (V8 12+): enum class TaskPriority : uint8_t.
enum class TaskPriority : std::uint8_t { kBestEffort = 0, kUserVisible = 1, kUserBlocking = 2 };

// v8::SourceLocation (V8 12+): three words, all zero for "unknown".
struct SourceLocation {
  const char* function = nullptr;
  const char* file = nullptr;
  std::size_t line = 0;
};

// Member functions of node::NodePlatform, called with the platform as `this` (the first argument in
// the Itanium C++ ABI).
// node::NodePlatform::CallOnWorkerThread(std::unique_ptr<v8::Task>)                 (Node 20, V8 11)
using CallOnWorkerThreadFn = void (*)(void* self, std::unique_ptr<PlatformTask> task);
// node::NodePlatform::PostTaskOnWorkerThreadImpl(v8::TaskPriority, std::unique_ptr<v8::Task>,
//                                                const v8::SourceLocation&)   (Node 22+, V8 12+)
using PostTaskOnWorkerThreadImplFn = void (*)(void* self, TaskPriority priority,
                                              std::unique_ptr<PlatformTask> task,
                                              const SourceLocation& location);

// node::SetProcessExitHandler(node::Environment*, std::function<void(node::Environment*, int)>&&)
using SetProcessExitHandlerFn = void (*)(node::Environment* env,
                                         std::function<void(node::Environment*, int)>&& handler);

}  // namespace

extern "C" {

// Posts one task to the platform's worker threads. `kind` 0: `fn` is CallOnWorkerThread; 1: it is
// PostTaskOnWorkerThreadImpl. Returns 0, or -1 when the task could not be allocated (then `drop`
// has not been called and `data` still belongs to the caller).
int loop_helpers_post_worker_task(int kind, void* fn, void* platform, TaskFn run, TaskFn drop,
                                  void* data) {
  std::unique_ptr<PlatformTask> task(new CallbackTask(run, drop, data));
  if (!task) return -1;
  if (kind == 0) {
    reinterpret_cast<CallOnWorkerThreadFn>(fn)(platform, std::move(task));
  } else {
    SourceLocation unknown;
    reinterpret_cast<PostTaskOnWorkerThreadImplFn>(fn)(platform, TaskPriority::kUserBlocking,
                                                       std::move(task), unknown);
  }
  return 0;
}

// Installs a process exit handler for `env` that calls `on_exit(code)`.
void loop_helpers_set_process_exit_handler(void* fn, void* env, void (*on_exit)(int)) {
  std::function<void(node::Environment*, int)> handler = [on_exit](node::Environment*, int code) {
    on_exit(code);
  };
  reinterpret_cast<SetProcessExitHandlerFn>(fn)(static_cast<node::Environment*>(env),
                                                std::move(handler));
}

}  // extern "C"
