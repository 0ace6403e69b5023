//! Where in Node.js's own JavaScript a stack stands, as far as interrupts care: the places where a
//! termination would leave Node's books half done (its timer lists, ref counts, tick queue), so
//! that an interrupt there waits for the next check instead (the monitor asks again one timeout
//! later). By file and function name, from the frames of the interrupted code, innermost first.

use crate::report::Frame;

/// Node's own code that runs callbacks, innermost: its timer lists, its async hooks, its nextTick
/// queue and the unhandled-rejection processing that queue runs; and the public timer functions
/// (`node:timers`: `setTimeout`, `setInterval`, `clearTimeout`, `clearImmediate` and the
/// `unenroll` under them), which keep the same books. A termination there (between two callbacks,
/// or around one) would cut their bookkeeping at a point no repair can know. Found so far:
/// - `setInterval` stopped between `new Timeout()` (which counts a ref) and `insert()` left a ref
///   that no timer holds and no interval (the churn test, Node 20 under load: a fresh Worker's first
///   `setInterval` took longer than the timeout);
/// - `clearTimeout` stopped inside `unenroll` left a destroyed Timeout still counted as a ref
///   (unref'd timers then keep the process alive);
/// - stopped in `processPromiseRejections`, the thread never ran another tick (Node 20, an
///   interrupt fuzz).
const NODE_CALLBACK_MACHINERY: [&str; 5] = [
    "node:internal/timers",
    "node:timers",
    "node:internal/async_hooks",
    "node:internal/process/task_queues",
    "node:internal/process/promises",
];

/// Node's timer code: its lists (`node:internal/timers`) and the public functions over them.
const NODE_TIMER_CODE: [&str; 2] = ["node:internal/timers", "node:timers"];

/// Helpers that Node's timer code calls between taking a Timeout or Immediate off its list and
/// entering its callback's async scope (`L.remove`, `AsyncContextFrame.exchange`), or while it
/// re-arms or clears one (`L.append`, `L.remove` in `unenroll`, the lists' priority queue).
/// Innermost (alone, or a chain of them) with Node's timer code below, they count as that code: a
/// termination there would leave a Timeout off its list and outside any scope, found by no repair
/// (an interval stops for good, a timeout keeps its ref for ever). Called from anywhere else
/// (`AsyncContextFrame.current()` under every `AsyncLocalStorage.getStore()`), they are the
/// caller's. Found by the churn test on Node 22, reproduced by
/// `__test__/fixtures/timer-bookkeeping.cjs`.
const TIMER_HELPERS: [&str; 3] = [
    "node:internal/linkedlist",
    "node:internal/async_context_frame",
    "node:internal/priority_queue",
];

/// The functions of Node's timer code that run the application's callbacks: what runs above them
/// is a timer's or an Immediate's callback, or a tick or microtask run between two, which the
/// repair after a termination knows how to finish (`lib/timer-repair.ts`).
const TIMER_CALLBACK_RUNNERS: [&str; 3] = ["listOnTimeout", "processTimers", "processImmediate"];

