// The C++ that the fork() support cannot express honestly in Rust: a heap object with a vtable
// that V8's platform owns through std::unique_ptr and deletes virtually, running and deleting V8's
// tasks, redirecting the platform's worker-task entries in a forked child, and a std::function
// handed to node::SetProcessExitHandler. Nothing else lives here.
//
// No V8 or Node header is included, so one build serves every Node version. The functions that are
// called are resolved by the Rust side with dlsym, by mangled name; the mangled name encodes the
// exact parameter types, so a symbol that is found has the signature declared below.
//
// Built without exceptions, RTTI or the C++ runtime library (see build.rs): everything used here is
// header-only, and the task allocates with malloc.

#if defined(__linux__)
#include <dlfcn.h>
#include <link.h>
#endif

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <utility>

namespace node {
class Environment;  // only ever behind a pointer
}

namespace loop_helpers {

// The ABI of v8::Task (v8-platform.h, unchanged from V8 11 to 14): a polymorphic class with a
// virtual destructor (complete and deleting entries) followed by `virtual void Run()`, and no data.
// Run() is not pure here so that no __cxa_pure_virtual from the C++ runtime is needed.
// It has external linkage on purpose: in an anonymous namespace the compiler may assume that it
// knows every subclass and devirtualize `task->Run()` into CallbackTask::Run, which would be wrong
// for V8's own tasks (seen: a jump into data). The build also passes -fno-devirtualize.
class PlatformTask {
 public:
  virtual ~PlatformTask() = default;
  virtual void Run() {}
  // Only our own tasks are ever freed through this (deleting a V8 task dispatches to V8's own
  // deleting destructor); malloc'd, see CallbackTask.
  static void operator delete(void* p) { std::free(p); }
};

}  // namespace loop_helpers

namespace {

using loop_helpers::PlatformTask;

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

// node::NodePlatform::CallDelayedOnWorkerThread(std::unique_ptr<v8::Task>, double)    (Node 20)
// node::NodePlatform::PostDelayedTaskOnWorkerThreadImpl(v8::TaskPriority, std::unique_ptr<v8::Task>,
//                                               double, const v8::SourceLocation&) (Node 22+)

// Where a forked child's worker tasks go instead (Rust: worker_pool.rs). Takes ownership.
using TaskSink = void (*)(void* task, double delay_seconds);
TaskSink g_sink = nullptr;

// node::NodePlatform::FlushForegroundTasks(v8::Isolate*): runs the isolate's queued foreground
// tasks, true when it ran any (the second half of DrainTasks).
using FlushForegroundTasksFn = bool (*)(void* self, void* isolate);
FlushForegroundTasksFn g_flush = nullptr;
// Waits until the forked child's pool runs no worker task and has none due (Rust: worker_pool.rs).
using PoolDrain = void (*)();
PoolDrain g_pool_drain = nullptr;

// Replacements for the four entries above, with the same signatures (`this` first).
void RedirectedCall(void*, std::unique_ptr<PlatformTask> task) { g_sink(task.release(), 0); }
void RedirectedDelayedCall(void*, std::unique_ptr<PlatformTask> task, double delay) {
  g_sink(task.release(), delay);
}
void RedirectedPost(void*, TaskPriority, std::unique_ptr<PlatformTask> task, const SourceLocation&) {
  g_sink(task.release(), 0);
}
void RedirectedDelayedPost(void*, TaskPriority, std::unique_ptr<PlatformTask> task, double delay,
                           const SourceLocation&) {
  g_sink(task.release(), delay);
}

// node::NodePlatform::DrainTasks(v8::Isolate*) in a forked child. Node's own waits (in
// WorkerThreadsTaskRunner::BlockingDrain) until the platform's count of outstanding worker tasks is
// zero; in the child that count still includes the parent's parked tasks and whatever was queued
// at the fork, none of which will ever complete there (their threads are gone), so a Worker's end
// or any later drain would wait forever. The child's worker tasks run in our pool: wait for that
// instead, then run the isolate's foreground tasks, as the original does.
void RedirectedDrainTasks(void* self, void* isolate) {
  do {
    g_pool_drain();
  } while (g_flush(self, isolate));
}

}  // namespace

