//! Storage backends against the contract, and the local file system's
//! location rules.

use std::io::Write;
use std::sync::Arc;

use batch_prediction::storage::{DynStorage, StorageErrorKind};
use batch_prediction::testing::storage_conformance;
use batch_prediction::{InMemoryStorage, LocalStorage, Storage, StorageExt};

#[test]
fn in_memory_conforms() {
    storage_conformance(&InMemoryStorage::new(), "gs://bucket/suite");
    storage_conformance(&InMemoryStorage::new(), "plain");
    let boxed: Box<DynStorage> = Box::new(InMemoryStorage::new());
    storage_conformance(&boxed, "gs://bucket/boxed");
    storage_conformance(&Arc::new(InMemoryStorage::new()), "gs://bucket/arc");
}

#[test]
fn local_conforms_for_every_location_form() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let plain = root.join("plain");
    storage_conformance(&LocalStorage::new(), plain.to_str().unwrap());
    storage_conformance(
        &LocalStorage::new(),
        &format!("file://{}", root.join("uri").display()),
    );
    storage_conformance(&LocalStorage::with_gcs_root(root), "gs://bucket/suite");
    storage_conformance(&LocalStorage::confined(root), "gs://bucket/confined");
    storage_conformance(&LocalStorage::confined(root), "relative/under/root");
    // Nothing is left behind: no temporary files, no objects.
    let mut leftovers = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                leftovers.push(p)
            }
        }
    }
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn gs_locations_map_into_the_root_and_cannot_escape() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::with_gcs_root(dir.path());
    storage
        .put_bytes("gs://bucket/in/a b.json", b"{}\n")
        .unwrap();
    assert!(dir.path().join("bucket/in/a b.json").is_file());
    for bad in [
        "gs://bucket/../etc/passwd",
        "gs://bucket/./x",
        "gs://../x",
        "gs://bucket//x",
        "gs://bucket/a\\..\\x",
    ] {
        let err = storage.open(bad).err().unwrap();
        assert_eq!(err.kind(), StorageErrorKind::InvalidLocation, "{bad}");
        assert!(
            err.to_string()
                .starts_with(&format!("invalid location {bad:?}: ")),
            "{err}"
        );
    }
    let err = LocalStorage::new().open("gs://bucket/x").err().unwrap();
    assert_eq!(
        err.to_string(),
        "invalid location \"gs://bucket/x\": gs:// locations need a root directory (LocalStorage::with_gcs_root)"
    );
    let err = storage.open("s3://bucket/x").err().unwrap();
    assert_eq!(
        err.to_string(),
        "invalid location \"s3://bucket/x\": unsupported scheme: expected a path, file:// or gs://"
    );
    let err = storage.open("file://host/x").err().unwrap();
    assert_eq!(
        err.to_string(),
        "invalid location \"file://host/x\": expected file:///ABSOLUTE/PATH"
    );
}

#[cfg(unix)]
#[test]
fn confined_storage_follows_no_link_out_of_its_root_and_hides_its_dot_names() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"s\n").unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("bucket")).unwrap();
    std::fs::create_dir_all(root.join(".jobs")).unwrap();
    std::fs::write(root.join(".jobs/LOCK"), b"").unwrap();
    std::fs::write(root.join("bucket/a.json"), b"1\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("bucket/out")).unwrap();
    std::os::unix::fs::symlink(root.join(".jobs"), root.join("bucket/jobs")).unwrap();
    let storage = LocalStorage::confined(&root);
    for bad in [
        "gs://bucket/out/secret",
        "gs://bucket/out/new-file",
        "gs://bucket/jobs/LOCK",
        "gs://bucket/jobs/x",
        "bucket/out/secret",
    ] {
        let err = storage
            .open(bad)
            .err()
            .unwrap_or_else(|| panic!("{bad} was read"));
        assert_eq!(
            err.kind(),
            StorageErrorKind::InvalidLocation,
            "{bad}: {err}"
        );
        assert!(storage.put_bytes(bad, b"x").is_err(), "{bad} written");
    }
    assert!(!root.join(".jobs/x").exists());
    assert!(!outside.path().join("new-file").exists());
    assert_eq!(storage.read_bytes("gs://bucket/a.json").unwrap(), b"1\n");
    let everything: Vec<String> = storage
        .expand(&["gs://**".to_string()])
        .unwrap()
        .into_iter()
        .map(|m| m.location)
        .collect();
    assert!(
        everything.iter().all(|l| !l.contains(".jobs")),
        "{everything:?}"
    );
    assert!(everything.contains(&"gs://bucket/a.json".to_string()));
}

