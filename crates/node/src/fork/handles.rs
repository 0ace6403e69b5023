//! The event loop's handles, for fork(): every handle made visible to the JavaScript checks for a
//! moment (unref'd ones too), c-ares' DNS sockets counted, and the streams that carry TLS found, so
//! that the child's copies of them can be cut.
//!
//! Everything here reads only libuv's public handle API and struct layout, except the TLS probe,
//! which recognises Node's stream wraps by their vtables (exported symbols, with sizes): a handle's
//! `data` is its `TCPWrap`/`PipeWrap`, whose `StreamBase` part points to the stream's listener,
//! which is a `TLSWrap` when TLS runs over the stream. Every read of that probe goes through
//! `process_vm_readv` on this process, so an unexpected layout gives "not TLS", never a crash.

use std::ffi::CStr;
use std::os::raw::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use loop_helpers_core::symbols::lookup;

use crate::platform;
use crate::uv::{uv_handle_get_data, uv_handle_t, uv_loop_t, uv_ref, uv_unref};

/// `uv_handle_type` values (uv.h, stable through libuv 1.x).
const UV_NAMED_PIPE: c_int = 7;
const UV_POLL: c_int = 8;
const UV_TCP: c_int = 12;

type WalkCb = unsafe extern "C" fn(*mut uv_handle_t, *mut c_void);

extern "C" {
    fn uv_walk(lp: *mut uv_loop_t, cb: WalkCb, arg: *mut c_void);
    fn uv_has_ref(h: *const uv_handle_t) -> c_int;
    fn uv_is_closing(h: *const uv_handle_t) -> c_int;
    fn uv_handle_get_type(h: *const uv_handle_t) -> c_int;
    fn uv_fileno(h: *const uv_handle_t, fd: *mut c_int) -> c_int;
}

/// Calls `f` for every handle of the loop (libuv's internal ones excepted).
///
/// # Safety
/// On the loop's thread; `f` must not panic (it runs inside a C callback) nor close handles.
unsafe fn each(lp: *mut uv_loop_t, mut f: impl FnMut(*mut uv_handle_t)) {
    /// # Safety
    /// `arg` is the `&mut F` that `each` passed to `uv_walk`, which calls this during `uv_walk`.
    unsafe extern "C" fn call<F: FnMut(*mut uv_handle_t)>(h: *mut uv_handle_t, arg: *mut c_void) {
        // SAFETY: `arg` points to `each`'s `f`, alive and not otherwise borrowed while uv_walk runs.
        unsafe { (*(arg as *mut F))(h) }
    }
    fn cb_for<F: FnMut(*mut uv_handle_t)>(_: &F) -> WalkCb {
        call::<F>
    }
    let cb = cb_for(&f);
    // SAFETY: on the loop's thread (the caller's contract); `cb` is `call` for this `F`, so the
    // argument it gets back is `f`, which outlives the walk.
    unsafe { uv_walk(lp, cb, &mut f as *mut _ as *mut c_void) };
}

/// Handles that were unref'd and are ref'd until [`Visible::restore`].
pub struct Visible(Vec<*mut uv_handle_t>);

/// Refs every unref'd handle that is not closing, so that Node's JavaScript views of the loop
/// (`process.getActiveResourcesInfo()`, `process._getActiveHandles()`), which list ref'd handles
/// only, show all of them: an unref'd child process is as alive as a ref'd one.
///
/// # Safety
/// On the loop's thread; call [`Visible::restore`] before the loop runs again.
pub unsafe fn make_visible(lp: *mut uv_loop_t) -> Visible {
    let mut changed = Vec::new();
    // SAFETY: on the loop's thread (the caller's contract). The closure gets live handles of the
    // loop from uv_walk, cannot panic, and only changes their ref flag (no handle is closed).
    unsafe {
        each(lp, |h| {
            if uv_is_closing(h) == 0 && uv_has_ref(h) == 0 {
                uv_ref(h);
                changed.push(h);
            }
        })
    };
    Visible(changed)
}

impl Visible {
    /// Unrefs the handles again (a handle closed meanwhile is still allocated until its close
    /// callback, which the loop has not run yet).
    ///
    /// # Safety
    /// On the loop's thread, before the loop runs again.
    pub unsafe fn restore(self) {
        for h in self.0 {
            // SAFETY: on the loop's thread before it runs again (the caller's contract), so `h`,
            // alive in `make_visible`, has not been freed: a close callback needs a loop turn.
            unsafe { uv_unref(h) };
        }
    }
}

