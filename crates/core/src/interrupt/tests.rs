//! The interrupt bookkeeping on simulated requests: the monitor's requests, the interrupt
//! callback's facts ([`Context`]) and the guard frames are all made up here, the way the binding
//! produces them; only the resolution time is the real clock's (it is read inside), so the bounds
//! checked against it are seconds wide.

use super::*;

const WATCH: u64 = 7;
const ITERATION: u64 = 40;
const SECOND: u64 = 1_000_000_000;

fn ticket(unguarded: bool, blocked_ns: u64) -> SampleTicket {
    SampleTicket {
        watch_id: WATCH,
        block_serial: 1,
        index: 0,
        requested_ns: 0,
        capture: true,
        interrupt: true,
        unguarded,
        blocked_ns,
        timeout_ns: SECOND,
        microtask_grace_ns: u64::MAX,
    }
}

fn look(iteration: u64, frames: Vec<Frame>) -> looks::Look {
    looks::Look {
        iteration,
        callback_id: None,
        frames,
        cut: false,
    }
}

fn frames(name: &str) -> Vec<Frame> {
    vec![Frame {
        function_name: name.into(),
        file_name: "/app/busy.js".into(),
        line: 3,
        column: 1,
        generated: None,
    }]
}

/// The interrupt callback's view of ordinary blocking JavaScript, in the request's block.
fn plain() -> Context {
    Context {
        iteration: ITERATION,
        block_open: true,
        running_microtasks: false,
        unguarded_immediate: false,
        in_async_hook: false,
        in_builtin_loader: false,
        in_node_machinery: false,
        in_own_code: false,
        no_javascript: false,
        code_returned: false,
        now_ns: 0,
        turn_cpu_wait_ns: 0,
    }
}

/// Interrupts of an environment where unguarded code may be terminated.
fn everywhere() -> Interrupts {
    let i = Interrupts::default();
    i.set_unguarded(true);
    i
}

/// The guard's view of its thread when it ends: in `iteration`, at the request's own time, no
/// CPU wait.
fn at(iteration: u64) -> impl FnOnce() -> GuardExit {
    move || GuardExit {
        iteration,
        now_ns: 0,
        turn_cpu_wait_ns: 0,
    }
}

fn exit(i: &Interrupts, kind: GuardKind, take_late: bool) -> Option<Taken> {
    i.exit_guard(kind, take_late, at(ITERATION))
}

#[test]
fn an_explicit_guard_resolves_the_termination_it_fired_with_the_stack() {
    let i = Interrupts::default();
    i.enter_guard(GuardKind::Explicit);
    assert!(i.in_explicit_guard());
    i.request(ticket(false, SECOND), ITERATION);
    let d = i.on_interrupt(ticket(false, SECOND), frames("spin"), plain());
    assert_eq!(d, Decision::Terminate);
    match exit(&i, GuardKind::Explicit, false) {
        Some(Taken::Fired(p)) => {
            assert_eq!(p.ticket.watch_id, WATCH);
            assert_eq!(p.resolver, Resolver::Guard);
            assert_eq!(p.frames.unwrap()[0].function_name, "spin");
        }
        other => panic!("expected Fired, got {other:?}"),
    }
    assert!(!i.in_explicit_guard());
    // Resolved: nothing is left for a later guard.
    i.enter_guard(GuardKind::Explicit);
    assert!(exit(&i, GuardKind::Explicit, true).is_none());
}

#[test]
fn guarded_watches_leave_unguarded_code_and_callback_guards_alone() {
    let i = everywhere();
    i.request(ticket(false, SECOND), ITERATION);
    assert_eq!(
        i.on_interrupt(ticket(false, SECOND), frames("spin"), plain()),
        Decision::Nothing
    );
    // Callback guards exist for 'everywhere' watches only.
    i.enter_guard(GuardKind::Callback);
    i.request(ticket(false, SECOND), ITERATION);
    assert_eq!(
        i.on_interrupt(ticket(false, SECOND), frames("spin"), plain()),
        Decision::Nothing
    );
    assert!(exit(&i, GuardKind::Callback, false).is_none());
}

#[test]
fn an_everywhere_watch_terminates_in_a_callback_guard_which_resolves_it() {
    let i = Interrupts::default();
    i.enter_guard(GuardKind::Callback);
    i.request(ticket(true, SECOND), ITERATION);
    assert_eq!(
        i.on_interrupt(ticket(true, SECOND), frames("spin"), plain()),
        Decision::Terminate
    );
    assert!(matches!(
        exit(&i, GuardKind::Callback, false),
        Some(Taken::Fired(_))
    ));
}

