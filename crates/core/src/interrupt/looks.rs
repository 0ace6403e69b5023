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
    /// Immediate, nextTick and I/O callback has its own (promise reactions share their turn's,
    /// unless an async hook is enabled).
    pub callback_id: Option<f64>,
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// The stack was deeper than the frames kept: its outermost frames are missing.
    pub cut: bool,
}

/// Whether the JavaScript seen by `earlier` has returned by `now`: no application frame of
/// `earlier` is still running in `now`.
///
/// Frames are matched from the outermost: a frame still running has the same caller chain, and
/// the same position in it, except the innermost one still running, which has moved on within
/// its function. Node's own frames (`node:`: timer lists, the module loader) and this package's
/// (`own`, a directory; empty: none) run every callback, so matching only those means a different
/// callback. The outermost application frame, called by them (or at the bottom of the stack), is
/// another callback when the two looks ran under different callback ids, even of the same
/// function at the same place (two sockets' `'data'` handler; two timers with anonymous callbacks
/// of one file). Code that enters nested async scopes of its own (`runInAsyncScope`) changes the
/// id too, and is taken for new code by mistake: [`super::Interrupts::look`] lets that cost one
/// timeout at most. A cut stack has lost its outermost frames, so nothing can be matched: not
/// known to have returned.
pub fn returned(earlier: &Look, now: &Look, own: &str) -> bool {
    let (a, b) = (&earlier.frames, &now.frames);
    if a.is_empty() || b.is_empty() || earlier.cut || now.cut {
        return false;
    }
    let other_callback = matches!(
        (earlier.callback_id, now.callback_id),
        (Some(x), Some(y)) if x != y
    );
    let mut user_code_running = false;
    for (a, b) in a.iter().rev().zip(b.iter().rev()) {
        if a.function_name != b.function_name || a.file_name != b.file_name {
            break;
        }
        // A frame without a file is the application's (`eval`, `new Function`).
        let user_code = is_user_code(b, own);
        if user_code && !user_code_running && other_callback {
            // The outermost application frame, in another callback.
            break;
        }
        user_code_running |= user_code;
        if a.line != b.line || a.column != b.column {
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
            cut: false,
        }
    }

    /// [`returned`] of two looks under one callback id (or none known).
    fn gone(a: &[Frame], b: &[Frame], own: &str) -> bool {
        returned(&look(None, a.to_vec()), &look(None, b.to_vec()), own)
    }

    #[test]
    fn the_same_spin_has_not_returned() {
        let a = timer(f("", "/app/a.js", 3), &[f("spin", "/app/a.js", 10)]);
        let b = timer(f("", "/app/a.js", 3), &[f("spin", "/app/a.js", 11)]);
        assert!(!gone(&a, &b, OWN));
        assert!(!gone(&a, &a, OWN));
    }

    #[test]
    fn a_caller_that_moved_on_to_another_callee_is_still_running() {
        // handler() { parse(); compute(); }: the handler blocks, whichever callee runs.
        let a = timer(f("handler", "/app/a.js", 20), &[f("parse", "/app/p.js", 4)]);
        let b = timer(
            f("handler", "/app/a.js", 21),
            &[f("compute", "/app/c.js", 9)],
        );
        assert!(!gone(&a, &b, OWN));
    }

    #[test]
    fn the_next_timer_of_the_same_list_is_new_code() {
        let a = timer(f("first", "/app/a.js", 3), &[f("spin", "/app/a.js", 10)]);
        let b = timer(f("second", "/app/a.js", 30), &[]);
        assert!(gone(&a, &b, OWN));
    }

    #[test]
    fn the_next_promise_reaction_is_new_code() {
        let a = vec![f("spin", "/app/a.js", 10), f("", "/app/a.js", 3)];
        let b = vec![f("", "/app/b.js", 7)];
        assert!(gone(&a, &b, OWN));
    }

    #[test]
    fn only_node_or_own_frames_in_common_is_new_code() {
        let own_wrapper = f("guarded", "/app/node_modules/loop-helpers/dist/x.js", 1);
        let a = timer(own_wrapper.clone(), &[f("one", "/app/a.js", 1)]);
        let b = timer(own_wrapper, &[f("two", "/app/b.js", 1)]);
        assert!(gone(&a, &b, OWN));
        // Without knowing the package's directory, its frames count as the application's.
        assert!(!gone(&a, &b, ""));
    }

    #[test]
    fn the_outermost_application_frame_under_another_callback_id_is_another_callback() {
        let ids = |a: &[Frame], x: f64, b: &[Frame], y: f64| {
            returned(&look(Some(x), a.to_vec()), &look(Some(y), b.to_vec()), OWN)
        };
        // Two timers with anonymous callbacks of one file: told apart by their async ids.
        let a = timer(f("", "/app/a.js", 3), &[f("", "/app/a.js", 4)]);
        let b = timer(f("", "/app/a.js", 9), &[]);
        assert!(!gone(&a, &b, OWN), "without ids: not known");
        assert!(ids(&a, 5.0, &b, 8.0));
        assert!(!ids(&a, 5.0, &b, 5.0));
        // One handler for two sockets, at the same place in both: the second socket's call is
        // another callback, though every frame matches.
        let on_data = |inner: u32| {
            let mut v = vec![f("parse", "/app/p.js", inner), f("onData", "/app/s.js", 12)];
            v.push(f("emit", "node:events", 519));
            v.push(f("addChunk", "node:internal/streams/readable", 561));
            v
        };
        assert!(ids(&on_data(4), 5.0, &on_data(5), 6.0));
        assert!(!ids(&on_data(4), 5.0, &on_data(5), 5.0));
        // Below the outermost application frame the ids do not count: a nested scope of the
        // application's own is the same code (and the outermost frame's change of id would have
        // said "returned" anyway, which `Interrupts::look` bounds).
        let nested = |line: u32| {
            timer(
                f("loop", "/app/a.js", 20),
                &[
                    f("", "/app/a.js", line),
                    f("runInAsyncScope", "node:async_hooks", 206),
                    f("step", "/app/a.js", 21),
                ],
            )
        };
        assert!(!ids(&nested(30), 5.0, &nested(31), 5.0));
    }

    #[test]
    fn a_frame_without_a_file_is_the_application() {
        let a = vec![f("spin", "", 1), f("", "", 1)];
        let b = vec![f("other", "", 2), f("", "", 1)];
        assert!(!gone(&a, &b, OWN));
    }

    #[test]
    fn cut_or_missing_stacks_are_not_known_to_have_returned() {
        let deep = Look {
            cut: true,
            ..look(None, vec![f("r", "/app/r.js", 1)])
        };
        let other = look(None, vec![f("x", "/app/x.js", 1)]);
        assert!(!returned(&deep, &other, OWN));
        assert!(!returned(&other, &deep, OWN));
        assert!(!gone(&[], &other.frames, OWN));
        assert!(!gone(&other.frames, &[], OWN));
    }
}