extern "C" {

// The size of the ELF symbol at `address` (a vtable), 0 when unknown.
std::size_t loop_helpers_symbol_size(void* address) {
#if defined(__linux__)
  Dl_info info;
  void* entry = nullptr;
  if (dladdr1(address, &info, &entry, RTLD_DL_SYMENT) == 0 || entry == nullptr) return 0;
  return static_cast<const ElfW(Sym)*>(entry)->st_size;
#else
  (void)address;
  return 0;
#endif
}

// In a forked child, which has none of the platform's worker threads: gives the NodePlatform object
// a private copy of its vtable in which the worker-task entries (found by the addresses of the
// resolved member functions) hand tasks to `sink`, so that V8's background work (GC helpers,
// concurrent compilation) runs on threads that exist, and in which DrainTasks waits for those
// tasks (`pool_drain`) instead of for the parent's. `kind` is as in post_worker_task; `delayed`,
// `drain` and `flush` may be null (then that entry is left alone). The vtable's size comes from its
// ELF symbol.
// Returns a bit set on success: 1 the worker-task entry (always), 2 the delayed one, 4 DrainTasks;
// a negative value when nothing was changed: -1 the symbol's size is unknown, -2 the object is not
// of that class, -3 the entry was not found, -4 out of memory.
int loop_helpers_redirect_worker_tasks(void* platform, void* vtable_symbol, int kind, void* post,
                                       void* delayed, TaskSink sink, void* drain, void* flush,
                                       PoolDrain pool_drain) {
#if defined(__linux__)
  Dl_info info;
  void* entry = nullptr;
  if (dladdr1(vtable_symbol, &info, &entry, RTLD_DL_SYMENT) == 0 || entry == nullptr) return -1;
  const ElfW(Sym)* symbol = static_cast<const ElfW(Sym)*>(entry);
  if (symbol->st_size < 3 * sizeof(void*)) return -1;
  void** table = static_cast<void**>(vtable_symbol);
  void*** object = static_cast<void***>(platform);
  if (*object != table + 2) return -2;
  const std::size_t entries = symbol->st_size / sizeof(void*);
  void** copy = static_cast<void**>(std::malloc(symbol->st_size));
  if (copy == nullptr) return -4;
  std::memcpy(copy, table, symbol->st_size);
  int found = 0;
  for (std::size_t i = 2; i < entries; i++) {
    if (copy[i] == post) {
      copy[i] = kind == 0 ? reinterpret_cast<void*>(&RedirectedCall)
                          : reinterpret_cast<void*>(&RedirectedPost);
      found |= 1;
    } else if (delayed != nullptr && copy[i] == delayed) {
      copy[i] = kind == 0 ? reinterpret_cast<void*>(&RedirectedDelayedCall)
                          : reinterpret_cast<void*>(&RedirectedDelayedPost);
      found |= 2;
    } else if (drain != nullptr && flush != nullptr && pool_drain != nullptr && copy[i] == drain) {
      copy[i] = reinterpret_cast<void*>(&RedirectedDrainTasks);
      found |= 4;
    }
  }
  if ((found & 1) == 0) {
    std::free(copy);
    return -3;
  }
  g_sink = sink;
  g_flush = reinterpret_cast<FlushForegroundTasksFn>(flush);
  g_pool_drain = pool_drain;
  // The copy is never freed: the object uses it for the rest of the process.
  *object = copy + 2;
  return found;
#else
  // fork() is Linux-only (see platform.rs); elsewhere the symbol size is not looked up.
  (void)platform, (void)vtable_symbol, (void)kind, (void)post, (void)delayed, (void)sink;
  (void)drain, (void)flush, (void)pool_drain;
  return -1;
#endif
}

// Runs a V8 task taken over by the sink, then deletes it (V8's own deleting destructor).
void loop_helpers_run_task(void* task) {
  PlatformTask* t = static_cast<PlatformTask*>(task);
  t->Run();
  delete t;
}


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
