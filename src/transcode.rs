//! JSON text to JSON text without a `Value` between: the echo predictor's
//! fast path ([`Predictor::predict_json_lines`](crate::Predictor::predict_json_lines)).
//!
//! What [`echo`] writes is, byte for byte, what parsing the line into a
//! [`serde_json::Value`] and writing that value gives. A scan copies each
//! token whose text is already what `serde_json` writes (a string without
//! escapes, an integer, a float in its shortest form: what most lines hold)
//! and gives `serde_json` the others one at a time; a line the scan is
//! unsure of goes through `serde_json`'s own parser, each scalar written as
//! a `Value` of it is.
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
///
/// Most lines take [`Scan`], which copies every token whose text is already
/// what `serde_json` would write; a line it is unsure of goes through
/// `serde_json` itself.
pub(crate) fn echo(line: &[u8], buf: &mut Vec<u8>) -> bool {
    let start = buf.len();
    if Scan::new(line, buf).line() {
        return true;
    }
    buf.truncate(start);
    let mut de = serde_json::Deserializer::from_slice(line);
    Echo { buf, top: true }.deserialize(&mut de).is_ok() && de.end().is_ok()
}

/// The most nested arrays and objects [`Scan`] takes (`serde_json` takes
/// 128; deeper lines go to it, to be refused there).
const SCAN_DEPTH: usize = 64;

/// The fast path of [`echo`]: one pass over the text, which copies the
/// tokens that `serde_json` would write unchanged and hands the others
/// (numbers it would write otherwise, strings with escapes) to
/// `serde_json` one token at a time. Its answer is `false` for anything
/// else it is unsure of, valid or not: a name with an escape, a repeated or
/// top-level `b64` name, too many fields, deep nesting, bad UTF-8, not JSON.
struct Scan<'a> {
    text: &'a [u8],
    at: usize,
    buf: &'a mut Vec<u8>,
}

