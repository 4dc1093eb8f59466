//! TensorFlow's log lines from the moment its library loads, hidden as
//! `TF_CPP_MIN_LOG_LEVEL` asks.
//!
//! TensorFlow applies `TF_CPP_MIN_LOG_LEVEL` to what it logs once running,
//! but the lines its static initializers log while the library loads come
//! before that, at every level, as `import tensorflow` shows them too
//! (TensorFlow 2.21: absl's "All log messages before absl::InitializeLog()
//! is called…" and an INFO line saying oneDNN is on). So while the library
//! loads, standard error goes to an in-memory file; then every line caught
//! is passed on, in order, except TensorFlow's log lines below the level
//! asked for (and absl's notice with them). Another thread's output in that
//! window comes out at its end. A crash during the load (TensorFlow aborts
//! on a CPU it was not built for, with a FATAL line saying why) passes on
//! everything caught before the process dies. Without the variable (or at
//! 0), nothing changes.

#[cfg(target_os = "linux")]
use std::io::{Read, Seek, SeekFrom, Write};
#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicI32, Ordering};

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
/// `TF_CPP_MIN_LOG_LEVEL` asks for it and the capture can be set up; else
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

/// Standard error redirected into an in-memory file for the load; on drop
/// put back, and what the file caught passed on, filtered. A crash in the
/// meantime (TensorFlow aborts while loading on a CPU it was not built
/// for, saying why) passes on everything caught, unfiltered, first.
#[cfg(target_os = "linux")]
struct Capture {
    saved: OwnedFd,
    caught: OwnedFd,
    level: u8,
    old: [libc::sigaction; CRASHES.len()],
}

/// The signals a crash during the load raises.
#[cfg(target_os = "linux")]
const CRASHES: [libc::c_int; 4] = [libc::SIGABRT, libc::SIGSEGV, libc::SIGILL, libc::SIGBUS];

/// The saved standard error and the in-memory file, for [`on_crash`]; -1
/// outside a capture.
#[cfg(target_os = "linux")]
static SAVED: AtomicI32 = AtomicI32::new(-1);
#[cfg(target_os = "linux")]
static CAUGHT: AtomicI32 = AtomicI32::new(-1);