#[test]
fn confined_storage_refuses_everything_outside_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::confined(dir.path());
    storage.put_bytes("in/x.json", b"1\n").unwrap();
    assert!(
        dir.path().join("in/x.json").is_file(),
        "relative paths resolve under the root"
    );
    let inside = dir.path().join("in/x.json");
    assert_eq!(
        storage.read_bytes(inside.to_str().unwrap()).unwrap(),
        b"1\n"
    );
    assert_eq!(
        storage
            .read_bytes(&format!("file://{}", inside.display()))
            .unwrap(),
        b"1\n"
    );
    let private = dir.path().join(".jobs/x");
    let private = private.to_str().unwrap();
    for bad in [
        "/etc/passwd",
        "file:///etc/passwd",
        "../outside",
        "in/../../outside",
        "gs://.jobs/x",
        ".jobs/x",
        "./.jobs/x",
        private,
    ] {
        let err = storage.open(bad).err().unwrap();
        assert_eq!(
            err.kind(),
            StorageErrorKind::InvalidLocation,
            "{bad}: {err}"
        );
    }
}

#[test]
fn file_uris_are_percent_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a b%.json");
    std::fs::write(&path, b"{}\n").unwrap();
    let uri = format!("file://{}/a%20b%25.json", dir.path().display());
    assert_eq!(LocalStorage::new().read_bytes(&uri).unwrap(), b"{}\n");
    let bad = format!("file://{}/a%2", dir.path().display());
    assert_eq!(
        LocalStorage::new().open(&bad).err().unwrap().kind(),
        StorageErrorKind::InvalidLocation
    );
}

#[test]
fn directories_are_not_objects_and_temp_files_are_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_str().unwrap().to_owned();
    let storage = LocalStorage::new();
    std::fs::create_dir_all(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join(".x.json.bp-tmp.1.2"), b"partial").unwrap();
    std::fs::write(dir.path().join("x.json"), b"{}").unwrap();
    assert_eq!(
        storage.head(&format!("{base}/sub")).unwrap_err().kind(),
        StorageErrorKind::NotFound
    );
    let listed: Vec<String> = storage
        .list(&format!("{base}/"))
        .unwrap()
        .into_iter()
        .map(|m| m.location)
        .collect();
    assert_eq!(listed, [format!("{base}/x.json")]);
    let err = storage.expand(&[format!("{base}/sub")]).unwrap_err();
    assert_eq!(err.to_string(), format!("no object matches \"{base}/sub\""));
}

#[test]
fn wildcard_in_the_bucket_and_across_segments() {
    let storage = InMemoryStorage::new();
    for name in ["gs://b1/x", "gs://b2/x", "gs://c/x", "gs://b1/d/e/x"] {
        storage.put(name, Vec::new());
    }
    let found: Vec<String> = storage
        .expand(&["gs://b*/x", "gs://b1/**/x"])
        .unwrap()
        .into_iter()
        .map(|m| m.location)
        .collect();
    assert_eq!(found, ["gs://b1/d/e/x", "gs://b1/x", "gs://b2/x"]);
    let err = storage.expand(&["gs://b1/[x"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid location \"gs://b1/[x\": invalid wildcard pattern: unclosed '[' at character 8"
    );
}

#[test]
fn an_expansion_gives_up_when_its_caller_stops() {
    let storage = InMemoryStorage::new();
    storage.put("gs://b/in/a.json", b"{}\n".to_vec());
    storage.put("gs://b/in/b.json", b"{}\n".to_vec());
    let patterns = ["gs://b/in/*", "gs://b/in/a.json"];
    assert_eq!(
        storage.expand_until(&patterns, &|| false).unwrap().len(),
        storage.expand(&patterns).unwrap().len()
    );
    let err = storage.expand_until(&patterns, &|| true).unwrap_err();
    assert_eq!(
        err.kind(),
        batch_prediction::storage::StorageErrorKind::Cancelled
    );
    assert_eq!(err.code(), batch_prediction::Code::Cancelled);
    assert_eq!(err.to_string(), "gave up listing \"gs://b/in/*\"");
    // Asked before each pattern: a stop after the first gives up at the second.
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let stop = || asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 2;
    let err = storage.expand_until(&patterns, &stop).unwrap_err();
    assert_eq!(err.location(), "gs://b/in/a.json");
}

/// A local file larger than the background sync's step (8 MiB) is synced
/// while it is written: it still reads back exactly, commits as one, and,
/// abandoned, leaves nothing behind.
#[test]
fn large_local_files_write_synced_in_the_background_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new();
    let data: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    let location = dir.path().join("big.bin").to_str().unwrap().to_owned();
    let mut writer = storage.create(&location).unwrap();
    for chunk in data.chunks(1 << 20) {
        writer.write_all(chunk).unwrap();
    }
    assert!(
        !std::path::Path::new(&location).exists(),
        "not before the commit"
    );
    assert_eq!(writer.commit().unwrap().size, data.len() as u64);
    assert!(storage.read_bytes(&location).unwrap() == data);

    let abandoned = dir
        .path()
        .join("abandoned.bin")
        .to_str()
        .unwrap()
        .to_owned();
    let mut writer = storage.create(&abandoned).unwrap();
    for chunk in data.chunks(1 << 20) {
        writer.write_all(chunk).unwrap();
    }
    drop(writer);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["big.bin"]);
}
