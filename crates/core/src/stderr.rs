//! Writing warnings to file descriptor 2 from the monitor thread, while JavaScript cannot run.
//!
//! Node may have made stderr non-blocking (pipes); a full pipe is waited on for a bounded time, so a
//! stalled reader can delay the monitor but never wedge it.

use std::os::raw::c_int;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};

const STDERR: c_int = 2;
const MAX_WAIT_MS: c_int = 1000;

/// Writes all of `text` to stderr, unless stderr stays full for a second (then the rest is dropped).
pub fn write_all(text: &str) {
    write_fd(STDERR, text.as_bytes());
}

pub(crate) fn write_fd(fd: c_int, mut bytes: &[u8]) {
    let mut waited = 0;
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) if waited < MAX_WAIT_MS => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                let _ = poll(&mut fds, 50);
                waited += 50;
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_everything_through_a_pipe() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let text = "x".repeat(10_000);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match nix::unistd::read(r, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            got.len()
        });
        write_fd(w, text.as_bytes());
        nix::unistd::close(w).unwrap();
        assert_eq!(reader.join().unwrap(), 10_000);
    }
}
