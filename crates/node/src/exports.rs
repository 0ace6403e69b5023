//! The functions the TypeScript layer calls. Arguments are validated there; here they are checked
//! again only as far as memory safety needs, with errors carrying stable codes.

use loop_helpers_core::monitor::{self, WatchConfig};
use loop_helpers_core::report::{json_str, LogTarget, Origin};
use loop_helpers_core::{alarm, clock};

use crate::env_loop::EnvLoop;
use crate::js;
use crate::napi::*;
use crate::sink::{NodeSink, MAX_FRAMES};
use crate::v8;

const E_ARG: &str = "ERR_LOOP_HELPERS_NATIVE_ARGUMENT";
const E_START: &str = "ERR_LOOP_HELPERS_START";

/// start(timeoutSeconds, aggressive, logMode, timeoutLabel, threadId, captureStacks, interrupt, onBlock) -> id
///
/// logMode: 0 silent, 1 stderr text, 2 stderr JSON lines, 3 deferred to JavaScript.
pub unsafe extern "C" fn start(env: napi_env, info: napi_callback_info) -> napi_value {
    let a = js::args::<8>(env, info);
    let (
        Some(timeout),
        Some(aggressive),
        Some(log),
        Some(label),
        Some(thread_id),
        Some(stacks),
        Some(interrupt),
    ) = (
        js::f64_arg(env, a[0]),
        js::bool_arg(env, a[1]),
        js::f64_arg(env, a[2]),
        js::string_arg(env, a[3]),
        js::f64_arg(env, a[4]),
        js::bool_arg(env, a[5]),
        js::bool_arg(env, a[6]),
    )
    else {
        return js::throw(env, E_ARG, "start(): bad argument types");
    };
    if !(timeout.is_finite() && timeout > 0.0 && js::is_function(env, a[7])) {
        return js::throw(env, E_ARG, "start(): bad timeout or callback");
    }
    let log = match log as u32 {
        0 => LogTarget::Silent,
        1 => LogTarget::StderrText,
        2 => LogTarget::StderrJson,
        _ => LogTarget::Deferred,
    };
    let env_loop = match EnvLoop::get_or_create(env) {
        Ok(e) => e,
        Err(e) => return js::throw(env, E_START, &e),
    };
    let sink = match NodeSink::new(env, env_loop.clone(), a[7]) {
        Ok(s) => s,
        Err(e) => return js::throw(env, E_START, &e),
    };
    let timeout_ns = (timeout * 1e9).round() as u64;
    let cfg = WatchConfig {
        timeout_ns,
        aggressive,
        log,
        origin: Origin {
            pid: std::process::id(),
            thread_id: thread_id as u32,
            timeout_label: label,
            timeout_ns,
        },
        capture_stacks: stacks && v8::stack_capture_support().is_ok(),
        interrupt: interrupt && v8::terminate_support().is_ok(),
    };
    match env_loop.add_watch(cfg, sink.clone()) {
        Ok(id) => js::number(env, id as f64),
        Err(e) => {
            sink.close();
            js::throw(env, E_START, &e)
        }
    }
}

/// stop(id) -> JSON of the block in progress, or undefined
pub unsafe extern "C" fn stop(env: napi_env, info: napi_callback_info) -> napi_value {
    let a = js::args::<1>(env, info);
    let Some(id) = js::f64_arg(env, a[0]) else {
        return js::throw(env, E_ARG, "stop(): bad id");
    };
    let env_loop = match EnvLoop::get_or_create(env) {
        Ok(e) => e,
        Err(e) => return js::throw(env, E_START, &e),
    };
    match env_loop.remove_watch(id as u64) {
        Ok(Some(json)) => js::string(env, &json),
        Ok(None) => js::undefined(env),
        Err(e) => js::throw(env, E_START, &e),
    }
}

/// flush(id) -> JSON of a block in progress, ended now (the loop is done), or undefined
pub unsafe extern "C" fn flush(env: napi_env, info: napi_callback_info) -> napi_value {
    let a = js::args::<1>(env, info);
    let Some(id) = js::f64_arg(env, a[0]) else {
        return js::throw(env, E_ARG, "flush(): bad id");
    };
    match monitor::flush(id as u64) {
        Some(json) => js::string(env, &json),
        None => js::undefined(env),
    }
}

/// captureStack(limit) -> JSON array of frames of the calling JavaScript stack (self-test).
pub unsafe extern "C" fn capture_stack(env: napi_env, info: napi_callback_info) -> napi_value {
    let a = js::args::<1>(env, info);
    let limit = js::f64_arg(env, a[0])
        .unwrap_or(MAX_FRAMES as f64)
        .clamp(1.0, 200.0) as u32;
    let isolate = v8::current_isolate();
    if isolate.is_null() {
        return js::string(env, "[]");
    }
    let frames = v8::capture_stack(env, isolate, limit);
    let mut s = String::new();
    frames_json(&mut s, &frames);
    js::string(env, &s)
}

