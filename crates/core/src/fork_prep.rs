//! Preparing memory for `fork()` (used by the addon's fork, `crates/node/src/fork.rs`).
//!
//! V8 on Linux marks its heap and code range `MADV_DONTFORK` (its private-mapping fork
//! optimisation), so a forked child has no V8 heap and crashes at its first JavaScript. Right
//! before forking, every mapping whose `VmFlags` in `/proc/self/smaps` contain `dc` gets
//! `MADV_DOFORK`. See `../shared/docs/background.md` §5.

use std::io;

/// What [`clear_dont_fork`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cleared {
    pub mappings: usize,
    pub bytes: usize,
}

/// The address ranges marked don't-fork in an smaps text (`start-end ... \n ... VmFlags: ... dc`).
pub fn dont_fork_ranges(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                current = Some((a, b));
                continue;
            }
        }
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if flags.split_whitespace().any(|f| f == "dc") {
                if let Some(r) = current.take() {
                    out.push(r);
                }
            }
        }
    }
    out
}

/// Clears `MADV_DONTFORK` on every mapping of this process that has it (Linux; elsewhere there is
/// no such flag and nothing to do).
pub fn clear_dont_fork() -> io::Result<Cleared> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::sys::mman::{madvise, MmapAdvise};
        let smaps = std::fs::read_to_string("/proc/self/smaps")?;
        let mut cleared = Cleared::default();
        for (start, end) in dont_fork_ranges(&smaps) {
            // SAFETY: MADV_DOFORK only changes whether the range is inherited by a child; the
            // range is a whole mapping of this process as the kernel just listed it. A mapping
            // that went away since is reported as ENOMEM and skipped.
            match unsafe {
                madvise(
                    start as *mut libc::c_void,
                    end - start,
                    MmapAdvise::MADV_DOFORK,
                )
            } {
                Ok(()) => {
                    cleared.mappings += 1;
                    cleared.bytes += end - start;
                }
                Err(nix::errno::Errno::ENOMEM) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(cleared)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        Ok(Cleared::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_with_the_dc_flag() {
        let smaps = "\
7f0000000000-7f0000001000 rw-p 00000000 00:00 0
Size:                  4 kB
VmFlags: rd wr mr mw me dc ac
7f0000002000-7f0000004000 r-xp 00000000 fe:00 123 /usr/bin/node
Size:                  8 kB
VmFlags: rd ex mr mw me
";
        assert_eq!(
            dont_fork_ranges(smaps),
            vec![(0x7f0000000000, 0x7f0000001000)]
        );
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn clears_a_dont_fork_mapping() {
        use nix::sys::mman::{madvise, mmap, munmap, MapFlags, MmapAdvise, ProtFlags};
        use std::num::NonZeroUsize;
        let len = 1 << 20;
        // SAFETY: a fresh anonymous private mapping, only used and unmapped by this test.
        let p = unsafe {
            mmap(
                None,
                NonZeroUsize::new(len).unwrap(),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_ANONYMOUS,
                -1,
                0,
            )
        }
        .unwrap();
        // SAFETY: advice on our own mapping.
        unsafe { madvise(p, len, MmapAdvise::MADV_DONTFORK) }.unwrap();
        let ranges = |s: &str| dont_fork_ranges(s).contains(&(p as usize, p as usize + len));
        assert!(ranges(
            &std::fs::read_to_string("/proc/self/smaps").unwrap()
        ));
        let cleared = clear_dont_fork().unwrap();
        assert!(cleared.mappings >= 1 && cleared.bytes >= len, "{cleared:?}");
        assert!(!ranges(
            &std::fs::read_to_string("/proc/self/smaps").unwrap()
        ));
        // SAFETY: unmapping the mapping created above.
        unsafe { munmap(p, len) }.unwrap();
    }
}
