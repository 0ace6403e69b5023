//! Preparing memory for `fork()` (used by the addon's fork, `crates/node/src/fork.rs`).
//!
//! V8 on Linux marks its heap and code range `MADV_DONTFORK` (its private-mapping fork
//! optimisation), so a forked child has no V8 heap and crashes at its first JavaScript. Right
//! before forking, every mapping of the process gets `MADV_DOFORK`. See
//! `../shared/docs/background.md` §5.
//!
//! Which mappings carry the mark is only visible in `/proc/self/smaps` (`dc` in `VmFlags`), and
//! reading that file makes the kernel walk the page tables of every mapping to count its pages:
//! 14 ms for a 400 MiB heap, paid before every fork (each worker of a `prefork()` pool). The
//! ranges alone come from `/proc/self/maps` without that walk (under 1 ms), and `MADV_DOFORK` on a
//! mapping without the mark changes nothing: it only clears `VM_DONTCOPY`. So every mapping gets
//! it, a run of adjacent mappings in one call. What the kernel refuses (`VM_IO` mappings: EINVAL;
//! a range unmapped since the read: ENOMEM) keeps its inheritance as it was, as in any fork.

use std::io;

/// What [`clear_dont_fork`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cleared {
    /// Mappings inherited by a child from now on (a mapping marked don't-fork is among them).
    pub mappings: usize,
    pub bytes: usize,
    /// Mappings the kernel refused the advice for (see the module comment).
    pub refused: usize,
}

/// The address ranges of a `/proc/<pid>/maps` text (`start-end perms offset dev inode path`), in
/// its order (ascending).
pub fn mapping_ranges(maps: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let (a, b) = line.split_whitespace().next()?.split_once('-')?;
            let (a, b) = (
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            );
            (a < b).then_some((a, b))
        })
        .collect()
}

/// Adjacent ranges as runs: each run is a slice of `ranges` whose mappings touch end to start.
pub fn adjacent_runs(ranges: &[(usize, usize)]) -> Vec<&[(usize, usize)]> {
    let mut runs = Vec::new();
    let mut from = 0;
    for i in 1..=ranges.len() {
        if i == ranges.len() || ranges[i].0 != ranges[i - 1].1 {
            if from < i {
                runs.push(&ranges[from..i]);
            }
            from = i;
        }
    }
    runs
}

/// Gives every mapping of this process `MADV_DOFORK`, which clears the don't-fork mark where there
/// is one (Linux; elsewhere there is no such flag and nothing to do).
pub fn clear_dont_fork() -> io::Result<Cleared> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::errno::Errno;
        use nix::sys::mman::{madvise, MmapAdvise};
        let maps = std::fs::read_to_string("/proc/self/maps")?;
        let ranges = mapping_ranges(&maps);
        let mut cleared = Cleared::default();
        let advise = |start: usize, end: usize| {
            // SAFETY: MADV_DOFORK only changes whether a range is inherited by a child; it never
            // touches the pages themselves. The range is made of mappings of this process as the
            // kernel just listed them; one unmapped since is refused with ENOMEM.
            unsafe {
                madvise(
                    start as *mut libc::c_void,
                    end - start,
                    MmapAdvise::MADV_DOFORK,
                )
            }
        };
        for run in adjacent_runs(&ranges) {
            let (start, end) = (run[0].0, run[run.len() - 1].1);
            match advise(start, end) {
                Ok(()) => {
                    cleared.mappings += run.len();
                    cleared.bytes += end - start;
                }
                // One mapping of the run was refused: the kernel stops there, so each on its own.
                Err(Errno::EINVAL | Errno::ENOMEM) => {
                    for &(a, b) in run {
                        match advise(a, b) {
                            Ok(()) => {
                                cleared.mappings += 1;
                                cleared.bytes += b - a;
                            }
                            Err(Errno::EINVAL | Errno::ENOMEM) => cleared.refused += 1,
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
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
    fn parses_the_ranges_of_a_maps_text() {
        let maps = "\
7f0000000000-7f0000001000 rw-p 00000000 00:00 0
7f0000001000-7f0000004000 r-xp 00000000 fe:00 123                        /usr/bin/node
7f0000008000-7f0000009000 rw-p 00000000 00:00 0                          [heap]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
not a mapping line
";
        assert_eq!(
            mapping_ranges(maps),
            vec![
                (0x7f0000000000, 0x7f0000001000),
                (0x7f0000001000, 0x7f0000004000),
                (0x7f0000008000, 0x7f0000009000),
                (0xffffffffff600000, 0xffffffffff601000),
            ]
        );
    }

    #[test]
    fn groups_adjacent_mappings_into_runs() {
        let r = [(0, 10), (10, 20), (30, 40), (40, 50), (50, 60), (70, 80)];
        let runs = adjacent_runs(&r);
        assert_eq!(
            runs,
            vec![&r[0..2], &r[2..5], &r[5..6]],
            "touching mappings share a run"
        );
        assert!(adjacent_runs(&[]).is_empty());
    }

    /// The ranges marked don't-fork in an smaps text (`dc` in `VmFlags`): what the kernel says.
    fn dont_fork_ranges(smaps: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut current = None;
        for line in smaps.lines() {
            if let [range] = mapping_ranges(line)[..] {
                current = Some(range);
                continue;
            }
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                if flags.split_whitespace().any(|f| f == "dc") {
                    out.extend(current.take());
                }
            }
        }
        out
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
        // The advice is refused only for the kernel's own special mappings ([vvar] and [vdso]
        // are VM_IO/VM_PFNMAP; [vsyscall] is outside the range advice applies to).
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let refused: Vec<&str> = maps
            .lines()
            .filter(|line| {
                let [(a, b)] = mapping_ranges(line)[..] else {
                    return false;
                };
                // SAFETY: as in clear_dont_fork: advice on a mapping of this process.
                unsafe { madvise(a as *mut libc::c_void, b - a, MmapAdvise::MADV_DOFORK) }.is_err()
            })
            .map(|line| line.split_whitespace().nth(5).unwrap_or(""))
            .collect();
        assert!(
            refused.iter().all(|name| name.starts_with("[v")),
            "{refused:?}"
        );
        assert_eq!(cleared.refused, refused.len(), "{cleared:?} {refused:?}");
        assert!(!ranges(
            &std::fs::read_to_string("/proc/self/smaps").unwrap()
        ));
        // SAFETY: unmapping the mapping created above.
        unsafe { munmap(p, len) }.unwrap();
    }
}
