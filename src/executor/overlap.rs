//! The guard that keeps a job from reading or deleting its own output: a
//! job whose `inputPaths` can match a file it writes into `outputPath` is
//! refused before anything is read, written or deleted.
//!
//! Locations are compared as *keys*: [`lexical`] forms when only the text is
//! known (`jobs.create`), and the storage's [`Storage::object_key`] of those
//! when the run has a storage (which follows symbolic links and maps
//! `gs://` into a local root), so `gs://b/out`, `gs://b/out/`,
//! `gs://b/./out` and a link to the same directory all name one place.

use super::names::{is_output_file_name, sample_output_names};
use crate::storage::{ObjectMeta, Storage, glob};

/// The lexical form of a location, for comparisons: the scheme (`gs://`,
/// `file://`) kept, empty and `.` segments dropped, no trailing `/`. `..`
/// is kept as it is: only the file system knows where it leads.
pub(crate) fn lexical(location: &str) -> String {
    let (scheme, rest) = match location.find("://") {
        Some(i) => location.split_at(i + 3),
        None => ("", location),
    };
    let absolute = rest.starts_with('/');
    let segments: Vec<&str> = rest
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    let mut out = String::with_capacity(location.len());
    out.push_str(scheme);
    if absolute {
        out.push('/');
    }
    out.push_str(&segments.join("/"));
    out
}

/// The path of `path` below the directory `dir` (both keys), or `None` when
/// it is not below it; `Some("")` when they are the same.
fn below<'a>(dir: &str, path: &'a str) -> Option<&'a str> {
    if dir == path {
        return Some("");
    }
    if dir.is_empty() {
        // The working directory: every relative path is below it.
        return (!path.starts_with('/') && !path.contains("://")).then_some(path);
    }
    if dir.ends_with('/') {
        // "/" or "gs://": the rest is below.
        return path.strip_prefix(dir);
    }
    path.strip_prefix(dir)?.strip_prefix('/')
}

/// How a job's locations are keyed for the comparison.
pub(crate) enum Keys<'a> {
    /// By their text alone ([`lexical`]).
    Lexical,
    /// By the storage's [`Storage::object_key`] of their lexical form.
    Storage(&'a dyn Storage),
}

impl Keys<'_> {
    fn key(&self, location: &str) -> String {
        let lexical = lexical(location);
        match self {
            Keys::Lexical => lexical,
            Keys::Storage(storage) => {
                let key = storage.object_key(&lexical);
                // Keys of directories compare without a trailing '/'.
                if key.len() > 1 && key.ends_with('/') && !key.ends_with("://") {
                    key.trim_end_matches('/').to_owned()
                } else {
                    key
                }
            }
        }
    }
}

/// The job's `patterns` (by index in `inputPaths`) that can match a file the
/// job writes into `output_path`, each with such a file's location (as
/// `output_path` spells it).
pub(crate) fn patterns_reaching_output<'a>(
    patterns: &'a [String],
    output_path: &'a str,
    keys: &'a Keys<'a>,
) -> impl Iterator<Item = (usize, String)> + 'a {
    let output_key = keys.key(output_path);
    let samples = sample_output_names();
    patterns.iter().enumerate().filter_map(move |(i, pattern)| {
        reaches(pattern, output_path, &output_key, &samples, keys).map(|example| (i, example))
    })
}

/// If `pattern` can match a file the job writes into `output_path` (keyed
/// `output_key`), that file's location.
///
/// The pattern is split at the last `/` before its first wildcard: the
/// literal directory before it is keyed like `output_path`, and the rest
/// is matched against the output directory's path below it joined with
/// one name of each kind of output file (`samples`).
fn reaches(
    pattern: &str,
    output_path: &str,
    output_key: &str,
    samples: &[String],
    keys: &Keys<'_>,
) -> Option<String> {
    let wildcard_at = pattern.find(['*', '?', '[']).unwrap_or(pattern.len());
    let split = pattern[..wildcard_at].rfind('/').map_or(0, |i| i + 1);
    let (dir, rest) = pattern.split_at(split);
    let within = below(&keys.key(dir), output_key)?;
    let rest = lexical(rest);
    let example = |name: &str| crate::storage::join_location(output_path, name);
    if !glob::has_wildcard(&rest) {
        return (within.is_empty() && is_output_file_name(&rest)).then(|| example(&rest));
    }
    let compiled = glob::Pattern::new(&rest).ok()?;
    samples
        .iter()
        .find(|name| {
            if within.is_empty() {
                compiled.matches(name)
            } else {
                compiled.matches(&format!("{within}/{name}"))
            }
        })
        .map(|name| example(name))
}

/// The first of `objects` (what a job's patterns matched) that is a file
/// the job writes into `output_path`: an output file name directly in that
/// directory, once both are keyed by the storage.
pub(crate) fn first_own_output<'a>(
    storage: &dyn Storage,
    objects: &'a [ObjectMeta],
    output_path: &str,
) -> Option<&'a ObjectMeta> {
    let keys = Keys::Storage(storage);
    let output_key = keys.key(output_path);
    objects.iter().find(|object| {
        let key = keys.key(&object.location);
        let Some(slash) = key.rfind('/') else {
            return false;
        };
        let (dir, name) = (&key[..slash], &key[slash + 1..]);
        let dir = if dir.is_empty() || dir.ends_with(":/") {
            &key[..=slash]
        } else {
            dir
        };
        is_output_file_name(name) && dir == output_key
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_forms() {
        for (location, expected) in [
            ("gs://b/out/", "gs://b/out"),
            ("gs://b/./out", "gs://b/out"),
            ("gs://b//out/.", "gs://b/out"),
            ("/data/./in/", "/data/in"),
            ("./in", "in"),
            (".", ""),
            ("/", "/"),
            ("data/../in", "data/../in"),
            ("file:///x/./y", "file:///x/y"),
            ("gs://", "gs://"),
        ] {
            assert_eq!(lexical(location), expected, "{location}");
        }
    }

    #[test]
    fn below_directories() {
        assert_eq!(below("gs://b/out", "gs://b/out"), Some(""));
        assert_eq!(below("gs://b", "gs://b/out"), Some("out"));
        assert_eq!(below("gs://b/o", "gs://b/out"), None);
        assert_eq!(below("", "in/out"), Some("in/out"));
        assert_eq!(below("", "/in"), None);
        assert_eq!(below("/", "/in"), Some("in"));
        assert_eq!(below("gs://", "gs://b"), Some("b"));
    }
}