/// The head of `uv_poll_t` (uv.h: `UV_HANDLE_FIELDS` as on Unix, then `poll_cb`).
#[repr(C)]
struct PollHead {
    data: *mut c_void,
    loop_: *mut uv_loop_t,
    kind: c_int,
    close_cb: *mut c_void,
    handle_queue: [*mut c_void; 2],
    u: [*mut c_void; 4],
    next_closing: *mut c_void,
    flags: c_uint,
    poll_cb: *mut c_void,
}

/// The load address of the object (executable or library) that contains `address`.
fn object_of(address: *const c_void) -> Option<usize> {
    // SAFETY: dladdr only reads the loader's tables; a zeroed Dl_info is a valid out-parameter.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        (libc::dladdr(address, &mut info) != 0).then_some(info.dli_fbase as usize)
    }
}

/// What the probes need from the node executable, resolved in the parent (dlsym and dladdr take
/// the loader's lock, which a forked child must not need).
struct Symbols {
    /// The object that holds Node's own code (the executable, or libnode).
    node: Option<usize>,
    tcp: Option<(usize, usize)>,
    pipe: Option<(usize, usize)>,
    tls: Option<(usize, usize)>,
}

static SYMBOLS: OnceLock<Symbols> = OnceLock::new();

fn vtable(name: &CStr) -> Option<(usize, usize)> {
    let p = lookup(name)?.as_ptr();
    let size = platform::symbol_size(p);
    (size >= 3 * std::mem::size_of::<usize>()).then_some((p as usize, p as usize + size))
}

fn symbols() -> &'static Symbols {
    SYMBOLS.get_or_init(|| Symbols {
        node: lookup(c"napi_create_function").and_then(|p| object_of(p.as_ptr())),
        tcp: vtable(c"_ZTVN4node7TCPWrapE"),
        pipe: vtable(c"_ZTVN4node8PipeWrapE"),
        tls: vtable(c"_ZTVN4node6crypto7TLSWrapE"),
    })
}

/// Resolves what [`dns_sockets`] and [`tls_streams`] need, before the fork.
pub fn prepare() {
    symbols();
}

/// Open sockets of c-ares, Node's DNS resolver (`dns.resolve*()`, `dns.Resolver`, `dns.promises`):
/// c-ares keeps a socket open while a query waits for its answer, and Node watches each with a
/// `uv_poll_t` whose callback is Node's own. An addon's poll handles (its callback lives in the
/// addon) are not counted.
///
/// # Safety
/// On the loop's thread.
pub unsafe fn dns_sockets(lp: *mut uv_loop_t) -> usize {
    let Some(node) = symbols().node else {
        return 0;
    };
    let mut n = 0;
    // SAFETY: on the loop's thread (the caller's contract); the closure cannot panic nor close
    // handles. Each `h` is a live handle of the loop, and one of type UV_POLL is a `uv_poll_t`,
    // whose head `PollHead` mirrors.
    unsafe {
        each(lp, |h| {
            if uv_handle_get_type(h) == UV_POLL && uv_is_closing(h) == 0 {
                let cb = (*(h as *const PollHead)).poll_cb;
                if !cb.is_null() && object_of(cb) == Some(node) {
                    n += 1;
                }
            }
        })
    };
    n
}

/// Whether `process_vm_readv` was found not to be allowed here (a seccomp filter, gVisor).
static NO_VM_READV: AtomicBool = AtomicBool::new(false);

/// Reads `out.len()` words at `address` of this process, or false when any of it is not mapped.
/// The kernel does the reading, so an address that is not mapped gives an error, not a crash.
fn read_words(address: usize, out: &mut [usize]) -> bool {
    if address == 0 || address & (std::mem::align_of::<usize>() - 1) != 0 {
        return false;
    }
    let len = std::mem::size_of_val(out);
    if !NO_VM_READV.load(Ordering::Relaxed) {
        let local = libc::iovec {
            iov_base: out.as_mut_ptr().cast(),
            iov_len: len,
        };
        let remote = libc::iovec {
            iov_base: address as *mut c_void,
            iov_len: len,
        };
        // SAFETY: reads this process's own memory into `out`; an unmapped address gives EFAULT.
        let r = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        if r == len as isize {
            return true;
        }
        let e = std::io::Error::last_os_error().raw_os_error();
        if !matches!(e, Some(libc::ENOSYS | libc::EPERM | libc::EACCES)) {
            return false; // EFAULT: not mapped
        }
        NO_VM_READV.store(true, Ordering::Relaxed);
    }
    // Through a pipe: write(2) copies from our memory (EFAULT when it is not mapped).
    let mut p = [-1 as c_int; 2];
    // SAFETY: plain syscalls on a pipe of our own, closed before returning; `out` is writable.
    unsafe {
        if libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) != 0 {
            return false;
        }
        let ok = libc::write(p[1], address as *const c_void, len) == len as isize
            && libc::read(p[0], out.as_mut_ptr().cast(), len) == len as isize;
        libc::close(p[0]);
        libc::close(p[1]);
        ok
    }
}

