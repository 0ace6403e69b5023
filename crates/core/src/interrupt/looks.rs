//! Whether the code that a block's previous look saw is still running.
//!
//! The monitor asks for an interrupt from its own thread, and V8 runs it at the loop thread's next
//! interrupt check. When a bounded block ends just as the request is made, that check is in the
//! next JavaScript of the same loop turn (the next timer, the next promise reaction): code that
//! has not blocked. The two stacks tell: if no application frame of the earlier look is still on
//! the stack, the code it saw has returned, and what runs now started after it.

use crate::fingerprint::is_user_code;
use crate::report::Frame;

/// One look at the loop thread, in one loop turn.
#[derive(Clone, Debug)]
pub struct Look {
    pub iteration: u64,
    /// The async id Node runs the current callback under, where it can be read: each timer,
    /// Immediate, nextTick and I/O callback has its own (promise reactions share their turn's).
    pub callback_id: Option<f64>,
    /// Innermost first.
    pub frames: Vec<Frame>,
}

/// Whether the JavaScript seen by `earlier` has returned by `now`: no application frame of
/// `earlier` is still running in `now`.
///
/// Frames are matched from the outermost: a frame still running has the same caller chain, and
/// the same position in it, except the innermost one still running, which has moved on within
/// its function. Node's own frames (`node:`: timer lists, the module loader) and this package's
/// (`own`, a directory; empty: none) run every callback, so matching only those means a different
/// callback. A function called by them (or at the bottom of the stack) and found elsewhere in it
/// is another call of it when the two looks ran under different callback ids (one anonymous
/// function of a file is not told from another by its frame). A stack cut at `max_frames` has
/// lost its outermost frames, so nothing can be matched: not known to have returned.
pub fn returned(earlier: &Look, now: &Look, max_frames: usize, own: &str) -> bool {
    let (a, b) = (&earlier.frames, &now.frames);
    if a.is_empty() || b.is_empty() || a.len() >= max_frames || b.len() >= max_frames {
        return false;
    }
    let other_callback = matches!(
        (earlier.callback_id, now.callback_id),
        (Some(x), Some(y)) if x != y
    );
    let mut user_code_running = false;
    let mut called_by_user_code = false;
    for (a, b) in a.iter().rev().zip(b.iter().rev()) {
        if a.function_name != b.function_name || a.file_name != b.file_name {
            break;
        }
        let same_position = a.line == b.line && a.column == b.column;
        if !same_position && !called_by_user_code && other_callback {
            break;
        }
        // A frame without a file is the application's (`eval`, `new Function`).
        called_by_user_code = is_user_code(b, own);
        user_code_running |= called_by_user_code;
        if !same_position {
            // The same function, elsewhere in it: its callees are not the earlier ones.
            break;
        }
    }
    !user_code_running
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "/app/node_modules/loop-helpers/";

    fn f(function_name: &str, file_name: &str, line: u32) -> Frame {
        Frame {
            function_name: function_name.into(),
            file_name: file_name.into(),
            line,
            column: 5,
            generated: None,
        }
    }

    fn timer(callback: Frame, inner: &[Frame]) -> Vec<Frame> {
        let mut v = inner.to_vec();
        v.push(callback);
        v.push(f("listOnTimeout", "node:internal/timers", 594));
        v.push(f("processTimers", "node:internal/timers", 529));
        v
    }

    fn look(callback_id: Option<f64>, frames: Vec<Frame>) -> Look {
        Look {
            iteration: 1,
            callback_id,
            frames,
        }
    }

    /// [`returned`] of two looks under one callback id (or none known).
    fn gone(a: &[Frame], b: &[Frame], max_frames: usize, own: &str) -> bool {
        returned(
            &look(None, a.to_vec()),
            &look(None, b.to_vec()),
            max_frames,
            own,
        )
    }

    #[test]
    fn the_same_spin_has_not_returned() {
        let a = timer(f("", "/app/a.js", 3), &[f("spin", "/app/a.js", 10)]);
        let b = timer(f("", "/app/a.js", 3), &[f("spin", "/app/a.js", 11)]);
        assert!(!gone(&a, &b, 64, OWN));
        assert!(!gone(&a, &a, 64, OWN));
    }

    #[test]
    fn a_caller_that_moved_on_to_another_callee_is_still_running() {
        // handler() { parse(); compute(); }: the handler blocks, whichever callee runs.
        let a = timer(f("handler", "/app/a.js", 20), &[f("parse", "/app/p.js", 4)]);
        let b = timer(
            f("handler", "/app/a.js", 21),
            &[f("compute", "/app/c.js", 9)],
        );
        assert!(!gone(&a, &b, 64, OWN));
    }

    #[test]
    fn the_next_timer_of_the_same_list_is_new_code() {
        let a = timer(f("first", "/app/a.js", 3), &[f("spin", "/app/a.js", 10)]);
        let b = timer(f("second", "/app/a.js", 30), &[]);
        assert!(gone(&a, &b, 64, OWN));
    }

    #[test]
    fn the_next_promise_reaction_is_new_code() {
        let a = vec![f("spin", "/app/a.js", 10), f("", "/app/a.js", 3)];
        let b = vec![f("", "/app/b.js", 7)];
        assert!(gone(&a, &b, 64, OWN));
    }

    #[test]
    fn only_node_or_own_frames_in_common_is_new_code() {
        let own_wrapper = f("guarded", "/app/node_modules/loop-helpers/dist/x.js", 1);
        let a = timer(own_wrapper.clone(), &[f("one", "/app/a.js", 1)]);
        let b = timer(own_wrapper, &[f("two", "/app/b.js", 1)]);
        assert!(gone(&a, &b, 64, OWN));
        // Without knowing the package's directory, its frames count as the application's.
        assert!(!gone(&a, &b, 64, ""));
    }

    #[test]
    fn a_callback_seen_elsewhere_under_another_callback_id_is_another_call() {
        // Two timers with anonymous callbacks of one file: told apart by their async ids.
        let a = timer(f("", "/app/a.js", 3), &[f("", "/app/a.js", 4)]);
        let b = timer(f("", "/app/a.js", 9), &[]);
        assert!(!gone(&a, &b, 64, OWN), "without ids: not known");
        assert!(returned(
            &look(Some(5.0), a.clone()),
            &look(Some(8.0), b.clone()),
            64,
            OWN
        ));
        assert!(!returned(
            &look(Some(5.0), a.clone()),
            &look(Some(5.0), b),
            64,
            OWN
        ));
        // Within user code, a caller at the same position: the same call, whatever the ids (the
        // code may run nested async scopes of its own, `AsyncResource.runInAsyncScope`).
        let nested_a = timer(
            f("loop", "/app/a.js", 20),
            &[f("", "/app/a.js", 30), f("step", "/app/a.js", 21)],
        );
        let nested_b = timer(
            f("loop", "/app/a.js", 20),
            &[f("", "/app/a.js", 31), f("step", "/app/a.js", 22)],
        );
        assert!(!returned(
            &look(Some(5.0), nested_a),
            &look(Some(6.0), nested_b),
            64,
            OWN
        ));
    }

    #[test]
    fn a_frame_without_a_file_is_the_application() {
        let a = vec![f("spin", "", 1), f("", "", 1)];
        let b = vec![f("other", "", 2), f("", "", 1)];
        assert!(!gone(&a, &b, 64, OWN));
    }

    #[test]
    fn cut_or_missing_stacks_are_not_known_to_have_returned() {
        let deep: Vec<Frame> = (0..64).map(|i| f("r", "/app/r.js", i)).collect();
        let other = vec![f("x", "/app/x.js", 1)];
        assert!(!gone(&deep, &other, 64, OWN));
        assert!(!gone(&other, &deep, 64, OWN));
        assert!(!gone(&[], &other, 64, OWN));
        assert!(!gone(&other, &[], 64, OWN));
    }
}
