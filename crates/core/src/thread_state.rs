//! Where a thread is when it is outside JavaScript: what the monitor says in a warning that has no
//! stack (the blocked thread did not reach a JavaScript interrupt check). Read from the monitor
//! thread through `/proc/self/task/<tid>/` on Linux: `syscall` (the system call it is in, or
//! `running`, and its arguments), `wchan` (where the kernel has it wait) and `stat` (its state
//! letter); the file a system call works on comes from `/proc/self/fd/<fd>` (a file descriptor
//! argument) or `/proc/self/mem` (a path argument). Elsewhere nothing is known and nothing is said.

/// What `/proc` says about a thread: in words, and as the fields reports carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadState {
    /// The sentence of `BlockSample.threadState`.
    pub words: String,
    /// The system call it is in, by name (None: running, or a call without a name here).
    pub syscall: Option<&'static str>,
    /// The file that system call works on: the path of its file descriptor (`pipe:[…]` and
    /// `socket:[…]` for those) or its path argument.
    pub file: Option<String>,
    /// Running on a CPU (or waiting for one), not in a system call: native code, a garbage
    /// collection, or JavaScript between interrupt checks.
    pub running: bool,
}

/// What the thread `tid` of this process is doing, in words, or None when it cannot be read.
pub fn describe(tid: i32) -> Option<String> {
    read(tid).map(|s| s.words)
}

/// What the thread `tid` of this process is doing, or None when it cannot be read.
pub fn read(tid: i32) -> Option<ThreadState> {
    #[cfg(target_os = "linux")]
    {
        linux::read(tid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        None
    }
}

/// Which argument of a system call names the file it works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileArgument {
    /// A file descriptor, the argument at this index.
    Fd(usize),
    /// A pointer to a NUL-terminated path, the argument at this index.
    Path(usize),
}

/// The argument of system call `name` that names its file, for the calls a blocked thread is found
/// in with one.
pub fn file_argument(name: &str) -> Option<FileArgument> {
    Some(match name {
        "read" | "pread64" | "readv" | "preadv" | "write" | "pwrite64" | "writev" | "pwritev"
        | "fsync" | "fdatasync" | "fstat" | "getdents" | "getdents64" | "flock" | "recvfrom"
        | "recvmsg" | "sendto" | "sendmsg" | "connect" | "accept" | "accept4"
        | "copy_file_range" | "close" => FileArgument::Fd(0),
        "open" | "stat" | "mkdir" | "rmdir" | "unlink" | "readlink" | "rename" => {
            FileArgument::Path(0)
        }
        "openat" | "mkdirat" | "newfstatat" | "unlinkat" | "renameat" | "renameat2" | "statx" => {
            FileArgument::Path(1)
        }
        _ => return None,
    })
}

/// The words for a thread in system call `nr`, or None for a call without a name here.
pub fn syscall_words(nr: i64) -> Option<&'static str> {
    let name = syscall_name(nr)?;
    Some(match name {
        "futex" => "waiting on a lock (futex: Atomics.wait, a mutex, or a thread it joins)",
        "epoll_wait" | "epoll_pwait" | "epoll_pwait2" | "poll" | "ppoll" | "select" | "pselect6" => {
            "waiting for I/O in a nested event loop (a synchronous child process: execSync, spawnSync)"
        }
        "wait4" | "waitid" => "waiting for a child process to end",
        "read" | "pread64" | "readv" | "preadv" | "recvfrom" | "recvmsg" => {
            "reading (a file, a pipe or a socket) synchronously"
        }
        "write" | "pwrite64" | "writev" | "pwritev" | "sendto" | "sendmsg" => {
            "writing (a file, a pipe or a socket) synchronously"
        }
        "fsync" | "fdatasync" | "msync" => "flushing a file to disk",
        "open" | "openat" | "close" | "stat" | "fstat" | "newfstatat" | "statx" | "getdents"
        | "getdents64" | "unlink" | "unlinkat" | "rename" | "renameat" | "renameat2" | "mkdir"
        | "mkdirat" | "rmdir" | "readlink" | "flock" | "copy_file_range" => {
            "in a synchronous file-system call"
        }
        "nanosleep" | "clock_nanosleep" => "sleeping",
        "connect" | "accept" | "accept4" => "in a synchronous network call",
        "getrandom" => "waiting for entropy (getrandom)",
        "io_uring_enter" => "waiting in io_uring",
        _ => return None,
    })
}