impl<'a> Scan<'a> {
    fn new(text: &'a [u8], buf: &'a mut Vec<u8>) -> Self {
        Scan { text, at: 0, buf }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    /// Skips what `serde_json` takes for white space.
    fn space(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Copies the next byte, which must be `byte`.
    fn expect(&mut self, byte: u8) -> bool {
        let ok = self.peek() == Some(byte);
        if ok {
            self.at += 1;
            self.buf.push(byte);
        }
        ok
    }

    fn line(&mut self) -> bool {
        self.space();
        if !self.value(0, true) {
            return false;
        }
        self.space();
        self.at == self.text.len()
    }

    fn value(&mut self, depth: usize, top: bool) -> bool {
        match self.peek() {
            Some(b'{') => depth < SCAN_DEPTH && self.object(depth + 1, top),
            Some(b'[') => depth < SCAN_DEPTH && self.array(depth + 1),
            Some(b'"') => self.plain_string().is_some() || self.escaped_string(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.word(b"true"),
            Some(b'f') => self.word(b"false"),
            Some(b'n') => self.word(b"null"),
            _ => false,
        }
    }

    fn word(&mut self, word: &[u8]) -> bool {
        let ok = self.text[self.at..].starts_with(word);
        if ok {
            self.at += word.len();
            self.buf.extend_from_slice(word);
        }
        ok
    }

    fn array(&mut self, depth: usize) -> bool {
        self.expect(b'[');
        self.space();
        if self.expect(b']') {
            return true;
        }
        loop {
            if !self.value(depth, false) {
                return false;
            }
            self.space();
            if self.expect(b']') {
                return true;
            }
            if !self.expect(b',') {
                return false;
            }
            self.space();
        }
    }

    fn object(&mut self, depth: usize, top: bool) -> bool {
        self.expect(b'{');
        self.space();
        if self.expect(b'}') {
            return true;
        }
        // Each name's text: without escapes, equal texts are equal names.
        let mut names = [(0, 0); MAX_FIELDS];
        let mut count = 0;
        loop {
            let Some((start, end)) = self.plain_string() else {
                return false;
            };
            let name = &self.text[start..end];
            if count == MAX_FIELDS
                || (top && name == b"b64")
                || names[..count]
                    .iter()
                    .any(|&(s, e)| &self.text[s..e] == name)
            {
                return false;
            }
            names[count] = (start, end);
            count += 1;
            self.space();
            if !self.expect(b':') {
                return false;
            }
            self.space();
            if !self.value(depth, false) {
                return false;
            }
            self.space();
            if self.expect(b'}') {
                return true;
            }
            if !self.expect(b',') {
                return false;
            }
            self.space();
        }
    }

    /// A string without escapes, copied (`serde_json` writes such a string
    /// as it reads it): its content's place in the text. `None`, with
    /// nothing taken, for any other string and for what is not one.
    fn plain_string(&mut self) -> Option<(usize, usize)> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let start = self.at + 1;
        let mut end = start;
        let mut ascii = true;
        loop {
            match *self.text.get(end)? {
                b'"' => break,
                b'\\' => return None,
                // Not JSON: serde_json refuses it.
                ..0x20 => return None,
                b => ascii &= b.is_ascii(),
            }
            end += 1;
        }
        if !ascii && std::str::from_utf8(&self.text[start..end]).is_err() {
            return None;
        }
        self.buf.extend_from_slice(&self.text[self.at..=end]);
        self.at = end + 1;
        Some((start, end))
    }

    /// Any other string (escapes, or not JSON), as `serde_json` reads and
    /// writes it.
    #[cold]
    fn escaped_string(&mut self) -> bool {
        let mut end = self.at + 1;
        loop {
            match self.text.get(end) {
                Some(b'"') => break,
                Some(b'\\') => end += 2,
                Some(_) => end += 1,
                None => return false,
            }
        }
        let Some(token) = self.text.get(self.at..=end) else {
            return false;
        };
        let Ok(decoded) = serde_json::from_slice::<String>(token) else {
            return false;
        };
        let written = serde_json::to_writer(&mut *self.buf, &decoded).is_ok();
        self.at = end + 1;
        written
    }

    /// A number: copied when `serde_json` would write it as it is written
    /// (see [`as_written`]), else read and written by `serde_json`.
    fn number(&mut self) -> bool {
        let t = self.text;
        let start = self.at;
        let digits = |mut i: usize| {
            while t.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let negative = t[start] == b'-';
        let int_start = start + usize::from(negative);
        let int_end = match t.get(int_start) {
            Some(b'0') => int_start + 1,
            Some(b'1'..=b'9') => digits(int_start + 1),
            _ => return false,
        };
        let mut end = int_end;
        let mut fraction = None;
        if t.get(end) == Some(&b'.') {
            let fraction_end = digits(end + 1);
            if fraction_end == end + 1 {
                return false;
            }
            fraction = Some(&t[end + 1..fraction_end]);
            end = fraction_end;
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = t.get(end) {
            let sign = usize::from(matches!(t.get(end + 1), Some(b'+' | b'-')));
            let exponent_end = digits(end + 1 + sign);
            if exponent_end == end + 1 + sign {
                return false;
            }
            end = exponent_end;
            exponent = true;
        }
        self.at = end;
        let text = &t[start..end];
        if !exponent && as_written(negative, &t[int_start..int_end], fraction) {
            self.buf.extend_from_slice(text);
            return true;
        }
        self.other_number(text)
    }

    #[cold]
    fn other_number(&mut self, text: &[u8]) -> bool {
        match serde_json::from_slice::<serde_json::Value>(text) {
            Ok(number) => serde_json::to_writer(&mut *self.buf, &number).is_ok(),
            Err(_) => false,
        }
    }
}

/// Whether `serde_json` writes the number whose integer digits are
/// `integer` and fraction digits `fraction` (no exponent) exactly as it
/// reads. An integer of up to 18 digits is kept as one (`-0` is not: it
/// reads as the float -0.0). A fraction of at most 15 significant digits
/// and no trailing zero is the shortest decimal that reads back as the
/// same double (15 digits always survive a round trip, so no shorter
/// string can name that double), and `serde_json`'s printer writes such a
/// number in fixed notation, as here, when its first significant digit
/// stands from 10^15 down to 10^-5; `X.0` likewise for an integral `X` of
/// up to 15 digits.
fn as_written(negative: bool, integer: &[u8], fraction: Option<&[u8]>) -> bool {
    let Some(fraction) = fraction else {
        return integer.len() <= 18 && !(negative && integer == b"0");
    };
    if integer != b"0" {
        return if fraction == b"0" {
            integer.len() <= 15
        } else {
            fraction.last() != Some(&b'0') && integer.len() + fraction.len() <= 15
        };
    }
    let zeros = fraction.iter().take_while(|&&b| b == b'0').count();
    fraction.last() != Some(&b'0') && zeros <= 4 && fraction.len() - zeros <= 15
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

    /// Whether [`Scan`] alone takes `line`, and what it writes.
    fn scanned(line: &str) -> Option<String> {
        let mut buf = Vec::new();
        Scan::new(line.as_bytes(), &mut buf)
            .line()
            .then(|| String::from_utf8(buf).unwrap())
    }

    #[test]
    fn the_scan_takes_usual_lines_and_writes_what_serde_json_writes() {
        for line in [
            r#"{"key": 7, "x": [0.1, -2.3, 1.25, 0.5]}"#,
            "{\"a\": \"caf\u{e9} \u{1F600}\", \"b\": [true, false, null], \"c\": {\"d\": -12, \"e\": 100.0}}",
            "[0.00001, 0.000123456789012345, 123456789012345.0, 12345678901234.5, 999999999999999999]",
            "[1e2, 1E-7, 0.10, 1.50, -0, 0.0, -0.0, 1234567890123456789, 0.0000012, 1.2345678901234567]",
            "[0.000001, 1000000000000000.0, 10000000000000000.0, 9007199254740993, 18446744073709551616]",
            "[9007199254740993.0, 1234567890123456.0, 0.1000000000000001, 0.30000000000000004]",
            r#"{"s": "a \"quoted\" \\ line\n\u00e9\/"}"#,
        ] {
            assert_eq!(scanned(line), usual(line), "{line}");
        }
        // Not for the scan: a name with an escape; not JSON.
        for line in [
            r#"{"\u0061": 1}"#,
            "[1,]",
            "01",
            "1.",
            "1e",
            "[1 2]",
            "tru",
            "\"\u{1}\"",
        ] {
            assert_eq!(scanned(line), None, "{line}");
        }
    }

    /// A number as JSON may write it: sign, integer digits (leading zeros
    /// stripped), maybe a fraction, maybe an exponent.
    fn number_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        (
            any::<bool>(),
            "[0-9]{1,21}",
            proptest::option::of("[0-9]{1,20}"),
            proptest::option::of(("[eE]", "[+-]?", "[0-9]{1,3}")),
        )
            .prop_map(|(negative, integer, fraction, exponent)| {
                let integer = integer.trim_start_matches('0');
                let integer = if integer.is_empty() { "0" } else { integer };
                let mut text = format!("{}{integer}", if negative { "-" } else { "" });
                if let Some(f) = fraction {
                    text += &format!(".{f}");
                }
                if let Some((e, sign, digits)) = exponent {
                    text += &format!("{e}{sign}{digits}");
                }
                text
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        #[test]
        fn numbers_are_written_as_serde_json_writes_them(
            n in number_text(),
            f in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
            places in 0usize..18,
        ) {
            for text in [n.clone(), f.to_string(), format!("{f:e}"), format!("{:.places$}", f / 1e6)] {
                let line = format!("{{\"n\": [{text}, {text}]}}");
                proptest::prop_assert_eq!(fast(&line), usual(&line), "{}", line);
            }
        }

        #[test]
        fn lines_are_written_as_serde_json_writes_them(
            line in "[\\[\\]{}\",:0-9.eE+\\- \\\\tnrufalsb64\u{e9}]{0,40}",
        ) {
            // Taken alike, written alike; refused only where told (a
            // repeated or top-level b64 name, which a Value would hide).
            let (fast, usual) = (fast(&line), usual(&line));
            if fast.is_some() || !line.contains("b64") && !line.contains(':') {
                proptest::prop_assert_eq!(fast, usual, "{}", line);
            }
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