/// Whether `listener` (a `StreamListener*`) or one below it is a `TLSWrap`. A listener starts with
/// its vtable pointer, then `previous_listener_`.
fn tls_listener(mut listener: usize, tls: (usize, usize)) -> bool {
    for _ in 0..4 {
        let mut w = [0usize; 2];
        if !read_words(listener, &mut w) {
            return false;
        }
        if w[0] >= tls.0 && w[0] < tls.1 {
            return true;
        }
        listener = w[1];
    }
    false
}

/// Whether TLS runs over the stream of this Node `TCPWrap`/`PipeWrap` (its class's vtable range is
/// `class`).
fn carries_tls(wrap: usize, class: (usize, usize), tls: (usize, usize)) -> bool {
    // A wrap object is several hundred bytes (it embeds its uv handle); its StreamBase part comes
    // right after the HandleWrap part.
    let mut words = [0usize; 48];
    if !read_words(wrap, &mut words) {
        return false;
    }
    let primary = class.0 + 2 * std::mem::size_of::<usize>();
    if words[0] != primary {
        return false; // not Node's wrap (an addon's or the inspector's handle)
    }
    // The StreamBase subobject starts with a vtable pointer into the class's vtable group; its
    // first data member (StreamResource::listener_) follows.
    let Some(i) = (1..words.len()).find(|&i| words[i] > class.0 && words[i] < class.1) else {
        return false;
    };
    words[i + 1..words.len().min(i + 3)]
        .iter()
        .any(|&p| tls_listener(p, tls))
}

/// The file descriptors of the loop's TCP and pipe streams that carry TLS (`tls.connect()`,
/// `https`, `fetch()`'s pooled connections, the accepted connections of a TLS server, a socket
/// upgraded with `new tls.TLSSocket(socket)`), unref'd ones included.
///
/// # Safety
/// On the loop's thread.
pub unsafe fn tls_streams(lp: *mut uv_loop_t) -> Vec<c_int> {
    let s = symbols();
    let Some(tls) = s.tls else {
        return Vec::new();
    };
    let mut fds = Vec::new();
    // SAFETY: on the loop's thread (the caller's contract); the closure cannot panic nor close
    // handles, and each `h` is a live handle of the loop (`fd` is a live local for `uv_fileno`).
    // `carries_tls` reads the handle's wrap object through process_vm_readv only, which fails
    // instead of faulting on a bad address.
    unsafe {
        each(lp, |h| {
            let class = match uv_handle_get_type(h) {
                UV_TCP => s.tcp,
                UV_NAMED_PIPE => s.pipe,
                _ => None,
            };
            let Some(class) = class else {
                return;
            };
            if uv_is_closing(h) != 0 {
                return;
            }
            let mut fd: c_int = -1;
            if uv_fileno(h, &mut fd) != 0 || fd < 0 {
                return;
            }
            if carries_tls(uv_handle_get_data(h) as usize, class, tls) {
                fds.push(fd);
            }
        })
    };
    fds
}

/// In a forked child: replaces each of `fds` by a socket whose peer is gone. The parent's
/// connection is untouched (the child only drops its reference to the socket); the child's TLS
/// state, a copy of the parent's keys and sequence numbers, can no longer reach the peer: its reads
/// see the end of the stream, its writes fail with EPIPE, and Node closes the socket.
/// Returns how many were cut, or an error when no replacement socket could be made.
///
/// # Safety
/// In the child, before its event loop polls again.
pub unsafe fn cut(fds: &[c_int]) -> Result<usize, std::io::Error> {
    if fds.is_empty() {
        return Ok(0);
    }
    let mut sv = [-1 as c_int; 2];
    // SAFETY: `sv` has room for the two descriptors socketpair writes.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `sv[1]` is ours, just made, and used nowhere else.
    unsafe { libc::close(sv[1]) };
    let mut n = 0;
    for &fd in fds {
        // dup3 keeps close-on-exec, as libuv made the original; O_NONBLOCK is the socket's own.
        // SAFETY: replacing `fd` is the point: in the child before its loop polls again (the
        // caller's contract), so no libuv call is using it meanwhile; its handle keeps the number.
        if unsafe { libc::dup3(sv[0], fd, libc::O_CLOEXEC) } == fd {
            n += 1;
        }
    }
    // SAFETY: `sv[0]` is ours; the duplicates made from it stay open.
    unsafe { libc::close(sv[0]) };
    if n == fds.len() {
        Ok(n)
    } else {
        Err(std::io::Error::last_os_error())
    }
}