/// Puts standard error back, copies to it all that was caught, and dies
/// of the signal as it would have. Only async-signal-safe calls.
#[cfg(target_os = "linux")]
extern "C" fn on_crash(signal: libc::c_int) {
    let (saved, caught) = (SAVED.load(Ordering::SeqCst), CAUGHT.load(Ordering::SeqCst));
    #[allow(unsafe_code)]
    // SAFETY: dup2, lseek, read, write, signal and raise are
    // async-signal-safe; the descriptors stay open while a capture is on
    // (the handler is removed before they close), and -1 skips the copy.
    unsafe {
        if saved >= 0 && caught >= 0 {
            libc::dup2(saved, 2);
            libc::lseek(caught, 0, libc::SEEK_SET);
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(caught, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                let mut at = 0;
                while at < n {
                    let w = libc::write(2, buf.as_ptr().add(at as usize).cast(), (n - at) as usize);
                    if w <= 0 {
                        break;
                    }
                    at += w;
                }
            }
        }
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

#[cfg(target_os = "linux")]
impl Capture {
    fn start(level: u8) -> Option<Capture> {
        #[allow(unsafe_code)]
        // SAFETY: plain calls on descriptors this function owns from here
        // on (each wrapped in an OwnedFd at once, so closed exactly once);
        // fd 2 is only duplicated, then replaced by dup2, which the drop
        // undoes; the handlers replaced are saved and put back by the drop.
        unsafe {
            // A copy of standard error that no child process inherits.
            let saved = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 0);
            if saved < 0 {
                return None;
            }
            let saved = OwnedFd::from_raw_fd(saved);
            let caught = libc::memfd_create(c"bp-tf-log".as_ptr(), libc::MFD_CLOEXEC);
            if caught < 0 {
                return None;
            }
            let caught = OwnedFd::from_raw_fd(caught);
            SAVED.store(saved.as_raw_fd(), Ordering::SeqCst);
            CAUGHT.store(caught.as_raw_fd(), Ordering::SeqCst);
            let mut old: [libc::sigaction; CRASHES.len()] = std::mem::zeroed();
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_crash as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_NODEFER | libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            for (signal, old) in CRASHES.iter().zip(old.iter_mut()) {
                libc::sigaction(*signal, &action, old);
            }
            let capture = Capture {
                saved,
                caught,
                level,
                old,
            };
            if libc::dup2(capture.caught.as_raw_fd(), 2) < 0 {
                // The drop puts the handlers back; fd 2 is unchanged.
                return None;
            }
            Some(capture)
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for Capture {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: `saved` is a live descriptor of the original standard
        // error; dup2 puts it back on fd 2 (a no-op if it never left); the
        // handlers put back are those `start` saved.
        unsafe {
            libc::dup2(self.saved.as_raw_fd(), 2);
            for (signal, old) in CRASHES.iter().zip(self.old.iter()) {
                libc::sigaction(*signal, old, std::ptr::null_mut());
            }
        }
        SAVED.store(-1, Ordering::SeqCst);
        CAUGHT.store(-1, Ordering::SeqCst);
        let mut caught = Vec::new();
        if let Ok(mut file) = self.caught.try_clone().map(std::fs::File::from) {
            let _ = file.seek(SeekFrom::Start(0));
            let _ = file.read_to_end(&mut caught);
        }
        let _ = std::io::stderr().write_all(&filtered(&caught, self.level));
    }
}

/// The lines of `text` that `level` does not hide, in order.
#[cfg(target_os = "linux")]
fn filtered(text: &[u8], level: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for line in text.split_inclusive(|&b| b == b'\n') {
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        if !hidden(bare, level) {
            out.extend_from_slice(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::hidden;

    /// Runs this test binary again for the test `name` alone, with
    /// `TF_CPP_MIN_LOG_LEVEL=2` and `BP_QUIET_CHILD` set; its exit and
    /// standard error.
    #[cfg(target_os = "linux")]
    fn child(name: &str) -> (std::process::ExitStatus, String) {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env("BP_QUIET_CHILD", "1")
            .env("TF_CPP_MIN_LOG_LEVEL", "2")
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Where `s` first shows in `stderr`; a failure naming it if nowhere.
    #[cfg(target_os = "linux")]
    fn position(stderr: &str, s: &str) -> usize {
        stderr
            .find(s)
            .unwrap_or_else(|| panic!("{s:?} missing: {stderr}"))
    }

    #[cfg(target_os = "linux")]
    const INFO: &str = "I0000 00:00:1796647044.843044     571 port.cc:153] an INFO line to hide";
    #[cfg(target_os = "linux")]
    const FATAL: &str = "F0000 00:00:1796647044.843044     571 guard.cc:1] a FATAL line: no AVX";

    /// What the load writes comes out filtered, in order, before what
    /// follows it.
    #[cfg(target_os = "linux")]
    #[test]
    fn lines_from_the_load_come_out_filtered_and_in_order() {
        if std::env::var_os("BP_QUIET_CHILD").is_some() {
            super::while_loading(|| {
                eprintln!("first kept");
                eprintln!("{INFO}");
                eprintln!("second kept");
            });
            eprintln!("after the load");
            return;
        }
        let (status, stderr) =
            child("tensorflow::quiet::tests::lines_from_the_load_come_out_filtered_and_in_order");
        assert!(status.success(), "{stderr}");
        assert!(!stderr.contains("an INFO line to hide"), "{stderr}");
        let at = |s: &str| position(&stderr, s);
        assert!(at("first kept") < at("second kept"), "{stderr}");
        assert!(at("second kept") < at("after the load"), "{stderr}");
    }

    /// A crash during the load (TensorFlow aborts on a CPU it was not
    /// built for) still shows what it wrote, FATAL line included.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_crash_during_the_load_shows_what_it_wrote() {
        if std::env::var_os("BP_QUIET_CHILD").is_some() {
            super::while_loading(|| {
                eprintln!("{INFO}");
                eprintln!("{FATAL}");
                std::process::abort();
            });
            return;
        }
        let (status, stderr) =
            child("tensorflow::quiet::tests::a_crash_during_the_load_shows_what_it_wrote");
        // It died of the abort, having shown everything it wrote,
        // unfiltered, in order.
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{stderr}");
        let at = |s: &str| position(&stderr, s);
        assert!(
            at("an INFO line to hide") < at("a FATAL line: no AVX"),
            "{stderr}"
        );
    }

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