#[test]
fn unguarded_code_is_terminated_only_when_allowed_and_resolved_by_the_unguarded_path() {
    let off = Interrupts::default();
    off.request(ticket(true, SECOND), ITERATION);
    assert_eq!(
        off.on_interrupt(ticket(true, SECOND), frames("spin"), plain()),
        Decision::Nothing
    );

    let i = everywhere();
    i.request(ticket(true, SECOND), ITERATION);
    assert_eq!(
        i.on_interrupt(ticket(true, SECOND), frames("spin"), plain()),
        Decision::TerminateUnguarded
    );
    // A guard frame entered and left meanwhile (a callback guard further out unwinding) is not
    // the resolver of an unguarded termination.
    i.enter_guard(GuardKind::Callback);
    assert!(exit(&i, GuardKind::Callback, false).is_none());
    let p = i.take_unguarded().expect("the unguarded termination");
    assert_eq!(p.resolver, Resolver::Unguarded);
    assert!(!p.microtask);
    assert!(i.take_unguarded().is_none());
}

#[test]
fn unguarded_points_that_cannot_be_recovered_are_left_running() {
    let i = everywhere();
    let immediate = Context {
        unguarded_immediate: true,
        ..plain()
    };
    let hook = Context {
        in_async_hook: true,
        ..plain()
    };
    for cx in [immediate, hook] {
        i.request(ticket(true, SECOND), ITERATION);
        assert_eq!(
            i.on_interrupt(ticket(true, SECOND), frames("spin"), cx),
            Decision::Nothing
        );
    }
    assert!(i.take_unguarded().is_none());
}

#[test]
fn nothing_is_terminated_in_node_internals_own_code_or_without_javascript_even_in_a_guard() {
    let i = everywhere();
    i.enter_guard(GuardKind::Explicit);
    let cases = [
        Context {
            in_builtin_loader: true,
            ..plain()
        },
        Context {
            in_node_machinery: true,
            ..plain()
        },
        Context {
            in_own_code: true,
            ..plain()
        },
        Context {
            no_javascript: true,
            ..plain()
        },
    ];
    for cx in cases {
        i.request(ticket(true, SECOND), ITERATION);
        assert_eq!(
            i.on_interrupt(ticket(true, SECOND), frames("spin"), cx),
            Decision::Nothing
        );
    }
    // The declined requests were consumed: the guard has nothing late to take.
    assert!(exit(&i, GuardKind::Explicit, true).is_none());
}

#[test]
fn a_promise_reaction_is_terminated_only_after_its_grace() {
    let i = everywhere();
    let microtasks = || Context {
        running_microtasks: true,
        ..plain()
    };
    let graced = |blocked_ns| SampleTicket {
        microtask_grace_ns: 2 * SECOND,
        ..ticket(true, blocked_ns)
    };
    i.request(graced(SECOND), ITERATION);
    assert_eq!(
        i.on_interrupt(graced(SECOND), frames("reaction"), microtasks()),
        Decision::Later(SECOND)
    );
    i.request(graced(3 * SECOND), ITERATION);
    assert_eq!(
        i.on_interrupt(graced(3 * SECOND), frames("reaction"), microtasks()),
        Decision::TerminateUnguarded
    );
    assert!(i.take_unguarded().expect("fired").microtask);
}

#[test]
fn time_the_thread_waited_for_a_cpu_does_not_count_against_a_reactions_grace() {
    let i = everywhere();
    // A reaction's turn of `blocked_ns`, `waited_ns` of it waiting for a CPU, with a 2 s grace.
    let decide = |blocked_ns, waited_ns| {
        let ticket = SampleTicket {
            microtask_grace_ns: 2 * SECOND,
            ..ticket(true, blocked_ns)
        };
        let cx = Context {
            running_microtasks: true,
            turn_cpu_wait_ns: waited_ns,
            ..plain()
        };
        i.request(ticket, ITERATION);
        i.on_interrupt(ticket, frames("reaction"), cx)
    };
    // 3 s of turn, 1.5 s of it waiting: 1.5 s of its own, within the grace.
    // Asked again when the grace could be over, in 0.5 s.
    assert_eq!(
        decide(3 * SECOND, 3 * SECOND / 2),
        Decision::Later(SECOND / 2)
    );
    // A wait longer than the turn (clocks read at different moments) is not an underflow.
    assert_eq!(decide(3 * SECOND, 4 * SECOND), Decision::Later(2 * SECOND));
    // 5 s of turn, 2.5 s of its own: past the grace.
    assert_eq!(
        decide(5 * SECOND, 5 * SECOND / 2),
        Decision::TerminateUnguarded
    );
    assert!(i.take_unguarded().expect("fired").microtask);
}