/// nativeInfo() -> JSON: what the native layer can do here, and monitor statistics.
pub unsafe extern "C" fn native_info(env: napi_env, _info: napi_callback_info) -> napi_value {
    let mut s = String::from("{\"stackCapture\":");
    match v8::stack_capture_support() {
        Ok(()) => s.push_str("true,\"stackCaptureReason\":null"),
        Err(e) => {
            s.push_str("false,\"stackCaptureReason\":");
            json_str(&mut s, e);
        }
    }
    s.push_str(",\"terminate\":");
    match v8::terminate_support() {
        Ok(()) => s.push_str("true,\"terminateReason\":null"),
        Err(e) => {
            s.push_str("false,\"terminateReason\":");
            json_str(&mut s, e);
        }
    }
    let (wakes, backstop) = monitor::wake_stats();
    s.push_str(&format!(
        ",\"watches\":{},\"monitorWakes\":{},\"backstopWakes\":{},\"forwardedSigalrm\":{},\"sigalrmInstalled\":{},\"hrtime\":\"{}\"}}",
        monitor::watch_count(),
        wakes,
        backstop,
        alarm::forwarded_count(),
        alarm::is_installed(),
        clock::now_ns()
    ));
    js::string(env, &s)
}

/// guardCall(fn, thisArg, args) -> fn's result
///
/// Calls `fn` under a native guard frame. When a detector interrupts it (or it blocked past a
/// detector's deadline inside native code), the termination is cancelled here and an Error with
/// code ERR_LOOP_HELPERS_INTERRUPT is thrown, whose `interrupt` property is JSON: the detector's
/// id and the blocking code's frames. `index.ts` turns it into the detector's `raiseExc`.
pub unsafe extern "C" fn guard_call(env: napi_env, info: napi_callback_info) -> napi_value {
    let a = js::args::<3>(env, info);
    if !js::is_function(env, a[0]) {
        return js::throw(env, E_ARG, "guardCall(): fn is not a function");
    }
    let mut argc = 0u32;
    if napi_get_array_length(env, a[2], &mut argc) != NAPI_OK {
        return js::throw(env, E_ARG, "guardCall(): args is not an array");
    }
    let mut argv = Vec::with_capacity(argc as usize);
    for i in 0..argc {
        let mut v = std::ptr::null_mut();
        napi_get_element(env, a[2], i, &mut v);
        argv.push(v);
    }
    let env_loop = match EnvLoop::get_or_create(env) {
        Ok(e) => e,
        Err(e) => return js::throw(env, E_START, &e),
    };
    env_loop.interrupts.enter_guard();
    let mut result: napi_value = std::ptr::null_mut();
    let status = napi_call_function(env, a[1], a[0], argv.len(), argv.as_ptr(), &mut result);
    let Some(pending) = env_loop.interrupts.exit_guard(env_loop.iteration()) else {
        // A normal return, or an ordinary exception (still pending: it propagates as is), or a
        // termination that is not ours (worker.terminate(): it keeps unwinding).
        return if status == NAPI_OK {
            result
        } else {
            std::ptr::null_mut()
        };
    };
    // Ours. Cancel first: every V8 call fails while the isolate is terminating.
    v8::cancel_termination(env_loop.isolate);
    let mut discarded = std::ptr::null_mut();
    napi_get_and_clear_last_exception(env, &mut discarded);
    let mut json = format!(
        "{{\"watchId\":{},\"index\":{},\"late\":{},\"frames\":",
        pending.ticket.watch_id,
        pending.ticket.index,
        pending.frames.is_none()
    );
    match &pending.frames {
        Some(frames) if pending.ticket.capture => frames_json(&mut json, frames),
        _ => json.push_str("null"),
    }
    json.push('}');
    throw_interrupt(env, &json)
}

unsafe fn throw_interrupt(env: napi_env, json: &str) -> napi_value {
    let code = js::string(env, "ERR_LOOP_HELPERS_INTERRUPT");
    let msg = js::string(env, "interrupted by a BlockingDetector");
    let mut err = std::ptr::null_mut();
    if napi_create_error(env, code, msg, &mut err) == NAPI_OK {
        napi_set_named_property(env, err, c"interrupt".as_ptr(), js::string(env, json));
        napi_throw(env, err);
    }
    std::ptr::null_mut()
}

fn frames_json(s: &mut String, frames: &[loop_helpers_core::report::Frame]) {
    s.push('[');
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"functionName\":");
        json_str(s, &f.function_name);
        s.push_str(",\"fileName\":");
        json_str(s, &f.file_name);
        s.push_str(&format!(
            ",\"lineNumber\":{},\"columnNumber\":{}}}",
            f.line, f.column
        ));
    }
    s.push(']');
}
