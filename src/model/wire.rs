//! Serde helpers for the API's proto3 JSON mapping.
//!
//! Reading goes field by field: every known field is decoded from its JSON
//! value with the field's full path (`predictionInput.batchSize`), so each
//! error names the field it is about and quotes the value. `null` reads as
//! absent, as proto3 JSON prescribes. Writing emits int64 as strings, times
//! as RFC 3339 in UTC with `Z`, bytes as standard padded base64.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The path of a field for messages: a prefix such as `predictionInput.` and
/// the field's wire name.
#[derive(Clone, Copy)]
pub(crate) struct Path<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) name: &'a str,
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.prefix, self.name)
    }
}

/// An error about the field at `path`.
pub(crate) fn error<E: de::Error>(path: Path<'_>, message: impl fmt::Display) -> E {
    E::custom(format_args!("{path}: {message}"))
}

/// The shape of a JSON value as a tensor: its nested arrays' lengths,
/// following the first element at each level (`[]` for a scalar).
#[cfg_attr(not(any(feature = "remote", feature = "tensorflow")), allow(dead_code))]
pub(crate) fn json_shape(value: &Value) -> Vec<i64> {
    let mut shape = Vec::new();
    let mut v = value;
    while let Value::Array(items) = v {
        shape.push(items.len() as i64);
        match items.first() {
            Some(first) => v = first,
            None => break,
        }
    }
    shape
}

/// A short rendering of a JSON value for messages (long values are cut).
pub(crate) fn show(value: &Value) -> String {
    const MAX: usize = 60;
    let text = value.to_string();
    if text.chars().count() <= MAX {
        text
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// Keys seen so far in one JSON object, to refuse duplicates: a list while
/// it is short (API messages have a dozen fields), a hash set past that, so
/// an object with many unknown keys costs linear time, not quadratic.
#[derive(Default)]
pub(crate) struct Seen {
    few: Vec<String>,
    many: std::collections::HashSet<String>,
}

impl Seen {
    const FEW: usize = 16;

    pub(crate) fn insert<E: de::Error>(&mut self, prefix: &str, key: &str) -> Result<(), E> {
        let duplicate = if self.few.len() < Self::FEW {
            let seen = self.few.iter().any(|k| k == key);
            if !seen {
                self.few.push(key.to_owned());
            }
            seen
        } else {
            if self.many.is_empty() {
                self.many.extend(self.few.iter().cloned());
            }
            !self.many.insert(key.to_owned())
        };
        if duplicate {
            return Err(E::custom(format_args!(
                "duplicate field {}",
                quote(&format!("{prefix}{key}"))
            )));
        }
        Ok(())
    }
}

/// A string quoted for a message, cut after 60 characters.
pub(crate) fn quote(s: &str) -> String {
    show(&Value::String(s.to_owned()))
}

pub(crate) fn string<E: de::Error>(value: Value, path: Path<'_>) -> Result<Option<String>, E> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(error(
            path,
            format_args!("expected a string, got {}", show(&other)),
        )),
    }
}

/// Parses a proto3 JSON int64: a decimal string, or a JSON number with an
/// integral value (`64`, `64.0`, `6.4e1`; exact up to 2^53 when not written
/// as an integer).
pub(crate) fn int64<E: de::Error>(value: Value, path: Path<'_>) -> Result<Option<i64>, E> {
    const EXPECTED: &str = "expected an int64 as a decimal string or an integer";
    /// The largest magnitude a double holds every integer up to.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match &value {
        Value::Null => Ok(None),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(Some(i));
            }
            if n.is_u64() {
                return Err(error(path, format_args!("{n} is out of the int64 range")));
            }
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() != 0.0 || !f.is_finite() {
                Err(error(path, format_args!("invalid int64 {n}: {EXPECTED}")))
            } else if f.abs() > EXACT {
                Err(error(
                    path,
                    format_args!(
                        "{n} is out of the int64 range that a JSON number holds exactly (±2^53): send it as a string"
                    ),
                ))
            } else {
                Ok(Some(f as i64))
            }
        }
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(error(
                    path,
                    format_args!("invalid int64 {}: {EXPECTED}", quote(s)),
                ));
            }
            s.parse::<i64>()
                .map(Some)
                .map_err(|_| error(path, format_args!("{} is out of the int64 range", quote(s))))
        }
        other => Err(error(
            path,
            format_args!("invalid int64 {}: {EXPECTED}", show(other)),
        )),
    }
}

