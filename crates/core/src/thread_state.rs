//! Where a thread is when it is outside JavaScript: what the monitor says in a warning that has no
//! stack (the blocked thread did not reach a JavaScript interrupt check). Read from the monitor
//! thread through `/proc/self/task/<tid>/` on Linux: `syscall` (the system call it is in, or
//! `running`), `wchan` (where the kernel has it wait) and `stat` (its state letter). Elsewhere
//! nothing is known and nothing is said.

/// What the thread `tid` of this process is doing, in words, or None when it cannot be read.
pub fn describe(tid: i32) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        linux::describe(tid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        None
    }
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

    pub fn describe(tid: i32) -> Option<String> {
        let dir = format!("/proc/self/task/{tid}");
        let syscall = fs::read_to_string(format!("{dir}/syscall")).ok()?;
        let first = syscall.split_whitespace().next()?;
        if first == "running" {
            return Some(
                "the thread is running, not in a system call: native code (an addon, or a C++ builtin such as JSON.parse of a huge string or a crypto or zlib *Sync call), a garbage collection, or JavaScript that has not reached an interrupt check yet"
                    .into(),
            );
        }
        let nr: i64 = first.parse().ok()?;
        if nr < 0 {
            // Blocked, but not in a system call (a page fault, say).
            return Some("the thread is stopped in the kernel, not in a system call".into());
        }
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
        Some(s)
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
}