#[test]
fn time_the_thread_waited_for_a_cpu_does_not_count_against_the_timeout() {
    // `blocked_ns` of turn, `waited_ns` of it waiting for a CPU, with a 1 s timeout, in unguarded
    // code and under run(): the deadline is the thread's own time, wherever it is checked.
    for explicit in [false, true] {
        let i = everywhere();
        if explicit {
            i.enter_guard(GuardKind::Explicit);
        }
        let decide = |blocked_ns, waited_ns| {
            let cx = Context {
                turn_cpu_wait_ns: waited_ns,
                ..plain()
            };
            i.request(ticket(true, blocked_ns), ITERATION);
            i.on_interrupt(ticket(true, blocked_ns), frames("spin"), cx)
        };
        let fires = if explicit {
            Decision::Terminate
        } else {
            Decision::TerminateUnguarded
        };
        // 1.5 s of turn, 0.6 s of it waiting: 0.9 s of its own, asked again in 0.1 s.
        assert_eq!(
            decide(3 * SECOND / 2, 6 * SECOND / 10),
            Decision::Later(SECOND / 10)
        );
        // 2 s of turn, 0.6 s waiting: 1.4 s of its own, past the timeout.
        assert_eq!(decide(2 * SECOND, 6 * SECOND / 10), fires);
    }
}

#[test]
fn the_block_is_counted_up_to_the_callback_not_only_to_the_request() {
    let i = everywhere();
    // Requested at 1 s of block; the callback ran 0.5 s later, with 0.4 s waited: 1.1 s its own.
    let cx = Context {
        now_ns: SECOND / 2,
        turn_cpu_wait_ns: 4 * SECOND / 10,
        ..plain()
    };
    i.request(ticket(true, SECOND), ITERATION);
    assert_eq!(
        i.on_interrupt(ticket(true, SECOND), frames("spin"), cx),
        Decision::TerminateUnguarded
    );
}

#[test]
fn a_request_whose_block_is_over_stops_nothing() {
    let i = Interrupts::default();
    i.enter_guard(GuardKind::Explicit);
    i.request(ticket(false, SECOND), ITERATION);
    let later = Context {
        iteration: ITERATION + 1,
        ..plain()
    };
    assert_eq!(
        i.on_interrupt(ticket(false, SECOND), frames("next"), later),
        Decision::Nothing
    );
    i.request(ticket(false, SECOND), ITERATION);
    let ended = Context {
        block_open: false,
        ..plain()
    };
    assert_eq!(
        i.on_interrupt(ticket(false, SECOND), frames("next"), ended),
        Decision::Nothing
    );
    assert!(exit(&i, GuardKind::Explicit, true).is_none());
}

#[test]
fn an_interrupt_for_another_watch_or_while_one_is_in_flight_does_nothing() {
    let i = Interrupts::default();
    i.enter_guard(GuardKind::Explicit);
    i.request(ticket(false, SECOND), ITERATION);
    let other = SampleTicket {
        watch_id: WATCH + 1,
        ..ticket(false, SECOND)
    };
    assert_eq!(
        i.on_interrupt(other, frames("spin"), plain()),
        Decision::Nothing
    );
    // The request is still there for its own interrupt.
    assert_eq!(
        i.on_interrupt(ticket(false, SECOND), frames("spin"), plain()),
        Decision::Terminate
    );
    // A second request while the termination is in flight is about the same code.
    i.request(ticket(false, 2 * SECOND), ITERATION);
    assert_eq!(
        i.on_interrupt(ticket(false, 2 * SECOND), frames("spin"), plain()),
        Decision::Nothing
    );
    assert!(matches!(
        exit(&i, GuardKind::Explicit, true),
        Some(Taken::Fired(_))
    ));
}

#[test]
fn a_throwing_guard_takes_a_request_whose_interrupt_never_ran() {
    let i = Interrupts::default();
    i.enter_guard(GuardKind::Explicit);
    i.request(ticket(false, SECOND), ITERATION);
    match exit(&i, GuardKind::Explicit, true) {
        Some(Taken::Late(p)) => assert!(p.frames.is_none()),
        other => panic!("expected Late, got {other:?}"),
    }
    // The late interrupt callback then finds nothing to do.
    assert_eq!(
        i.on_interrupt(ticket(false, SECOND), frames("after"), plain()),
        Decision::Nothing
    );
}

