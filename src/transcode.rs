//! JSON text to JSON text without a `Value` between: the echo predictor's
//! fast path ([`Predictor::predict_json_lines`](crate::Predictor::predict_json_lines)).
//!
//! What [`echo`] writes is, byte for byte, what parsing the line into a
//! [`serde_json::Value`] and writing that value gives: the same parser reads
//! it, and each scalar is written by `serde_json` as a `Value` of it is.
//! Where the two would differ it refuses the line instead: a repeated field
//! name (a `Value` keeps the last one, in the first one's place), and a
//! top-level `b64` field (a `{"b64": …}` line is a binary instance). An
//! object with more than [`MAX_FIELDS`] fields is refused too, so that the
//! check for repeated names stays cheap.

use std::fmt;

use serde::de::{DeserializeSeed, Error, MapAccess, SeqAccess, Visitor};

/// The most fields an object may have for [`echo`] to take it.
pub(crate) const MAX_FIELDS: usize = 32;

/// Appends the JSON text `serde_json` writes for `line` parsed as a
/// `Value`; `false` (with part of it written) when `line` is not JSON or is
/// one of the lines refused above.
pub(crate) fn echo(line: &[u8], buf: &mut Vec<u8>) -> bool {
    let mut de = serde_json::Deserializer::from_slice(line);
    Echo { buf, top: true }.deserialize(&mut de).is_ok() && de.end().is_ok()
}

/// Writes the value it reads to `buf`.
struct Echo<'a> {
    buf: &'a mut Vec<u8>,
    /// Whether this is the line's own value (where `b64` means bytes).
    top: bool,
}

impl<'de> DeserializeSeed<'de> for Echo<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Writes `v` as `serde_json` writes it.
fn write<E: Error>(buf: &mut Vec<u8>, v: &(impl serde::Serialize + ?Sized)) -> Result<(), E> {
    serde_json::to_writer(buf, v).map_err(E::custom)
}

impl<'de> Visitor<'de> for Echo<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: Error>(self) -> Result<(), E> {
        self.buf.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_bool<E: Error>(self, v: bool) -> Result<(), E> {
        self.buf
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<(), E> {
        write(self.buf, &v)
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<(), E> {
        write(self.buf, &v)
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<(), E> {
        // As `Value` holds it: a finite number (serde_json parses no other).
        let n = serde_json::Number::from_f64(v).ok_or_else(|| E::custom("not finite"))?;
        write(self.buf, &n)
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<(), E> {
        write(self.buf, v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.buf.push(b'[');
        let mut first = true;
        loop {
            let comma = self.buf.len();
            if !first {
                self.buf.push(b',');
            }
            let item = Echo {
                buf: &mut *self.buf,
                top: false,
            };
            if seq.next_element_seed(item)?.is_none() {
                self.buf.truncate(comma);
                break;
            }
            first = false;
        }
        self.buf.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.buf.push(b'{');
        // Each field's name as written, by its place in `buf`.
        let mut names: [(usize, usize); MAX_FIELDS] = [(0, 0); MAX_FIELDS];
        let mut count = 0;
        loop {
            let comma = self.buf.len();
            if count > 0 {
                self.buf.push(b',');
            }
            let start = self.buf.len();
            let name = Name {
                buf: &mut *self.buf,
                top: self.top,
            };
            if map.next_key_seed(name)?.is_none() {
                self.buf.truncate(comma);
                break;
            }
            if count == MAX_FIELDS {
                return Err(A::Error::custom("too many fields to check for repeats"));
            }
            let end = self.buf.len();
            let written = &self.buf[start..end];
            if names[..count]
                .iter()
                .any(|&(s, e)| self.buf[s..e] == *written)
            {
                return Err(A::Error::custom("a repeated field name"));
            }
            names[count] = (start, end);
            count += 1;
            self.buf.push(b':');
            map.next_value_seed(Echo {
                buf: &mut *self.buf,
                top: false,
            })?;
        }
        self.buf.push(b'}');
        Ok(())
    }
}

/// Writes a field name; refuses `b64` at the top.
struct Name<'a> {
    buf: &'a mut Vec<u8>,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for Name<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Name<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<(), E> {
        if self.top && v == "b64" {
            return Err(E::custom("a b64 field: maybe a binary instance"));
        }
        write(self.buf, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// What the usual path writes for `line`, if it reads it as JSON.
    fn usual(line: &str) -> Option<String> {
        serde_json::from_str::<Value>(line)
            .ok()
            .map(|v| v.to_string())
    }

    fn fast(line: &str) -> Option<String> {
        let mut buf = Vec::new();
        echo(line.as_bytes(), &mut buf).then(|| String::from_utf8(buf).unwrap())
    }

    #[test]
    fn echo_writes_what_a_value_writes() {
        for line in [
            r#"{"id": 1, "x": [1.0, -0.0, 1e2, 1E-7, 0.1, 123456789012345678901234567890, -9223372036854775808, 18446744073709551615]}"#,
            r#"  {"a":{"b":[[],{}],"c":null,"d":true,"e":false}}  "#,
            r#"["\u00e9\n\"\\\/\ud83d\ude00", "tab\there"]"#,
            r#"{"nested": {"b64": "aGk="}}"#,
            r#""a string""#,
            "7",
            "-0",
            "[]",
            "{}",
            r#"{"k": 1.7976931348623157e308, "m": 5e-324, "n": 2.2250738585072014e-308}"#,
        ] {
            assert_eq!(fast(line), usual(line), "{line}");
            assert!(fast(line).is_some(), "{line}");
        }
    }

    #[test]
    fn echo_refuses_what_it_would_write_otherwise_and_what_is_not_json() {
        let many = format!(
            "{{{}}}",
            (0..=MAX_FIELDS)
                .map(|i| format!("\"f{i}\": {i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let enough = format!(
            "{{{}}}",
            (0..MAX_FIELDS)
                .map(|i| format!("\"f{i}\": {i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(fast(&enough), usual(&enough));
        for line in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"a": 1, "\u0061": 2}"#,
            r#"{"x": {"a": 1, "b": 2, "a": 3}}"#,
            r#"{"b64": "aGk="}"#,
            r#"{"b64": 5, "other": 1}"#,
            many.as_str(),
            "not json",
            "[1,",
            "{} {}",
            "1e400",
            r#""\ud800""#,
            "",
        ] {
            assert_eq!(fast(line), None, "{line}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(fast(&deep), None);
        assert_eq!(usual(&deep), None, "the same depth limit");
        assert_eq!(fast("\u{0}"), None);
        assert!(!echo(b"\"\xff\"", &mut Vec::new()), "invalid UTF-8");
    }
}