/// The system call's name on this architecture (the ones a blocked Node.js thread is found in).
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    const TABLE: &[(i64, &str)] = &[
        (0, "read"),
        (1, "write"),
        (2, "open"),
        (3, "close"),
        (4, "stat"),
        (5, "fstat"),
        (7, "poll"),
        (17, "pread64"),
        (18, "pwrite64"),
        (19, "readv"),
        (20, "writev"),
        (23, "select"),
        (26, "msync"),
        (35, "nanosleep"),
        (42, "connect"),
        (43, "accept"),
        (44, "sendto"),
        (45, "recvfrom"),
        (46, "sendmsg"),
        (47, "recvmsg"),
        (61, "wait4"),
        (73, "flock"),
        (74, "fsync"),
        (75, "fdatasync"),
        (78, "getdents"),
        (82, "rename"),
        (83, "mkdir"),
        (84, "rmdir"),
        (87, "unlink"),
        (89, "readlink"),
        (202, "futex"),
        (217, "getdents64"),
        (230, "clock_nanosleep"),
        (232, "epoll_wait"),
        (247, "waitid"),
        (257, "openat"),
        (258, "mkdirat"),
        (262, "newfstatat"),
        (263, "unlinkat"),
        (264, "renameat"),
        (270, "pselect6"),
        (271, "ppoll"),
        (281, "epoll_pwait"),
        (288, "accept4"),
        (295, "preadv"),
        (296, "pwritev"),
        (316, "renameat2"),
        (318, "getrandom"),
        (326, "copy_file_range"),
        (332, "statx"),
        (426, "io_uring_enter"),
        (441, "epoll_pwait2"),
    ];
    #[cfg(target_arch = "aarch64")]
    const TABLE: &[(i64, &str)] = &[
        (22, "epoll_pwait"),
        (32, "flock"),
        (34, "mkdirat"),
        (35, "unlinkat"),
        (38, "renameat"),
        (56, "openat"),
        (57, "close"),
        (61, "getdents64"),
        (63, "read"),
        (64, "write"),
        (65, "readv"),
        (66, "writev"),
        (67, "pread64"),
        (68, "pwrite64"),
        (72, "pselect6"),
        (73, "ppoll"),
        (79, "newfstatat"),
        (80, "fstat"),
        (82, "fsync"),
        (83, "fdatasync"),
        (95, "waitid"),
        (98, "futex"),
        (101, "nanosleep"),
        (115, "clock_nanosleep"),
        (202, "accept"),
        (203, "connect"),
        (206, "sendto"),
        (207, "recvfrom"),
        (211, "sendmsg"),
        (212, "recvmsg"),
        (242, "accept4"),
        (260, "wait4"),
        (276, "renameat2"),
        (278, "getrandom"),
        (285, "copy_file_range"),
        (291, "statx"),
        (426, "io_uring_enter"),
        (441, "epoll_pwait2"),
    ];
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    const TABLE: &[(i64, &str)] = &[];
    TABLE.iter().find(|(n, _)| *n == nr).map(|(_, name)| *name)
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs;
    use std::os::unix::fs::FileExt;

    use super::{FileArgument, ThreadState};

    /// Longest path read from memory.
    const PATH_MAX: usize = 4096;

    /// The path of this process's file descriptor `fd` (`pipe:[…]`, `socket:[…]` for those).
    fn fd_path(fd: u64) -> Option<String> {
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        fs::read_link(format!("/proc/self/fd/{fd}"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// The NUL-terminated string at `addr` in this process's memory, read through the kernel
    /// (`/proc/self/mem`): an address that is not mapped is an error, never a fault. The blocked
    /// thread may change the memory meanwhile; the result is then garbled text, nothing worse.
    fn c_string_at(addr: u64) -> Option<String> {
        if addr == 0 {
            return None;
        }
        let mem = fs::File::open("/proc/self/mem").ok()?;
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while out.len() < PATH_MAX {
            let n = mem.read_at(&mut buf, addr + out.len() as u64).ok()?;
            if n == 0 {
                return None;
            }
            if let Some(end) = buf[..n].iter().position(|b| *b == 0) {
                out.extend_from_slice(&buf[..end]);
                return (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned());
            }
            out.extend_from_slice(&buf[..n]);
        }
        None
    }

    /// The file system call `name` works on, from its arguments (`args`: the hexadecimal words
    /// after the number in `/proc/<tid>/syscall`).
    fn file_of(name: &str, args: &[&str]) -> Option<String> {
        let arg = |i: usize| {
            args.get(i)
                .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        };
        match super::file_argument(name)? {
            FileArgument::Fd(i) => fd_path(arg(i)?),
            FileArgument::Path(i) => c_string_at(arg(i)?),
        }
    }

    pub fn read(tid: i32) -> Option<ThreadState> {
        let dir = format!("/proc/self/task/{tid}");
        let syscall = fs::read_to_string(format!("{dir}/syscall")).ok()?;
        let mut words = syscall.split_whitespace();
        let first = words.next()?;
        if first == "running" {
            return Some(ThreadState {
                words: "the thread is running, not in a system call: native code (an addon, or a C++ builtin such as JSON.parse of a huge string or a crypto or zlib *Sync call), a garbage collection, or JavaScript that has not reached an interrupt check yet"
                    .into(),
                running: true,
                ..ThreadState::default()
            });
        }
        let nr: i64 = first.parse().ok()?;
        if nr < 0 {
            // Blocked, but not in a system call (a page fault, say).
            return Some(ThreadState {
                words: "the thread is stopped in the kernel, not in a system call".into(),
                ..ThreadState::default()
            });
        }
        let args: Vec<&str> = words.collect();
        let state = fs::read_to_string(format!("{dir}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next())
            });
        let wchan = fs::read_to_string(format!("{dir}/wchan"))
            .ok()
            .map(|w| w.trim().to_string())
            .filter(|w| !w.is_empty() && w != "0");
        let mut s = match (super::syscall_words(nr), super::syscall_name(nr)) {
            (Some(words), Some(name)) => format!("the thread is {words}: system call {name}"),
            (None, Some(name)) => format!("the thread is in the system call {name}"),
            _ => format!("the thread is in system call {nr}"),
        };
        if state == Some('D') {
            s.push_str(
                ", in uninterruptible sleep (waiting for a disk or the network file system)",
            );
        }
        if let Some(w) = wchan {
            s.push_str(&format!(" (kernel: {w})"));
        }
        let name = super::syscall_name(nr);
        Some(ThreadState {
            words: s,
            syscall: name,
            file: name.and_then(|n| file_of(n, &args)),
            running: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    fn own_tid() -> i32 {
        // SAFETY: gettid takes no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_gettid) as i32 }
    }

    #[test]
    fn names_the_calls_a_blocked_node_thread_is_found_in() {
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(syscall_name(281), Some("epoll_pwait"));
            assert_eq!(syscall_name(202), Some("futex"));
        }
        #[cfg(target_arch = "aarch64")]
        {
            assert_eq!(syscall_name(22), Some("epoll_pwait"));
            assert_eq!(syscall_name(98), Some("futex"));
        }
        assert_eq!(syscall_name(-1), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn describes_a_thread_sleeping_in_a_system_call() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            tx.send(own_tid()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
        });
        let tid = rx.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let d = describe(tid).expect("readable");
        t.join().unwrap();
        assert!(
            d.contains("sleeping: system call clock_nanosleep") || d.contains("nanosleep"),
            "{d}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn describes_a_thread_running_outside_javascript() {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            tx.send(own_tid()).unwrap();
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let tid = rx.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let d = describe(tid);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        t.join().unwrap();
        // A spinning thread is "running" whenever /proc looks (it may be descheduled on a busy
        // machine: then it is not in a system call either).
        let d = d.expect("readable");
        assert!(
            d.contains("running, not in a system call") || d.contains("not in a system call"),
            "{d}"
        );
    }

    #[cfg(target_os = "linux")]
    fn blocked_thread_state(block: impl FnOnce() + Send + 'static) -> ThreadState {
        let (tx, rx) = std::sync::mpsc::channel();
        // Detached: the caller unblocks it and waits for its `done` message.
        std::thread::spawn(move || {
            tx.send(own_tid()).unwrap();
            block();
        });
        let tid = rx.recv().unwrap();
        // Until the thread is in its system call (a busy machine may take a while to get there).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            std::thread::sleep(std::time::Duration::from_millis(20));
            match read(tid) {
                Some(s) if s.syscall.is_some() || std::time::Instant::now() > deadline => break s,
                _ => {}
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn names_the_pipe_a_thread_reads_from() {
        let (mut r, w) = {
            let mut fds = [0; 2];
            // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: both descriptors were just created and are owned here alone.
            unsafe {
                (
                    <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]),
                    <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]),
                )
            }
        };
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let state = blocked_thread_state(move || {
            let mut b = [0u8; 1];
            let _ = std::io::Read::read(&mut r, &mut b);
            done_tx.send(()).unwrap();
        });
        drop(w);
        done_rx.recv().unwrap();
        assert_eq!(state.syscall, Some("read"), "{state:?}");
        assert!(
            state
                .file
                .as_deref()
                .is_some_and(|f| f.starts_with("pipe:[")),
            "{state:?}"
        );
        assert!(!state.running);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn names_the_fifo_a_thread_is_opening() {
        let dir = std::env::temp_dir().join(format!("lh-thread-state-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let path = fifo.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // Opening a FIFO for reading waits in openat until a writer opens it.
        let state = blocked_thread_state(move || {
            let _ = std::fs::File::open(&path);
            done_tx.send(()).unwrap();
        });
        let _writer = std::fs::OpenOptions::new().write(true).open(&fifo);
        done_rx.recv().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            matches!(state.syscall, Some("openat") | Some("open")),
            "{state:?}"
        );
        assert_eq!(state.file.as_deref(), fifo.to_str(), "{state:?}");
    }
}
