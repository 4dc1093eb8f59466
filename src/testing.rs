//! Test support for users of the crate (cargo feature `testing`): a
//! conformance suite that checks a [`Storage`] backend against the trait's
//! contract.
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use batch_prediction::InMemoryStorage;
//! use batch_prediction::testing::storage_conformance;
//!
//! storage_conformance(&InMemoryStorage::new(), "gs://bucket/suite");
//! # }
//! ```

use std::io::{Read, Write};

use crate::storage::{Storage, StorageErrorKind, StorageExt, join_location};

fn locations(storage: &dyn Storage, prefix: &str) -> Vec<String> {
    storage
        .list(prefix)
        .unwrap_or_else(|e| panic!("list {prefix:?}: {e}"))
        .into_iter()
        .map(|m| m.location)
        .collect()
}

/// Checks `storage` against the contract of [`Storage`], using only
/// locations under `base` (which should be empty). Panics, naming the broken
/// rule, on the first violation.
///
/// # Panics
/// When the backend breaks the contract.
pub fn storage_conformance(storage: &dyn Storage, base: &str) {
    let at = |name: &str| join_location(base, name);

    // Missing objects.
    assert!(
        locations(storage, &at("")).is_empty(),
        "base must start empty"
    );
    for (what, kind) in [
        ("head", storage.head(&at("missing")).err().map(|e| e.kind())),
        ("open", storage.open(&at("missing")).err().map(|e| e.kind())),
        (
            "delete",
            storage.delete(&at("missing")).err().map(|e| e.kind()),
        ),
    ] {
        assert_eq!(
            kind,
            Some(StorageErrorKind::NotFound),
            "{what} of a missing object is NotFound"
        );
    }

    // Atomic writes: nothing visible before commit; an abandoned write leaves nothing.
    let mut writer = storage.create(&at("a/1.json")).expect("create");
    writer.write_all(b"{\"x\": 1}\n").expect("write");
    assert!(
        storage.head(&at("a/1.json")).is_err(),
        "visible before commit"
    );
    assert!(
        locations(storage, &at("")).is_empty(),
        "listed before commit"
    );
    let meta = writer.commit().expect("commit");
    assert_eq!(meta.size, 9, "committed size");
    assert_eq!(meta.location, at("a/1.json"));
    {
        let mut abandoned = storage.create(&at("a/abandoned")).expect("create");
        abandoned.write_all(b"partial").expect("write");
    }
    assert_eq!(
        storage.head(&at("a/abandoned")).err().map(|e| e.kind()),
        Some(StorageErrorKind::NotFound),
        "an abandoned write leaves nothing"
    );

    // Reads see exactly what was committed.
    let mut content = Vec::new();
    storage
        .open(&at("a/1.json"))
        .expect("open")
        .read_to_end(&mut content)
        .expect("read");
    assert_eq!(content, b"{\"x\": 1}\n");
    assert_eq!(storage.head(&at("a/1.json")).expect("head").size, 9);

    // Overwrite replaces.
    storage
        .put_bytes(&at("a/1.json"), b"{}\n")
        .expect("overwrite");
    assert_eq!(storage.read_bytes(&at("a/1.json")).expect("read"), b"{}\n");

    // Listing: every depth, sorted, by prefix (not by directory).
    for name in ["a/2.json", "ab", "b/c/d", "a/sub/3.json"] {
        storage.put_bytes(&at(name), name.as_bytes()).expect("put");
    }
    assert_eq!(
        locations(storage, &at("a")),
        [at("a/1.json"), at("a/2.json"), at("a/sub/3.json"), at("ab")],
        "list by prefix, sorted, all depths"
    );
    assert_eq!(
        locations(storage, &at("a/")),
        [at("a/1.json"), at("a/2.json"), at("a/sub/3.json")]
    );
    assert!(
        locations(storage, &at("zzz")).is_empty(),
        "no match is an empty list"
    );

    // Wildcards.
    let names = |patterns: &[String]| -> Vec<String> {
        storage
            .expand(patterns)
            .expect("expand")
            .into_iter()
            .map(|m| m.location)
            .collect()
    };
    assert_eq!(names(&[at("a/*.json")]), [at("a/1.json"), at("a/2.json")]);
    assert_eq!(
        names(&[at("a/**.json")]),
        [at("a/1.json"), at("a/2.json"), at("a/sub/3.json")]
    );
    assert_eq!(
        names(&[at("a/?.json"), at("a/1.json")]),
        [at("a/1.json"), at("a/2.json")],
        "sorted, once each"
    );
    let err = storage
        .expand(&[at("a/*.json"), at("nothing*")])
        .unwrap_err();
    assert_eq!(err.kind(), StorageErrorKind::NoMatch);
    assert_eq!(
        err.location(),
        at("nothing*"),
        "the error names the pattern"
    );

    // Delete.
    storage.delete(&at("ab")).expect("delete");
    assert!(storage.head(&at("ab")).is_err(), "deleted");

    // Concurrent writers to distinct objects.
    std::thread::scope(|s| {
        for i in 0..8 {
            let location = at(&format!("c/{i}"));
            s.spawn(move || storage.put_bytes(&location, &[i as u8; 1000]).expect("put"));
        }
    });
    assert_eq!(
        locations(storage, &at("c/")).len(),
        8,
        "concurrent writes all land"
    );

    for location in locations(storage, &at("")) {
        storage.delete(&location).expect("clean up");
    }
}