/// Whether the innermost frame is Node's callback machinery, or one of its timer helpers called by
/// Node's timer code, or whatever runs inside that code's bookkeeping.
/// - The helpers call each other (`L.append` calls `L.remove`, `PriorityQueue.removeAt` calls
///   `percolateDown`): a chain of them counts as the code below it.
/// - Node's timer code also calls out in the middle of its books: a Timeout's constructor counts
///   its ref, then emits the async `init` hooks (AsyncLocalStorage's on Node 20/22, or the
///   application's), and only then does `setTimeout()` put it on a list; `unenroll` emits
///   `destroy` hooks. Stopped there, the ref is never dropped and the process never exits (found
///   by an interrupt fuzz on Node 20). So when the innermost frame of Node's timer code is not one
///   that runs callbacks, everything above it counts as that code.
pub fn in_node_machinery(frames: &[Frame]) -> bool {
    let Some(top) = frames.first() else {
        return false;
    };
    if NODE_CALLBACK_MACHINERY.contains(&top.file_name.as_str()) {
        return true;
    }
    let helpers = frames
        .iter()
        .take_while(|f| TIMER_HELPERS.contains(&f.file_name.as_str()))
        .count();
    if helpers > 0
        && frames
            .get(helpers)
            .is_some_and(|caller| NODE_TIMER_CODE.contains(&caller.file_name.as_str()))
    {
        return true;
    }
    frames
        .iter()
        .find(|f| NODE_TIMER_CODE.contains(&f.file_name.as_str()))
        .is_some_and(|f| !TIMER_CALLBACK_RUNNERS.contains(&f.function_name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function_name: &str, file_name: &str) -> Frame {
        Frame {
            function_name: function_name.into(),
            file_name: file_name.into(),
            ..Frame::default()
        }
    }

    const USER: &str = "/app/server.js";

    #[test]
    fn node_callback_machinery_innermost() {
        for file in NODE_CALLBACK_MACHINERY {
            assert!(
                in_node_machinery(&[frame("f", file), frame("g", USER)]),
                "{file}"
            );
        }
        assert!(!in_node_machinery(&[]));
        assert!(!in_node_machinery(&[frame("spin", USER)]));
    }

    #[test]
    fn a_timer_callback_is_the_applications() {
        for runner in TIMER_CALLBACK_RUNNERS {
            let frames = [frame("spin", USER), frame(runner, "node:internal/timers")];
            assert!(!in_node_machinery(&frames), "{runner}");
        }
        // A tick run between two timers, below a microtask of the application's.
        let frames = [
            frame("reaction", USER),
            frame("runNextTicks", "node:internal/process/task_queues"),
            frame("listOnTimeout", "node:internal/timers"),
        ];
        assert!(!in_node_machinery(&frames));
    }

    #[test]
    fn timer_helpers_count_as_the_timer_code_that_called_them() {
        let remove = frame("remove", "node:internal/linkedlist");
        // From listOnTimeout, and from clearTimeout's unenroll.
        assert!(in_node_machinery(&[
            remove.clone(),
            frame("listOnTimeout", "node:internal/timers")
        ]));
        assert!(in_node_machinery(&[
            remove.clone(),
            frame("unenroll", "node:timers"),
            frame("clearTimeout", "node:timers"),
            frame("handler", USER),
        ]));
        // A chain of helpers: L.append calls L.remove; removeAt calls percolateDown.
        assert!(in_node_machinery(&[
            remove.clone(),
            frame("append", "node:internal/linkedlist"),
            frame("insert", "node:internal/timers"),
        ]));
        assert!(in_node_machinery(&[
            frame("percolateDown", "node:internal/priority_queue"),
            frame("removeAt", "node:internal/priority_queue"),
            frame("unenroll", "node:timers"),
        ]));
        // Called by the application (AsyncContextFrame under AsyncLocalStorage.getStore()), or
        // with no caller known: the application's.
        assert!(!in_node_machinery(&[
            frame("current", "node:internal/async_context_frame"),
            frame(
                "getStore",
                "node:internal/async_local_storage/async_context_frame"
            ),
            frame("handler", USER),
        ]));
        assert!(!in_node_machinery(&[remove]));
    }

    #[test]
    fn what_runs_inside_timer_bookkeeping_counts_as_it() {
        // AsyncLocalStorage's init hook, emitted by a Timeout's constructor after it counted its
        // ref and before setTimeout() put it on a list.
        let frames = [
            frame("_propagate", "node:async_hooks"),
            frame("init", "node:async_hooks"),
            frame("emitInitScript", "node:internal/async_hooks"),
            frame("initAsyncResource", "node:internal/timers"),
            frame("Timeout", "node:internal/timers"),
            frame("setTimeout", "node:timers"),
            frame("handler", USER),
            frame("listOnTimeout", "node:internal/timers"),
        ];
        assert!(in_node_machinery(&frames));
        // An init hook of the application's, the same way.
        let frames = [
            frame("myInit", USER),
            frame("emitInitScript", "node:internal/async_hooks"),
            frame("Immediate", "node:internal/timers"),
            frame("setImmediate", "node:timers"),
            frame("handler", USER),
        ];
        assert!(in_node_machinery(&frames));
    }
}