#[test]
fn a_guard_leaves_a_late_request_alone_when_it_may_not_take_it() {
    let i = Interrupts::default();
    // A foreign termination unwinding through the guard (take_late false).
    i.enter_guard(GuardKind::Explicit);
    i.request(ticket(false, SECOND), ITERATION);
    assert!(exit(&i, GuardKind::Explicit, false).is_none());
    // A request of an earlier turn is not this guard's.
    i.enter_guard(GuardKind::Explicit);
    assert!(i
        .exit_guard(GuardKind::Explicit, true, at(ITERATION + 1))
        .is_none());
    // Still pending for its own interrupt (it never outlives its block, checked there).
    i.enter_guard(GuardKind::Explicit);
    assert_eq!(
        i.on_interrupt(ticket(false, SECOND), frames("spin"), plain()),
        Decision::Terminate
    );
}

#[test]
fn requests_keep_the_first_of_a_block_unless_an_everywhere_watch_upgrades_it() {
    let i = Interrupts::default();
    i.enter_guard(GuardKind::Explicit);
    i.request(ticket(false, SECOND), ITERATION);
    i.request(ticket(false, 3 * SECOND), ITERATION); // a retry
    match exit(&i, GuardKind::Explicit, true) {
        Some(Taken::Late(p)) => {
            assert!(!p.ticket.unguarded);
            assert_eq!(p.ticket.blocked_ns, 3 * SECOND);
        }
        other => panic!("expected Late, got {other:?}"),
    }

    i.enter_guard(GuardKind::Explicit);
    i.request(ticket(false, SECOND), ITERATION + 1);
    i.request(ticket(true, SECOND), ITERATION + 1);
    match i.exit_guard(GuardKind::Explicit, true, at(ITERATION + 1)) {
        Some(Taken::Late(p)) => assert!(p.ticket.unguarded),
        other => panic!("expected Late, got {other:?}"),
    }

    // A request of an older block is replaced by a new block's.
    i.enter_guard(GuardKind::Explicit);
    i.request(ticket(false, SECOND), ITERATION + 1);
    i.request(ticket(false, 5 * SECOND), ITERATION + 2);
    match i.exit_guard(GuardKind::Explicit, true, at(ITERATION + 2)) {
        Some(Taken::Late(p)) => assert_eq!(p.iteration, ITERATION + 2),
        other => panic!("expected Late, got {other:?}"),
    }
}

#[test]
fn resolving_drops_the_requests_that_came_during_the_termination() {
    let i = Interrupts::default();
    i.enter_guard(GuardKind::Explicit);
    i.request(ticket(false, SECOND), ITERATION);
    assert_eq!(
        i.on_interrupt(ticket(false, SECOND), frames("spin"), plain()),
        Decision::Terminate
    );
    i.request(ticket(false, 2 * SECOND), ITERATION);
    assert!(matches!(
        exit(&i, GuardKind::Explicit, true),
        Some(Taken::Fired(_))
    ));
    i.enter_guard(GuardKind::Explicit);
    assert!(exit(&i, GuardKind::Explicit, true).is_none());
}

#[test]
fn the_code_after_an_interrupt_counts_from_its_resolution() {
    let timeout = 10 * SECOND;
    let i = Interrupts::default();
    assert!(!i.recently_resolved(ITERATION, 0, timeout, None));
    i.enter_guard(GuardKind::Explicit);
    i.request(ticket(false, SECOND), ITERATION);
    let before = crate::clock::now_ns();
    assert!(matches!(
        exit(&i, GuardKind::Explicit, true),
        Some(Taken::Late(_))
    ));
    let after = crate::clock::now_ns();
    let cpu = crate::clock::thread_cpu_ns();

    // Within a timeout of the resolution, in its loop turn.
    assert!(i.recently_resolved(ITERATION, after, timeout, None));
    assert!(!i.recently_resolved(ITERATION + 1, after, timeout, None));
    // Two timeouts later: only while the loop thread has used under half a timeout of CPU since.
    let two_later = before + 2 * timeout;
    assert!(!i.recently_resolved(ITERATION, two_later, timeout, None));
    assert!(i.recently_resolved(ITERATION, two_later, timeout, Some(cpu)));
    assert!(!i.recently_resolved(ITERATION, two_later, timeout, Some(cpu + timeout)));
    // Three timeouts later: never.
    assert!(!i.recently_resolved(ITERATION, after + 3 * timeout, timeout, Some(cpu)));
}