/// Parses a proto3 JSON double: a number, or a string holding a number,
/// `"NaN"`, `"Infinity"` or `"-Infinity"`.
pub(crate) fn double<E: de::Error>(value: Value, path: Path<'_>) -> Result<Option<f64>, E> {
    const EXPECTED: &str = "expected a number, or \"NaN\", \"Infinity\" or \"-Infinity\"";
    match &value {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64()),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(Some(f64::NAN)),
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            _ => match serde_json::from_str::<serde_json::Number>(s) {
                Ok(n) => Ok(n.as_f64()),
                Err(_) => Err(error(
                    path,
                    format_args!("invalid double {}: {EXPECTED}", quote(s)),
                )),
            },
        },
        other => Err(error(
            path,
            format_args!("invalid double {}: {EXPECTED}", show(other)),
        )),
    }
}

/// Parses an RFC 3339 timestamp with any offset and up to nanosecond
/// fractions, within the range proto3 JSON allows once in UTC:
/// 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z. Leap seconds
/// (`:60`) are refused, as `google.protobuf.Timestamp` has none.
pub(crate) fn timestamp<E: de::Error>(
    value: Value,
    path: Path<'_>,
) -> Result<Option<DateTime<Utc>>, E> {
    let Some(s) = string(value, path)? else {
        return Ok(None);
    };
    parse_timestamp(&s)
        .map(Some)
        .map_err(|why| error(path, format_args!("invalid timestamp {}: {why}", quote(&s))))
}

/// [`timestamp`]'s rules, with the reason for a refusal.
pub(crate) fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, &'static str> {
    const EXPECTED: &str = "expected RFC 3339 such as \"2014-10-02T15:01:23.045123456Z\"";
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|_| EXPECTED)?
        .with_timezone(&Utc);
    // chrono drops fraction digits past the ninth; refuse them rather than lose them.
    let fraction_digits = s
        .find('.')
        .map(|dot| s[dot + 1..].bytes().take_while(u8::is_ascii_digit).count());
    if fraction_digits.is_some_and(|n| n > 9) {
        return Err("more than 9 fraction digits: expected at most nanoseconds");
    }
    if t.nanosecond() >= 1_000_000_000 {
        return Err("leap seconds are not allowed");
    }
    if !(1..=9999).contains(&t.year()) {
        return Err(
            "out of range: expected 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z in UTC",
        );
    }
    Ok(t)
}

/// Decodes base64 in any of the alphabets proto3 JSON parsers accept:
/// standard or URL-safe, with or without padding.
pub(crate) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .into_iter()
        .find_map(|engine| engine.decode(s).ok())
}

pub(crate) fn bytes<E: de::Error>(value: Value, path: Path<'_>) -> Result<Option<Vec<u8>>, E> {
    match string(value, path)? {
        None => Ok(None),
        Some(s) => decode_base64(&s).map(Some).ok_or_else(|| {
            error(
                path,
                format_args!("invalid base64 {}: expected bytes in base64", quote(&s)),
            )
        }),
    }
}

pub(crate) fn string_list<E: de::Error>(value: Value, path: Path<'_>) -> Result<Vec<String>, E> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s),
                other => Err(E::custom(format_args!(
                    "{path}[{i}]: expected a string, got {}",
                    show(&other)
                ))),
            })
            .collect(),
        other => Err(error(
            path,
            format_args!("expected a list of strings, got {}", show(&other)),
        )),
    }
}

/// A JSON enum: its wire names and their values.
pub(crate) trait WireEnum: Sized + Copy + 'static {
    /// Every value, in wire order.
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
}

/// Every wire name of `T`, comma-separated.
pub(crate) fn enum_names<T: WireEnum>() -> String {
    let names: Vec<&str> = T::ALL.iter().map(|v| v.as_str()).collect();
    names.join(", ")
}

pub(crate) fn parse_enum<T: WireEnum>(s: &str) -> Option<T> {
    T::ALL.iter().copied().find(|v| v.as_str() == s)
}

pub(crate) fn enumeration<T: WireEnum, E: de::Error>(
    value: Value,
    path: Path<'_>,
) -> Result<Option<T>, E> {
    match string(value, path)? {
        None => Ok(None),
        Some(s) => parse_enum(&s).map(Some).ok_or_else(|| {
            error(
                path,
                format_args!(
                    "unknown value {}: expected one of {}",
                    quote(&s),
                    enum_names::<T>()
                ),
            )
        }),
    }
}

