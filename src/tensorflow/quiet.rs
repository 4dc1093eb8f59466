//! TensorFlow's log lines from the moment its library loads, hidden as
//! `TF_CPP_MIN_LOG_LEVEL` asks.
//!
//! TensorFlow applies `TF_CPP_MIN_LOG_LEVEL` to what it logs once running,
//! but the lines its static initializers log while the library loads come
//! before that, at every level, as `import tensorflow` shows them too
//! (TensorFlow 2.21: absl's "All log messages before absl::InitializeLog()
//! is called…" and an INFO line saying oneDNN is on). So while the library
//! loads, standard error goes through a pipe: a thread passes every line on to it
//! except TensorFlow's log lines below the level asked for (and absl's
//! notice with them). Another thread's output in that window passes through
//! unchanged, in order. Without the variable (or at 0), nothing changes.

#[cfg(target_os = "linux")]
use std::io::{Read, Write};
#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;
#[cfg(target_os = "linux")]
use std::sync::mpsc;
#[cfg(target_os = "linux")]
use std::time::Duration;

/// The level `TF_CPP_MIN_LOG_LEVEL` asks for (1 hides INFO, 2 also
/// WARNING, 3 also ERROR); `None` when unset, 0 or not a level.
fn min_level() -> Option<u8> {
    let value = std::env::var("TF_CPP_MIN_LOG_LEVEL").ok()?;
    match value.trim().parse::<u8>() {
        Ok(level @ 1..=3) => Some(level),
        _ => None,
    }
}

/// Whether `line` (without its newline) is one of TensorFlow's log lines
/// that `level` hides: absl's format (`I1207 12:00:00.123456   123
/// file.cc:45] …`), TensorFlow's older one (`2026-12-07 12:00:00.123456: I
/// path/file.cc:45] …`), or absl's notice before its first line. FATAL
/// lines always show.
pub(super) fn hidden(line: &[u8], level: u8) -> bool {
    static FORMAT: OnceLock<regex::bytes::Regex> = OnceLock::new();
    let format = FORMAT.get_or_init(|| {
        regex::bytes::Regex::new(
            r"^(?:(?P<a>[IWEF])\d{4} \d{2}:\d{2}:\d+\.\d+ +\d+ [^ \]]+:\d+\] |\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d+: (?P<b>[IWEF]) [^ \]]+:\d+\] )",
        )
        .expect("a valid pattern")
    });
    if line.starts_with(b"WARNING: All log messages before absl::InitializeLog() is called") {
        return true;
    }
    let Some(found) = format.captures(line) else {
        return false;
    };
    let severity = found
        .name("a")
        .or_else(|| found.name("b"))
        .map(|m| m.as_bytes()[0]);
    let rank = match severity {
        Some(b'I') => 0,
        Some(b'W') => 1,
        Some(b'E') => 2,
        _ => return false,
    };
    rank < level
}

/// Runs `load` with standard error filtered as the module says, when
/// `TF_CPP_MIN_LOG_LEVEL` asks for it and the pipe can be set up; else
/// plainly.
pub(super) fn while_loading<T>(load: impl FnOnce() -> T) -> T {
    let Some(level) = min_level() else {
        return load();
    };
    #[cfg(target_os = "linux")]
    let capture = Capture::start(level);
    #[cfg(not(target_os = "linux"))]
    let _ = level;
    let out = load();
    #[cfg(target_os = "linux")]
    drop(capture);
    out
}

/// Standard error redirected into a pipe whose filter thread writes to
/// `saved`, the original; put back on drop.
#[cfg(target_os = "linux")]
struct Capture {
    saved: OwnedFd,
    done: mpsc::Receiver<()>,
}

#[cfg(target_os = "linux")]
impl Capture {
    fn start(level: u8) -> Option<Capture> {
        let mut fds = [0; 2];
        #[allow(unsafe_code)]
        // SAFETY: plain calls on descriptors this function owns from here
        // on (each wrapped in an OwnedFd at once, so closed exactly once);
        // fd 2 is only duplicated, then replaced by dup2, which the drop
        // undoes.
        unsafe {
            // A copy of standard error that no child process inherits.
            let saved = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 0);
            if saved < 0 {
                return None;
            }
            let saved = OwnedFd::from_raw_fd(saved);
            if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return None;
            }
            let (read, write) = (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]));
            let out = saved.try_clone().ok()?;
            let (tell, done) = mpsc::channel();
            std::thread::Builder::new()
                .name("bp-tf-log".into())
                .spawn(move || {
                    filter(std::fs::File::from(read), std::fs::File::from(out), level);
                    let _ = tell.send(());
                })
                .ok()?;
            if libc::dup2(write.as_raw_fd(), 2) < 0 {
                // The thread ends when `write` closes here.
                return None;
            }
            Some(Capture { saved, done })
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for Capture {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: `saved` is a live descriptor of the original standard
        // error; dup2 puts it back on fd 2, closing the pipe's end there.
        unsafe {
            libc::dup2(self.saved.as_raw_fd(), 2);
        }
        // The filter ends once no one holds the pipe's write end: wait for
        // it, so its lines come before what follows, but not forever (a
        // child started meanwhile may hold that end as its own stderr).
        let _ = self.done.recv_timeout(Duration::from_secs(2));
    }
}

/// Copies `from` to `to` line by line, leaving out the lines `level` hides.
#[cfg(target_os = "linux")]
fn filter(mut from: std::fs::File, mut to: std::fs::File, level: u8) {
    let mut pending = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + end + 1];
            if !hidden(&line[..line.len() - 1], level) {
                let _ = to.write_all(line);
            }
            start += end + 1;
        }
        pending.drain(..start);
    }
    if !pending.is_empty() && !hidden(&pending, level) {
        let _ = to.write_all(&pending);
    }
}

#[cfg(test)]
mod tests {
    use super::hidden;

    #[test]
    fn tensorflow_log_lines_are_hidden_below_the_level_and_nothing_else() {
        let absl_info =
            b"I0000 00:00:1796647044.843044     571 port.cc:153] oneDNN custom operations are on.";
        let absl_warning = b"W1207 12:00:01.000001   12 loader.cc:9] slow";
        let absl_error = b"E1207 12:00:01.000001   12 loader.cc:9] broken";
        let absl_fatal = b"F1207 12:00:01.000001   12 loader.cc:9] dead";
        let old_info = b"2026-12-07 12:00:00.123456: I tensorflow/core/util/port.cc:113] oneDNN";
        let notice = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR";
        for level in 1..=3 {
            assert!(hidden(absl_info, level));
            assert!(hidden(old_info, level));
            assert!(hidden(notice, level));
            assert_eq!(hidden(absl_warning, level), level >= 2);
            assert_eq!(hidden(absl_error, level), level >= 3);
            assert!(!hidden(absl_fatal, level));
        }
        // Anything else shows: other programs' lines, near misses.
        for line in [
            &b"SUCCEEDED: 100 predictions"[..],
            b"I think so",
            b"I1207 not a time",
            b"INFO: something",
            b"",
        ] {
            assert!(!hidden(line, 3), "{}", String::from_utf8_lossy(line));
        }
    }
}