#[test]
fn a_stopped_watch_or_a_departing_environment_leaves_nothing_pending() {
    let i = everywhere();
    i.enter_guard(GuardKind::Explicit);
    i.request(ticket(false, SECOND), ITERATION);
    i.forget(WATCH + 1); // another watch's stop
    i.forget(WATCH);
    assert!(exit(&i, GuardKind::Explicit, true).is_none());

    // A termination in flight survives `forget` (it is already stopping code), not `clear`.
    i.request(ticket(true, SECOND), ITERATION);
    assert_eq!(
        i.on_interrupt(ticket(true, SECOND), frames("spin"), plain()),
        Decision::TerminateUnguarded
    );
    i.forget(WATCH);
    i.clear();
    assert!(i.take_unguarded().is_none());
}

#[test]
fn errors_for_javascript_carry_the_watch_the_block_length_and_the_stack() {
    let i = everywhere();
    // A 1.5 ms block of a 1 ms timeout.
    let t = SampleTicket {
        timeout_ns: 1_000_000,
        ..ticket(true, 1_500_000)
    };
    i.request(t, ITERATION);
    assert_eq!(
        i.on_interrupt(t, frames("spin"), plain()),
        Decision::TerminateUnguarded
    );
    let p = i.take_unguarded().expect("fired");
    let stack =
        r#"[{"functionName":"spin","fileName":"/app/busy.js","lineNumber":3,"columnNumber":1}]"#;
    assert_eq!(
        p.delivery_json(Delivery::Unguarded),
        format!(
            r#"{{"watchId":7,"kind":"unguarded","microtask":false,"blockedMs":1.5,"frames":{stack}}}"#
        )
    );
    assert_eq!(
        p.thrown_json(),
        format!(r#"{{"watchId":7,"late":false,"blockedMs":1.5,"frames":{stack}}}"#)
    );

    // A late request: no stack was taken.
    i.enter_guard(GuardKind::Explicit);
    i.request(ticket(false, 2 * SECOND), ITERATION + 1);
    let Some(Taken::Late(late)) = i.exit_guard(GuardKind::Explicit, true, at(ITERATION + 1)) else {
        panic!("expected Late");
    };
    assert_eq!(
        late.thrown_json(),
        r#"{"watchId":7,"late":true,"blockedMs":2000,"frames":null}"#
    );
    assert_eq!(
        late.delivery_json(Delivery::Callback),
        r#"{"watchId":7,"kind":"callback","microtask":false,"blockedMs":2000,"frames":null}"#
    );
}

#[test]
fn looks_compare_with_the_previous_look_of_the_same_turn_only() {
    let i = everywhere();
    // The first look of a turn has nothing to compare with.
    assert!(!i.look(look(ITERATION, frames("first"))));
    // The same code, a timeout later: still running.
    assert!(!i.look(look(ITERATION, frames("first"))));
    // Other code of the same turn: the first has returned.
    assert!(i.look(look(ITERATION, frames("second"))));
    // Compared with the latest look, not the first.
    assert!(!i.look(look(ITERATION, frames("second"))));
    // A look without JavaScript is not kept: the next is compared with the one before it.
    assert!(!i.look(look(ITERATION, Vec::new())));
    assert!(i.look(look(ITERATION, frames("third"))));
    // A new turn starts afresh.
    assert!(!i.look(look(ITERATION + 1, frames("fourth"))));
}

#[test]
fn a_resolved_interrupt_forgets_the_look_before_it() {
    let i = everywhere();
    assert!(!i.look(look(ITERATION, frames("spin"))));
    i.request(ticket(true, SECOND), ITERATION);
    assert_eq!(
        i.on_interrupt(ticket(true, SECOND), frames("spin"), plain()),
        Decision::TerminateUnguarded
    );
    assert!(i.take_unguarded().is_some());
    // The code after the interrupt is new, and is not compared with the code it stopped.
    assert!(!i.look(look(ITERATION, frames("next"))));
}

#[test]
fn code_that_started_after_the_previous_look_is_left_running_once_per_block_outside_run() {
    let returned = Context {
        code_returned: true,
        ..plain()
    };
    let ask = |i: &Interrupts, iteration: u64| {
        i.request(ticket(true, SECOND), iteration);
        i.on_interrupt(
            ticket(true, SECOND),
            frames("next"),
            Context {
                iteration,
                ..returned
            },
        )
    };
    // Unguarded: declined once; at the next request of the block, whatever runs is stopped (code
    // that keeps moving, a chain of short callbacks, is stopped one timeout late at most).
    let i = everywhere();
    assert_eq!(ask(&i, ITERATION), Decision::Nothing);
    assert!(i.take_unguarded().is_none());
    assert_eq!(ask(&i, ITERATION), Decision::TerminateUnguarded);
    assert!(i.take_unguarded().is_some());
    // The next block has its own.
    assert_eq!(ask(&i, ITERATION + 1), Decision::Nothing);

    // Under a callback guard the same: another guarded callback than the one seen before.
    let i = everywhere();
    i.enter_guard(GuardKind::Callback);
    assert_eq!(ask(&i, ITERATION), Decision::Nothing);
    assert_eq!(ask(&i, ITERATION), Decision::Terminate);
    assert!(matches!(
        exit(&i, GuardKind::Callback, false),
        Some(Taken::Fired(_))
    ));

    // Under run()/wrap() the guarded code is what blocks, whatever ran before it.
    let i = everywhere();
    i.enter_guard(GuardKind::Explicit);
    assert_eq!(ask(&i, ITERATION), Decision::Terminate);
    assert!(matches!(
        exit(&i, GuardKind::Explicit, false),
        Some(Taken::Fired(_))
    ));

    // Only a request that would have stopped the code uses up the block's one: one declined for
    // another reason (here, inside an async hook) does not.
    let i = everywhere();
    let in_hook = Context {
        in_async_hook: true,
        ..returned
    };
    i.request(ticket(true, SECOND), ITERATION);
    assert_eq!(
        i.on_interrupt(ticket(true, SECOND), frames("hook"), in_hook),
        Decision::Nothing
    );
    assert_eq!(ask(&i, ITERATION), Decision::Nothing);
    assert_eq!(ask(&i, ITERATION), Decision::TerminateUnguarded);
}

#[test]
fn a_guard_takes_a_late_request_only_once_its_own_time_reached_the_timeout() {
    let i = Interrupts::default();
    // Requested at the deadline, at 10 s on the clock.
    let mut first = ticket(false, SECOND);
    first.requested_ns = 10 * SECOND;
    i.enter_guard(GuardKind::Explicit);
    i.request(first, ITERATION);
    // The call returns 0.2 s later, before V8 ran the interrupt; its thread waited 0.5 s for a
    // CPU in the turn, so it held the loop 0.7 s of the 1.2 s: not late.
    let starved = || GuardExit {
        iteration: ITERATION,
        now_ns: 10 * SECOND + SECOND / 5,
        turn_cpu_wait_ns: SECOND / 2,
    };
    assert!(i.exit_guard(GuardKind::Explicit, true, starved).is_none());
    // The request stays for its interrupt, which applies the same rule where it lands.
    let cx = Context {
        now_ns: 10 * SECOND + SECOND / 5,
        turn_cpu_wait_ns: SECOND / 2,
        ..plain()
    };
    i.enter_guard(GuardKind::Explicit);
    assert_eq!(
        i.on_interrupt(first, frames("spin"), cx),
        Decision::Later(3 * SECOND / 10)
    );
    assert!(i.exit_guard(GuardKind::Explicit, true, starved).is_none());

    // A retry is counted from its own time: blocked 2 s at 11 s, the guard ends 0.1 s later
    // with 1.2 s of CPU wait: 0.9 s held, not late (from the first request's time: 1.9 s).
    let mut retry = ticket(false, 2 * SECOND);
    retry.requested_ns = 11 * SECOND;
    i.enter_guard(GuardKind::Explicit);
    i.request(first, ITERATION);
    i.request(retry, ITERATION);
    let later = |wait| {
        move || GuardExit {
            iteration: ITERATION,
            now_ns: 11 * SECOND + SECOND / 10,
            turn_cpu_wait_ns: wait,
        }
    };
    assert!(i
        .exit_guard(GuardKind::Explicit, true, later(SECOND + SECOND / 5))
        .is_none());
    // With less of it waited, the call's own time passed the timeout: late.
    i.enter_guard(GuardKind::Explicit);
    match i.exit_guard(GuardKind::Explicit, true, later(SECOND / 2)) {
        Some(Taken::Late(p)) => assert_eq!(p.ticket.blocked_ns, 2 * SECOND),
        other => panic!("expected Late, got {other:?}"),
    }
}