/// Reads a `map<string, string>` (e.g. `labels`), refusing duplicate keys and
/// non-string values.
pub(crate) struct StringMapSeed<'a>(pub(crate) Path<'a>);

impl<'de> DeserializeSeed<'de> for StringMapSeed<'_> {
    type Value = BTreeMap<String, String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StringMapSeed<'_> {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: an object of strings", self.0)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let path = self.0;
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value: Value = map.next_value()?;
            let Value::String(value) = value else {
                return Err(de::Error::custom(format_args!(
                    "{path}[{key:?}]: expected a string, got {}",
                    show(&value)
                )));
            };
            if out.insert(key.clone(), value).is_some() {
                return Err(de::Error::custom(format_args!(
                    "{path}: duplicate key {key:?}"
                )));
            }
        }
        Ok(out)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Err(error(
            self.0,
            format_args!("expected an object of strings, got {v}"),
        ))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Err(error(
            self.0,
            format_args!("expected an object of strings, got {v}"),
        ))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Err(error(
            self.0,
            format_args!("expected an object of strings, got {v}"),
        ))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(error(
            self.0,
            format_args!("expected an object of strings, got {v}"),
        ))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Err(error(
            self.0,
            format_args!("expected an object of strings, got {v:?}"),
        ))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(error(self.0, "expected an object of strings, got a list"))
    }
}

// ---- writing ----

/// An int64, written as a decimal string.
pub(crate) struct Int64(pub(crate) i64);

impl Serialize for Int64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// A double, with proto3's strings for the non-finite values.
pub(crate) struct Double(pub(crate) f64);

impl Serialize for Double {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_nan() {
            s.serialize_str("NaN")
        } else if v == f64::INFINITY {
            s.serialize_str("Infinity")
        } else if v == f64::NEG_INFINITY {
            s.serialize_str("-Infinity")
        } else {
            s.serialize_f64(v)
        }
    }
}

/// A timestamp, as [`format_timestamp`] writes it.
pub(crate) struct Time<'a>(pub(crate) &'a DateTime<Utc>);

impl Serialize for Time<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_timestamp(self.0))
    }
}

/// Writes the unknown fields, except those named like a known field.
pub(crate) fn unknown_entries<M: SerializeMap>(
    m: &mut M,
    unknown: &serde_json::Map<String, Value>,
    known: &[&str],
) -> Result<(), M::Error> {
    for (key, value) in unknown {
        if !known.contains(&key.as_str()) {
            m.serialize_entry(key, value)?;
        }
    }
    Ok(())
}

/// RFC 3339 in UTC with `Z` and 0, 3, 6 or 9 fraction digits, as proto3 JSON writes it.
pub(crate) fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P: Path<'static> = Path {
        prefix: "predictionInput.",
        name: "batchSize",
    };

    fn err(r: Result<impl fmt::Debug, serde_json::Error>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn int64_table() {
        let ok = [
            (json!("64"), Some(64)),
            (json!(64), Some(64)),
            (json!("-5"), Some(-5)),
            (json!("0"), Some(0)),
            (json!("9223372036854775807"), Some(i64::MAX)),
            (json!("-9223372036854775808"), Some(i64::MIN)),
            (json!(null), None),
        ];
        for (v, want) in ok {
            assert_eq!(
                int64::<serde_json::Error>(v.clone(), P).unwrap(),
                want,
                "{v}"
            );
        }
        let bad = [
            (
                json!("abc"),
                "predictionInput.batchSize: invalid int64 \"abc\": expected an int64 as a decimal string or an integer",
            ),
            (
                json!(""),
                "predictionInput.batchSize: invalid int64 \"\": expected an int64 as a decimal string or an integer",
            ),
            (
                json!("-"),
                "predictionInput.batchSize: invalid int64 \"-\": expected an int64 as a decimal string or an integer",
            ),
            (
                json!(" 64"),
                "predictionInput.batchSize: invalid int64 \" 64\": expected an int64 as a decimal string or an integer",
            ),
            (
                json!("+64"),
                "predictionInput.batchSize: invalid int64 \"+64\": expected an int64 as a decimal string or an integer",
            ),
            (
                json!("1e3"),
                "predictionInput.batchSize: invalid int64 \"1e3\": expected an int64 as a decimal string or an integer",
            ),
            (
                json!(6.5),
                "predictionInput.batchSize: invalid int64 6.5: expected an int64 as a decimal string or an integer",
            ),
            (
                json!(true),
                "predictionInput.batchSize: invalid int64 true: expected an int64 as a decimal string or an integer",
            ),
            (
                json!("9223372036854775808"),
                "predictionInput.batchSize: \"9223372036854775808\" is out of the int64 range",
            ),
            (
                json!(9223372036854775808u64),
                "predictionInput.batchSize: 9223372036854775808 is out of the int64 range",
            ),
        ];
        for (v, msg) in bad {
            assert_eq!(err(int64::<serde_json::Error>(v, P)), msg);
        }
    }

    #[test]
    fn double_table() {
        let d = |v: Value| double::<serde_json::Error>(v, P);
        assert_eq!(d(json!(0.25)).unwrap(), Some(0.25));
        assert_eq!(d(json!(3)).unwrap(), Some(3.0));
        assert_eq!(d(json!("0.5")).unwrap(), Some(0.5));
        assert!(d(json!("NaN")).unwrap().unwrap().is_nan());
        assert_eq!(d(json!("-Infinity")).unwrap(), Some(f64::NEG_INFINITY));
        assert_eq!(
            err(d(json!("lots"))),
            "predictionInput.batchSize: invalid double \"lots\": expected a number, or \"NaN\", \"Infinity\" or \"-Infinity\""
        );
    }

    #[test]
    fn timestamps_accept_offsets_and_nanos_and_write_utc() {
        let t = |s: &str| {
            timestamp::<serde_json::Error>(json!(s), P)
                .unwrap()
                .unwrap()
        };
        assert_eq!(
            format_timestamp(&t("2019-01-01T00:00:00Z")),
            "2019-01-01T00:00:00Z"
        );
        assert_eq!(
            format_timestamp(&t("2019-01-01T02:00:00+02:00")),
            "2019-01-01T00:00:00Z"
        );
        assert_eq!(
            format_timestamp(&t("2019-01-01T00:00:00.5-01:30")),
            "2019-01-01T01:30:00.500Z"
        );
        assert_eq!(
            format_timestamp(&t("2014-10-02T15:01:23.045123456Z")),
            "2014-10-02T15:01:23.045123456Z"
        );
        assert_eq!(
            format_timestamp(&t("2014-10-02T15:01:23.0451Z")),
            "2014-10-02T15:01:23.045100Z"
        );
        assert!(
            err(timestamp::<serde_json::Error>(json!("2019-01-01"), P)).starts_with(
                "predictionInput.batchSize: invalid timestamp \"2019-01-01\": expected RFC 3339"
            )
        );
    }

    #[test]
    fn base64_alphabets() {
        assert_eq!(
            decode_base64("BwWWja0YfJA="),
            Some(vec![7, 5, 150, 141, 173, 24, 124, 144])
        );
        assert_eq!(
            decode_base64("BwWWja0YfJA"),
            Some(vec![7, 5, 150, 141, 173, 24, 124, 144])
        );
        assert_eq!(decode_base64("-_8="), Some(vec![251, 255]));
        assert_eq!(decode_base64("+/8="), Some(vec![251, 255]));
        assert_eq!(decode_base64("not base64!"), None);
        assert_eq!(encode_base64(&[251, 255]), "+/8=");
    }

    #[test]
    fn duplicates_are_found_among_few_and_many_keys() {
        for n in [3usize, 16, 17, 40] {
            let mut seen = Seen::default();
            for i in 0..n {
                seen.insert::<serde_json::Error>("", &format!("k{i}"))
                    .unwrap();
            }
            for i in [0, n / 2, n - 1] {
                let err = seen
                    .insert::<serde_json::Error>("p.", &format!("k{i}"))
                    .unwrap_err();
                assert_eq!(
                    err.to_string(),
                    format!("duplicate field \"p.k{i}\""),
                    "{n} keys"
                );
            }
            seen.insert::<serde_json::Error>("", "new").unwrap();
        }
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = json!("x".repeat(100));
        let shown = show(&long);
        assert_eq!(shown.chars().count(), 61);
        assert!(shown.ends_with('…'));
    }
}
